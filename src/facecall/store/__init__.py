"""facecall.store -- pure persistence: tables, Alembic migrations and repositories.

SQLite (``sqlite+aiosqlite:///path``) by default, PostgreSQL (``postgresql+asyncpg://...``) for
scale-out. Everything is async; timestamps are float epoch seconds (UTC); records are frozen
dataclasses. No business rules live here.
"""

from facecall.store.errors import (
    CallExists,
    Conflict,
    InvalidInput,
    InviteNotUsable,
    NotFound,
    StaleVersion,
    StoreError,
    TokenExists,
    UsernameTaken,
)
from facecall.store.records import (
    MISSED_REASONS,
    CallWrite,
    DeviceRecord,
    HistoryEntry,
    HistoryParty,
    InviteRecord,
    LegRecord,
    LegWrite,
    ParticipantRecord,
    ParticipantWrite,
    StoredCall,
    TokenRecord,
    UserRecord,
)
from facecall.store.store import Store

__all__ = [
    "MISSED_REASONS",
    "CallExists",
    "CallWrite",
    "Conflict",
    "DeviceRecord",
    "HistoryEntry",
    "HistoryParty",
    "InvalidInput",
    "InviteNotUsable",
    "InviteRecord",
    "LegRecord",
    "LegWrite",
    "NotFound",
    "ParticipantRecord",
    "ParticipantWrite",
    "StaleVersion",
    "Store",
    "StoreError",
    "StoredCall",
    "TokenExists",
    "TokenRecord",
    "UserRecord",
    "UsernameTaken",
]
