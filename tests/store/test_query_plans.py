"""The hot queries use the partial indexes of migration 0002 (SQLite's EXPLAIN QUERY PLAN), and
0002 upgrades and downgrades a database holding data."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from facecall.store import Store
from facecall.store.calls import DUE_CALLS, LIVE_CALLS_OF_USER, RINGING_BETWEEN, UNENDED_CALLS
from facecall.store.driver import Q, SqliteDialect
from facecall.store.history import MY_CALLS, OTHERS
from facecall.store.migrate import migrate_url
from facecall.store.sqlite_driver import SqliteDatabase
from tests.store.factories import T0, ended, ringing_call, user_with_device

FULL_SCAN = re.compile(r"SCAN (calls|call_participants)(?! USING)")
NOW = SqliteDialect().time(T0)
PLANS = [
    (LIVE_CALLS_OF_USER, ("u",), "ix_call_participants_live"),
    (RINGING_BETWEEN, ("a", "b"), "ix_calls_ringing"),
    (DUE_CALLS, (NOW, 100), "ix_calls_due"),
    (UNENDED_CALLS, (), "ix_calls_unended"),
    (MY_CALLS, ("u", 50), "ix_call_participants_user_id"),
]


def _plan(conn: sqlite3.Connection, q: Q, params: tuple[object, ...]) -> str:
    sql = q.sqlite_for(len(params[-1])) if q.list_param else q.sqlite  # type: ignore[arg-type]
    flat = (*params[:-1], *params[-1]) if q.list_param else params  # type: ignore[misc]
    return " / ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", flat))


@pytest.mark.parametrize(("query", "params", "index"), PLANS, ids=lambda v: v if isinstance(v, str) else "")
async def test_hot_query_uses_index(tmp_path: Path, query: Q, params: tuple[object, ...], index: str) -> None:
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path}/plans.db")
    try:
        db = store._db
        assert isinstance(db, SqliteDatabase)
        plan = await db.reader.submit(_plan, query, params)
        assert index in plan, plan
        assert not FULL_SCAN.search(plan), plan  # scanning a (partial) index is fine
    finally:
        await store.close()


async def test_history_others_by_primary_key(tmp_path: Path) -> None:
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path}/plans.db")
    try:
        db = store._db
        assert isinstance(db, SqliteDatabase)
        plan = await db.reader.submit(_plan, OTHERS, ("u", ["c1", "c2"]))
        assert not FULL_SCAN.search(plan), plan
    finally:
        await store.close()


async def test_0002_upgrades_and_downgrades_with_data(database_url: str) -> None:
    assert await migrate_url(database_url, "upgrade", "0001") == "0001"
    store = await Store.open(database_url, migrate=False)
    try:
        alice, a_dev = await user_with_device(store, "alice")
        bob, b_dev = await user_with_device(store, "bob")
        live = ringing_call(alice, a_dev, [(bob, b_dev)])
        done = ringing_call(alice, a_dev, [(bob, b_dev)], created_at=T0 - 100)
        await store.create_call(live)
        await store.create_call(done)
        await store.save_call(ended(done, T0 - 50, "cancelled"), 1)
    finally:
        await store.close()
    for revision in ("head", "0001", "head"):
        assert await migrate_url(database_url, "upgrade" if revision == "head" else "downgrade", revision)
        store = await Store.open(database_url, migrate=False)
        try:
            assert await store.live_calls_of_user(bob.id) == [live.call_id]
            assert await store.ringing_calls_between(alice.id, bob.id) == [live.call_id]
            assert await store.due_calls(T0 + 60) == [live.call_id]
            assert await store.unended_calls() == [live.call_id]
            assert [e.call_id for e in await store.call_history(bob.id)] == [live.call_id, done.call_id]
        finally:
            await store.close()
