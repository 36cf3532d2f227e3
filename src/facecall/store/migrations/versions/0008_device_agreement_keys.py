"""``user_devices.agreement_key`` and ``agreement_signature``: each device's certified X25519 key.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-14

A device makes an X25519 key pair for sealing media keys to it and certifies the public key
with its identity key (``facecall.e2ee.agreement``; docs/sframe.md, "Key distribution (the
core)"). It publishes the certificate with ``PUT /v1/devices/{id}/agreement-key``: the key
(43 base64url characters) and the identity key's Ed25519 signature (86). NULL for a device that
has not published one. Unlike the identity key, a newer certificate may replace it: the
identity key signs every one, so the server cannot make one up.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None

COLUMNS = (("agreement_key", 43), ("agreement_signature", 86))


def upgrade() -> None:
    for name, length in COLUMNS:
        op.add_column("user_devices", sa.Column(name, sa.String(length), nullable=True))


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for name, _ in reversed(COLUMNS):
        if sqlite:
            # in place, as 0005 and 0007 do: a batch copy would drop a table others reference
            op.execute(f"ALTER TABLE user_devices DROP COLUMN {name}")
        else:
            op.drop_column("user_devices", name)
