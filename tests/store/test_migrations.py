"""Migrations: upgrade from empty matches the models, downgrade to base, the CLI entry point."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

import facecall.store
from facecall.store import Store
from facecall.store.__main__ import main
from facecall.store.db import create_engine
from facecall.store.migrate import current_revision, head_revision, migrate_url, run_migrations
from facecall.store.models import Base
from tests.store.factories import T0

TABLES = {"users", "user_devices", "auth_tokens", "invites", "calls", "call_participants", "call_device_legs"}


def _tables(conn: Connection) -> set[str]:
    return set(inspect(conn).get_table_names()) - {"alembic_version"}


def _diff(conn: Connection) -> list[object]:
    context = MigrationContext.configure(conn, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


async def test_upgrade_from_empty_matches_models_and_downgrade_to_base(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(_tables) == set()
        assert await current_revision(engine) is None
        await run_migrations(engine, "upgrade", "head")
        assert await current_revision(engine) == head_revision() == "0008"
        async with engine.connect() as conn:
            assert await conn.run_sync(_tables) == TABLES
            assert await conn.run_sync(_diff) == []
        await run_migrations(engine, "upgrade", "head")  # idempotent
        await run_migrations(engine, "downgrade", "base")
        assert await current_revision(engine) is None
        async with engine.connect() as conn:
            assert await conn.run_sync(_tables) == set()
    finally:
        await engine.dispose()
    # and back up again, usable
    store = await Store.open(database_url)
    try:
        user = await store.create_user("after", "After", "h", T0)
        assert await store.get_user(user.id) == user
    finally:
        await store.close()


async def test_open_without_migrate_does_not_create_tables(database_url: str) -> None:
    store = await Store.open(database_url, migrate=False)
    await store.close()
    assert await migrate_url(database_url, "upgrade", "head") == "0008"
    assert await migrate_url(database_url, "downgrade", "base") is None


async def test_unknown_migration_action(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        with pytest.raises(ValueError, match="sideways"):
            await run_migrations(engine, "sideways")
    finally:
        await engine.dispose()


def test_cli_migrate_current_downgrade(database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    def cli(*args: str) -> str:
        assert main([*args, "--database-url", database_url]) == 0
        return capsys.readouterr().out.strip()

    assert cli("current") == "base (head: 0008)"
    assert cli("migrate") == "upgraded to 0008"
    assert cli("current") == "0008 (head: 0008)"
    assert cli("downgrade", "--revision", "base") == "downgraded to base"
    # and once as a real `python -m facecall.store` process
    env = {**os.environ, "FACECALL_DATABASE_URL": database_url}
    done = subprocess.run(
        [sys.executable, "-m", "facecall.store", "migrate"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "upgraded to 0008"
    assert cli("current") == "0008 (head: 0008)"


def test_alembic_command_with_packaged_ini(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ini = Path(facecall.store.__file__).with_name("alembic.ini")
    url = f"sqlite+aiosqlite:///{tmp_path}/cmd.db"
    base = [sys.executable, "-m", "alembic", "-c", str(ini), "-x", f"database_url={url}"]
    for args, expected in ((["upgrade", "head"], "0008"), (["downgrade", "base"], "base")):
        done = subprocess.run([*base, *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert main(["current", "--database-url", url]) == 0
        assert capsys.readouterr().out.strip() == f"{expected} (head: 0008)"


async def test_nodes_opening_a_fresh_database_at_once(database_url: str) -> None:
    stores = await asyncio.gather(*(Store.open(database_url) for _ in range(3)))
    try:
        users = [await s.create_user(f"n{i}", "N", "h", T0) for i, s in enumerate(stores)]
        assert len(await stores[0].get_users([u.id for u in users])) == 3
    finally:
        for s in stores:
            await s.close()
