"""``users.deleted_at``: when the account was deleted (``DELETE /v1/me``).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06

A deleted account keeps its row, because the calls it took part in (other people's history)
reference it. What identified the person goes: the username becomes ``~`` and the user id (no
username may contain ``~``, so the name is free to sign up with again), the display name and
the password hash are emptied, every device is removed and every token revoked. ``deleted_at``
says that this happened, and when; a nullable column is added in place on both backends.

A downgrade drops the column and keeps the erased rows. Upgrading again marks those rows
deleted anew (their ``~`` username says so), at the time of the upgrade: the release the
database was downgraded for never brings a deleted account back.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from facecall.store.coltypes import EpochTime

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("users", sa.Column("deleted_at", EpochTime(), nullable=True))
    now = "now()" if op.get_bind().dialect.name == "postgresql" \
        else "(julianday('now') - 2440587.5) * 86400.0"  # SQLite: REAL epoch seconds (0003)
    op.execute(f"UPDATE users SET deleted_at = {now} WHERE username LIKE '~%'")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # in place (SQLite 3.35+): a batch copy of `users` would drop the table, which foreign
        # keys (on in the migration's transaction) refuse, or cascade to devices and tokens
        op.execute("ALTER TABLE users DROP COLUMN deleted_at")
    else:
        op.drop_column("users", "deleted_at")
