"""Engine creation and transactions, with the SQLite settings the store relies on.

SQLite: WAL journal, foreign keys on, a busy timeout, and write transactions that start with
``BEGIN IMMEDIATE`` so that a transaction never fails half-way when upgrading a read lock. Within
one process, SQLite writers also queue on an :class:`asyncio.Lock` instead of spinning in
SQLite's busy handler; other processes are handled by the busy timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

#: milliseconds SQLite waits for another process's write lock before giving up
SQLITE_BUSY_TIMEOUT_MS = 10_000
_WRITE_OPTION = "facecall_write"


def is_sqlite_memory(url: str) -> bool:
    """True for an in-memory SQLite URL (``sqlite+aiosqlite://`` or ``...:///:memory:``)."""
    parsed = make_url(url)
    return parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:")


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let the begin listener emit BEGIN itself (the driver would otherwise begin lazily).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _on_sqlite_begin(conn: Connection) -> None:
    write = conn.get_execution_options().get(_WRITE_OPTION, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An :class:`AsyncEngine` for ``url`` (``sqlite+aiosqlite://...`` or
    ``postgresql+asyncpg://...``), configured for the store."""
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        if is_sqlite_memory(url):
            kwargs.setdefault("poolclass", StaticPool)
        engine = create_async_engine(url, **kwargs)
        event.listen(engine.sync_engine, "connect", _on_sqlite_connect)
        event.listen(engine.sync_engine, "begin", _on_sqlite_begin)
        return engine
    return create_async_engine(url, **kwargs)


class Database:
    """An engine plus the two kinds of transaction the repositories use."""

    def __init__(self, engine: AsyncEngine, *, memory: bool = False) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._sqlite = self.dialect == "sqlite"
        # An in-memory database is a single shared connection: serialise everything on it.
        self._memory = memory
        self._lock = asyncio.Lock()

    def _guard(self, write: bool) -> contextlib.AbstractAsyncContextManager[Any]:
        if self._memory or (self._sqlite and write):
            return self._lock
        return contextlib.nullcontext()

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read-only transaction (rolled back at the end)."""
        async with self._guard(False), self.engine.connect() as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction: committed if the block succeeds, rolled back if it raises."""
        async with self._guard(True), self.engine.connect() as conn:
            await conn.execution_options(**{_WRITE_OPTION: True})
            async with conn.begin():
                yield conn
