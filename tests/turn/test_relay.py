"""The TURN server end to end over UDP with a raw RFC client: RFC 8656 §7-§12."""

from __future__ import annotations

import asyncio
import os
import re
import resource
import socket
from pathlib import Path

from facecall.turn import batched, stun
from facecall.turn.server import TurnServer

from .conftest import FakeClock, RawClient, UdpEndpoint, error_code, udp_endpoint


async def test_binding_returns_the_reflexive_address(client: RawClient) -> None:
    request = stun.Message(stun.Method.BINDING, stun.Class.REQUEST, os.urandom(12))
    response = await client.transact(request, sign=False)
    assert error_code(response) is None
    assert stun.check_fingerprint(response) is True
    mapped = stun.decode_xor_address(
        response.get(stun.XOR_MAPPED_ADDRESS) or b"", response.transaction_id
    )
    assert mapped == client.endpoint.address


async def test_allocate_without_credentials_is_challenged(client: RawClient) -> None:
    request = stun.Message(
        stun.Method.ALLOCATE,
        stun.Class.REQUEST,
        os.urandom(12),
        [(stun.REQUESTED_TRANSPORT, bytes([17, 0, 0, 0]))],
    )
    response = await client.transact(request, sign=False)
    assert error_code(response) == 401
    assert response.get(stun.REALM) == b"facecall"
    assert response.get(stun.NONCE)


async def test_relay_through_channel_and_indications(
    server: TurnServer, client: RawClient, peer: UdpEndpoint
) -> None:
    response = await client.allocate()
    assert error_code(response) is None
    assert stun.check_message_integrity(response, client.key)
    relayed = client.relayed(response)
    assert relayed[0] == "127.0.0.1" and 61000 <= relayed[1] <= 65535
    assert stun.decode_uint32(response.get(stun.LIFETIME) or b"") == 600

    # No permission yet: the peer's datagram is dropped.
    peer.send(b"too early", relayed)
    assert error_code(await client.permit(peer.address)) is None
    # Send indication -> peer (§11.2), peer -> Data indication (§11.3).
    client.send_indication(peer.address, b"hello peer")
    data, source = await peer.receive()
    assert (data, source) == (b"hello peer", relayed)
    peer.send(b"hello client", relayed)
    raw, _ = await client.endpoint.receive()
    indication = stun.parse_message(raw)
    assert (indication.method, indication.message_class) == (stun.Method.DATA, stun.Class.INDICATION)
    assert indication.get(stun.DATA) == b"hello client"
    assert stun.decode_xor_address(
        indication.get(stun.XOR_PEER_ADDRESS) or b"", indication.transaction_id
    ) == peer.address

    # Channel (§12): ChannelData both ways.
    assert error_code(await client.bind_channel(0x4001, peer.address)) is None
    client.endpoint.send(stun.encode_channel_data(0x4001, b"via channel"), client.server)
    assert (await peer.receive())[0] == b"via channel"
    peer.send(b"back via channel", relayed)
    raw, _ = await client.endpoint.receive()
    assert stun.parse_channel_data(raw) == (0x4001, b"back via channel")

    allocation = next(iter(server.allocations.values()))
    assert allocation.usage.packets_to_peer == 2
    assert allocation.usage.packets_from_peer == 2
    assert allocation.usage.dropped == 1


async def test_permission_is_per_ip_and_expires(
    server: TurnServer, client: RawClient, peer: UdpEndpoint, clock: FakeClock
) -> None:
    relayed = client.relayed(await client.allocate())
    assert error_code(await client.permit(peer.address)) is None
    peer.send(b"one", relayed)
    assert (await client.endpoint.receive())[0]
    clock.now += 301  # RFC 8656 §9: permissions last 300 s
    server.core.expire()  # the housekeeping tick (every second)
    peer.send(b"two", relayed)
    assert await client.endpoint.nothing()
    allocation = next(iter(server.allocations.values()))
    assert allocation.permissions == {}


async def test_refresh_and_expiry(server: TurnServer, client: RawClient, clock: FakeClock) -> None:
    await client.allocate((stun.LIFETIME, stun.encode_uint32(100_000)))
    allocation = next(iter(server.allocations.values()))
    assert allocation.expires == clock.now + 3600  # capped at max_lifetime
    response = await client.request(stun.Method.REFRESH, [(stun.LIFETIME, stun.encode_uint32(60))])
    assert stun.decode_uint32(response.get(stun.LIFETIME) or b"") == 600  # default is the floor
    clock.now += 601
    server.core.expire()
    assert server.allocations == {}
    response = await client.request(stun.Method.REFRESH)
    assert error_code(response) == 437


async def test_refresh_zero_deletes_and_frees_the_relay(
    server: TurnServer, client: RawClient, peer: UdpEndpoint
) -> None:
    relayed = client.relayed(await client.allocate())
    response = await client.request(stun.Method.REFRESH, [(stun.LIFETIME, stun.encode_uint32(0))])
    assert error_code(response) is None
    assert server.allocations == {}
    assert error_code(await client.permit(peer.address)) == 437
    await asyncio.sleep(0)  # the transport closes its socket on the next loop iteration
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(relayed)  # the relay port is free again


