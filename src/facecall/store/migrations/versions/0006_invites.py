"""``invites``: one-time invitations to create an account on a server whose sign-up is closed.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06

The administrator makes an invitation (``facecall admin invites add``, ``POST
/v1/admin/invites``) and sends its link; whoever opens it creates one account, in the same
transaction that marks the invitation used. The code is a bearer secret: only its sha256 hex
is stored, as for tokens. A used invitation keeps naming the account made with it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from facecall.store.coltypes import EpochTime

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "invites",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("code_hash", sa.String(64), nullable=False),
        sa.Column("note", sa.String(128), nullable=False),
        sa.Column("created_at", EpochTime(), nullable=False),
        sa.Column("expires_at", EpochTime(), nullable=False),
        sa.Column("used_at", EpochTime(), nullable=True),
        sa.Column("used_by", sa.String(64), nullable=True),
        sa.Column("withdrawn_at", EpochTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_invites"),
        sa.UniqueConstraint("code_hash", name="uq_invites_code_hash"),
        sa.ForeignKeyConstraint(["used_by"], ["users.id"], name="fk_invites_used_by_users"),
    )


def downgrade() -> None:
    op.drop_table("invites")
