"""Who is speaking in a call's group media (docs/protocol.md, "Group media (SFU)"): ``speaker``
in the ``ok`` of ``sfu.join`` and the ``sfu.speaker`` event, which tells every device in the
room when the SFU's dominant speaker (RFC 6464 levels) changes, and that nobody is when the
speaker leaves.

A real server, real WebSocket devices and real aiortc peers in the SFU's slot shape (the
helpers of tests/server/test_sfu_signaling.py); carol's peer sends a steady tone that its
RFC 6464 levels mark as speech, the others aiortc's silence."""

from __future__ import annotations

import asyncio
from typing import Any

from facecall.client.signaling import SignalingConnection
from facecall.signaling.protocol import parse_server_message
from facecall.signaling.server_messages import SfuSpeaker
from tests.live import LiveServer
from tests.server.test_sfu_members import server
from tests.server.test_sfu_signaling import three_in_a_call
from tests.sfu.test_transport import Client, TalkingAudioTrack

__all__ = ["server"]  # the fixture: test_sfu_members.py's


async def next_speaker(conn: SignalingConnection, timeout: float = 15.0) -> dict[str, Any]:
    """The next ``sfu.speaker`` event (others skipped), checked against the schema's model."""
    event = await conn.next_event("sfu.speaker", timeout=timeout)
    assert isinstance(parse_server_message(event), SfuSpeaker)
    return {"user_id": event["user_id"], "device_id": event["device_id"]}


async def test_every_device_hears_who_speaks_and_that_nobody_does_once_they_left(
        server: LiveServer) -> None:
    call_id, people = await three_in_a_call(server)
    alice, bob, carol = people
    carol.client = Client("carol", 3, slots=2, audio=TalkingAudioTrack())
    try:
        for member in (alice, bob):  # silent: nobody speaks yet
            ok = await member.conn.request("sfu.join", call_id=call_id, sdp=await member.client.offer())
            await member.client.accept(ok["sdp"])
            assert ok["speaker"] is None

        # carol talks: once the SFU takes her for the speaker, everyone hears so, she too
        ok = await carol.conn.request("sfu.join", call_id=call_id, sdp=await carol.client.offer())
        await carol.client.accept(ok["sdp"])
        her = {"user_id": carol.user_id, "device_id": carol.device_id}
        for member in people:
            assert await next_speaker(member.conn) == her

        # a device that joins again is told in its ok, not by an event older than it
        again = Client("bob", 2, slots=2)
        try:
            ok = await bob.conn.request("sfu.join", call_id=call_id, sdp=await again.offer())
            await again.accept(ok["sdp"])
            assert ok["speaker"] == her
        finally:
            await again.close()

        # carol leaves the group media: nobody is the speaker; she is told nothing more
        await carol.conn.request("sfu.leave", call_id=call_id)
        for member in (alice, bob):
            assert await next_speaker(member.conn) == {"user_id": None, "device_id": None}
        await asyncio.sleep(0.5)
        while not carol.conn.events.empty():
            assert carol.conn.events.get_nowait()["type"] != "sfu.speaker"
    finally:
        for member in people:
            await member.client.close()
