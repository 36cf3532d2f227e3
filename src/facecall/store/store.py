"""The :class:`Store`: every repository method over one async engine."""

from __future__ import annotations

from facecall.store.accounts import AccountsRepository
from facecall.store.calls import CallsRepository
from facecall.store.db import Database, create_engine, is_sqlite_memory
from facecall.store.history import HistoryRepository
from facecall.store.migrate import run_migrations


class Store(AccountsRepository, CallsRepository, HistoryRepository):
    """Pure persistence for facecall: users, devices, tokens, calls and history.

    Open with :meth:`open`; every method is one transaction. Works on SQLite (aiosqlite) and
    PostgreSQL (asyncpg) alike.
    """

    def __init__(self, db: Database, url: str) -> None:
        self._db = db
        self.url = url

    @classmethod
    async def open(cls, url: str, *, migrate: bool = True) -> Store:
        """Create the engine for ``url`` and, unless ``migrate=False``, run
        ``alembic upgrade head`` on it."""
        engine = create_engine(url)
        memory = is_sqlite_memory(url)
        try:
            if migrate:
                await run_migrations(engine, "upgrade", "head")
        except BaseException:
            await engine.dispose()
            raise
        return cls(Database(engine, memory=memory), url)

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._db.dialect

    async def close(self) -> None:
        """Close every pooled connection."""
        await self._db.engine.dispose()
