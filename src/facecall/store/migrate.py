"""Alembic, configured from code so that migrations run from an installed package.

The scripts live in ``facecall/store/migrations``; no ``alembic.ini`` is needed. Migrations run
on a connection the store hands to Alembic (``config.attributes["connection"]``), inside one
transaction; on PostgreSQL an advisory lock serialises nodes migrating at the same time.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import StaticPool

from facecall.store.db import (
    WRITE_OPTION,
    create_engine,
    is_sqlite_memory,
    sqlite_listeners,
    write_transaction,
)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
#: pg_advisory_xact_lock key held while migrating ("facecall" in ASCII, as an int64)
PG_MIGRATION_LOCK = 0x6661636563616C6C


def alembic_config(url: str | None = None) -> Config:
    """An Alembic :class:`Config` pointing at the packaged migration scripts."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision() -> str:
    """The newest revision among the packaged scripts."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def _run(connection: Connection, action: str, revision: str) -> None:
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({PG_MIGRATION_LOCK})")
    config = alembic_config()
    config.attributes["connection"] = connection
    if action == "upgrade":
        command.upgrade(config, revision)
    else:
        command.downgrade(config, revision)


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def run_migrations(engine: AsyncEngine, action: str = "upgrade", revision: str = "head") -> None:
    """``alembic upgrade|downgrade <revision>`` on ``engine``, in one transaction."""
    if action not in ("upgrade", "downgrade"):
        raise ValueError(f"unknown migration action: {action}")
    async with write_transaction(engine) as conn:
        await conn.run_sync(_run, action, revision)


def upgrade_sqlite_connection(connection: sqlite3.Connection) -> None:
    """``alembic upgrade head`` over an open stdlib SQLite connection (in ``BEGIN IMMEDIATE``).

    The store migrates on its own writer connection, which an in-memory database needs."""
    engine = create_sync_engine("sqlite://", creator=lambda: connection, poolclass=StaticPool)
    sqlite_listeners(engine)
    # not disposed: that would close the store's connection
    with engine.connect() as conn:
        conn = conn.execution_options(**{WRITE_OPTION: True})
        with conn.begin():
            _run(conn, "upgrade", "head")


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at, or None before the first migration."""
    async with engine.connect() as conn:
        return await conn.run_sync(_current)


async def migrate_url(url: str, action: str = "upgrade", revision: str = "head") -> str | None:
    """Open ``url``, migrate it, close it; returns the revision it ends up at."""
    if is_sqlite_memory(url):
        raise ValueError("migrating an in-memory database from its own engine is pointless")
    engine = create_engine(url)
    try:
        await run_migrations(engine, action, revision)
        return await current_revision(engine)
    finally:
        await engine.dispose()
