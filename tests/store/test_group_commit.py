"""Group commit: writes queued together share one SQLite transaction, a savepoint each; one
failing write takes no other down, and nobody hears of success before the COMMIT."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from facecall.store import Store, sqlite_driver
from facecall.store.driver import (
    COUNT,
    Body,
    Dialect,
    IntegrityViolation,
    Q,
)
from facecall.store.errors import StaleVersion
from facecall.store.sqlite_driver import SqliteDatabase, run_sqlite_group
from tests.store.factories import T0, ended, ringing_call, user_with_device


def _hold_writer(db: SqliteDatabase) -> tuple[threading.Event, asyncio.Future[Any]]:
    """Keep the writer thread busy until the event is set, so that writes queue up behind it."""
    gate = threading.Event()
    return gate, db.writer.submit(lambda _conn: gate.wait(10))


async def test_concurrent_transitions_one_stale_the_others_committed(store: Store) -> None:
    caller, caller_dev = await user_with_device(store, "caller")
    callees = [await user_with_device(store, f"callee{i}") for i in range(4)]
    calls = [ringing_call(caller, caller_dev, [c]) for c in callees]
    for call in calls:
        await store.create_call(call)
    groups_before = inline_before = 0
    if isinstance(store._db, SqliteDatabase):
        groups_before, inline_before = store._db.writer.groups, store._db.inline_groups
    # the third save expects a version the call never had: it fails alone
    saves = [store.save_call(ended(call, T0 + 5, "cancelled"), 7 if i == 2 else 1)
             for i, call in enumerate(calls)]
    results = await asyncio.gather(*saves, return_exceptions=True)
    assert isinstance(results[2], StaleVersion)
    assert [r for i, r in enumerate(results) if i != 2] == [2, 2, 2]
    for i, call in enumerate(calls):
        stored = await store.load_call(call.call_id)
        assert stored is not None
        assert stored.state == ("ringing" if i == 2 else "ended")
        assert stored.version == (1 if i == 2 else 2)
        assert {leg.state for leg in stored.legs} == ({"connected", "ringing"} if i == 2
                                                      else {"ended"})
    if isinstance(store._db, SqliteDatabase):
        assert store._db.writer.groups == groups_before  # all four committed on the loop...
        assert store._db.inline_groups == inline_before + 1  # ...in one transaction


async def test_the_writer_thread_checkpoints_the_wal_every_so_many_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Transactions on the loop never checkpoint (that would stall the loop); every
    ``CHECKPOINT_EVERY`` of them the writer thread copies the WAL into the database."""
    monkeypatch.setattr(sqlite_driver, "CHECKPOINT_EVERY", 3)
    ran_on: list[str] = []
    real = sqlite_driver._checkpoint

    def checkpoint(conn: sqlite3.Connection) -> None:
        ran_on.append(threading.current_thread().name)
        real(conn)

    monkeypatch.setattr(sqlite_driver, "_checkpoint", checkpoint)
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path}/g.db")
    try:
        db = store._db
        assert isinstance(db, SqliteDatabase)
        caller, caller_dev = await user_with_device(store, "caller")
        callee = await user_with_device(store, "callee")
        await db.writer.submit(lambda _conn: None)  # a checkpoint the set-up asked for has run
        ran_on.clear()
        db._since_checkpoint = 0
        for _ in range(7):
            await store.create_call(ringing_call(caller, caller_dev, [callee]))
        await db.writer.submit(lambda _conn: None)  # the writer thread is done with its queue
        assert ran_on == ["facecall-sqlite-writer"] * 2
        other = sqlite3.connect(tmp_path / "g.db")
        try:  # everything committed is in the WAL or the database: all 7 calls are there
            assert other.execute("SELECT count(*) FROM calls").fetchone() == (7,)
        finally:
            other.close()
    finally:
        await store.close()


async def _thread_writing_store(tmp_path: Path) -> Store:
    """A store whose writes all go to the writer thread (as when the file is locked)."""
    url = f"sqlite+aiosqlite:///{tmp_path}/g.db"
    await (await Store.open(url)).close()  # migrated
    return Store(SqliteDatabase(str(tmp_path / "g.db"), memory=False, inline_writes=False), url)


async def test_writer_thread_groups_queued_writes(tmp_path: Path) -> None:
    store = await _thread_writing_store(tmp_path)
    try:
        db = store._db
        assert isinstance(db, SqliteDatabase)
        caller, caller_dev = await user_with_device(store, "caller")
        calls = [ringing_call(caller, caller_dev, [await user_with_device(store, f"c{i}")])
                 for i in range(3)]
        gate, held = _hold_writer(db)
        tasks = [asyncio.ensure_future(store.create_call(c)) for c in calls]
        await asyncio.sleep(0.05)
        assert not any(t.done() for t in tasks)  # nobody is answered before the COMMIT
        before = db.writer.groups
        gate.set()
        await held
        assert await asyncio.gather(*tasks) == [1, 1, 1]
        assert db.writer.groups == before + 1
        for call in calls:
            assert (await store.load_call(call.call_id)) is not None
    finally:
        await store.close()


