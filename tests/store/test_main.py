"""`python -m facecall.store` as an operator runs it: a database it cannot use, a revision it
does not know, a path with no database are each one line on stderr and a non-zero exit (never a
traceback), with the database URL shown without its password; reading creates nothing."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from facecall.store.migrate import head_revision
from tests.pg import PostgresServer


def store_cli(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FACECALL_")}
    return subprocess.run([sys.executable, "-m", "facecall.store", *argv], env=clean, cwd=cwd,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == "", done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("python -m facecall.store: "), lines[0]
    return lines[0]


def test_current_on_a_path_with_no_database_creates_none(tmp_path: Path) -> None:
    done = store_cli("--database-url", "sqlite:///./typo.db", "current", cwd=tmp_path)
    assert not (tmp_path / "typo.db").exists()
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == ("python -m facecall.store: no database at ./typo.db "
                                   "(sqlite+aiosqlite:///./typo.db); `migrate` creates one")
    assert done.stdout.strip() == f"base (head: {head_revision()})"


def test_downgrade_of_a_path_with_no_database_is_refused(tmp_path: Path) -> None:
    line = one_line(store_cli("--database-url", "sqlite:///./typo.db", "downgrade",
                              "--revision", "base", cwd=tmp_path))
    assert "no database at ./typo.db" in line
    assert not (tmp_path / "typo.db").exists()


def test_an_unreachable_database_is_one_line_without_its_password() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there
    line = one_line(store_cli("--database-url", f"postgresql://fc:S3cretPW@127.0.0.1:{port}/x",
                              "current"))
    assert "S3cretPW" not in line
    assert line == (f"python -m facecall.store: cannot reach the database postgresql+asyncpg://"
                    f"fc:***@127.0.0.1:{port}/x: connection refused (is the server running?)")


def test_an_unknown_revision_is_one_line(tmp_path: Path) -> None:
    line = one_line(store_cli("--database-url", f"sqlite:///{tmp_path / 'f.db'}", "migrate",
                              "--revision", "nonsense"))
    assert "'nonsense'" in line and f"{head_revision()}, head" in line, line


def test_a_database_from_a_newer_facecall_is_not_migrated(tmp_path: Path) -> None:
    db = tmp_path / "newer.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
        conn.execute("INSERT INTO alembic_version VALUES ('9999')")
    line = one_line(store_cli("--database-url", f"sqlite:///{db}", "migrate"))
    assert "revision '9999'" in line and "newer facecall" in line, line
    done = store_cli("--database-url", f"sqlite:///{db}", "current")  # reading it is fine
    assert done.returncode == 0 and done.stdout.strip() == f"9999 (head: {head_revision()})"


@pytest.mark.postgres
def test_libpq_sslmode_and_an_unknown_database(postgres_server: PostgresServer) -> None:
    url = postgres_server.create_database().replace("postgresql+asyncpg://", "postgresql://")
    done = store_cli("--database-url", f"{url}?sslmode=disable", "migrate")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"upgraded to {head_revision()}"
    missing = url.rsplit("/", 1)[0] + "/nosuchdb"
    line = one_line(store_cli("--database-url", missing, "current"))
    assert line.endswith('/nosuchdb: database "nosuchdb" does not exist'), line
