"""Tables, in SQLAlchemy 2 typed declarative style.

Migrations ``0001`` to ``0004`` create exactly these; a test compares the migrated schema with
this metadata.
"""

from __future__ import annotations

from sqlalchemy import (
    CheckConstraint,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from facecall.store.coltypes import EpochTime
from facecall.store.records import CALL_STATES, DEVICE_KINDS, MEDIA_KINDS, ROLES

ID_LEN = 64
USERNAME_LEN = 64
DISPLAY_NAME_LEN = 128
PASSWORD_HASH_LEN = 512
DEVICE_NAME_LEN = 128
#: a public Ed25519 key as base64url (``facecall.e2ee.identity``: 32 bytes, 43 characters)
IDENTITY_KEY_LEN = 43
#: a public X25519 agreement key as base64url (``facecall.e2ee.agreement``: 32 bytes, 43 characters)
AGREEMENT_KEY_LEN = 43
#: an Ed25519 signature as base64url (64 bytes, 86 characters)
SIGNATURE_LEN = 86
TOKEN_HASH_LEN = 64
INVITE_NOTE_LEN = 128
STATE_LEN = 32
REASON_LEN = 32

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def partial_index(name: str, *columns: str, where: str) -> Index:
    """An index of only the rows matching ``where`` (SQLite and PostgreSQL)."""
    return Index(name, *columns, sqlite_where=text(where), postgresql_where=text(where))


def one_of(column: str, values: tuple[str, ...]) -> str:
    """SQL text of a CHECK that ``column`` holds one of ``values``."""
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    """Declarative base with a naming convention so constraints have stable names."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UserRow(Base):
    """``users``: accounts; usernames are stored lowercased, so unique case-insensitively."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    username: Mapped[str] = mapped_column(String(USERNAME_LEN), unique=True)
    display_name: Mapped[str] = mapped_column(String(DISPLAY_NAME_LEN))
    password_hash: Mapped[str] = mapped_column(String(PASSWORD_HASH_LEN))
    created_at: Mapped[float] = mapped_column(EpochTime())
    deleted_at: Mapped[float | None] = mapped_column(EpochTime())  # migration 0005


class InviteRow(Base):
    """``invites``: one-time invitations to create an account (migration 0006), by the sha256
    hex of their code; a used one names the account made with it."""

    __tablename__ = "invites"

    id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    code_hash: Mapped[str] = mapped_column(String(TOKEN_HASH_LEN), unique=True)
    note: Mapped[str] = mapped_column(String(INVITE_NOTE_LEN))
    created_at: Mapped[float] = mapped_column(EpochTime())
    expires_at: Mapped[float] = mapped_column(EpochTime())
    used_at: Mapped[float | None] = mapped_column(EpochTime())
    used_by: Mapped[str | None] = mapped_column(String(ID_LEN), ForeignKey("users.id"))
    withdrawn_at: Mapped[float | None] = mapped_column(EpochTime())


class DeviceRow(Base):
    """``user_devices``: registered devices; removal is a soft delete (``removed_at``)."""

    __tablename__ = "user_devices"
    __table_args__ = (CheckConstraint(one_of("kind", DEVICE_KINDS), name="kind"),)

    id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    user_id: Mapped[str] = mapped_column(
        String(ID_LEN), ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(DEVICE_NAME_LEN))
    created_at: Mapped[float] = mapped_column(EpochTime())
    last_seen_at: Mapped[float] = mapped_column(EpochTime())
    removed_at: Mapped[float | None] = mapped_column(EpochTime())
    #: the device's public Ed25519 identity key, base64url (migration 0007); set once
    identity_key: Mapped[str | None] = mapped_column(String(IDENTITY_KEY_LEN))
    #: the device's public X25519 agreement key, base64url, and its identity key's signature
    #: certifying it (migration 0008); both set together, replaced by a newer certificate
    agreement_key: Mapped[str | None] = mapped_column(String(AGREEMENT_KEY_LEN))
    agreement_signature: Mapped[str | None] = mapped_column(String(SIGNATURE_LEN))


class TokenRow(Base):
    """``auth_tokens``: bearer tokens by sha256 hex; ``device_id`` NULL means account token."""

    __tablename__ = "auth_tokens"

    token_hash: Mapped[str] = mapped_column(String(TOKEN_HASH_LEN), primary_key=True)
    user_id: Mapped[str] = mapped_column(
        String(ID_LEN), ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    device_id: Mapped[str | None] = mapped_column(
        String(ID_LEN), ForeignKey("user_devices.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[float] = mapped_column(EpochTime())
    expires_at: Mapped[float | None] = mapped_column(EpochTime())
    revoked_at: Mapped[float | None] = mapped_column(EpochTime())


class CallRow(Base):
    """``calls``: one row per call; ``snapshot`` is the state machine's JSON, opaque here."""

    __tablename__ = "calls"
    __table_args__ = (
        CheckConstraint(one_of("media", MEDIA_KINDS), name="media"),
        CheckConstraint(one_of("state", CALL_STATES), name="state"),
        partial_index("ix_calls_ringing", "caller_user_id", "created_at", "id", where="state = 'ringing'"),
        partial_index("ix_calls_due", "next_deadline", "id", where="state != 'ended'"),
    )

    id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    media: Mapped[str] = mapped_column(String(8))
    state: Mapped[str] = mapped_column(String(16))
    caller_user_id: Mapped[str] = mapped_column(String(ID_LEN), ForeignKey("users.id"))
    caller_device_id: Mapped[str | None] = mapped_column(String(ID_LEN), ForeignKey("user_devices.id"))
    created_at: Mapped[float] = mapped_column(EpochTime())
    answered_at: Mapped[float | None] = mapped_column(EpochTime())
    ended_at: Mapped[float | None] = mapped_column(EpochTime())
    end_reason: Mapped[str | None] = mapped_column(String(REASON_LEN))
    next_deadline: Mapped[float | None] = mapped_column(EpochTime())
    version: Mapped[int] = mapped_column(Integer)
    snapshot: Mapped[str] = mapped_column(Text)


class ParticipantRow(Base):
    """``call_participants``: one row per (call, user)."""

    __tablename__ = "call_participants"
    __table_args__ = (
        CheckConstraint(one_of("role", ROLES), name="role"),
        partial_index("ix_call_participants_live", "user_id", where="end_reason IS NULL"),
        {"sqlite_with_rowid": False},  # migration 0004
    )

    call_id: Mapped[str] = mapped_column(
        String(ID_LEN), ForeignKey("calls.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(String(ID_LEN), ForeignKey("users.id"), primary_key=True, index=True)
    role: Mapped[str] = mapped_column(String(8))
    state: Mapped[str] = mapped_column(String(STATE_LEN))
    end_reason: Mapped[str | None] = mapped_column(String(REASON_LEN))
    invited_at: Mapped[float] = mapped_column(EpochTime())
    joined_at: Mapped[float | None] = mapped_column(EpochTime())
    left_at: Mapped[float | None] = mapped_column(EpochTime())
    answered_device_id: Mapped[str | None] = mapped_column(String(ID_LEN), ForeignKey("user_devices.id"))


class LegRow(Base):
    """``call_device_legs``: one row per (call, device); belongs to a participant."""

    __tablename__ = "call_device_legs"
    __table_args__ = (
        ForeignKeyConstraint(
            ["call_id", "user_id"],
            ["call_participants.call_id", "call_participants.user_id"],
            ondelete="CASCADE",
        ),
        {"sqlite_with_rowid": False},  # migration 0004
    )

    call_id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(ID_LEN))
    device_id: Mapped[str] = mapped_column(String(ID_LEN), ForeignKey("user_devices.id"), primary_key=True)
    state: Mapped[str] = mapped_column(String(STATE_LEN))
    end_reason: Mapped[str | None] = mapped_column(String(REASON_LEN))
    updated_at: Mapped[float] = mapped_column(EpochTime())


def _table(model: type[Base]) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


users = _table(UserRow)
devices = _table(DeviceRow)
tokens = _table(TokenRow)
invites = _table(InviteRow)
calls = _table(CallRow)
participants = _table(ParticipantRow)
legs = _table(LegRow)