async def test_a_locked_database_sends_inline_writes_to_the_writer_thread(tmp_path: Path) -> None:
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path}/g.db")
    other = sqlite3.connect(tmp_path / "g.db", isolation_level=None)
    try:
        db = store._db
        assert isinstance(db, SqliteDatabase)
        caller, caller_dev = await user_with_device(store, "caller")
        call = ringing_call(caller, caller_dev, [await user_with_device(store, "callee")])
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        before = db.writer.groups
        task = asyncio.ensure_future(store.create_call(call))
        await asyncio.sleep(0.2)
        assert not task.done()  # the writer thread waits for the lock (busy timeout)
        other.execute("ROLLBACK")
        assert await task == 1
        assert db.writer.groups == before + 1
        assert (await store.load_call(call.call_id)) is not None
    finally:
        other.close()
        await store.close()


async def test_a_write_that_breaks_a_constraint_fails_alone(tmp_path: Path) -> None:
    store = await _thread_writing_store(tmp_path)
    try:
        db = store._db
        assert isinstance(db, SqliteDatabase)
        caller, caller_dev = await user_with_device(store, "caller")
        callee = await user_with_device(store, "callee")
        good = ringing_call(caller, caller_dev, [callee])
        twin = ringing_call(caller, caller_dev, [callee])
        gate, held = _hold_writer(db)
        first = asyncio.ensure_future(store.create_call(good))
        again = asyncio.ensure_future(store.create_call(replace(twin, call_id=good.call_id)))
        other = asyncio.ensure_future(store.create_call(twin))
        await asyncio.sleep(0.05)
        gate.set()
        await held
        outcomes = await asyncio.gather(first, again, other, return_exceptions=True)
        assert outcomes[0] == 1 and outcomes[2] == 1
        assert isinstance(outcomes[1], Exception)  # CallExists, explained after the rollback
        assert (await store.load_call(good.call_id)) is not None
        assert (await store.load_call(twin.call_id)) is not None
    finally:
        await store.close()


_MAKE = Q.of("CREATE TABLE IF NOT EXISTS parent (id INTEGER PRIMARY KEY)")
_MAKE_CHILD = Q.of(
    "CREATE TABLE IF NOT EXISTS child (id INTEGER PRIMARY KEY, parent INTEGER REFERENCES parent(id))"
)
_ADD_PARENT = Q.of("INSERT INTO parent (id) VALUES ($1)")
_ADD_CHILD = Q.of("INSERT INTO child (id, parent) VALUES ($1, $2)")


def _stmt(q: Q, *params: Any) -> Body[int]:
    changed: int = yield COUNT, q, params
    return changed


def _raises(_d: Dialect | None = None) -> Body[int]:
    yield COUNT, _ADD_PARENT, (99,)
    raise ValueError("the body gives up after a write")


def _count(conn: sqlite3.Connection, table: str) -> int:
    return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


@pytest.fixture
def conn(tmp_path: Path) -> Any:
    from facecall.store.sqlite_driver import sqlite_connect

    c = sqlite_connect(str(tmp_path / "raw.db"))
    run_sqlite_group(c, [_stmt(_MAKE), _stmt(_MAKE_CHILD)])
    yield c
    c.close()


def test_group_keeps_each_bodys_outcome(conn: sqlite3.Connection) -> None:
    outcomes = run_sqlite_group(conn, [
        _stmt(_ADD_PARENT, 1), _raises(), _stmt(_ADD_PARENT, 1), _stmt(_ADD_PARENT, 2),
    ])
    assert outcomes[0] == (1, None) and outcomes[3] == (1, None)
    assert isinstance(outcomes[1][1], ValueError)
    assert isinstance(outcomes[2][1], IntegrityViolation)  # duplicate key: this body only
    assert not conn.in_transaction
    assert [r[0] for r in conn.execute("SELECT id FROM parent ORDER BY id")] == [1, 2]


def test_a_failed_commit_fails_every_body(conn: sqlite3.Connection) -> None:
    # with deferred foreign keys, the violation is found at COMMIT: nothing may be reported
    # as written, and nothing is
    conn.execute("PRAGMA defer_foreign_keys=ON")
    outcomes = run_sqlite_group(conn, [_stmt(_ADD_PARENT, 5), _stmt(_ADD_CHILD, 1, 404)])
    assert all(error is not None for _, error in outcomes)
    assert not conn.in_transaction
    assert _count(conn, "parent") == 0 and _count(conn, "child") == 0
