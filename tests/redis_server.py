"""A throwaway Redis server for tests.

:func:`running_redis` starts ``redis-server`` on a free loopback port in a temporary directory
(no persistence: ``--save '' --appendonly no``), waits until it answers PING, and stops it (by
its PID) and removes the directory afterwards. A missing binary raises
:class:`RedisUnavailable` with a clear message: tests that need Redis fail, they are never
skipped (``make test`` installs it via scripts/system-deps.sh).

Usage::

    with running_redis() as server:            # or running_redis(password="s3cret")
        bus = RedisBus(server.url)             # redis://127.0.0.1:PORT/0 (with :s3cret@)
        server.kill()                          # SIGKILL: Redis goes away mid-test
        server.start()                         # again, on the same port, empty
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

HOST = "127.0.0.1"


class RedisUnavailable(RuntimeError):
    """``redis-server`` is not installed, or would not start."""


def find_redis_server() -> str:
    """``$FACECALL_REDIS_SERVER``, else ``redis-server`` on the ``PATH``."""
    found = os.environ.get("FACECALL_REDIS_SERVER") or shutil.which("redis-server")
    if not found or not os.access(found, os.X_OK):
        raise RedisUnavailable(
            "redis-server not found: install Debian's `redis-server` package (`make test` does "
            "this via scripts/system-deps.sh) or set FACECALL_REDIS_SERVER")
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One ``redis-server`` process; :meth:`stop`, :meth:`kill` and :meth:`start` again (same
    port, empty data) at will."""

    def __init__(self, binary: str, base_dir: Path, port: int, password: str | None = None) -> None:
        self.binary = binary
        self.base_dir = base_dir
        self.port = port
        self.password = password
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://[:password@]127.0.0.1:PORT/0``."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{HOST}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The running server's PID (None when stopped)."""
        return self.process.pid if self.process is not None else None

    def start(self, wait: float = 15.0) -> None:
        """Start the server (it must be stopped) and wait until it answers PING."""
        if self.process is not None:
            raise RuntimeError("redis-server is already running")
        args = [self.binary, "--port", str(self.port), "--bind", HOST, "--save", "",
                "--appendonly", "no", "--dir", str(self.base_dir), "--daemonize", "no"]
        if self.password:
            args += ["--requirepass", self.password]
        with open(self.base_dir / "redis.log", "ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + wait
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                tail = (self.base_dir / "redis.log").read_text(errors="replace")[-2000:]
                raise RedisUnavailable(f"redis-server did not start on port {self.port}: {tail}")
            time.sleep(0.02)

    def _answers(self) -> bool:
        hello = (f"AUTH {self.password}\r\n" if self.password else "") + "PING\r\n"
        try:
            with socket.create_connection((HOST, self.port), timeout=1.0) as sock:
                sock.sendall(hello.encode())
                return b"+PONG" in sock.recv(256) or b"+PONG" in sock.recv(256)
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM (a clean shutdown), then wait for it to exit."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: Redis vanishes as in a crash."""
        self._end(signal.SIGKILL)

    def _end(self, sig: signal.Signals) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, sig)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None


@contextlib.contextmanager
def running_redis(password: str | None = None, attempts: int = 3) -> Iterator[RedisServer]:
    """A started server for the duration of the block; stopped and deleted afterwards."""
    binary = find_redis_server()
    base_dir = Path(tempfile.mkdtemp(prefix="facecall-redis-"))
    server = RedisServer(binary, base_dir, 0, password)
    try:
        for attempt in range(attempts):
            server.port = free_port()
            try:
                server.start()
                break
            except RedisUnavailable:
                if attempt == attempts - 1:
                    raise
        yield server
    finally:
        server.stop()
        shutil.rmtree(base_dir, ignore_errors=True)
