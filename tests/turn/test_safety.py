"""Safety: no open proxy, quotas, bandwidth cap, unauthorised and malformed input, streams."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import struct

from prometheus_client import REGISTRY

from facecall.turn import stun
from facecall.turn.auth import long_term_key
from facecall.turn.rest import ephemeral_credentials
from facecall.turn.server import TurnServer

from .conftest import PASSWORD, SECRET, USER, FakeClock, RawClient, UdpEndpoint, error_code, udp_endpoint


async def test_loopback_and_metadata_peers_refused_by_default(make_server) -> None:  # type: ignore[no-untyped-def]
    server = await make_server(allowed_peers=[])
    endpoint = await udp_endpoint()
    try:
        client = RawClient(endpoint, server.udp_addresses[0])
        assert error_code(await client.allocate()) is None
        for peer in [("127.0.0.1", 9), ("169.254.169.254", 80), ("10.0.0.1", 9),
                     ("0.0.0.0", 9), ("224.0.0.1", 9)]:
            assert error_code(await client.permit(peer)) == 403, peer
            assert error_code(await client.bind_channel(0x4000, peer)) == 403, peer
        # One refused peer refuses the whole request (§9.2: all or nothing).
        assert error_code(await client.permit(("8.8.8.8", 9), ("127.0.0.1", 9))) == 403
        allocation = next(iter(server.allocations.values()))
        assert allocation.permissions == {}
        # A Send indication to a peer without permission is dropped.
        client.send_indication(("127.0.0.1", 9), b"x")
        await asyncio.sleep(0.05)
        assert allocation.usage.packets_to_peer == 0
    finally:
        endpoint.close()


async def test_ipv6_forms_of_loopback_refused(make_server) -> None:  # type: ignore[no-untyped-def]
    server = await make_server(udp_listen=[("::1", 0)], tcp_listen=[], allowed_peers=[])
    endpoint = await udp_endpoint("::1")
    try:
        client = RawClient(endpoint, server.udp_addresses[0])
        response = await client.allocate((stun.REQUESTED_ADDRESS_FAMILY, bytes([2, 0, 0, 0])))
        assert error_code(response) is None
        for host in ["::1", "::ffff:127.0.0.1", "::127.0.0.1", "fe80::1", "fd00:ec2::254",
                     "64:ff9b::a9fe:a9fe", "::"]:
            tid = os.urandom(12)
            response = await client.request(
                stun.Method.CREATE_PERMISSION,
                [(stun.XOR_PEER_ADDRESS, xor_ipv6_value(host, tid))],
                transaction_id=tid,
            )
            assert error_code(response) == 403, host
    finally:
        endpoint.close()


def xor_ipv6_value(host: str, tid: bytes) -> bytes:
    """XOR-PEER-ADDRESS with family IPv6 even for IPv4-mapped forms, which our own encoder
    would write as IPv4 (RFC 8489 §14.2)."""
    mask = struct.pack("!I", stun.MAGIC_COOKIE) + tid
    packed = ipaddress.IPv6Address(host).packed
    xored = bytes(a ^ b for a, b in zip(packed, mask, strict=True))
    return struct.pack("!BBH", 0, 2, 9 ^ 0x2112) + xored


async def test_user_and_server_quotas(make_server) -> None:  # type: ignore[no-untyped-def]
    server = await make_server(max_allocations_per_user=2, max_allocations=3)
    server.core.auth._static_users["bob"] = "pw"
    endpoints = [await udp_endpoint() for _ in range(5)]
    try:
        alice = [RawClient(e, server.udp_addresses[0]) for e in endpoints[:3]]
        assert error_code(await alice[0].allocate()) is None
        assert error_code(await alice[1].allocate()) is None
        assert error_code(await alice[2].allocate()) == 486
        bob = [RawClient(e, server.udp_addresses[0], "bob", "pw") for e in endpoints[3:]]
        assert error_code(await bob[0].allocate()) is None
        assert error_code(await bob[1].allocate()) == 508
        # Freeing one makes room again.
        await alice[0].request(stun.Method.REFRESH, [(stun.LIFETIME, stun.encode_uint32(0))])
        assert error_code(await bob[1].allocate()) is None
    finally:
        for e in endpoints:
            e.close()


async def test_rest_credentials_of_one_user_share_a_quota(make_server, clock: FakeClock) -> None:  # type: ignore[no-untyped-def]
    server = await make_server(max_allocations_per_user=1)
    endpoints = [await udp_endpoint() for _ in range(2)]
    try:
        clients = []
        for ttl, endpoint in zip((600, 900), endpoints, strict=True):
            username, password = ephemeral_credentials(SECRET, "hana", ttl, clock.now)
            clients.append(RawClient(endpoint, server.udp_addresses[0], username, password))
        assert error_code(await clients[0].allocate()) is None
        assert error_code(await clients[1].allocate()) == 486
    finally:
        for endpoint in endpoints:
            endpoint.close()


async def test_idle_stream_connection_is_closed(make_server) -> None:  # type: ignore[no-untyped-def]
    server = await make_server(idle_timeout=0.05)
    reader, writer = await asyncio.open_connection(*server.tcp_addresses[0])
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def test_bandwidth_cap_drops_excess(
    make_server, peer: UdpEndpoint, clock: FakeClock  # type: ignore[no-untyped-def]
) -> None:
    server = await make_server(bandwidth_cap=1000)
    endpoint = await udp_endpoint()
    try:
        client = RawClient(endpoint, server.udp_addresses[0])
        await client.allocate()
        assert error_code(await client.bind_channel(0x4000, peer.address)) is None
        for _ in range(5):
            endpoint.send(stun.encode_channel_data(0x4000, bytes(400)), client.server)
        received = [await peer.receive() for _ in range(2)]
        assert len(received) == 2
        assert await peer.nothing(0.2)
        allocation = next(iter(server.allocations.values()))
        assert allocation.usage.dropped == 3
        clock.now += 1  # a second later the bucket is full again
        server.core.expire()  # the housekeeping tick
        endpoint.send(stun.encode_channel_data(0x4000, bytes(400)), client.server)
        assert (await peer.receive())[0] == bytes(400)
    finally:
        endpoint.close()


async def test_unauthenticated_and_badly_signed_requests(
    server: TurnServer, client: RawClient, peer: UdpEndpoint
) -> None:
    for method in (stun.Method.REFRESH, stun.Method.CREATE_PERMISSION, stun.Method.CHANNEL_BIND):
        response = await client.transact(
            stun.Message(method, stun.Class.REQUEST, os.urandom(12)), sign=False
        )
        assert error_code(response) == 401
    await client.allocate()
    # MESSAGE-INTEGRITY present but USERNAME missing: 400 (RFC 8489 §9.2.4).
    tid = os.urandom(12)
    bare = stun.Message(stun.Method.REFRESH, stun.Class.REQUEST, tid,
                        [(stun.REALM, b"facecall"), (stun.NONCE, client.nonce.encode())])
    client.endpoint.send(bare.encode(integrity_key=client.key), client.server)
    raw, _ = await client.endpoint.receive()
    assert error_code(stun.parse_message(raw)) == 400
    # Forged nonce: 438 with a fresh one.
    saved = client.nonce
    client.nonce = "0" * 32
    response = await client.transact(stun.Message(stun.Method.REFRESH, stun.Class.REQUEST,
                                                  os.urandom(12)))
    assert error_code(response) == 438
    assert response.get(stun.NONCE)
    client.nonce = saved
    # Wrong key: 401, and the error is not signed.
    client.key = long_term_key(USER, "facecall", "nope")
    response = await client.transact(stun.Message(stun.Method.REFRESH, stun.Class.REQUEST,
                                                  os.urandom(12)))
    assert error_code(response) == 401
    assert response.get(stun.MESSAGE_INTEGRITY) is None
    # Wrong realm: 401.
    client.key = long_term_key(USER, "other", PASSWORD)
    client.realm = "other"
    response = await client.transact(stun.Message(stun.Method.REFRESH, stun.Class.REQUEST,
                                                  os.urandom(12)))
    assert error_code(response) == 401


async def test_stale_nonce_after_nonce_lifetime(
    server: TurnServer, client: RawClient, clock: FakeClock
) -> None:
    await client.allocate()
    clock.now += server.config.nonce_lifetime + 1
    nonce = client.nonce
    message = stun.Message(stun.Method.REFRESH, stun.Class.REQUEST, os.urandom(12))
    response = await client.transact(message)
    assert error_code(response) == 438
    # The client library helper retries with the new nonce and succeeds.
    response = await client.request(stun.Method.REFRESH)
    assert error_code(response) is None and client.nonce != nonce


async def test_malformed_datagrams_are_dropped_and_server_keeps_working(
    server: TurnServer, client: RawClient
) -> None:
    address = server.udp_addresses[0]
    junk = [b"", b"\x00", b"\x00\x01\x00\x00", bytes(20), b"\x40\x00\xff\xff",
            b"\x40\x00\x00\x04ab", os.urandom(1500), b"\x00\x01" + bytes(18),
            b"\x00\x01\x00\x08\x21\x12\xa4\x42" + bytes(12) + b"\x80\x28\x00\x04\x00\x00\x00\x00"]
    for data in junk:
        client.endpoint.send(data, address)
    assert await client.endpoint.nothing(0.2)
    # An unknown method is a 400; an unknown comprehension-required attribute a 420.
    response = await client.transact(
        stun.Message(0x00A, stun.Class.REQUEST, os.urandom(12)), sign=False
    )
    assert error_code(response) == 400
    response = await client.transact(
        stun.Message(stun.Method.BINDING, stun.Class.REQUEST, os.urandom(12),
                     [(0x7777, b"x"), (0xC001, b"optional is ignored")]),
        sign=False,
    )
    assert error_code(response) == 420
    assert response.get(stun.UNKNOWN_ATTRIBUTES) == b"\x77\x77"
    assert error_code(await client.allocate()) is None


async def test_stream_framing_split_coalesced_and_junk(server: TurnServer) -> None:
    host, port = server.tcp_addresses[0]
    reader, writer = await asyncio.open_connection(host, port)
    request = stun.Message(stun.Method.BINDING, stun.Class.REQUEST, os.urandom(12)).encode()
    # Byte by byte, then two at once.
    for b in request:
        writer.write(bytes([b]))
        await writer.drain()
    writer.write(request + request)
    for _ in range(3):
        header = await asyncio.wait_for(reader.readexactly(20), 5)
        body = await reader.readexactly(struct.unpack("!H", header[2:4])[0])
        assert error_code(stun.parse_message(header + body)) is None
    # ChannelData without an allocation is ignored; a byte that starts no frame closes.
    writer.write(stun.encode_channel_data(0x4000, b"abc", pad=True))
    writer.write(b"\xff\xff\xff\xff")
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def test_tcp_allocation_ends_with_its_connection(server: TurnServer) -> None:
    from aioice.turn import create_turn_endpoint

    transport, _ = await create_turn_endpoint(
        asyncio.DatagramProtocol, server.tcp_addresses[0], USER, PASSWORD, transport="tcp"
    )
    assert len(server.allocations) == 1
    # Drop the TCP connection without a Refresh(0).
    transport._TurnTransport__inner_protocol.transport.abort()  # type: ignore[attr-defined]
    for _ in range(100):
        if not server.allocations:
            break
        await asyncio.sleep(0.01)
    assert server.allocations == {}


async def test_metrics_count_allocations_and_packets(
    server: TurnServer, client: RawClient, peer: UdpEndpoint
) -> None:
    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before_alloc = value("facecall_turn_allocations_created_total")
    before_pkts = value("facecall_turn_relayed_packets_total", direction="to_peer")
    await client.allocate()
    await client.bind_channel(0x4000, peer.address)
    for _ in range(3):
        client.endpoint.send(stun.encode_channel_data(0x4000, b"m"), client.server)
        await peer.receive()
    server.core.expire()
    assert value("facecall_turn_allocations_created_total") == before_alloc + 1
    assert value("facecall_turn_relayed_packets_total", direction="to_peer") == before_pkts + 3
    assert value("facecall_turn_requests_total", method="allocate", result="401") >= 1


async def _tcp_transact(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, message: stun.Message, key: bytes | None
) -> stun.Message:
    writer.write(message.encode(integrity_key=key))
    header = await asyncio.wait_for(reader.readexactly(20), 5)
    body = await reader.readexactly(struct.unpack("!H", header[2:4])[0])
    return stun.parse_message(header + body)


async def test_tcp_client_that_stops_reading_cannot_grow_server_buffers(
    server: TurnServer, peer: UdpEndpoint
) -> None:
    from facecall.turn.server import STREAM_HIGH_WATER

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window fills fast
    sock.connect(server.tcp_addresses[0])
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=sock)
    transport_attr = [(stun.REQUESTED_TRANSPORT, bytes([17, 0, 0, 0]))]
    challenge = await _tcp_transact(
        reader, writer, stun.Message(stun.Method.ALLOCATE, stun.Class.REQUEST, os.urandom(12),
                                     list(transport_attr)), None)
    auth = [(stun.USERNAME, USER.encode()), (stun.REALM, b"facecall"),
            (stun.NONCE, challenge.get(stun.NONCE) or b"")]
    key = long_term_key(USER, "facecall", PASSWORD)
    tid = os.urandom(12)
    allocated = await _tcp_transact(
        reader, writer, stun.Message(stun.Method.ALLOCATE, stun.Class.REQUEST, tid,
                                     [*transport_attr, *auth]), key)
    relayed = stun.decode_xor_address(allocated.get(stun.XOR_RELAYED_ADDRESS) or b"", tid)
    tid = os.urandom(12)
    bound = await _tcp_transact(reader, writer, stun.Message(
        stun.Method.CHANNEL_BIND, stun.Class.REQUEST, tid,
        [(stun.CHANNEL_NUMBER, stun.encode_channel_number(0x4000)),
         (stun.XOR_PEER_ADDRESS, stun.encode_xor_address(peer.address, tid)), *auth]), key)
    assert error_code(bound) is None
    (connection,) = server.connections
    # The client reads nothing more; the peer sends up to 100 MB, paced so that the relay
    # socket's receive buffer does not simply drop it.
    largest = 0
    for _burst in range(1000):
        for _ in range(100):
            peer.send(bytes(1000), relayed)
        await asyncio.sleep(0.001)
        assert connection.transport is not None
        largest = max(largest, connection.transport.get_write_buffer_size())
        if connection.paused and _burst > 100:
            break
    assert connection.paused, "the transport never reached its high-water mark"
    assert largest <= STREAM_HIGH_WATER + 1004
    writer.close()
