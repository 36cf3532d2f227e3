"""Group media placed by signaling (docs/protocol.md, "Group media (SFU)"): a real server, real
WebSocket devices in a three-user call, real aiortc peers in the SFU's slot shape
(tests/sfu's ``Client``): each joins with ``sfu.join`` and decodes the other two in the slots
``sfu.slots`` names; a hang-up empties that user's slots for the others; the call's end closes
the room; every bad ``sfu.*`` gets its code and the connection stays up.

The server runs in this test's event loop: its tasks inherit the context in which it started,
so starting it inside ``host_addresses(["127.0.0.1"])`` makes the SFU gather on loopback (aioice
skips loopback otherwise; the SFU modules do not import the SDK's hook themselves)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from facecall.client.ice import host_addresses
from facecall.client.signaling import SignalingConnection, SignalingError
from facecall.sfu.control import InProcessSfu
from tests.live import LiveServer, live_server
from tests.sfu.test_transport import LOOPBACK, Client, until


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[LiveServer]:
    with host_addresses(LOOPBACK):
        async with live_server(f"sqlite+aiosqlite:///{tmp_path / 'facecall.db'}",
                               ring_timeout=5.0, resume_grace=2.0) as live:
            yield live


def sfu_of(server: LiveServer) -> InProcessSfu:
    sfu: InProcessSfu = server.app.app.state.sfu
    return sfu


class Member:
    """A user's device in the call: its signaling connection and its SFU peer."""

    def __init__(self, name: str, mark: int, account: dict[str, Any],
                 conn: SignalingConnection) -> None:
        self.name, self.account, self.conn = name, account, conn
        self.user_id: str = account["user"]["id"]
        self.device_id: str = conn.device_id  # type: ignore[attr-defined]
        self.client = Client(name, mark, slots=2)
        self.slots: dict[str, dict[str, Any]] = {}  # mid -> the latest sfu.slots entry
        self.slot_events = 0

    def read_events(self) -> None:
        """Take the ``sfu.slots`` events that came (the latest says who is where)."""
        while not self.conn.events.empty():
            event = self.conn.events.get_nowait()
            if event["type"] == "sfu.slots":
                self.slot_events += 1
                self.slots = {slot["mid"]: slot for slot in event["slots"]}

    def slot_users(self, kind: str) -> dict[str, str]:
        """mid -> user id of the filled slots of ``kind`` (as the last event said)."""
        self.read_events()
        return {mid: s["user_id"] for mid, s in self.slots.items()
                if s["kind"] == kind and s["user_id"] is not None}

    async def join(self, call_id: str) -> dict[str, Any]:
        ok = await self.conn.request("sfu.join", call_id=call_id, sdp=await self.client.offer())
        await self.client.accept(ok["sdp"])
        return ok


def decodes(member: Member, others: list[Member]) -> bool:
    """The video slots are filled by exactly ``others`` (the event says so), the latest frame
    decoded in each is from the user the event names, and the audio slots of ``others`` play."""
    by_mark = {other.client.mark: other.user_id for other in others}
    video = member.slot_users("video")
    if sorted(video.values()) != sorted(o.user_id for o in others):
        return False
    for mid, user_id in video.items():
        marks = member.client.marks.get(mid)
        if not marks or by_mark.get(marks[-1]) != user_id:
            return False
    audio = member.slot_users("audio")
    return sorted(audio.values()) == sorted(o.user_id for o in others) and all(
        member.client.audio_frames.get(mid, 0) > 10 for mid in audio)


async def three_in_a_call(server: LiveServer) -> tuple[str, list[Member]]:
    """alice calls bob, bob answers and invites carol, carol answers."""
    people = []
    for mark, name in enumerate(("alice", "bob", "carol"), start=1):
        account, (conn,) = await server.user_with_devices(name, 1)
        people.append(Member(name, mark, account, conn))
    alice, bob, carol = people
    call_id = (await alice.conn.request("call.start", to=[bob.user_id], media="video"))["call_id"]
    await bob.conn.next_event("call.ring")
    await bob.conn.request("call.answer", call_id=call_id)
    await bob.conn.request("call.invite", call_id=call_id, to=[carol.user_id])
    await carol.conn.next_event("call.ring")
    await carol.conn.request("call.answer", call_id=call_id)
    return call_id, people


