"""The hot queries use the partial indexes of migration 0002 (SQLite's EXPLAIN QUERY PLAN); the
writes of a call set-up touch no index 0003 dropped."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from facecall.store import Store
from facecall.store.calls import (
    DUE_CALLS,
    LIVE_CALLS_OF_USER,
    RINGING_BETWEEN,
    UNENDED_CALLS,
    UPDATE_CALL_NARROW,
)
from facecall.store.driver import Q, SqliteDialect
from facecall.store.history import MY_CALLS, OTHERS
from facecall.store.sqlite_driver import SqliteDatabase
from tests.store.factories import T0

FULL_SCAN = re.compile(r"SCAN (calls|call_participants)(?! USING)")
NOW = SqliteDialect().time(T0)
PLANS = [
    (LIVE_CALLS_OF_USER, ("u",), "ix_call_participants_live"),
    (RINGING_BETWEEN, ("a", "b"), "ix_calls_ringing"),
    (DUE_CALLS, (NOW, 100), "ix_calls_due"),
    (UNENDED_CALLS, (), "ix_calls_due"),  # every call not ended, few: sorted after the read
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


async def test_narrow_update_finds_the_call_by_primary_key(tmp_path: Path) -> None:
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path}/plans.db")
    try:
        db = store._db
        assert isinstance(db, SqliteDatabase)
        params = ("c", "video", "active", "u", None, T0, T0, None, None, None, "{}", 1)
        plan = await db.reader.submit(_plan, UPDATE_CALL_NARROW, params)
        assert "sqlite_autoindex_calls_1 (id=?)" in plan, plan
    finally:
        await store.close()


def _without_rowid(conn: sqlite3.Connection) -> set[str]:
    rows = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'")
    return {name for name, sql in rows if sql.rstrip().endswith("WITHOUT ROWID")}


def _indexes(conn: sqlite3.Connection, table: str) -> set[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?", (table,))
    return {row[0] for row in rows}


async def test_call_tables_keep_only_queried_indexes(tmp_path: Path) -> None:
    """Each index costs every call write: those left are the queried ones (and primary keys)."""
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path}/plans.db")
    try:
        db = store._db
        assert isinstance(db, SqliteDatabase)
        assert await db.reader.submit(_indexes, "calls") == {
            "sqlite_autoindex_calls_1", "ix_calls_ringing", "ix_calls_due"
        }
        participants = await db.reader.submit(_indexes, "call_participants")
        assert participants == {"ix_call_participants_user_id", "ix_call_participants_live"}
        assert await db.reader.submit(_indexes, "call_device_legs") == set()
        # the child tables are clustered on their primary key (WITHOUT ROWID, migration 0004)
        assert await db.reader.submit(_without_rowid) == {"call_participants", "call_device_legs"}
    finally:
        await store.close()
