"""`python -m facecall.store backup`: a consistent copy of a SQLite database that is in use."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from facecall.store import Store
from facecall.store.__main__ import main
from tests.store.factories import T0


async def test_backup_while_a_node_writes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'live.db'}"
    store = await Store.open(url)
    try:
        for i in range(50):
            await store.create_user(f"user{i}", f"User {i}", "h", T0)
        writing = True

        async def keep_writing() -> int:
            n = 0
            while writing:
                await store.create_user(f"later{n}", "Later", "h", T0)
                n += 1
                await asyncio.sleep(0)
            return n

        writer = asyncio.create_task(keep_writing())
        target = tmp_path / "copy.db"
        status = await asyncio.to_thread(main, ["--database-url", url, "backup", str(target)])
        writing = False
        written = await writer
        assert status == 0 and written > 0
        assert capsys.readouterr().out.startswith("backed up ")
    finally:
        await store.close()
    copy = sqlite3.connect(target)
    assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    copy.close()
    restored = await Store.open(f"sqlite+aiosqlite:///{target}")
    try:
        for i in range(50):
            assert (await restored.get_user_by_username(f"user{i}")) is not None
    finally:
        await restored.close()


def test_backup_of_a_database_no_node_has_open(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'idle.db'}"
    asyncio.run(_make(url))
    assert main(["--database-url", url, "backup", str(tmp_path / "copy.db")]) == 0
    assert (tmp_path / "copy.db").stat().st_size > 0


async def _make(url: str) -> None:
    store = await Store.open(url)
    await store.create_user("alice", "Alice", "h", T0)
    await store.close()


@pytest.mark.parametrize(("url", "target", "message"), [
    ("postgresql://u@127.0.0.1/db", "copy.db", "for PostgreSQL use pg_dump"),
    ("sqlite+aiosqlite:///:memory:", "copy.db", "nothing to back up"),
    ("sqlite+aiosqlite:///{tmp}/missing.db", "copy.db", "no database at"),
    ("sqlite+aiosqlite:///{tmp}/idle.db", "idle.db", "exists already"),
    ("sqlite+aiosqlite:///{tmp}/idle.db", "no-such-dir/copy.db", "no directory"),
    ("sqlite+aiosqlite:///{tmp}/idle.db", "dangling", "exists already"),  # a symlink to nowhere
])
def test_backup_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str], url: str, target: str,
                         message: str) -> None:
    idle = f"sqlite+aiosqlite:///{tmp_path / 'idle.db'}"
    asyncio.run(_make(idle))
    before = (tmp_path / "idle.db").read_bytes()
    (tmp_path / "dangling").symlink_to(tmp_path / "copy.db")
    status = main(["--database-url", url.format(tmp=tmp_path), "backup", str(tmp_path / target)])
    assert status == 1
    assert message in capsys.readouterr().err
    assert (tmp_path / "idle.db").read_bytes() == before
    assert not (tmp_path / "copy.db").exists()


def test_backup_of_a_path_with_uri_characters(tmp_path: Path) -> None:
    """"#" and "?" are part of the file name, not a URI's fragment or query; a plain SQLite
    URL given with --database-url works like FACECALL_DATABASE_URL."""
    path = tmp_path / "facecall#prod?.db"
    asyncio.run(_make(f"sqlite+aiosqlite:///{path}"))
    target = tmp_path / "copy.db"
    assert main(["--database-url", f"sqlite:///{path}", "backup", str(target)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("facecall#prod")) == ["copy.db"]
    assert target.stat().st_mode & 0o777 == 0o600
    copy = sqlite3.connect(target)
    try:
        assert copy.execute("SELECT username FROM users").fetchall() == [("alice",)]
    finally:
        copy.close()
    assert main(["--database-url", f"sqlite:///{path}", "current"]) == 0
