"""Initial schema: users, devices, tokens, calls, participants, device legs.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

ID = sa.String(64)
STATE = sa.String(32)
REASON = sa.String(32)


def _time(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", ID, nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("display_name", sa.String(128), nullable=False),
        sa.Column("password_hash", sa.String(512), nullable=False),
        _time("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("username", name="uq_users_username"),
    )
    op.create_table(
        "user_devices",
        sa.Column("id", ID, nullable=False),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        _time("created_at"),
        _time("last_seen_at"),
        _time("removed_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_user_devices"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_user_devices_user_id_users", ondelete="CASCADE"
        ),
        sa.CheckConstraint(
            "kind IN ('browser', 'ios', 'android', 'desktop', 'sdk', 'cli')",
            name="ck_user_devices_kind",
        ),
    )
    op.create_index("ix_user_devices_user_id", "user_devices", ["user_id"])
    op.create_table(
        "auth_tokens",
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("device_id", ID, nullable=True),
        _time("created_at"),
        _time("expires_at", nullable=True),
        _time("revoked_at", nullable=True),
        sa.PrimaryKeyConstraint("token_hash", name="pk_auth_tokens"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_auth_tokens_user_id_users", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["user_devices.id"],
            name="fk_auth_tokens_device_id_user_devices",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_auth_tokens_user_id", "auth_tokens", ["user_id"])
    op.create_index("ix_auth_tokens_device_id", "auth_tokens", ["device_id"])
    op.create_table(
        "calls",
        sa.Column("id", ID, nullable=False),
        sa.Column("media", sa.String(8), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("caller_user_id", ID, nullable=False),
        sa.Column("caller_device_id", ID, nullable=True),
        _time("created_at"),
        _time("answered_at", nullable=True),
        _time("ended_at", nullable=True),
        sa.Column("end_reason", REASON, nullable=True),
        _time("next_deadline", nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("snapshot", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_calls"),
        sa.ForeignKeyConstraint(["caller_user_id"], ["users.id"], name="fk_calls_caller_user_id_users"),
        sa.ForeignKeyConstraint(
            ["caller_device_id"], ["user_devices.id"], name="fk_calls_caller_device_id_user_devices"
        ),
        sa.CheckConstraint("media IN ('audio', 'video')", name="ck_calls_media"),
        sa.CheckConstraint("state IN ('ringing', 'active', 'ended')", name="ck_calls_state"),
    )
    op.create_index("ix_calls_state", "calls", ["state"])
    op.create_index("ix_calls_caller_user_id", "calls", ["caller_user_id"])
    op.create_index("ix_calls_created_at", "calls", ["created_at"])
    op.create_index("ix_calls_next_deadline", "calls", ["next_deadline"])
    op.create_table(
        "call_participants",
        sa.Column("call_id", ID, nullable=False),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("role", sa.String(8), nullable=False),
        sa.Column("state", STATE, nullable=False),
        sa.Column("end_reason", REASON, nullable=True),
        _time("invited_at"),
        _time("joined_at", nullable=True),
        _time("left_at", nullable=True),
        sa.Column("answered_device_id", ID, nullable=True),
        sa.PrimaryKeyConstraint("call_id", "user_id", name="pk_call_participants"),
        sa.ForeignKeyConstraint(
            ["call_id"], ["calls.id"], name="fk_call_participants_call_id_calls", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_call_participants_user_id_users"),
        sa.ForeignKeyConstraint(
            ["answered_device_id"],
            ["user_devices.id"],
            name="fk_call_participants_answered_device_id_user_devices",
        ),
        sa.CheckConstraint("role IN ('caller', 'callee')", name="ck_call_participants_role"),
    )
    op.create_index("ix_call_participants_user_id", "call_participants", ["user_id"])
    op.create_table(
        "call_device_legs",
        sa.Column("call_id", ID, nullable=False),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("device_id", ID, nullable=False),
        sa.Column("state", STATE, nullable=False),
        sa.Column("end_reason", REASON, nullable=True),
        _time("updated_at"),
        sa.PrimaryKeyConstraint("call_id", "device_id", name="pk_call_device_legs"),
        sa.ForeignKeyConstraint(
            ["call_id", "user_id"],
            ["call_participants.call_id", "call_participants.user_id"],
            name="fk_call_device_legs_call_id_call_participants",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["device_id"], ["user_devices.id"], name="fk_call_device_legs_device_id_user_devices"
        ),
    )
    op.create_index("ix_call_device_legs_device_id", "call_device_legs", ["device_id"])


def downgrade() -> None:
    op.drop_table("call_device_legs")
    op.drop_table("call_participants")
    op.drop_table("calls")
    op.drop_table("auth_tokens")
    op.drop_table("user_devices")
    op.drop_table("users")