async def test_three_users_see_each_other_through_the_sfu(server: LiveServer) -> None:
    call_id, people = await three_in_a_call(server)
    alice, bob, carol = people
    sfu = sfu_of(server)
    try:
        for member in people:
            ok = await member.join(call_id)
            recvonly = {t.mid: t.kind for t in member.client.pc.getTransceivers()
                        if t.direction == "recvonly"}
            # the slots of the offer, empty until the device's media connects
            assert {s["mid"]: s["kind"] for s in ok["slots"]} == recvonly
            assert all(s["user_id"] is None and s["device_id"] is None for s in ok["slots"])
        assert sfu.members(call_id) == {m.device_id for m in people}
        for member in people:
            others = [o for o in people if o is not member]
            await until(lambda m=member, o=others: decodes(m, o), what=f"{member.name} decoding")
            named = {s["device_id"] for s in member.slots.values() if s["device_id"]}
            assert named == {o.device_id for o in others}

        # carol hangs up: her slots empty for the two others, whose media goes on
        await carol.conn.request("call.hangup", call_id=call_id)
        assert sfu.members(call_id) == {alice.device_id, bob.device_id}
        await carol.client.close()
        for member in (alice, bob):
            member.client.reset()
        await until(lambda: decodes(alice, [bob]) and decodes(bob, [alice]),
                    what="alice and bob decoding each other without carol")
        assert carol.user_id not in {*alice.slot_users("video").values(),
                                     *bob.slot_users("audio").values()}

        # alice hangs up: the call ends, and its room is closed
        await alice.conn.request("call.hangup", call_id=call_id)
        assert sfu.members(call_id) == frozenset()
        assert len(sfu.registry) == 0
        assert (await bob.conn.next_event("call.ended"))["reason"] == "hung_up"
    finally:
        for member in people:
            await member.client.close()


async def test_a_device_handed_off_or_lost_for_good_leaves_the_room(server: LiveServer) -> None:
    """Leaving the call in other ways than a hang-up takes the device out of the room too: bob
    moves the call to his other device (handoff), carol's connection is lost beyond the resume
    grace (2 s here). Their peers never connect: the room holds them until then all the same."""
    call_id, people = await three_in_a_call(server)
    alice, bob, carol = people
    (b2,) = await server.connected_devices(bob.account, 1)
    sfu = sfu_of(server)
    try:
        for member in people:
            await member.conn.request("sfu.join", call_id=call_id, sdp=await member.client.offer())
        assert sfu.members(call_id) == {m.device_id for m in people}
        await b2.request("call.handoff", call_id=call_id)
        assert sfu.members(call_id) == {alice.device_id, carol.device_id}
        await carol.conn.drop()
        await until(lambda: sfu.members(call_id) == {alice.device_id}, timeout=15,
                    what="carol's device out of the room after the resume grace")
        assert len(sfu.registry) == 1  # the call goes on (alice and bob's other device)
    finally:
        for member in people:
            await member.client.close()