async def test_second_allocate_is_a_mismatch_but_retransmission_is_answered(
    client: RawClient,
) -> None:
    first = await client.allocate()
    assert error_code(first) is None
    assert error_code(await client.allocate()) == 437
    # A retransmission (same transaction ID) gets the same success response (§7.2 step 2).
    again = stun.Message(
        stun.Method.ALLOCATE,
        stun.Class.REQUEST,
        first.transaction_id,
        [
            (stun.REQUESTED_TRANSPORT, bytes([17, 0, 0, 0])),
            (stun.USERNAME, client.username.encode()),
            (stun.REALM, client.realm.encode()),
            (stun.NONCE, client.nonce.encode()),
        ],
    )
    client.endpoint.send(again.encode(integrity_key=client.key), client.server)
    raw, _ = await client.endpoint.receive()
    assert stun.parse_message(raw).get(stun.XOR_RELAYED_ADDRESS) == first.get(
        stun.XOR_RELAYED_ADDRESS
    )


async def test_allocate_errors(client: RawClient) -> None:
    tcp = await client.request(stun.Method.ALLOCATE, [(stun.REQUESTED_TRANSPORT, bytes([6, 0, 0, 0]))])
    assert error_code(tcp) == 442
    missing = await client.request(stun.Method.ALLOCATE, [])
    assert error_code(missing) == 400
    bad_family = await client.allocate((stun.REQUESTED_ADDRESS_FAMILY, bytes([3, 0, 0, 0])))
    assert error_code(bad_family) == 440
    dont_fragment = await client.allocate((stun.DONT_FRAGMENT, b""))
    assert error_code(dont_fragment) == 420
    assert dont_fragment.get(stun.UNKNOWN_ATTRIBUTES) == stun.DONT_FRAGMENT.to_bytes(2, "big")


async def test_unknown_attributes_are_checked_after_authentication(client: RawClient) -> None:
    """RFC 8489 §6.3: unknown comprehension-required attributes are looked at once the
    authentication checks are done, so the 420 to an authenticated request is signed."""
    unknown = (0x0030, b"x")
    unsigned = stun.Message(stun.Method.REFRESH, stun.Class.REQUEST, os.urandom(12), [unknown])
    assert error_code(await client.transact(unsigned, sign=False)) == 401
    assert error_code(await client.allocate()) is None
    response = await client.request(stun.Method.REFRESH, [unknown])
    assert error_code(response) == 420
    assert response.get(stun.UNKNOWN_ATTRIBUTES) == b"\x00\x30"
    assert stun.check_message_integrity(response, client.key)
    # Binding needs no credentials: its 420 comes at once, unsigned.
    binding = stun.Message(stun.Method.BINDING, stun.Class.REQUEST, os.urandom(12), [unknown])
    response = await client.transact(binding, sign=False)
    assert error_code(response) == 420 and response.get(stun.MESSAGE_INTEGRITY) is None


async def test_send_indication_with_unknown_required_attribute_is_discarded(
    client: RawClient, peer: UdpEndpoint
) -> None:
    """RFC 8489 §6.3.2 (indications with unknown comprehension-required attributes are
    discarded) and RFC 8656 §11.2 (DONT-FRAGMENT, which this server does not support)."""
    await client.allocate()
    assert error_code(await client.permit(peer.address)) is None
    for extra in ((0x0030, b""), (stun.DONT_FRAGMENT, b"")):
        tid = os.urandom(12)
        indication = stun.Message(stun.Method.SEND, stun.Class.INDICATION, tid, [
            (stun.XOR_PEER_ADDRESS, stun.encode_xor_address(peer.address, tid)),
            (stun.DATA, b"must not leave"), extra])
        client.endpoint.send(indication.encode(), client.server)
        assert await peer.nothing(0.2), extra
    client.send_indication(peer.address, b"plain")
    assert (await peer.receive())[0] == b"plain"


async def test_even_port_reservation_is_refused(client: RawClient) -> None:
    """EVEN-PORT with R set asks for a reservation this server does not make: 508 (RFC 8656
    §7.2); without R the relayed port is even."""
    assert error_code(await client.allocate((stun.EVEN_PORT, b"\x80"))) == 508
    response = await client.allocate((stun.EVEN_PORT, b"\x00"))
    assert error_code(response) is None
    assert client.relayed(response)[1] % 2 == 0


