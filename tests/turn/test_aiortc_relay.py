"""A relay-only call between two aiortc peers (iceTransportPolicy "relay") through our server."""

from __future__ import annotations

import asyncio

import pytest
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
)

from facecall.turn.rest import ephemeral_credentials
from facecall.turn.server import TurnServer

from .conftest import SECRET


@pytest.mark.slow
async def test_relay_only_call_between_two_aiortc_peers(server: TurnServer) -> None:
    host, port = server.udp_addresses[0]
    peers = []
    for name in ("caller", "callee"):
        username, password = ephemeral_credentials(SECRET, name, 600, server.core.clock())
        config = RTCConfiguration(
            iceServers=[RTCIceServer(f"turn:{host}:{port}", username, password)],
            iceTransportPolicy=RTCIceTransportPolicy.RELAY,
        )
        peers.append(RTCPeerConnection(config))
    caller, callee = peers
    received: asyncio.Queue[str] = asyncio.Queue()

    @callee.on("datachannel")
    def on_datachannel(channel):  # type: ignore[no-untyped-def]
        @channel.on("message")
        def on_message(message):  # type: ignore[no-untyped-def]
            received.put_nowait(message)
            channel.send("pong " + message)

    channel = caller.createDataChannel("chat")
    replies: asyncio.Queue[str] = asyncio.Queue()
    channel.on("message", replies.put_nowait)
    opened = asyncio.Event()
    channel.on("open", opened.set)
    try:
        await caller.setLocalDescription(await caller.createOffer())
        offer = caller.localDescription
        assert "typ relay" in offer.sdp and "typ host" not in offer.sdp
        await callee.setRemoteDescription(offer)
        await callee.setLocalDescription(await callee.createAnswer())
        await caller.setRemoteDescription(callee.localDescription)
        await asyncio.wait_for(opened.wait(), 20)
        channel.send("ping")
        assert await asyncio.wait_for(received.get(), 10) == "ping"
        assert await asyncio.wait_for(replies.get(), 10) == "pong ping"
        # Both peers hold an allocation on our server and media went through the relay.
        assert len(server.allocations) == 2
        relayed = sum(a.usage.packets_to_peer for a in server.allocations.values())
        assert relayed > 0
        for pc in peers:
            pair = pc.sctp.transport.transport._connection._nominated  # type: ignore[union-attr]
            assert pair, "no nominated ICE pair"
            for candidate_pair in pair.values():
                assert candidate_pair.local_candidate.type == "relay"
    finally:
        for pc in peers:
            await pc.close()
