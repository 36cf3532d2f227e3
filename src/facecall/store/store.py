"""The :class:`Store`: every repository method over one database driver."""

from __future__ import annotations

from sqlalchemy.engine import make_url

from facecall.store.accounts import AccountsRepository
from facecall.store.calls import CallsRepository
from facecall.store.db import asyncpg_dsn, create_engine, sqlite_path
from facecall.store.driver import ONE, Body, Database, Dialect, Q
from facecall.store.history import HistoryRepository
from facecall.store.invites import InvitesRepository
from facecall.store.migrate import run_migrations, upgrade_sqlite_connection
from facecall.store.pg_driver import PgDatabase
from facecall.store.sqlite_driver import SqliteDatabase

PING = Q.of("SELECT 1")


def _ping(_d: Dialect) -> Body[None]:
    yield ONE, PING, ()


class Store(AccountsRepository, CallsRepository, HistoryRepository, InvitesRepository):
    """Pure persistence for facecall: users, devices, tokens, invitations, calls and history.

    Open with :meth:`open`; every method is one transaction. Works on SQLite (stdlib
    ``sqlite3`` on dedicated threads) and PostgreSQL (asyncpg) alike.
    """

    def __init__(self, db: Database, url: str) -> None:
        self._db = db
        self.url = url

    @classmethod
    async def open(cls, url: str, *, migrate: bool = True) -> Store:
        """Connect to ``url`` (``sqlite+aiosqlite://...`` or ``postgresql+asyncpg://...``) and,
        unless ``migrate=False``, run ``alembic upgrade head`` on it."""
        parsed = make_url(url)
        db: Database
        if parsed.get_backend_name() == "sqlite":
            path = sqlite_path(url)
            db = SqliteDatabase(path or ":memory:", memory=path is None)
            if migrate:
                try:
                    await db.writer.submit(upgrade_sqlite_connection)
                except BaseException:
                    await db.close()
                    raise
            return cls(db, url)
        if migrate:
            engine = create_engine(url)
            try:
                await run_migrations(engine, "upgrade", "head")
            finally:
                await engine.dispose()
        return cls(await PgDatabase.connect(asyncpg_dsn(url)), url)

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._db.dialect

    async def ping(self) -> None:
        """One trivial read; raises when the database does not answer it."""
        await self._db.read(_ping)

    async def close(self) -> None:
        """Close every connection."""
        await self._db.close()
