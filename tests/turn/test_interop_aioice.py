"""aioice's TURN client (a client nobody here wrote) against our server: UDP, TCP, TLS."""

from __future__ import annotations

import asyncio
import ssl
import time
from pathlib import Path

import pytest
from aioice.stun import TransactionFailed
from aioice.turn import create_turn_endpoint

from facecall.turn.rest import ephemeral_credentials
from facecall.turn.server import TurnServer
from facecall.turn.tls import write_self_signed

from .conftest import PASSWORD, SECRET, USER, UdpEndpoint


class Inbox(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait((data, addr))


async def exchange(transport: asyncio.DatagramTransport, inbox: Inbox, peer: UdpEndpoint) -> None:
    """Client -> peer and peer -> client through the relay, several times (the second
    round trip goes over the channel aioice binds)."""
    relayed = transport.get_extra_info("sockname")
    for i in range(5):
        payload = f"ping {i}".encode()
        transport.sendto(payload, peer.address)
        data, source = await peer.receive()
        assert data == payload
        assert source == relayed
        peer.send(b"pong " + payload, source)
        data, addr = await asyncio.wait_for(inbox.queue.get(), 5)
        assert (data, addr) == (b"pong " + payload, peer.address)


@pytest.mark.parametrize("transport_kind", ["udp", "tcp"])
async def test_aioice_relays(server: TurnServer, peer: UdpEndpoint, transport_kind: str) -> None:
    address = (server.udp_addresses if transport_kind == "udp" else server.tcp_addresses)[0]
    transport, inbox = await create_turn_endpoint(
        Inbox, address, USER, PASSWORD, transport=transport_kind
    )
    try:
        await exchange(transport, inbox, peer)
        assert len(server.allocations) == 1
        (five_tuple,) = server.allocations
        assert five_tuple.protocol == transport_kind
    finally:
        transport.close()
        await asyncio.sleep(0.1)


async def test_aioice_over_tls_with_rest_credentials(
    make_server, peer: UdpEndpoint, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    cert, key = write_self_signed(tmp_path, ["127.0.0.1"])
    server = await make_server(
        tls_listen=[("127.0.0.1", 0)], tls_cert=str(cert), tls_key=str(key)
    )
    context = ssl.create_default_context(cafile=str(cert))
    # The fixture clock sits in 2027; credentials are minted for that clock.
    username, password = ephemeral_credentials(SECRET, "erin", 600, server.core.clock())
    transport, inbox = await create_turn_endpoint(
        Inbox, server.tls_addresses[0], username, password, transport="tcp", ssl=context
    )
    try:
        await exchange(transport, inbox, peer)
        assert next(iter(server.allocations)).protocol == "tls"
    finally:
        transport.close()
        await asyncio.sleep(0.1)


@pytest.mark.parametrize(
    ("username", "password"),
    [
        (USER, "wrong"),
        ("nobody", PASSWORD),
        ephemeral_credentials("not-our-secret", "frank", 600, time.time()),
    ],
    ids=["wrong-password", "unknown-user", "foreign-secret"],
)
async def test_aioice_bad_credentials_are_refused(
    server: TurnServer, username: str, password: str
) -> None:
    with pytest.raises(TransactionFailed) as failure:
        await create_turn_endpoint(Inbox, server.udp_addresses[0], username, password)
    assert failure.value.response.attributes["ERROR-CODE"][0] == 401
    assert server.allocations == {}


async def test_aioice_expired_rest_credentials_are_refused(server: TurnServer) -> None:
    username, password = ephemeral_credentials(SECRET, "gina", 600, server.core.clock() - 601)
    with pytest.raises(TransactionFailed):
        await create_turn_endpoint(Inbox, server.udp_addresses[0], username, password)
    assert server.allocations == {}
