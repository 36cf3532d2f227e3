"""`facecall serve` / `facecall signaling` start-up failures, as an operator meets them: a port
it cannot listen on, a database it cannot use, an encrypted TLS key. Each is one line on stderr
(`facecall: ...`) naming what is wrong, a non-zero exit, no traceback, and nothing that says
the node serves before it (docs/operations.md, "Start-up failures")."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from facecall.turn.tls import write_self_signed
from tests.live import facecall_process, free_socket, one_line, refused_start
from tests.pg import PostgresServer, running_postgres


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(*argv: str, database: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return refused_start("serve", "--port", str(free_port()), "--database-url", database, *argv,
                         **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def udp_port_taken() -> Iterator[int]:
    """A UDP port on 127.0.0.1 that another process's socket holds (as a running coturn)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("127.0.0.1", 0))
        yield holder.getsockname()[1]


@pytest.mark.parametrize("command", ["serve", "turn"])
def test_a_taken_turn_port_is_named_in_one_line(tmp_path: Path, udp_port_taken: int,
                                                command: str) -> None:
    argv = [command, "--turn-listen", f"127.0.0.1:{udp_port_taken}"]
    if command == "serve":
        argv += ["--port", str(free_port()), "--database-url", f"sqlite:///{tmp_path / 'f.db'}"]
    line = one_line(refused_start(*argv))
    assert line == (f"facecall: cannot listen for TURN on 127.0.0.1:{udp_port_taken} (udp): "
                    "address already in use")


def test_a_taken_turn_port_leaves_no_http_side_behind(tmp_path: Path, udp_port_taken: int) -> None:
    """The TURN port is found taken before the node serves anything: it never says it serves,
    never opens the database, and its HTTP port is free again."""
    port = free_port()
    done = refused_start("serve", "--port", str(port), "--turn-listen", f"127.0.0.1:{udp_port_taken}",
                    "--database-url", f"sqlite:///{tmp_path / 'f.db'}")
    one_line(done)
    assert "serving" not in done.stderr and "startup complete" not in done.stderr
    assert not (tmp_path / "f.db").exists()
    with socket.socket() as again:
        again.bind(("127.0.0.1", port))


def test_a_taken_http_port_is_named_before_anything_says_it_serves(tmp_path: Path) -> None:
    with free_socket() as holder:
        holder.listen()
        port = holder.getsockname()[1]
        done = refused_start("serve", "--no-turn", "--port", str(port),
                        "--database-url", f"sqlite:///{tmp_path / 'f.db'}")
    assert one_line(done) == f"facecall: cannot listen on 127.0.0.1:{port}: address already in use"


@pytest.mark.parametrize("command", ["serve", "signaling"])
def test_a_host_address_not_on_this_machine_is_named(tmp_path: Path, command: str) -> None:
    argv = [command, "--host", "192.0.2.10", "--port", str(free_port()),  # TEST-NET-1
            "--database-url", f"sqlite:///{tmp_path / 'f.db'}"]
    if command == "serve":
        argv.append("--no-turn")
    line = one_line(refused_start(*argv))
    assert line.startswith("facecall: cannot listen on 192.0.2.10:"), line
    assert "not one of this machine's" in line


def test_an_unopenable_sqlite_path_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    url = f"sqlite:///{tmp_path / 'a-file' / 'facecall.db'}"
    line = one_line(serve("--no-turn", database=url))
    assert line.startswith("facecall: cannot open the database sqlite+aiosqlite:///"), line
    assert "a-file/facecall.db: " in line and "Traceback" not in line


def test_a_database_from_a_newer_facecall_is_refused_in_one_line(tmp_path: Path) -> None:
    db = tmp_path / "newer.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
        conn.execute("INSERT INTO alembic_version VALUES ('9999')")
    line = one_line(serve("--no-turn", database=f"sqlite:///{db}"))
    assert "revision '9999'" in line and "newer facecall" in line, line


