"""A throwaway PostgreSQL server for tests.

:func:`running_postgres` runs ``initdb`` in a temporary directory, starts ``postgres`` on a free
loopback port (trust authentication, fsync off -- data is disposable) and stops it and removes
the directory afterwards. As root, the server runs as the ``postgres`` user, since PostgreSQL
refuses to run as root. Missing binaries raise :class:`PostgresUnavailable` with a clear message:
tests that need PostgreSQL fail, they are never skipped silently (``make test`` installs it).

Usage::

    with running_postgres() as server:
        url = server.create_database("t1")    # postgresql+asyncpg://postgres@127.0.0.1:PORT/t1
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

SUPERUSER = "postgres"
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class PostgresUnavailable(RuntimeError):
    """PostgreSQL's server binaries are not installed, or the server would not start."""


def find_bin_dir() -> Path:
    """The directory holding ``initdb``/``pg_ctl``: ``$FACECALL_PG_BIN``, Debian's
    ``/usr/lib/postgresql/<newest>/bin``, or the ``PATH``."""
    override = os.environ.get("FACECALL_PG_BIN")
    if override:
        if (Path(override) / "initdb").exists() and (Path(override) / "pg_ctl").exists():
            return Path(override)
        raise PostgresUnavailable(f"FACECALL_PG_BIN={override} holds no initdb and pg_ctl")
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
        reverse=True,
    )
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(str(Path(on_path).parent))
    for candidate in candidates:
        if (Path(candidate) / "initdb").exists() and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    raise PostgresUnavailable(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: install Debian's `postgresql` "
        "package (`make test` does this via scripts/system-deps.sh) or set FACECALL_PG_BIN"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PostgresServer:
    """A running throwaway server."""

    bin_dir: Path
    base_dir: Path
    port: int
    host: str = "127.0.0.1"
    _as_user: list[str] = field(default_factory=list)
    _counter: int = 0

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    def url(self, database: str = "postgres") -> str:
        """The asyncpg SQLAlchemy URL of ``database`` on this server."""
        return f"postgresql+asyncpg://{SUPERUSER}@{self.host}:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run one SQL command with ``psql``; returns its unaligned output."""
        out = subprocess.run(
            [
                str(self.bin_dir / "psql"),
                "-h", self.host, "-p", str(self.port), "-U", SUPERUSER, "-d", database,
                "-v", "ON_ERROR_STOP=1", "-X", "-A", "-t", "-c", sql,
            ],
            check=True,
            capture_output=True,
            text=True,
        )  # fmt: skip
        return out.stdout

    def create_database(self, name: str | None = None) -> str:
        """Create a fresh, empty database; returns its URL."""
        if name is None:
            self._counter += 1
            name = f"t{os.getpid()}_{self._counter}"
        if not _NAME.match(name):
            raise ValueError(f"not a plain database name: {name!r}")
        self.psql(f"CREATE DATABASE {name}")
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting whoever is still in it."""
        if not _NAME.match(name):
            raise ValueError(f"not a plain database name: {name!r}")
        self.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self) -> None:
        """Stop the server (fast shutdown) if it is running."""
        if (self.data_dir / "postmaster.pid").exists():
            subprocess.run(
                [*self._as_user, str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir),
                 "-m", "immediate", "-w", "stop"],
                check=False,
                capture_output=True,
            )  # fmt: skip


def _run(cmd: list[str], what: str) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise PostgresUnavailable(f"{what} failed ({done.returncode}): {done.stderr.strip()}")


def start_postgres(attempts: int = 3) -> PostgresServer:
    """initdb + start a server on a free loopback port. The caller must :meth:`stop` it and
    remove ``base_dir`` (or use :func:`running_postgres`)."""
    bin_dir = find_bin_dir()
    base_dir = Path(tempfile.mkdtemp(prefix="facecall-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        try:
            entry = pwd.getpwnam(SUPERUSER)
        except KeyError as exc:
            shutil.rmtree(base_dir, ignore_errors=True)
            raise PostgresUnavailable("running as root but there is no `postgres` user") from exc
        os.chown(base_dir, entry.pw_uid, entry.pw_gid)
        as_user = ["runuser", "-u", SUPERUSER, "--"]
    server = PostgresServer(bin_dir=bin_dir, base_dir=base_dir, port=0, _as_user=as_user)
    try:
        _run(
            [*as_user, str(bin_dir / "initdb"), "-D", str(server.data_dir), "-U", SUPERUSER,
             "-A", "trust", "-E", "UTF8", "--no-sync", "--locale=C"],
            "initdb",
        )  # fmt: skip
        last_error = ""
        for _ in range(attempts):
            server.port = free_port()
            options = (
                f"-k {base_dir} -p {server.port} -c listen_addresses={server.host} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                "-c max_connections=200"
            )
            log = base_dir / "server.log"
            done = subprocess.run(
                [*as_user, str(bin_dir / "pg_ctl"), "-D", str(server.data_dir), "-o", options,
                 "-l", str(log), "-w", "-t", "60", "start"],
                capture_output=True,
                text=True,
            )  # fmt: skip
            if done.returncode == 0:
                return server
            last_error = log.read_text(errors="replace")[-2000:] if log.exists() else done.stderr
            server.stop()
        raise PostgresUnavailable(f"PostgreSQL did not start: {last_error}")
    except BaseException:
        server.stop()
        shutil.rmtree(base_dir, ignore_errors=True)
        raise


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """A started server for the duration of the block; stopped and deleted afterwards."""
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.base_dir, ignore_errors=True)
