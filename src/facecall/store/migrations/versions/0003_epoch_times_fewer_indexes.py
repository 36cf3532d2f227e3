"""SQLite timestamps as REAL epoch seconds; drop the indexes no query uses.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06

SQLite: every timestamp column held naive UTC text (``YYYY-MM-DD HH:MM:SS.ffffff``, the format
SQLAlchemy's DateTime wrote); it now holds REAL epoch seconds, so the store neither formats nor
parses a timestamp on any read or write. The columns stay declared ``DATETIME`` (NUMERIC
affinity stores floats as they are), so no table is rebuilt: each row is updated in place.
The conversion is exact (integer microseconds / 10^6, as ``timedelta.total_seconds`` computes
it) up to year 2255, within a few units of the last place after. PostgreSQL keeps
``timestamptz``.

Both backends drop three indexes, each of which every call write paid for:

* ``ix_calls_caller_user_id`` and ``ix_call_device_legs_device_id`` only served foreign-key
  checks when a user or device row is deleted -- and nothing deletes one (a device removal sets
  ``removed_at``; calls and legs reference users and devices without ``ON DELETE``, so deleting
  one that made a call would fail anyway). Glare detection uses ``ix_calls_ringing``.
* ``ix_calls_unended``: ``unended_calls`` (recovery at start-up) reads ``ix_calls_due``, which
  holds exactly the calls not ended, and sorts that small set.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

#: every timestamp column, by table
TIMES: dict[str, tuple[str, ...]] = {
    "users": ("created_at",),
    "user_devices": ("created_at", "last_seen_at", "removed_at"),
    "auth_tokens": ("created_at", "expires_at", "revoked_at"),
    "calls": ("created_at", "answered_at", "ended_at", "next_deadline"),
    "call_participants": ("invited_at", "joined_at", "left_at"),
    "call_device_legs": ("updated_at",),
}
NOT_ENDED = "state != 'ended'"


def text_to_epoch(column: str) -> str:
    """SQL: naive UTC text to epoch seconds; integer microseconds over 10^6 while exact in a
    double (``strftime('%s')`` of the fraction-less text: with the fraction it rounds)."""
    seconds = f"CAST(strftime('%s', substr({column}, 1, 19)) AS INTEGER)"
    micros = f"CAST(substr(substr({column}, 21) || '000000', 1, 6) AS INTEGER)"
    return (
        f"CASE WHEN {seconds} < 9000000000 THEN ({seconds} * 1000000 + {micros}) / 1000000.0 "
        f"ELSE {seconds} + {micros} / 1000000.0 END"
    )


def epoch_to_text(column: str) -> str:
    """SQL: epoch seconds back to the naive UTC text of revision 0002 (microseconds)."""
    whole = f"CAST({column} AS INTEGER)"
    micros = f"CAST(round(({column} - {whole}) * 1000000) AS INTEGER)"
    return (
        f"strftime('%Y-%m-%d %H:%M:%S', {whole} + {micros} / 1000000, 'unixepoch') "
        f"|| printf('.%06d', {micros} % 1000000)"
    )


def _convert(kind: str, convert: Callable[[str], str]) -> None:
    """Rewrite every timestamp stored as ``kind`` (SQLite ``typeof``) with ``convert``."""
    for table, columns in TIMES.items():
        sets = ", ".join(
            f"{c} = CASE WHEN typeof({c}) = '{kind}' THEN {convert(c)} ELSE {c} END" for c in columns
        )
        where = " OR ".join(f"typeof({c}) = '{kind}'" for c in columns)
        op.execute(f"UPDATE {table} SET {sets} WHERE {where}")


def upgrade() -> None:
    op.drop_index("ix_calls_caller_user_id", table_name="calls")
    op.drop_index("ix_call_device_legs_device_id", table_name="call_device_legs")
    op.drop_index("ix_calls_unended", table_name="calls")
    if op.get_bind().dialect.name == "sqlite":
        _convert("text", text_to_epoch)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _convert("real", epoch_to_text)
        _convert("integer", epoch_to_text)
    op.create_index(
        "ix_calls_unended", "calls", ["created_at", "id"],
        sqlite_where=sa.text(NOT_ENDED), postgresql_where=sa.text(NOT_ENDED),
    )  # fmt: skip
    op.create_index("ix_call_device_legs_device_id", "call_device_legs", ["device_id"])
    op.create_index("ix_calls_caller_user_id", "calls", ["caller_user_id"])