def test_an_unreachable_postgresql_is_one_line_without_its_password(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    line = one_line(serve("--no-turn", database=f"postgresql://facecall:S3cretPW@127.0.0.1:{port}/x"))
    assert "S3cretPW" not in line
    assert line.startswith(f"facecall: cannot reach the database postgresql+asyncpg://facecall:***@"
                           f"127.0.0.1:{port}/x: connection refused"), line


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with running_postgres() as server:
        yield server


@pytest.mark.postgres
def test_an_unknown_postgresql_database_is_one_line(postgres: PostgresServer) -> None:
    url = f"postgresql://postgres@127.0.0.1:{postgres.port}/nosuchdb"
    line = one_line(serve("--no-turn", database=url))
    assert line == (f"facecall: cannot use the database postgresql+asyncpg://postgres@127.0.0.1:"
                    f"{postgres.port}/nosuchdb: database \"nosuchdb\" does not exist")


@pytest.mark.postgres
def test_an_unreachable_redis_is_one_line_without_its_password(postgres: PostgresServer) -> None:
    url = postgres.create_database().replace("postgresql+asyncpg://", "postgresql://")
    port = free_port()  # nothing listens there
    line = one_line(serve("--no-turn", "--redis-url", f"redis://:S3cretPW@127.0.0.1:{port}/0",
                          database=url))
    assert "S3cretPW" not in line
    assert line == f"facecall: cannot reach Redis at redis://127.0.0.1:{port}/0: Connection refused", line


@pytest.mark.postgres
def test_libpq_sslmode_in_the_database_url_works(tmp_path: Path, postgres: PostgresServer) -> None:
    """`?sslmode=disable`, as libpq and every PostgreSQL tool write it, is taken (asyncpg reads
    it); `sslmode=require` against a server without TLS is refused in one line."""
    url = postgres.create_database()
    plain = url.replace("postgresql+asyncpg://", "postgresql://")
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FACECALL_")}
    proc = subprocess.Popen([sys.executable, "-m", "facecall", "serve", "--no-turn", "--port",
                             str(port), "--database-url", f"{plain}?sslmode=disable"],
                            env=clean, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the node did not start"
            time.sleep(0.1)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=15)
    assert "Traceback" not in err
    line = one_line(serve("--no-turn", database=f"{plain}?sslmode=require"))
    assert "SSL" in line and "postgresql+asyncpg://postgres@" in line, line


def encrypted_pair(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate and its private key encrypted with a passphrase (PKCS#8)."""
    cert, key = write_self_signed(tmp_path / "tls", ["127.0.0.1"])
    private = load_pem_private_key(key.read_bytes(), password=None)
    encrypted = tmp_path / "tls" / "encrypted.key"
    encrypted.write_bytes(private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"hunter2")))
    return cert, encrypted


@pytest.mark.parametrize("given_as", ["flags", "variables"])
def test_an_encrypted_tls_key_is_refused_plainly(tmp_path: Path, given_as: str) -> None:
    """Never asked for (a node restarted by its supervisor has nobody to type it), and not
    the puzzling "do not load together ([Errno 22] Invalid argument)"."""
    cert, key = encrypted_pair(tmp_path)
    if given_as == "flags":
        done = serve("--no-turn", "--tls-cert", str(cert), "--tls-key", str(key),
                     database=f"sqlite:///{tmp_path / 'f.db'}")
        source = "--tls-key"
    else:
        done = serve("--no-turn", database=f"sqlite:///{tmp_path / 'f.db'}",
                     env={"FACECALL_TLS_CERT": str(cert), "FACECALL_TLS_KEY": str(key)})
        source = "FACECALL_TLS_KEY"
    line = one_line(done, status=2)
    assert line.startswith(f"facecall: {source}='{key}' is an encrypted private key"), line
    assert "decrypt it" in line and "pass phrase" not in done.stderr


def test_the_help_says_what_is_true() -> None:
    """`signaling` is one node (no Redis bus yet); --log-level takes what the setting takes."""
    def help_of(*command: str) -> str:
        out, _ = facecall_process(*command, "--help").communicate(timeout=30)
        return out

    assert "Redis" not in help_of().replace("no Redis bus", "")
    for command in ("serve", "signaling", "turn"):
        text = " ".join(help_of(command).split())
        assert "debug, info, warning (warn), error or critical (fatal)" in text, command
        assert "--log-json" in text, command


def test_the_nodes_connections_send_without_waiting_for_acks_on_any_event_loop() -> None:
    """``bind_http``'s socket names TCP, so that asyncio's own loop (not only uvloop) turns
    Nagle's algorithm off on every connection it accepts: a signaling frame is not held back
    for a delayed ACK."""
    import asyncio

    from facecall.server import bind_http

    async def accepted_nodelay() -> int:
        listener = bind_http("127.0.0.1", 0)
        got: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        async def on_connection(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            got.set_result(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP,
                                                                     socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(on_connection, sock=listener)
        _, writer = await asyncio.open_connection("127.0.0.1", listener.getsockname()[1])
        try:
            return await asyncio.wait_for(got, 5)
        finally:
            writer.close()
            server.close()

    with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
        assert runner.run(accepted_nodelay()) == 1
