"""HTTPS and WSS on the node's own port (FACECALL_TLS_CERT / FACECALL_TLS_KEY).

The fixture's teardown stops the node while the test's HTTP client still holds an idle TLS
connection: the node must not wait for that client's close_notify (it used to, 30 s)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import websockets
from websockets.typing import Subprotocol

from facecall.config import Settings, SettingsError
from facecall.turn.tls import write_self_signed
from tests.live import TEST_PASSWORD, LiveServer, ServerProcess, free_socket, live_server


@pytest.fixture
def pem(tmp_path: Path) -> tuple[Path, Path]:
    return write_self_signed(tmp_path / "tls", ["127.0.0.1", "localhost"])


@pytest.fixture
async def tls_server(tmp_path: Path, pem: tuple[Path, Path]) -> AsyncIterator[LiveServer]:
    cert, key = pem
    async with live_server(f"sqlite+aiosqlite:///{tmp_path / 'f.db'}", tls_cert=str(cert),
                           tls_key=str(key)) as live:
        yield live


async def test_api_and_signaling_over_tls(tls_server: LiveServer, pem: tuple[Path, Path],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    assert tls_server.base_url.startswith("https://") and tls_server.ws_url.startswith("wss://")
    assert (await tls_server.http.get("/healthz")).json()["status"] == "ok"
    # the SDK's signaling trusts what the system does; SSL_CERT_FILE adds a private CA
    monkeypatch.setenv("SSL_CERT_FILE", str(pem[0]))
    _alice, (a1,) = await tls_server.user_with_devices("alice", 1)
    bob, (b1,) = await tls_server.user_with_devices("bob", 1)
    call_id = (await a1.request("call.start", to=[bob["user"]["id"]], media="audio"))["call_id"]
    assert (await b1.next_event("call.ring"))["call_id"] == call_id
    # plain HTTP on the TLS port gets nowhere, and the node goes on
    async with httpx.AsyncClient(timeout=5) as plain:
        with pytest.raises(httpx.HTTPError):
            await plain.get(tls_server.base_url.replace("https://", "http://") + "/healthz")
    # a client that does not trust the certificate is refused by its own TLS
    async with httpx.AsyncClient(timeout=5, trust_env=False) as untrusting:
        with pytest.raises(httpx.ConnectError):
            await untrusting.get(tls_server.base_url + "/healthz")
    assert (await b1.request("ping"))["type"] == "pong"
    # a browser's way over WSS too: the token in a subprotocol, facecall.v1 selected
    carol = await tls_server.register_device((await tls_server.sign_up("carol"))["token"])
    offers = [Subprotocol("facecall.v1"), Subprotocol(f"facecall.token.{carol['token']}")]
    async with websockets.connect(tls_server.ws_url, subprotocols=offers,
                                  ssl=ssl.create_default_context(cafile=str(pem[0]))) as ws:
        assert ws.subprotocol == "facecall.v1"
        await ws.send(json.dumps({"v": 1, "id": "h1", "type": "hello"}))
        assert json.loads(await ws.recv())["device_id"] == carol["device"]["id"]


def test_tls_settings_are_checked(tmp_path: Path, pem: tuple[Path, Path]) -> None:
    cert, key = pem
    other_cert, other_key = write_self_signed(tmp_path / "other", ["127.0.0.1"])
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    settings = Settings.from_env({"FACECALL_TLS_CERT": str(cert), "FACECALL_TLS_KEY": str(key)})
    assert settings.base_url.startswith("https://")
    cases = [
        ({"FACECALL_TLS_CERT": str(cert)},
         "(--tls-cert / --tls-key): a certificate and its key go together"),
        ({"FACECALL_TLS_CERT": str(tmp_path / "missing.pem"), "FACECALL_TLS_KEY": str(key)},
         "FACECALL_TLS_CERT="),
        ({"FACECALL_TLS_CERT": str(garbage), "FACECALL_TLS_KEY": str(key)}, "do not load together"),
        ({"FACECALL_TLS_CERT": str(cert), "FACECALL_TLS_KEY": str(other_key)}, "do not load together"),
    ]
    for env, message in cases:
        with pytest.raises(SettingsError) as refused:
            Settings.from_env(env)
        assert message in str(refused.value), (env, str(refused.value))
    assert other_cert.exists()


def test_serve_refuses_a_key_without_its_certificate(tmp_path: Path, pem: tuple[Path, Path]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "facecall", "serve", "--no-turn", "--port", "9", "--tls-key", str(pem[1]),
         "--database-url", f"sqlite:///{tmp_path / 'x.db'}"],
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == ("facecall: FACECALL_TLS_CERT / FACECALL_TLS_KEY (--tls-cert / "
                                   "--tls-key): a certificate and its key go together: give both or neither")
    assert ssl.OPENSSL_VERSION  # the node's TLS is Python's ssl (OpenSSL)


# -- the TLS handshake inside the node's limits (facecall.api.tls_transport) -----------------

#: the first bytes of a TLS record carrying a ClientHello (RFC 8446 §5.1, §4.1.2), cut short
HALF_A_CLIENT_HELLO = bytes.fromhex("160301020001" "0001fc0303") + b"\x00" * 20


async def _dropped(reader: asyncio.StreamReader, within: float = 10.0) -> bool:
    """Whether the node closes this connection (EOF or reset) before ``within`` seconds."""
    try:
        return await asyncio.wait_for(reader.read(-1), within) == b""
    except ConnectionResetError:
        return True


async def _stalled_connections(port: int) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """Two TCP connections to the TLS port that never finish a handshake: one sends nothing,
    one half a ClientHello."""
    silent = await asyncio.open_connection("127.0.0.1", port)
    partial = await asyncio.open_connection("127.0.0.1", port)
    partial[1].write(HALF_A_CLIENT_HELLO)
    await partial[1].drain()
    return [silent, partial]


async def test_a_handshake_that_never_finishes_is_dropped_at_the_head_timeout(
        tmp_path: Path, pem: tuple[Path, Path]) -> None:
    cert, key = pem
    async with live_server(f"sqlite+aiosqlite:///{tmp_path / 'f.db'}", tls_cert=str(cert),
                           tls_key=str(key), http_head_timeout=0.3) as live:
        stalled = await _stalled_connections(live.settings.port)
        for reader, writer in stalled:
            assert await _dropped(reader)  # asyncio's own handshake timeout would be 60 s
            writer.close()
        assert (await live.http.get("/healthz")).status_code == 200


async def test_connections_in_their_handshake_count_against_the_cap(
        tmp_path: Path, pem: tuple[Path, Path]) -> None:
    cert, key = pem
    async with live_server(f"sqlite+aiosqlite:///{tmp_path / 'f.db'}", tls_cert=str(cert),
                           tls_key=str(key), max_connections=3) as live:
        held = [await asyncio.open_connection("127.0.0.1", live.settings.port) for _ in range(3)]
        await asyncio.sleep(0.1)
        reader, writer = await asyncio.open_connection("127.0.0.1", live.settings.port)
        assert await _dropped(reader, within=5.0)  # closed before any handshake: nothing to say
        writer.close()
        trust = ssl.create_default_context(cafile=str(cert))
        async with httpx.AsyncClient(base_url=live.base_url, verify=trust, timeout=5) as fresh:
            with pytest.raises(httpx.TransportError):
                await fresh.get("/healthz")
            for _, w in held:
                w.close()
            for _ in range(100):  # room again once the node has seen them go
                try:
                    if (await fresh.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
            else:
                raise AssertionError("the node did not take connections again")


async def test_the_node_process_serves_tls_and_bounds_handshakes(
        tmp_path: Path, pem: tuple[Path, Path]) -> None:
    """`facecall serve` (uvloop, not the tests' event loop): HTTPS, WSS signaling, and a
    stalled handshake dropped at the head timeout."""
    cert, key = pem
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    node = ServerProcess(tmp_path / "f.db", port, ring_timeout=30.0, env={
        "FACECALL_TLS_CERT": str(cert), "FACECALL_TLS_KEY": str(key),
        "FACECALL_HTTP_HEAD_TIMEOUT": "0.5"})
    node.start()
    try:
        await node.ready()
        stalled = await _stalled_connections(port)
        async with httpx.AsyncClient(base_url=node.base_url, verify=node.verify, timeout=10) as http:
            account = (await http.post("/v1/accounts", json={
                "username": "tess", "password": TEST_PASSWORD, "display_name": "Tess"})).json()
            device = (await http.post("/v1/devices", json={"kind": "desktop", "name": "laptop"},
                                      headers={"Authorization": f"Bearer {account['token']}"})).json()
        ws_url = f"wss://127.0.0.1:{port}/v1/signaling"
        async with websockets.connect(ws_url, ssl=node.verify, additional_headers={
                "Authorization": f"Bearer {device['token']}"}) as ws:
            await ws.send(json.dumps({"v": 1, "id": "h1", "type": "hello"}))
            welcome = json.loads(await ws.recv())
            assert welcome["type"] == "welcome" and welcome["device_id"] == device["device"]["id"]
        for reader, writer in stalled:
            assert await _dropped(reader)
            writer.close()
        # a ClientHello sent with the connection: uvloop reads it before the node's handshake
        # has started, and it must still reach the handshake (it stalled until the timeout)
        trust = ssl.create_default_context(cafile=str(cert))
        for _ in range(10):
            reply = await asyncio.to_thread(_health_with_the_hello_sent_at_once, port, trust)
            assert reply.startswith(b"HTTP/1.1 200 "), reply
        assert node.proc is not None and node.proc.poll() is None
    finally:
        node.stop()


def _health_with_the_hello_sent_at_once(port: int, trust: ssl.SSLContext) -> bytes:
    """``GET /healthz`` over a new TLS connection whose ClientHello (RFC 8446 §4.1.2) is made
    before connecting and written the moment the connection exists."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = trust.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(outgoing.read())
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                sock.sendall(outgoing.read())
                data = sock.recv(65536)
                if not data:
                    return b"closed during the handshake"
                incoming.write(data)
        tls.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        sock.sendall(outgoing.read())
        reply = b""
        while data := sock.recv(65536):
            incoming.write(data)
            try:
                while chunk := tls.read(65536):
                    reply += chunk
            except ssl.SSLWantReadError:
                continue
            break  # the node's close_notify (RFC 8446 §6.1): the reply is whole
        return reply


async def test_clients_that_leave_right_after_their_handshake_leave_no_warning(
        tls_server: LiveServer, pem: tuple[Path, Path], caplog: pytest.LogCaptureFixture) -> None:
    trust = ssl.create_default_context(cafile=str(pem[0]))
    for _ in range(5):
        _, writer = await asyncio.open_connection("127.0.0.1", tls_server.settings.port, ssl=trust)
        writer.close()
        await writer.wait_closed()
    await asyncio.sleep(0.2)
    assert (await tls_server.http.get("/healthz")).status_code == 200
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
