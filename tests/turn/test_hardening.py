"""Hardening found by the TURN audit: hostile credentials and nonces, contained handler
failures, quotas under concurrency, permission and connection caps, descriptor limits."""

from __future__ import annotations

import asyncio
import os
import resource
import ssl
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from facecall.turn import stun
from facecall.turn.allocation import Allocation
from facecall.turn.auth import Authenticator
from facecall.turn.core import quota_user
from facecall.turn.rest import rest_expiry
from facecall.turn.server import TurnServer
from facecall.turn.tls import write_self_signed

from .conftest import FakeClock, RawClient, error_code, udp_endpoint


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def binding_request() -> bytes:
    return stun.Message(stun.Method.BINDING, stun.Class.REQUEST, os.urandom(12)).encode()


async def read_frame(reader: asyncio.StreamReader) -> stun.Message:
    header = await asyncio.wait_for(reader.readexactly(20), 5)
    body = await asyncio.wait_for(reader.readexactly(struct.unpack("!H", header[2:4])[0]), 5)
    return stun.parse_message(header + body)


async def closed_by_server(reader: asyncio.StreamReader, wait: float = 5.0) -> bool:
    """True once the server has closed the connection (EOF or reset) within ``wait``."""
    try:
        return await asyncio.wait_for(reader.read(), wait) == b""
    except ConnectionError:
        return True


# --- 1: REST usernames whose expiry holds non-ASCII digits (RFC 8489 §9.2.4) ---


@pytest.mark.parametrize("username", ["²:x", "١٢٣:x", "²", "\uff11\uff12:x"])
def test_rest_expiry_accepts_only_ascii_digits(username: str) -> None:
    assert rest_expiry(username) is None
    assert quota_user(username) == username


async def test_username_with_unicode_digit_expiry_is_an_unknown_user(make_server) -> None:  # type: ignore[no-untyped-def]
    server = await make_server()
    endpoint = await udp_endpoint()
    try:
        client = RawClient(endpoint, server.udp_addresses[0], "²:x", "pw")
        response = await client.allocate()
        assert error_code(response) == 401
        assert response.get(stun.REALM) == b"facecall"
        assert response.get(stun.NONCE)
        assert server.allocations == {}
    finally:
        endpoint.close()


# --- 2: nonces with non-ASCII characters (RFC 8489 §9.2.4: 438 Stale Nonce) ---


def test_non_ascii_nonces_are_invalid(clock: FakeClock) -> None:
    auth = Authenticator("facecall", {}, [], 3600, clock)
    good = auth.new_nonce()
    assert auth.nonce_is_valid(good)
    expiry = good[:-24]
    for forged in (expiry + "é" * 24, expiry + "ü" + good[-23:], "١٢" + good[-24:],
                   " " + good, "0x" + good, expiry[:2] + "_" + expiry[2:] + good[-24:]):
        assert not auth.nonce_is_valid(forged), forged


async def test_non_ascii_nonce_gets_438_with_a_fresh_nonce(
    server: TurnServer, client: RawClient
) -> None:
    assert error_code(await client.allocate()) is None
    valid = client.nonce
    client.nonce = valid[:8] + "é" * 24
    response = await client.transact(stun.Message(stun.Method.REFRESH, stun.Class.REQUEST,
                                                  os.urandom(12)))
    assert error_code(response) == 438
    fresh = (response.get(stun.NONCE) or b"").decode()
    assert fresh and server.core.auth.nonce_is_valid(fresh)


# --- 3: a failing handler is contained (one message dropped, the server goes on) ---


class _RecordingLog:
    """Stands in for the core's logger: records error() calls."""

    def __init__(self) -> None:
        self.errors: list[tuple[str, dict[str, Any]]] = []

    def error(self, event: str, **fields: Any) -> None:
        self.errors.append((event, fields))

    def info(self, event: str, **fields: Any) -> None:
        pass


