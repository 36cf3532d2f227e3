"""Migration 0003: SQLite timestamps become REAL epoch seconds (rows written before are converted
exactly, and back on downgrade); a database holding data migrates up and down on both backends."""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

from facecall.store import Store
from facecall.store.coltypes import EpochTime
from facecall.store.migrate import migrate_url
from facecall.store.models import Base
from tests.store.factories import T0, ended, ringing_call, user_with_device

#: every timestamp column of the models (the migration keeps a list of its own: this checks it)
TIME_COLUMNS = {
    table.name: tuple(c.name for c in table.columns if isinstance(c.type, EpochTime))
    for table in Base.metadata.sorted_tables
    if any(isinstance(c.type, EpochTime) for c in table.columns)
}
#: 1970, whole seconds, sub-microsecond rounding, the last microsecond of a second, 2100
MOMENTS = (0.0, T0, T0 + 0.123456, T0 + 0.9999994, T0 + 0.999999, 4_102_444_800.25)


def old_text(moment: float) -> str:
    """The text revision 0002 kept (the store's and SQLAlchemy's format: naive UTC, microseconds)."""
    return datetime.fromtimestamp(moment, tz=UTC).isoformat(" ", "microseconds")[:26]


def old_epoch(text: str) -> float:
    """What the store read back from that text before 0003."""
    return (datetime.fromisoformat(text) - datetime(1970, 1, 1)).total_seconds()


def _seed_0002(path: Path) -> dict[str, str]:
    """Rows as revision 0002 held them, one user per moment; returns user id -> stored text."""
    conn = sqlite3.connect(path, isolation_level=None)
    texts = {f"u{i}": old_text(m) for i, m in enumerate(MOMENTS)}
    texts["whole"] = "2023-11-14 22:13:20"  # no fraction: read as whole seconds
    with conn:
        for i, (uid, text) in enumerate(texts.items()):
            device = f"d-{uid}"
            conn.execute("INSERT INTO users VALUES (?, ?, 'N', 'h', ?)", (uid, f"name{i}", text))
            conn.execute(
                "INSERT INTO user_devices VALUES (?, ?, 'browser', 'b', ?, ?, NULL)",
                (device, uid, text, text),
            )
            conn.execute(
                "INSERT INTO auth_tokens VALUES (?, ?, ?, ?, ?, NULL)", (f"t-{uid}", uid, device, text, text)
            )
        t = texts["u2"]
        conn.execute(
            "INSERT INTO calls VALUES ('c1', 'video', 'ringing', 'u0', 'd-u0', ?, NULL, NULL, NULL, ?, 1, "
            "'{}')",
            (t, texts["u3"]),
        )
        part = "INSERT INTO call_participants VALUES ('c1', ?, ?, ?, NULL, ?, ?, NULL, NULL)"
        conn.execute(part, ("u0", "caller", "joined", t, t))
        conn.execute(part, ("u1", "callee", "ringing", t, None))
        conn.execute("INSERT INTO call_device_legs VALUES ('c1', 'u1', 'd-u1', 'ringing', NULL, ?)", (t,))
    conn.close()
    return texts


