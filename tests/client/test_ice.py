"""Trickled candidates and ICE restarts, with real aiortc peers and our TURN server."""

from __future__ import annotations

import asyncio

from aiortc import RTCSessionDescription

from facecall.client import CallState, EndReason
from facecall.client.peer import PeerSession
from facecall.client.tracks import LocalTrack
from facecall.media.sources import SyntheticAudioTrack
from facecall.turn.server import TurnServer
from tests.client.conftest import MakeDevice
from tests.client.test_calls import connected_call, stamped_frames
from tests.live import loopback_turn_config


def split_candidates(description: RTCSessionDescription) -> tuple[RTCSessionDescription, list[str]]:
    """The description without its candidates, and those candidates as trickle ICE lines."""
    kept, candidates = [], []
    for line in description.sdp.splitlines():
        if line.startswith("a=candidate:"):
            candidates.append(line[2:])
        elif line != "a=end-of-candidates":
            kept.append(line)
    return RTCSessionDescription(sdp="\r\n".join(kept) + "\r\n", type=description.type), candidates


async def test_trickled_candidates_are_applied_before_and_after_the_description() -> None:
    def peer() -> PeerSession:
        session = PeerSession(ice_servers=[], ice_host_addresses=["127.0.0.1"])
        session.add_tracks([LocalTrack(SyntheticAudioTrack())], ["audio"])
        return session

    offerer, answerer = peer(), peer()
    try:
        offer, offer_candidates = split_candidates(await offerer.create_offer())
        assert offer_candidates and "a=candidate" not in offer.sdp
        for line in offer_candidates:  # trickled ahead of the offer: kept until it is set
            await answerer.add_candidate({"candidate": line, "sdpMid": "0", "sdpMLineIndex": 0})
        await answerer.add_candidate(None)
        answer, answer_candidates = split_candidates(await answerer.accept_offer(offer))
        await offerer.accept_answer(answer)
        for line in answer_candidates:
            await offerer.add_candidate({"candidate": line, "sdpMid": "0"})
        await offerer.add_candidate(None)
        for _ in range(200):
            if offerer.pc.connectionState == answerer.pc.connectionState == "connected":
                break
            await asyncio.sleep(0.05)
        assert offerer.pc.connectionState == "connected" == answerer.pc.connectionState
    finally:
        await offerer.close()
        await answerer.close()


async def test_restart_ice_on_request_keeps_media(make_device: MakeDevice) -> None:
    _alice, _bob, outgoing, incoming = await connected_call(make_device)
    before = outgoing.peer_connection
    await stamped_frames(incoming, 3)
    await outgoing.restart_ice()
    await asyncio.gather(outgoing.wait_connected(30), incoming.wait_connected(30))
    for _ in range(100):
        if outgoing.ice_restarts and incoming.ice_restarts:
            break
        await asyncio.sleep(0.05)
    assert outgoing.ice_restarts == 1 and incoming.ice_restarts == 1
    assert outgoing.peer_connection is not before
    for call in (outgoing, incoming):  # the same remote tracks carry the new connection's media
        assert (await stamped_frames(call, 5)).summary().stamped >= 5


async def test_restarts_from_both_sides_at_once_settle_on_one(make_device: MakeDevice) -> None:
    """Both devices offer an ICE restart at the same moment: the lower device id's offer wins
    (the other side answers it) and the call reconnects once."""
    _alice, _bob, outgoing, incoming = await connected_call(make_device)
    await asyncio.gather(outgoing.restart_ice(), incoming.restart_ice())
    await asyncio.gather(outgoing.wait_connected(30), incoming.wait_connected(30))
    for _ in range(100):
        if outgoing.ice_restarts and incoming.ice_restarts:
            break
        await asyncio.sleep(0.05)
    assert outgoing.ice_restarts == 1 and incoming.ice_restarts == 1
    for call in (outgoing, incoming):
        assert (await stamped_frames(call, 5)).summary().stamped >= 5


async def test_path_failure_restarts_ice_through_a_restarted_turn_server(
        make_device: MakeDevice, turn: TurnServer) -> None:
    _alice, _bob, outgoing, incoming = await connected_call(
        make_device, relay_only=True, ice_restart_after=2.0)
    assert outgoing.path == "relay"
    udp = turn.udp_addresses[0]
    await turn.stop()  # every allocation, and with them the media path, is gone
    replacement = TurnServer(loopback_turn_config(udp_listen=[udp], tcp_listen=[]))  # aiortc uses the UDP URI
    for _ in range(50):  # the old socket closes on a later loop iteration
        try:
            await replacement.start()
            break
        except OSError:
            await asyncio.sleep(0.1)
    try:
        reconnecting = await outgoing.wait_state(CallState.RECONNECTING, timeout=20)
        assert reconnecting is CallState.RECONNECTING
        await asyncio.gather(outgoing.wait_connected(40), incoming.wait_connected(40))
        assert outgoing.ice_restarts >= 1 and outgoing.path == "relay"
        assert (await stamped_frames(incoming, 5)).summary().stamped >= 5
        assert (await stamped_frames(outgoing, 5)).summary().stamped >= 5
        await outgoing.hangup()
        assert await incoming.wait_ended(10) is EndReason.HUNG_UP
    finally:
        await replacement.stop()