async def test_the_handoff_reply_says_whether_the_calls_media_is_on_the_sfu(
        server: LiveServer) -> None:
    """``call.handoff``'s ``ok`` has ``group_media``: false while nobody is in the call's room
    (the media is P2P, or nowhere yet); true once it has devices, also when the call is down to
    two people (carol hung up) -- the device that takes the call joins the SFU, where the other
    person's media is. A resend answers the same."""
    call_id, people = await three_in_a_call(server)
    alice, bob, carol = people
    (b2,) = await server.connected_devices(bob.account, 1)
    clients = [m.client for m in people]
    sfu = sfu_of(server)
    try:
        assert (await b2.request("call.handoff", call_id=call_id))["group_media"] is False
        assert (await bob.conn.next_event("call.ended"))["reason"] == "handed_off"
        b2_client = Client("bob on b2", 2, slots=2)
        clients.append(b2_client)
        for conn, client in ((alice.conn, alice.client), (b2, b2_client), (carol.conn, carol.client)):
            await conn.request("sfu.join", call_id=call_id, sdp=await client.offer())
        await carol.conn.request("call.hangup", call_id=call_id)
        assert sfu.members(call_id) == {alice.device_id, b2.device_id}

        # bob takes the call back on his first device: b2 leaves the room, alice is in it
        reply = await bob.conn.request("call.handoff", call_id=call_id)
        assert reply["group_media"] is True
        assert reply["participants"] == [{"user_id": alice.user_id, "device_id": alice.device_id}]
        assert sfu.members(call_id) == {alice.device_id}
        again = await bob.conn.request("call.handoff", call_id=call_id)  # a resend
        assert (again["group_media"], again["participants"]) == (True, reply["participants"])
        ok = await bob.conn.request("sfu.join", call_id=call_id, sdp=await bob.client.offer())
        assert {m["device_id"] for m in ok["members"]} == {alice.device_id, bob.device_id}

        # the call ends: its room closes, and nothing is on the SFU any more
        await alice.conn.request("call.hangup", call_id=call_id)
        assert not sfu_of(server).members(call_id)
    finally:
        for client in clients:
            await client.close()


def offer_without_bundle(sdp: str) -> str:
    return "\r\n".join(line for line in sdp.split("\r\n") if not line.startswith("a=group:BUNDLE"))


async def test_bad_sfu_requests_get_their_codes_and_change_nothing(server: LiveServer) -> None:
    call_id, people = await three_in_a_call(server)
    alice, bob, carol = people
    _, (mallory,) = await server.user_with_devices("mallory", 1)
    sfu = sfu_of(server)
    offer = await alice.client.offer()

    async def refused(conn: SignalingConnection, kind: str, **fields: Any) -> str:
        with pytest.raises(SignalingError) as err:
            await conn.request(kind, **fields)
        assert err.value.message
        return err.value.code

    try:
        # malformed, oversized, refused by the SFU
        assert await refused(alice.conn, "sfu.join", call_id=call_id, sdp="") == "invalid_field"
        assert await refused(alice.conn, "sfu.join", call_id=call_id,
                             sdp="v=0\r\n" + "a=x\r\n" * 8000) == "invalid_field"  # > 32 KiB
        assert await refused(alice.conn, "sfu.join", call_id=call_id,
                             sdp="not an sdp at all") == "offer_refused"
        assert await refused(alice.conn, "sfu.join", call_id=call_id,
                             sdp=offer_without_bundle(offer)) == "offer_refused"
        assert await refused(alice.conn, "sfu.join", call_id=call_id) == "invalid_field"
        # not in the call: another user's call, no call at all
        for about in (call_id, "0" * 32):
            assert await refused(mallory, "sfu.join", call_id=about, sdp=offer) == "unknown_call"
            assert await refused(mallory, "sfu.leave", call_id=about) == "unknown_call"
        # leaving what it never joined
        assert await refused(alice.conn, "sfu.leave", call_id=call_id) == "invalid_state"
        assert len(sfu.registry) == 0  # nothing made by any of that

        # joining twice replaces the first (its transport closed), and leave takes it out
        first = await alice.conn.request("sfu.join", call_id=call_id, sdp=offer)
        room = sfu.registry.room(call_id)
        assert room is not None
        old_transport = room.participants[alice.device_id].transport
        again = Client("alice", 1, slots=2)
        try:
            second = await alice.conn.request("sfu.join", call_id=call_id, sdp=await again.offer())
            assert second["sdp"] != first["sdp"]
            assert room.participants[alice.device_id].transport is not old_transport
            assert old_transport.ice_state == "closed"  # closed before it ever connected
            assert sfu.members(call_id) == {alice.device_id}
        finally:
            await again.close()
        await alice.conn.request("sfu.leave", call_id=call_id)
        assert len(sfu.registry) == 0  # the last one left: the room closed
        assert await refused(alice.conn, "sfu.leave", call_id=call_id) == "invalid_state"

        # a device that left the call may not join its room; the call's end closes it
        await bob.conn.request("sfu.join", call_id=call_id, sdp=await bob.client.offer())
        await carol.conn.request("call.hangup", call_id=call_id)
        assert await refused(carol.conn, "sfu.join", call_id=call_id,
                             sdp=await carol.client.offer()) == "not_in_call"
        await alice.conn.request("call.hangup", call_id=call_id)  # bob is alone: it ends
        assert len(sfu.registry) == 0
        assert await refused(bob.conn, "sfu.join", call_id=call_id, sdp=offer) == "call_ended"
        assert await refused(bob.conn, "sfu.leave", call_id=call_id) == "call_ended"
        for member in (alice, bob, carol):  # every connection is still up
            assert (await member.conn.request("ping"))["type"] == "pong"
    finally:
        for member in people:
            await member.client.close()