@pytest.fixture
def failing_binding(server: TurnServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The core's Binding handler raises for the first ``failures[0]`` calls."""
    failures = [0]
    original = server.core._on_binding

    def flaky(message: stun.Message, ctx: Any) -> None:
        if failures[0] > 0:
            failures[0] -= 1
            raise RuntimeError("injected handler failure")
        original(message, ctx)

    monkeypatch.setattr(server.core, "_on_binding", flaky)
    yield failures


async def test_failing_handler_is_contained_counted_and_logged_rarely(
    server: TurnServer, client: RawClient, clock: FakeClock,
    failing_binding: list[int], monkeypatch: pytest.MonkeyPatch,
) -> None:
    import facecall.turn.core as core_module

    recorder = _RecordingLog()
    monkeypatch.setattr(core_module, "log", recorder)
    before = metric("facecall_turn_internal_errors_total")
    # Over TCP: the connection survives and answers the next Binding.
    reader, writer = await asyncio.open_connection(*server.tcp_addresses[0])
    try:
        failing_binding[0] = 3
        writer.write(binding_request() * 4)
        response = await read_frame(reader)
        assert error_code(response) is None and response.method == stun.Method.BINDING
    finally:
        writer.close()
    # Over UDP: several failures, then the next Binding is answered.
    failing_binding[0] = 2
    for _ in range(2):
        client.endpoint.send(binding_request(), client.server)
    response = await client.transact(
        stun.Message(stun.Method.BINDING, stun.Class.REQUEST, os.urandom(12)), sign=False
    )
    assert error_code(response) is None
    assert metric("facecall_turn_internal_errors_total") == before + 5
    # Five failures within the interval: one traceback logged, not five.
    assert len(recorder.errors) == 1
    assert recorder.errors[0][1].get("exc_info") is not None
    clock.now += core_module.TRACEBACK_LOG_INTERVAL + 1
    failing_binding[0] = 1
    client.endpoint.send(binding_request(), client.server)
    await client.transact(
        stun.Message(stun.Method.BINDING, stun.Class.REQUEST, os.urandom(12)), sign=False
    )
    assert len(recorder.errors) == 2
    assert recorder.errors[1][1].get("suppressed") == 4


# --- 4: the per-user quota counts allocations still being opened (RFC 8656 §7.2: 486) ---


def gate_relays(server: TurnServer) -> asyncio.Event:
    """Hold every relay socket opening until the returned event is set."""
    gate = asyncio.Event()
    original = server.core.open_relay

    async def gated(sock: Any, allocation: Allocation) -> Any:
        await gate.wait()
        return await original(sock, allocation)

    server.core.open_relay = gated
    return gate


async def test_user_quota_holds_under_concurrent_allocates(make_server) -> None:  # type: ignore[no-untyped-def]
    server = await make_server(max_allocations_per_user=2)
    gate = gate_relays(server)
    endpoints = [await udp_endpoint() for _ in range(5)]
    try:
        clients = [RawClient(e, server.udp_addresses[0]) for e in endpoints]
        tasks = [asyncio.ensure_future(c.allocate()) for c in clients]
        await asyncio.sleep(0.3)  # every Allocate reaches the server before any relay opens
        gate.set()
        codes = [error_code(r) for r in await asyncio.gather(*tasks)]
        assert codes.count(None) == 2 and codes.count(486) == 3, codes
        assert server.core.pending_per_user == {}
        assert server.core.per_user == {"alice": 2}
    finally:
        for e in endpoints:
            e.close()


async def test_pending_allocations_are_released_on_failure_and_lost_connections(
    make_server,  # type: ignore[no-untyped-def]
) -> None:
    server = await make_server(max_allocations_per_user=1)
    endpoint = await udp_endpoint()
    try:
        client = RawClient(endpoint, server.udp_addresses[0])
        original = server.core.open_relay

        async def refuse(sock: Any, allocation: Allocation) -> Any:
            raise OSError("no relay for you")

        server.core.open_relay = refuse
        assert error_code(await client.allocate()) == 508
        assert server.core.pending_per_user == {}

        async def broken(sock: Any, allocation: Allocation) -> Any:
            raise RuntimeError("a bug in the relay path")

        failures = metric("facecall_turn_internal_errors_total")
        server.core.open_relay = broken  # not the system saying no: counted as our fault
        assert error_code(await client.allocate()) == 508
        assert server.core.pending_per_user == {}
        assert metric("facecall_turn_internal_errors_total") == failures + 1
        # A TCP client that goes away while its Allocate is pending frees its place too.
        server.core.open_relay = original
        gate = gate_relays(server)
        _, writer = await asyncio.open_connection(*server.tcp_addresses[0])
        tid = os.urandom(12)
        allocate = stun.Message(stun.Method.ALLOCATE, stun.Class.REQUEST, tid,
                                [(stun.REQUESTED_TRANSPORT, bytes([17, 0, 0, 0])),
                                 (stun.USERNAME, client.username.encode()),
                                 (stun.REALM, client.realm.encode()),
                                 (stun.NONCE, client.nonce.encode())])
        writer.write(allocate.encode(integrity_key=client.key))
        for _ in range(100):
            if server.core.pending_per_user:
                break
            await asyncio.sleep(0.01)
        assert server.core.pending_per_user == {"alice": 1}
        writer.transport.abort()
        await asyncio.sleep(0.05)
        gate.set()
        for _ in range(100):
            if not server.core.pending_per_user:
                break
            await asyncio.sleep(0.01)
        assert server.core.pending_per_user == {} and server.allocations == {}
        assert error_code(await client.allocate()) is None
    finally:
        endpoint.close()


# --- 5: permissions per allocation are capped (RFC 8656 §9.2: all or none; 508) ---


async def test_permissions_per_allocation_are_capped(make_server) -> None:  # type: ignore[no-untyped-def]
    server = await make_server(max_permissions_per_allocation=3)
    endpoint = await udp_endpoint()
    try:
        client = RawClient(endpoint, server.udp_addresses[0])
        assert error_code(await client.allocate()) is None
        allocation = next(iter(server.allocations.values()))
        peers = [(f"127.0.0.{i}", 9) for i in range(1, 7)]
        assert error_code(await client.permit(*peers[:2])) is None
        # Two new ones would make four: refused as a whole.
        assert error_code(await client.permit(peers[2], peers[3])) == 508
        assert set(allocation.permissions) == {"127.0.0.1", "127.0.0.2"}
        assert error_code(await client.permit(peers[2])) is None
        # Refreshing existing permissions is always fine, a new one is not.
        assert error_code(await client.permit(*peers[:3])) is None
        assert error_code(await client.permit(peers[0], peers[4])) == 508
        # ChannelBind installs a permission: refused for a new host, fine for a known one.
        assert error_code(await client.bind_channel(0x4000, peers[4])) == 508
        assert allocation.channels == {}
        assert error_code(await client.bind_channel(0x4000, ("127.0.0.1", 5000))) is None
        assert len(allocation.permissions) == 3
    finally:
        endpoint.close()


# --- 6: connection exhaustion: descriptors, per-address cap, TLS handshakes ---


async def test_descriptor_soft_limit_is_raised_at_start(make_server) -> None:  # type: ignore[no-untyped-def]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = 512 if hard == resource.RLIM_INFINITY else min(512, hard // 2)
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
    try:
        await make_server()
        raised, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        assert raised > low
        if hard != resource.RLIM_INFINITY:
            assert raised == hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_tcp_connections_per_address_are_capped(make_server) -> None:  # type: ignore[no-untyped-def]
    server = await make_server(max_tcp_connections_per_address=2)
    before = metric("facecall_turn_stream_connections_refused_total", reason="per_address")
    address = server.tcp_addresses[0]
    first, second = [await asyncio.open_connection(*address) for _ in range(2)]
    third_reader, third_writer = await asyncio.open_connection(*address)
    assert await closed_by_server(third_reader)
    third_writer.close()
    assert metric("facecall_turn_stream_connections_refused_total",
                  reason="per_address") == before + 1
    for reader, writer in (first, second):
        writer.write(binding_request())
        assert error_code(await read_frame(reader)) is None
    first[1].close()
    for _ in range(100):
        if len(server.connections) < 2:
            break
        await asyncio.sleep(0.01)
    reader, writer = await asyncio.open_connection(*address)
    writer.write(binding_request())
    assert error_code(await read_frame(reader)) is None
    for w in (second[1], writer):
        w.close()


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[str, str]:
    cert, key = write_self_signed(tmp_path, ["127.0.0.1", "localhost"])
    return str(cert), str(key)


async def test_tls_connections_count_before_the_handshake_and_time_out(
    make_server, certificate: tuple[str, str]  # type: ignore[no-untyped-def]
) -> None:
    cert, key = certificate
    server = await make_server(tls_listen=[("127.0.0.1", 0)], tls_cert=cert, tls_key=key,
                               tcp_listen=[], tls_handshake_timeout=0.3,
                               max_tcp_connections_per_address=2)
    address = server.tls_addresses[0]
    # Two connections that never start the handshake hold their places...
    silent = [await asyncio.open_connection(*address) for _ in range(2)]
    for _ in range(100):
        if len(server.connections) == 2:
            break
        await asyncio.sleep(0.01)
    assert len(server.connections) == 2
    # ...so a third from the same address is closed at once,
    reader, writer = await asyncio.open_connection(*address)
    assert await closed_by_server(reader, 1.0)
    writer.close()
    # and the handshake timeout frees them.
    for silent_reader, silent_writer in silent:
        assert await closed_by_server(silent_reader)
        silent_writer.close()
    for _ in range(100):
        if not server.connections:
            break
        await asyncio.sleep(0.01)
    assert not server.connections
    # A real TLS client is served.
    context = ssl.create_default_context(cafile=cert)
    reader, writer = await asyncio.open_connection(*address, ssl=context,
                                                   server_hostname="localhost")
    writer.write(binding_request())
    assert error_code(await read_frame(reader)) is None
    assert next(iter(server.connections)).ctx.five_tuple.protocol == "tls"
    writer.close()