async def test_ipv6_allocation(make_server, peer: UdpEndpoint) -> None:  # type: ignore[no-untyped-def]
    server = await make_server(udp_listen=[("::1", 0)], tcp_listen=[])
    endpoint = await udp_endpoint("::1")
    peer6 = await udp_endpoint("::1")
    try:
        client = RawClient(endpoint, server.udp_addresses[0])
        response = await client.allocate((stun.REQUESTED_ADDRESS_FAMILY, bytes([2, 0, 0, 0])))
        relayed = client.relayed(response)
        assert relayed[0] == "::1"
        assert error_code(await client.permit(peer.address)) == 443  # IPv4 peer, IPv6 relay
        assert error_code(await client.permit(peer6.address)) is None
        client.send_indication(peer6.address, b"six")
        data, source = await peer6.receive()
        assert data == b"six" and source[:2] == relayed
        # ChannelData both ways over IPv6 (28-byte socket addresses on the batched path).
        assert error_code(await client.bind_channel(0x4002, peer6.address)) is None
        for i in range(5):
            endpoint.send(stun.encode_channel_data(0x4002, b"six %d" % i), client.server)
        assert [(await peer6.receive())[0] for _ in range(5)] == [b"six %d" % i for i in range(5)]
        for i in range(5):
            peer6.send(b"back %d" % i, relayed)
        replies = [stun.parse_channel_data((await endpoint.receive())[0]) for _ in range(5)]
        assert replies == [(0x4002, b"back %d" % i) for i in range(5)]
    finally:
        endpoint.close()
        peer6.close()


async def test_channel_bind_rules(client: RawClient, peer: UdpEndpoint) -> None:
    await client.allocate()
    assert error_code(await client.bind_channel(0x3FFF, peer.address)) == 400
    assert error_code(await client.bind_channel(0x8000, peer.address)) == 400
    assert error_code(await client.bind_channel(0x4000, peer.address)) is None
    other = (peer.address[0], peer.address[1] + 1 if peer.address[1] < 65535 else 1024)
    assert error_code(await client.bind_channel(0x4000, other)) == 400  # number taken
    assert error_code(await client.bind_channel(0x4001, peer.address)) == 400  # peer taken
    assert error_code(await client.bind_channel(0x4000, peer.address)) is None  # refresh


async def test_wrong_user_on_allocation_is_441(server: TurnServer, client: RawClient) -> None:
    await client.allocate()
    server.core.auth._static_users["bob"] = "builder"
    client.username, client.password = "bob", "builder"
    client.key = b""
    client.nonce = ""
    response = await client.request(stun.Method.REFRESH)
    assert error_code(response) == 441


async def test_external_address_is_advertised(make_server) -> None:  # type: ignore[no-untyped-def]
    server = await make_server(external_ipv4="203.0.113.9")
    endpoint = await udp_endpoint()
    try:
        client = RawClient(endpoint, server.udp_addresses[0])
        host, port = client.relayed(await client.allocate())
        assert host == "203.0.113.9"
        allocation = next(iter(server.allocations.values()))
        assert allocation.transport is not None
        assert allocation.transport.get_extra_info("sockname")[:2] == ("127.0.0.1", port)
    finally:
        endpoint.close()


async def test_server_runs_on_the_requested_udp_path(
    server: TurnServer, client: RawClient, udp_io: str
) -> None:
    assert server.udp_io == udp_io
    await client.allocate()
    allocation = next(iter(server.allocations.values()))
    is_batched = isinstance(allocation.transport, batched.RelayTransport)
    assert is_batched == (udp_io == "batched")
    assert isinstance(server._udp[0], batched.BatchUdpListener) == is_batched


async def test_socket_buffer_sizes_are_applied(make_server) -> None:  # type: ignore[no-untyped-def]
    server = await make_server(socket_buffer=300_000, relay_socket_buffer=200_000, tcp_listen=[])
    endpoint = await udp_endpoint()
    try:
        client = RawClient(endpoint, server.udp_addresses[0])
        await client.allocate()
        allocation = next(iter(server.allocations.values()))
        assert allocation.transport is not None
        relay = allocation.transport.get_extra_info("socket")
        # Linux reports twice the size asked for (socket(7)), capped at rmem_max/wmem_max.
        assert relay.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= 200_000
        listener = server._udp[0]
        sock = listener.sock if isinstance(listener, batched.BatchUdpListener) else (
            listener.transport.get_extra_info("socket")  # type: ignore[union-attr]
        )
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) >= 300_000
    finally:
        endpoint.close()


async def test_workers_share_a_port_with_reuse_port(make_server) -> None:  # type: ignore[no-untyped-def]
    first = await make_server(reuse_port=True, tcp_listen=[])
    second = await make_server(
        reuse_port=True, udp_listen=list(first.udp_addresses), tcp_listen=[]
    )
    assert second.udp_addresses == first.udp_addresses
    endpoint = await udp_endpoint()
    try:
        client = RawClient(endpoint, first.udp_addresses[0])
        assert error_code(await client.allocate()) is None
        assert len(first.allocations) + len(second.allocations) == 1
    finally:
        endpoint.close()


async def test_descriptor_table_is_reserved_up_front(make_server) -> None:  # type: ignore[no-untyped-def]
    """The fd table is grown at start, not while the 256th/512th relay socket opens (that
    stalls a threaded process for an RCU grace period)."""
    await make_server(max_allocations=3000, max_tcp_connections=100)
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert _fd_table_size() >= min(3164, soft)


def _fd_table_size() -> int:
    """FDSize of /proc/self/status (proc(5)): the slots in this process's fd table."""
    status = Path("/proc/self/status").read_text()
    match = re.search(r"^FDSize:\s+(\d+)", status, re.M)
    assert match is not None
    return int(match.group(1))