async def test_the_sfu_caps_rooms_and_participants(server: LiveServer) -> None:
    call_id, people = await three_in_a_call(server)
    alice, bob, carol = people
    sfu = sfu_of(server)
    sfu.registry.max_participants = 2
    try:
        await alice.join(call_id)
        await bob.join(call_id)
        with pytest.raises(SignalingError) as full:
            await carol.conn.request("sfu.join", call_id=call_id, sdp=await carol.client.offer())
        assert full.value.code == "sfu_full"
        await bob.conn.request("sfu.leave", call_id=call_id)
        sfu.registry.max_rooms = 1  # alice's room is the one allowed: carol joins it
        await carol.join(call_id)
        assert sfu.members(call_id) == {alice.device_id, carol.device_id}
    finally:
        for member in people:
            await member.client.close()
    # a second call while the one room is in use: no room for it
    _, (dave,) = await server.user_with_devices("dave", 1)
    erin, (e1,) = await server.user_with_devices("erin", 1)
    other = (await dave.request("call.start", to=[erin["user"]["id"]], media="video"))["call_id"]
    await e1.next_event("call.ring")
    await e1.request("call.answer", call_id=other)
    stranger = Client("dave", 4, slots=2)
    try:
        with pytest.raises(SignalingError) as no_room:
            await dave.request("sfu.join", call_id=other, sdp=await stranger.offer())
        assert no_room.value.code == "sfu_full"
        assert len(sfu.registry) == 1
    finally:
        await stranger.close()
    await asyncio.sleep(0)


async def test_the_operator_sets_the_caps_or_runs_no_sfu(tmp_path: Path) -> None:
    """``FACECALL_SFU_MAX_PARTICIPANTS`` reaches the rooms; ``FACECALL_SFU_MAX_ROOMS=0`` runs no
    SFU: ``sfu.join`` is ``sfu_unavailable``, and the call goes on."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'facecall.db'}"
    with host_addresses(LOOPBACK):
        async with live_server(url, sfu_max_rooms=3, sfu_max_participants=2) as live:
            registry = sfu_of(live).registry
            assert (registry.max_rooms, registry.max_participants) == (3, 2)
        async with live_server(url, sfu_max_rooms=0) as live:
            assert live.app.app.state.sfu is None
            _, (a1,) = await live.user_with_devices("alice", 1)
            bob, (b1,) = await live.user_with_devices("bob", 1)
            call_id = (await a1.request("call.start", to=[bob["user"]["id"]], media="video"))["call_id"]
            await b1.next_event("call.ring")
            await b1.request("call.answer", call_id=call_id)
            with pytest.raises(SignalingError) as refused:
                await a1.request("sfu.join", call_id=call_id, sdp="v=0")
            assert refused.value.code == "sfu_unavailable" and "runs no SFU" in refused.value.message
            await a1.request("call.hangup", call_id=call_id)
            await b1.next_event("call.ended")
