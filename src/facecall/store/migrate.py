"""Alembic, configured from code so that migrations run from an installed package.

The scripts live in ``facecall/store/migrations``; no ``alembic.ini`` is needed. Migrations run
on a connection the store hands to Alembic (``config.attributes["connection"]``), inside one
transaction; on PostgreSQL an advisory lock serialises nodes migrating at the same time.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import StaticPool

from facecall.store.db import (
    WRITE_OPTION,
    create_engine,
    is_sqlite_memory,
    shown_url,
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


def known_revisions() -> list[str]:
    """Every revision among the packaged scripts, oldest first."""
    script = ScriptDirectory.from_config(alembic_config())
    return [r.revision for r in reversed(list(script.walk_revisions()))]


class UnknownRevision(Exception):
    """The database is at a revision this facecall has no script for: a newer facecall
    migrated it. ``str()`` says so in one line."""

    def __init__(self, revision: str) -> None:
        self.revision = revision
        super().__init__(
            f"the database is at revision {revision!r}, which this facecall does not know (its "
            f"newest is {head_revision()!r}): a newer facecall migrated it; run that version, "
            "or a backup made for this one")


def check_known_revision(connection: Connection) -> None:
    """Raise :class:`UnknownRevision` when the database is at a revision newer than ours."""
    current = _current(connection)
    if current is not None and current not in known_revisions():
        raise UnknownRevision(current)


def _run(connection: Connection, action: str, revision: str) -> None:
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({PG_MIGRATION_LOCK})")
    check_known_revision(connection)
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


def _cause(exc: BaseException) -> BaseException:
    """The driver's own exception behind SQLAlchemy's wrapping of it."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        exc = exc.orig
        if exc.__cause__ is not None:  # asyncpg's, under SQLAlchemy's adapted DB-API error
            exc = exc.__cause__
    return exc


def database_problem(exc: BaseException, url: str) -> str | None:
    """One line saying why ``url`` could not be opened or migrated (``exc``, as
    :meth:`facecall.store.Store.open`, :func:`migrate_url` and :func:`current_revision`
    raise it), the URL without its password; None when ``exc`` is not such a failure (a bug)."""
    import asyncpg

    shown = shown_url(url)
    cause = _cause(exc)
    text = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
    if isinstance(cause, UnknownRevision):
        return f"{shown}: {cause}"
    if isinstance(cause, CommandError):
        return f"cannot migrate {shown}: {text}"
    if isinstance(cause, sqlite3.Error) or (isinstance(cause, OSError)
                                            and make_url(url).get_backend_name() == "sqlite"):
        if isinstance(cause, OSError):
            text = cause.strerror or text
        hint = ""
        if "unable to open" in text:
            hint = " (does its directory exist, and may this user write there?)"
        return f"cannot open the database {shown}: {text}{hint}"
    if isinstance(cause, asyncpg.PostgresError | asyncpg.InterfaceError):
        return f"cannot use the database {shown}: {text}"
    if isinstance(cause, TimeoutError | asyncio.TimeoutError):
        return f"cannot reach the database {shown}: timed out"
    if isinstance(cause, ConnectionRefusedError):
        return f"cannot reach the database {shown}: connection refused (is the server running?)"
    if isinstance(cause, OSError):
        return f"cannot reach the database {shown}: {cause.strerror or text}"
    return None
