"""Concurrency and durability: no lost rows, data survives a reopen, timestamps round-trip."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from facecall.store import Store
from facecall.store.driver import ONE, Body, Dialect, Q
from facecall.store.sqlite_driver import SqliteDatabase
from tests.store.factories import T0, ringing_call, token_hash, user_with_device


async def test_concurrent_writers_lose_nothing(store: Store) -> None:
    other = await Store.open(store.url)
    try:
        users = [await store.create_user(f"u{i}", f"U{i}", "h", T0) for i in range(4)]

        async def register(s: Store, user_index: int, n: int) -> None:
            user = users[user_index]
            device = await s.create_device(user.id, "sdk", f"bot-{n}", T0 + n)
            await s.create_token(token_hash(f"{user.id}/{n}"), user.id, device.id, T0 + n, None)
            await s.touch_device(device.id, T0 + n + 1)

        jobs = [register(store if n % 2 else other, n % 4, n) for n in range(40)]
        await asyncio.gather(*jobs)
        per_user = await other.list_devices_of_users([u.id for u in users])
        assert sorted(len(d) for d in per_user.values()) == [10, 10, 10, 10]
        for n in range(40):
            resolved = await store.resolve_token(token_hash(f"{users[n % 4].id}/{n}"), T0 + 100)
            assert resolved is not None and resolved.user_id == users[n % 4].id
    finally:
        await other.close()


def _scalar(_d: Dialect, sql: str) -> Body[Any]:
    row = yield ONE, Q.of(sql), ()
    return None if row is None else row[0]


async def raw_scalar(store: Store, sql: str) -> Any:
    """The first column of the first row of ``sql``, run on the store's own connections."""
    return await store._db.read(_scalar, sql)


async def test_data_survives_close_and_reopen(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/facecall.db"
    store = await Store.open(url)
    alice, a_dev = await user_with_device(store, "alice")
    bob, b_dev = await user_with_device(store, "bob")
    call = ringing_call(alice, a_dev, [(bob, b_dev)], snapshot={"kept": ["across", "restarts"]})
    await store.create_call(call)
    await store.create_token(token_hash("t"), alice.id, a_dev.id, T0, T0 + 3600)
    await store.close()

    reopened = await Store.open(url)
    try:
        assert await reopened.get_user_by_username("Alice") == alice
        assert await reopened.list_devices(bob.id) == [b_dev]
        loaded = await reopened.load_call(call.call_id)
        assert loaded is not None and loaded.snapshot == {"kept": ["across", "restarts"]}
        assert await reopened.due_calls(T0 + 30) == [call.call_id]
        assert await reopened.unended_calls() == [call.call_id]
        token = await reopened.resolve_token(token_hash("t"), T0 + 1)
        assert token is not None and token.device_id == a_dev.id
    finally:
        await reopened.close()


async def test_sqlite_settings(tmp_path: Path) -> None:
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path}/s.db")
    try:
        db = store._db
        assert isinstance(db, SqliteDatabase) and db.reader is not db.writer
        pragmas = ("journal_mode", "foreign_keys", "busy_timeout", "synchronous", "temp_store")
        assert db.inline is not None
        connections = [[db.inline.execute(f"PRAGMA {p}").fetchone()[0] for p in pragmas]]
        for worker in (db.reader, db.writer):
            connections.append([
                await worker.submit(lambda conn, p=pragma: conn.execute(f"PRAGMA {p}").fetchone()[0])
                for pragma in pragmas
            ])
        for settings in connections:  # synchronous NORMAL, temp_store MEMORY
            assert settings[:2] == ["wal", 1] and settings[3:] == [1, 2]
        # the worker threads wait for a lock; the loop's own connection never blocks the loop
        assert connections[0][2] == 0 and all(s[2] >= 1000 for s in connections[1:])
    finally:
        await store.close()


async def test_in_memory_sqlite_store() -> None:
    store = await Store.open("sqlite+aiosqlite://")
    try:
        users = await asyncio.gather(*(store.create_user(f"m{i}", "M", "h", T0) for i in range(10)))
        assert len(await store.get_users([u.id for u in users])) == 10
    finally:
        await store.close()


async def test_timestamps_round_trip_and_are_timezone_aware(store: Store) -> None:
    moments = [0.0, 1.5, T0 + 0.123456, 4_102_444_800.25]  # 1970 .. 2100
    for i, moment in enumerate(moments):
        user = await store.create_user(f"t{i}", "T", "h", moment)
        loaded = await store.get_user(user.id)
        assert loaded is not None and abs(loaded.created_at - moment) < 1e-6
    raw = await raw_scalar(store, "SELECT created_at FROM users WHERE username = 't2'")
    if store.dialect == "postgresql":
        assert isinstance(raw, datetime) and raw.utcoffset() is not None
        assert raw == datetime.fromtimestamp(T0 + 0.123456, tz=UTC)
    else:  # SQLite keeps REAL epoch seconds (migration 0003), exactly as given
        assert raw == T0 + 0.123456


class _BusyConnection:
    """Stands in for the inline read connection: every statement fails with SQLITE_BUSY."""

    in_transaction = False

    def __init__(self) -> None:
        self.calls = 0

    def execute(self, *_args: object) -> Any:
        self.calls += 1
        error = sqlite3.OperationalError("database is locked")
        error.sqlite_errorcode = sqlite3.SQLITE_BUSY  # type: ignore[attr-defined]
        raise error


async def test_inline_read_falls_back_to_reader_thread_when_busy(tmp_path: Path) -> None:
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path}/busy.db")
    try:
        db = store._db
        assert isinstance(db, SqliteDatabase) and db.inline is not None
        alice, a_dev = await user_with_device(store, "alice")
        real, busy = db.inline, _BusyConnection()
        db.inline = busy  # type: ignore[assignment]
        try:
            assert await store.get_users([alice.id]) == {alice.id: alice}
            assert await store.list_devices(alice.id) == [a_dev]
            assert busy.calls == 2
        finally:
            db.inline = real
    finally:
        await store.close()


async def test_a_new_sqlite_database_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    """It holds password and token hashes: 0600, as backups are, whatever the umask."""
    import stat

    from facecall.store import Store

    path = tmp_path / "new.db"
    store = await Store.open(f"sqlite+aiosqlite:///{path}")
    try:
        await store.create_user("alice", "Alice", "-", 1.0)
        for name in ("new.db", "new.db-wal", "new.db-shm"):
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
    finally:
        await store.close()
    kept = tmp_path / "kept.db"
    kept.touch(mode=0o640)
    kept.chmod(0o640)
    store = await Store.open(f"sqlite+aiosqlite:///{kept}")
    await store.close()
    assert stat.S_IMODE(kept.stat().st_mode) == 0o640  # the owner's choice stays
