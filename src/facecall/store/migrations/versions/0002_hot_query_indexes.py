"""Partial indexes for the signaling hot queries.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24

Each index covers only the rows its query can want, so it stays small however long the history
grows (EXPLAIN QUERY PLAN / EXPLAIN show them used):

* ``ix_call_participants_live``: live participant rows by user (``live_calls_of_user``);
* ``ix_calls_ringing``: ringing calls by caller, in creation order (``ringing_calls_between``);
* ``ix_calls_due``: deadlines of calls not ended, with the id tie-break (``due_calls``);
* ``ix_calls_unended``: calls not ended in creation order (``unended_calls``).

``ix_calls_state``, ``ix_calls_next_deadline`` and ``ix_calls_created_at`` are dropped: the
partial indexes answer their queries better (no query orders all calls by creation any more),
and every index costs each write.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

NOT_ENDED = "state != 'ended'"


def _partial(name: str, table: str, columns: list[str], where: str) -> None:
    op.create_index(name, table, columns, sqlite_where=sa.text(where), postgresql_where=sa.text(where))


def upgrade() -> None:
    _partial("ix_call_participants_live", "call_participants", ["user_id"], "end_reason IS NULL")
    _partial("ix_calls_ringing", "calls", ["caller_user_id", "created_at", "id"], "state = 'ringing'")
    _partial("ix_calls_due", "calls", ["next_deadline", "id"], NOT_ENDED)
    _partial("ix_calls_unended", "calls", ["created_at", "id"], NOT_ENDED)
    op.drop_index("ix_calls_state", table_name="calls")
    op.drop_index("ix_calls_next_deadline", table_name="calls")
    op.drop_index("ix_calls_created_at", table_name="calls")


def downgrade() -> None:
    op.create_index("ix_calls_created_at", "calls", ["created_at"])
    op.create_index("ix_calls_next_deadline", "calls", ["next_deadline"])
    op.create_index("ix_calls_state", "calls", ["state"])
    op.drop_index("ix_calls_unended", table_name="calls")
    op.drop_index("ix_calls_due", table_name="calls")
    op.drop_index("ix_calls_ringing", table_name="calls")
    op.drop_index("ix_call_participants_live", table_name="call_participants")
