"""``user_devices.identity_key``: each device's public Ed25519 identity key.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07

A device makes its own key pair and publishes the public key once, when it registers or later
(``PUT /v1/devices/{id}/identity-key``); it signs every SDP it sends with the private key, which
never leaves it (docs/security.md, "Device identity keys"). NULL for a device that has not
published one. The key is never changed once set.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("user_devices", sa.Column("identity_key", sa.String(43), nullable=True))


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # in place, as 0005 does: a batch copy would drop a table others reference
        op.execute("ALTER TABLE user_devices DROP COLUMN identity_key")
    else:
        op.drop_column("user_devices", "identity_key")