def _types(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {
            kind
            for table, columns in TIME_COLUMNS.items()
            for column in columns
            for (kind,) in conn.execute(f"SELECT DISTINCT typeof({column}) FROM {table}")
        } - {"null"}
    finally:
        conn.close()


async def test_0003_converts_text_timestamps_exactly_and_back(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    url = f"sqlite+aiosqlite:///{path}"
    assert await migrate_url(url, "upgrade", "0002") == "0002"
    texts = _seed_0002(path)
    assert await migrate_url(url, "upgrade", "head") == "0008"
    assert _types(path) <= {"real", "integer"}
    conn = sqlite3.connect(path)
    try:  # 0004 rebuilt the child tables: every row kept, every foreign key holds
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        assert conn.execute("SELECT count(*) FROM call_device_legs").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM call_participants").fetchone() == (2,)
    finally:
        conn.close()
    store = await Store.open(url, migrate=False)
    try:
        for uid, text in texts.items():
            user = await store.get_user(uid)
            assert user is not None and user.created_at == old_epoch(text)
            assert user.deleted_at is None  # 0005
            assert type(user.created_at) is float
            device = await store.get_device(f"d-{uid}")
            assert device is not None and device.last_seen_at == old_epoch(text)
        call = await store.load_call("c1")
        assert call is not None
        assert call.created_at == old_epoch(texts["u2"]) and call.next_deadline == old_epoch(texts["u3"])
        assert [p.invited_at for p in call.participants] == [old_epoch(texts["u2"])] * 2
        assert call.legs[0].updated_at == old_epoch(texts["u2"])
        assert await store.due_calls(old_epoch(texts["u3"])) == ["c1"]
        assert await store.due_calls(old_epoch(texts["u3"]) - 1e-6) == []
    finally:
        await store.close()
    assert await migrate_url(url, "downgrade", "0002") == "0002"
    conn = sqlite3.connect(path)
    try:
        back = dict(conn.execute("SELECT id, created_at FROM users"))
    finally:
        conn.close()
    assert back == {**texts, "whole": "2023-11-14 22:13:20.000000"}


async def test_migrations_up_and_down_with_data(database_url: str) -> None:
    store = await Store.open(database_url)
    try:
        alice, a_dev = await user_with_device(store, "alice")
        bob, b_dev = await user_with_device(store, "bob")
        live = ringing_call(alice, a_dev, [(bob, b_dev)], created_at=T0 + 0.123456)
        done = ringing_call(alice, a_dev, [(bob, b_dev)], created_at=T0 - 100)
        await store.create_call(live)
        await store.create_call(done)
        await store.save_call(ended(done, T0 - 50, "cancelled"), 1)
    finally:
        await store.close()
    steps = (("downgrade", "0001"), ("upgrade", "head"), ("downgrade", "0002"), ("upgrade", "head"))
    for action, revision in steps:
        assert await migrate_url(database_url, action, revision)
    store = await Store.open(database_url, migrate=False)
    try:
        assert await store.live_calls_of_user(bob.id) == [live.call_id]
        assert await store.ringing_calls_between(alice.id, bob.id) == [live.call_id]
        assert await store.due_calls(T0 + 60) == [live.call_id]
        assert await store.unended_calls() == [live.call_id]
        assert [e.call_id for e in await store.call_history(bob.id)] == [live.call_id, done.call_id]
        loaded = await store.load_call(live.call_id)
        assert loaded is not None and abs(loaded.created_at - live.created_at) < 1e-6
        assert loaded.next_deadline is not None and abs(loaded.next_deadline - (T0 + 30.123456)) < 1e-6
    finally:
        await store.close()


async def test_a_deleted_account_stays_deleted_across_a_downgrade(database_url: str) -> None:
    """0005's downgrade drops ``deleted_at``; upgrading again marks the erased rows anew."""
    store = await Store.open(database_url)
    try:
        alice, _ = await user_with_device(store, "alice")
        bob, _ = await user_with_device(store, "bob")
        await store.delete_user(alice.id, T0 + 1)
    finally:
        await store.close()
    assert await migrate_url(database_url, "downgrade", "0004") == "0004"
    before = time.time()
    assert await migrate_url(database_url, "upgrade", "head") == "0008"
    store = await Store.open(database_url, migrate=False)
    try:
        gone = await store.get_user(alice.id)
        assert gone is not None and gone.deleted_at is not None
        assert before - 1 <= gone.deleted_at <= time.time() + 1
        assert (await store.get_user(bob.id)).deleted_at is None  # type: ignore[union-attr]
        assert [u.username for u, _ in await store.list_users()] == ["bob"]
    finally:
        await store.close()
