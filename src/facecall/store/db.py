"""SQLAlchemy engines, used for migrations (Alembic) and by the ``alembic`` command.

The store's own queries do not go through SQLAlchemy (see :mod:`facecall.store.driver`); the
engine made here is configured the same way: WAL journal, foreign keys on, a busy timeout, and
write transactions that start with ``BEGIN IMMEDIATE`` so that a transaction never fails
half-way when upgrading a read lock.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from facecall.store.sqlite_driver import SQLITE_BUSY_TIMEOUT_MS, SQLITE_PRAGMAS

__all__ = ["SQLITE_BUSY_TIMEOUT_MS", "asyncpg_dsn", "create_engine", "is_sqlite_memory", "shown_url",
           "sqlite_path", "write_transaction"]

WRITE_OPTION = "facecall_write"


def is_sqlite_memory(url: str) -> bool:
    """True for an in-memory SQLite URL (``sqlite+aiosqlite://`` or ``...:///:memory:``)."""
    parsed = make_url(url)
    return parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:")


def sqlite_path(url: str) -> str | None:
    """The file of a SQLite URL, or None for PostgreSQL and in-memory SQLite."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or is_sqlite_memory(url):
        return None
    return str(parsed.database)


def asyncpg_dsn(url: str) -> str:
    """The libpq-style DSN asyncpg parses itself (``sslmode`` and the other query parameters
    included) for a ``postgresql+asyncpg://`` URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def shown_url(url: str) -> str:
    """``url`` with its password masked, for logs and messages."""
    return make_url(url).render_as_string(hide_password=True)


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let the begin listener emit BEGIN itself (the driver would otherwise begin lazily).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in SQLITE_PRAGMAS:
        cursor.execute(pragma)
    cursor.close()


def _on_sqlite_begin(conn: Connection) -> None:
    write = conn.get_execution_options().get(WRITE_OPTION, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def sqlite_listeners(engine: Engine) -> None:
    """Install the connect and begin listeners on a (sync) SQLite engine."""
    event.listen(engine, "connect", _on_sqlite_connect)
    event.listen(engine, "begin", _on_sqlite_begin)


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An :class:`AsyncEngine` for ``url`` (``sqlite+aiosqlite://...`` or
    ``postgresql+asyncpg://...``), configured like the store's own connections."""
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        if is_sqlite_memory(url):
            kwargs.setdefault("poolclass", StaticPool)
        engine = create_async_engine(url, **kwargs)
        sqlite_listeners(engine.sync_engine)
        return engine
    # asyncpg parses the URL itself, as the store's own pool does (pg_driver): SQLAlchemy would
    # hand each query parameter to asyncpg.connect() as a keyword, and libpq's (sslmode=...,
    # the standard way to say it) are not asyncpg's keywords
    import asyncpg

    dsn = asyncpg_dsn(url)
    kwargs.setdefault("async_creator", lambda: asyncpg.connect(dsn))
    return create_async_engine(url, **kwargs)


@contextlib.asynccontextmanager
async def write_transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A write transaction on ``engine``: committed if the block succeeds, rolled back if it raises."""
    async with engine.connect() as conn:
        await conn.execution_options(**{WRITE_OPTION: True})
        async with conn.begin():
            yield conn
