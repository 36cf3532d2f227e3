"""Interop with clients nobody here wrote: coturn's turnutils_stunclient / turnutils_uclient,
with turnutils_peer as the echo peer (UDP, TCP, Send indications, client-to-client, TLS)."""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from facecall.turn.config import TurnConfig
from facecall.turn.rest import ephemeral_credentials, rest_password
from facecall.turn.server import TurnServer
from facecall.turn.tls import write_self_signed

from .conftest import PASSWORD, SECRET, USER

UCLIENT = shutil.which("turnutils_uclient") or "/usr/bin/turnutils_uclient"
MESSAGES = 40
CLIENTS = 2


def udp_and_tcp_free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (coturn's -p names one port for both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port")


async def run(*argv: str, timeout: float = 60) -> str:
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    return out.decode(errors="replace")


@pytest.fixture
async def coturn_peer() -> AsyncIterator[int]:
    """turnutils_peer echoing on a free loopback UDP port."""
    port = udp_and_tcp_free_port()
    process = await asyncio.create_subprocess_exec(
        "turnutils_peer", "-L", "127.0.0.1", "-p", str(port),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    await asyncio.sleep(0.2)
    try:
        yield port
    finally:
        process.terminate()
        await process.wait()


@pytest.fixture
async def interop_server(tmp_path: Path, udp_io: str) -> AsyncIterator[TurnServer]:
    port = udp_and_tcp_free_port()
    cert, key = write_self_signed(tmp_path, ["127.0.0.1", "localhost"])
    config = TurnConfig(
        udp_listen=[("127.0.0.1", port)],
        tcp_listen=[("127.0.0.1", port)],
        tls_listen=[("127.0.0.1", 0)],
        tls_cert=str(cert),
        tls_key=str(key),
        static_users={USER: PASSWORD},
        rest_secrets=[SECRET],
        allowed_peers=["127.0.0.0/8"],
        udp_io=udp_io,
    )
    server = TurnServer(config)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def uclient_result(output: str) -> tuple[int, int, int]:
    """(sent, received, lost) from turnutils_uclient's summary."""
    totals = re.findall(r"tot_send_msgs=(\d+), tot_recv_msgs=(\d+)\n", output)
    lost = re.search(r"Total lost packets (\d+)", output)
    assert totals and lost, output[-2000:]
    sent, received = map(int, totals[-1])
    return sent, received, int(lost.group(1))


async def test_stunclient_sees_its_reflexive_address(interop_server: TurnServer) -> None:
    port = interop_server.udp_addresses[0][1]
    output = await run("turnutils_stunclient", "-p", str(port), "127.0.0.1")
    assert re.search(r"UDP reflexive addr: 127\.0\.0\.1:\d+", output), output


MODES = {
    "udp": [],
    "tcp": ["-t"],
    "udp-send-indications": ["-s"],
    "udp-client-to-client": ["-y"],
    "tcp-send-indications": ["-t", "-s"],
    "tcp-client-to-client": ["-t", "-y"],
}


@pytest.mark.parametrize(
    "mode",
    [
        "udp",
        "tcp",
        pytest.param("udp-send-indications", marks=pytest.mark.slow),
        pytest.param("udp-client-to-client", marks=pytest.mark.slow),
        pytest.param("tcp-send-indications", marks=pytest.mark.slow),
        pytest.param("tcp-client-to-client", marks=pytest.mark.slow),
    ],
)
async def test_uclient_relays_without_loss(
    interop_server: TurnServer, coturn_peer: int, mode: str
) -> None:
    port = interop_server.udp_addresses[0][1]
    output = await run(
        UCLIENT, *MODES[mode], "-p", str(port), "-u", USER, "-w", PASSWORD,
        "-e", "127.0.0.1", "-r", str(coturn_peer), "-c", "-l", "200",
        "-m", str(CLIENTS), "-n", str(MESSAGES), "127.0.0.1",
    )
    sent, received, lost = uclient_result(output)
    assert (sent, received, lost) == (CLIENTS * MESSAGES, CLIENTS * MESSAGES, 0), output[-2000:]


async def test_uclient_with_rest_secret_and_over_tls(
    interop_server: TurnServer, coturn_peer: int
) -> None:
    port = interop_server.udp_addresses[0][1]
    output = await run(
        UCLIENT, "-p", str(port), "-W", SECRET, "-u", "carol",
        "-e", "127.0.0.1", "-r", str(coturn_peer), "-c", "-l", "200",
        "-m", "1", "-n", str(MESSAGES), "127.0.0.1",
    )
    assert uclient_result(output) == (MESSAGES, MESSAGES, 0)
    tls_port = interop_server.tls_addresses[0][1]
    output = await run(
        UCLIENT, "-t", "-S", "-p", str(tls_port), "-u", USER, "-w", PASSWORD,
        "-e", "127.0.0.1", "-r", str(coturn_peer), "-c", "-l", "200",
        "-m", "1", "-n", str(MESSAGES), "127.0.0.1",
    )
    assert uclient_result(output) == (MESSAGES, MESSAGES, 0)


@pytest.mark.parametrize(
    "credentials",
    [
        ["-u", USER, "-w", "not-the-password"],
        ["-u", "nobody", "-w", PASSWORD],
        ["-W", "not-the-secret", "-u", "carol"],
        ["-u", "1000:carol", "-w", rest_password(SECRET, "1000:carol")],  # expired in 1970
    ],
    ids=["wrong-password", "unknown-user", "wrong-secret", "expired-rest"],
)
async def test_uclient_refused_with_bad_credentials(
    interop_server: TurnServer, coturn_peer: int, credentials: list[str]
) -> None:
    port = interop_server.udp_addresses[0][1]
    output = await run(
        UCLIENT, "-p", str(port), *credentials, "-e", "127.0.0.1", "-r", str(coturn_peer),
        "-c", "-l", "200", "-m", "1", "-n", "5", "127.0.0.1",
    )
    assert "Cannot complete Allocation" in output, output[-2000:]
    assert interop_server.allocations == {}


async def test_uclient_valid_rest_credentials_as_user_and_password(
    interop_server: TurnServer, coturn_peer: int
) -> None:
    username, password = ephemeral_credentials(SECRET, "dave", 600, time.time())
    port = interop_server.udp_addresses[0][1]
    output = await run(
        UCLIENT, "-p", str(port), "-u", username, "-w", password,
        "-e", "127.0.0.1", "-r", str(coturn_peer), "-c", "-l", "200",
        "-m", "1", "-n", "10", "127.0.0.1",
    )
    assert uclient_result(output) == (10, 10, 0)
