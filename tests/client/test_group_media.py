"""Group media in the SDK (facecall.client.group): three SDK devices of three users in one call
— alice calls bob, bob answers and invites carol, carol answers — each join the call's group
media with stamped video (the sender's mark in the stamp) and decode the other two in the slots
``sfu.slots`` names, while every frame the SFU sees is SFrame ciphertext under its sender's own
key (only the VP8 frame header clear); carol leaves, alice and bob make new keys she never
gets, and the others' slots naming her empty and the others' slots naming her empty while their media goes
on; the call's end closes every GroupMedia. A call not answered yet, and the server's refusals,
give the SDK's errors and change nothing (the P2P media goes on).

The server starts inside ``host_addresses(["127.0.0.1"])`` so that its SFU gathers on loopback
(tests/server/test_sfu_signaling.py says why); the devices gather there by their own option."""

from __future__ import annotations

import asyncio
import sqlite3
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiortc import MediaStreamTrack
from aiortc.codecs.vpx import VpxPayloadDescriptor
from aiortc.rtp import RtpPacket

from facecall.client import (
    Call,
    CallError,
    CallState,
    CallStateError,
    Device,
    EndReason,
    GroupMedia,
)
from facecall.client.ice import host_addresses
from facecall.client.sframe_media import clear_bytes
from facecall.e2ee.sframe import SFrameError, decode_header
from facecall.media.sources import SyntheticAudioTrack
from facecall.media.stamp import read_stamp
from facecall.sfu.control import InProcessSfu
from facecall.sfu.room import Room
from facecall.turn.server import TurnServer
from tests.live import LiveServer, MakeDevice, ice_settings, live_server, sdk_devices
from tests.sfu.test_transport import LOOPBACK, MARK_SHIFT, MarkedVideoTrack, TalkingAudioTrack, until

MARKS = {"alice": 1, "bob": 2, "carol": 3}


@pytest.fixture
async def group_server(tmp_path: Path, turn: TurnServer) -> AsyncIterator[LiveServer]:
    with host_addresses(LOOPBACK):
        async with live_server(f"sqlite+aiosqlite:///{tmp_path / 'facecall.db'}", ring_timeout=5.0,
                               resume_grace=5.0, **ice_settings(turn)) as live:
            yield live


@pytest.fixture
async def make(group_server: LiveServer) -> AsyncIterator[MakeDevice]:
    async with sdk_devices(group_server.base_url) as make:
        yield make


class PayloadSpy:
    """What the SFU receives: the SFrame header (KID) at the start of every frame, per sender
    device and kind, and how many frame starts it could not read as SFrame."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.kids: dict[tuple[str, str], set[int]] = defaultdict(set)
        self.unreadable = 0
        handle_rtp = Room.handle_rtp
        spy = self

        async def handle(room: Room, transport: object, packet: RtpPacket, arrival: float) -> None:
            p = room._by_transport.get(transport)  # type: ignore[arg-type]
            kind = p.sources.get(packet.ssrc) if p is not None else None
            if p is not None and kind is not None and packet.payload:
                spy.read(p.id, kind, packet.payload)  # a participant is a device
            await handle_rtp(room, transport, packet, arrival)  # type: ignore[arg-type]

        monkeypatch.setattr(Room, "handle_rtp", handle)

    def read(self, device_id: str, kind: str, payload: bytes) -> None:
        frame = payload
        if kind == "video":
            descriptor, frame = VpxPayloadDescriptor.parse(payload)
            if not (descriptor.partition_start and descriptor.partition_id == 0):
                return  # not the start of a frame: the middle of one's ciphertext
        try:
            header, _ = decode_header(frame[clear_bytes(kind, frame):])
        except SFrameError:
            self.unreadable += 1
            return
        self.kids[(device_id, kind)].add(header.kid)


def sfu_of(server: LiveServer) -> InProcessSfu:
    sfu: InProcessSfu = server.app.app.state.sfu
    return sfu


class Watcher:
    """Reads every video slot of a GroupMedia: the marks of the frames decoded there, per mid."""

    def __init__(self, group: GroupMedia) -> None:
        self.group = group
        self.marks: dict[str, list[int]] = defaultdict(list)
        self.slot_events = 0
        group.call.on("group_slots", self._counted)
        self._readers = [asyncio.create_task(self._read(mid)) for mid, slot in group.slots.items()
                         if slot.kind == "video"]

    def _counted(self, _event: object) -> None:
        self.slot_events += 1

    async def _read(self, mid: str) -> None:
        track = self.group.slots[mid].track
        while True:
            frame = await track.recv()
            if (stamp := read_stamp(frame)) is not None:
                self.marks[mid].append(stamp.counter >> MARK_SHIFT)

    def decodes(self, others: dict[str, str]) -> bool:
        """The filled video slots are exactly ``others`` (user id → name), the latest frame in
        each is from the user the slot names, and their audio slots play."""
        slots = self.group.slots.values()
        video = {s.mid: s.user_id for s in slots if s.kind == "video" and s.filled}
        audio = [s for s in slots if s.kind == "audio" and s.filled]
        if sorted(map(str, video.values())) != sorted(others) or \
                sorted(str(s.user_id) for s in audio) != sorted(others):
            return False
        for mid, user_id in video.items():
            marks = self.marks.get(mid)
            if not marks or marks[-1] != MARKS[others[str(user_id)]]:
                return False
        return all(slot.track.frames > 10 for slot in audio)

    def reset(self) -> None:
        self.marks.clear()

    def stop(self) -> None:
        for task in self._readers:
            task.cancel()


async def three_in_a_call(make: MakeDevice, carol_audio: MediaStreamTrack | None = None,
                          ) -> tuple[list[Device], list[Call]]:
    """alice calls bob (P2P media connects), bob invites carol, carol answers (with
    ``carol_audio``, if given); each with video marked as theirs."""
    devices = [await make(name) for name in MARKS]
    alice, bob, carol = devices
    a_call = await alice.call("bob", video_source=MarkedVideoTrack(MARKS["alice"]))
    b_call = await bob.next_call(10)
    await b_call.answer(video_source=MarkedVideoTrack(MARKS["bob"]))
    await a_call.wait_connected(20)
    await b_call.invite("carol")
    c_call = await carol.next_call(10)
    await c_call.answer(video_source=MarkedVideoTrack(MARKS["carol"]), audio_source=carol_audio)
    return devices, [a_call, b_call, c_call]


async def test_every_device_is_told_who_speaks_and_malformed_speakers_change_nothing(
        make: MakeDevice, group_server: LiveServer) -> None:
    devices, calls = await three_in_a_call(make, carol_audio=TalkingAudioTrack())
    carol = devices[2]
    told: list[object] = []
    calls[0].on("group_speaker", told.append)
    groups = [await call.join_group_media(slots=2) for call in calls]
    try:
        her = (carol.user_id, carol.device_id)
        await until(lambda: all(g.speaker == her for g in groups), what="everyone told carol speaks")
        assert [e.data for e in told] == [{"user_id": carol.user_id, "device_id": carol.device_id}]

        # what the server might send wrong: ignored, the speaker stays
        for bad in ({"user_id": 7, "device_id": carol.device_id}, {"user_id": carol.user_id},
                    {"user_id": None, "device_id": carol.device_id}, "carol", ["x"]):
            wire = {"type": "sfu.speaker", "call_id": calls[0].id, **bad} if isinstance(bad, dict) \
                else bad
            if isinstance(wire, dict):
                assert groups[0].takes(wire)
            else:
                groups[0]._speak(wire)
            assert groups[0].speaker == her
        assert len(told) == 1

        # carol leaves: nobody speaks now
        await groups[2].leave()
        await until(lambda: groups[0].speaker is None and groups[1].speaker is None,
                    what="nobody speaks once carol left")
        assert told[-1].data == {"user_id": None, "device_id": None}  # type: ignore[attr-defined]
    finally:
        for call in calls:
            await call.hangup()


async def test_three_devices_see_each_other_through_the_sfu(
        make: MakeDevice, group_server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
    spy = PayloadSpy(monkeypatch)
    devices, calls = await three_in_a_call(make)
    a_call, b_call, c_call = calls
    names = {d.user_id: name for d, name in zip(devices, MARKS, strict=True)}
    assert a_call.peer_connection is not None and c_call.state is CallState.CONNECTING
    groups = list(await asyncio.gather(
        *(call.join_group_media(slots=2) for call in calls)))
    watchers = [Watcher(group) for group in groups]
    try:
        for call, group in zip(calls, groups, strict=True):
            assert await call.join_group_media() is group  # joined already: the same one
            assert [s.kind for s in group.slots.values()] == ["audio", "audio", "video", "video"]
            assert call.peer_connection is None  # P2P closed for good in this call
            assert call.sframe is True and call._p2p_keys is None  # group media's keys only
        assert sfu_of(group_server).members(a_call.id) == {d.device_id for d in devices}
        for device, watcher in zip(devices, watchers, strict=True):
            others = {uid: name for uid, name in names.items() if uid != device.user_id}
            await until(lambda w=watcher, o=others: w.decodes(o), what=f"{device.username} decoding")
            filled = {s.device_id for s in watcher.group.slots.values() if s.filled}
            assert filled == {d.device_id for d in devices if d is not device}
            assert watcher.slot_events >= 1
            assert watcher.group.path == "host"
        # end to end: the SFU saw only SFrame, each sender under its own keys (its KIDs' tag)
        assert spy.unreadable == 0
        for device, group in zip(devices, groups, strict=True):
            tag = group.keys._sender.tag
            for kind in ("audio", "video"):
                kids = spy.kids[(str(device.device_id), kind)]
                assert kids and all(kid >> 16 == tag for kid in kids), (device.username, kind)
            assert group.keys.senders() == {d.device_id for d in devices if d is not device}
            assert group.keys.unsealed == frozenset() and not group.keys.refused
        # carol had no P2P media: the call is connected through the SFU
        await c_call.wait_connected(5)
        await a_call.restart_ice()  # no P2P to restart: nothing happens
        assert a_call.peer_connection is None and a_call.state is CallState.CONNECTED
        stats = await groups[0].get_stats()
        assert any(s.type == "inbound-rtp" and s.packetsReceived > 0 for s in stats.values())

        # carol leaves the group media: the slots naming her empty, the others go on
        kids_with_carol = [group.keys.cipher.kid for group in groups[:2]]
        await groups[2].leave()
        assert groups[2].closed and c_call.state is CallState.CONNECTED  # still in the call
        alice, bob, carol = devices
        # alice and bob make new keys, sealed to each other only: carol never gets them
        await until(lambda: all(g.keys.cipher.kid not in (None, old)
                                for g, old in zip(groups[:2], kids_with_carol, strict=True)),
                    what="new keys after carol left")
        carol_holds = {kid for _, kid in groups[2].keys._received.held()}
        assert all(g.keys.cipher.kid not in carol_holds for g in groups[:2])
        for watcher in watchers[:2]:
            watcher.reset()
        await until(lambda: watchers[0].decodes({bob.user_id: "bob"})
                    and watchers[1].decodes({alice.user_id: "alice"}),
                    what="alice and bob decoding each other without carol")
        for group in groups[:2]:
            assert carol.user_id not in {s.user_id for s in group.slots.values()}
        assert sfu_of(group_server).members(a_call.id) == {alice.device_id, bob.device_id}

        # carol joins again: her new keys reach alice and bob, theirs (new again) reach her
        rejoined = await c_call.join_group_media(slots=2)
        groups.append(rejoined)
        await until(lambda: rejoined.keys.senders() == {alice.device_id, bob.device_id}
                    and all(carol.device_id in g.keys.senders() for g in groups[:2]),
                    what="keys after carol joined again")
        assert all(g.keys.cipher.kid not in carol_holds for g in groups[:2])

        # the call ends (carol hangs up, then alice): every GroupMedia is closed
        await c_call.hangup()
        await a_call.hangup()
        assert await b_call.wait_ended(10) is EndReason.HUNG_UP
        assert all(group.closed for group in groups)
        assert all(slot.track.readyState == "ended" for g in groups for slot in g.slots.values())
        assert len(sfu_of(group_server).registry) == 0
    finally:
        for watcher in watchers:
            watcher.stop()


async def test_group_media_needs_an_answered_call_and_refusals_change_nothing(
        make: MakeDevice, group_server: LiveServer) -> None:
    alice, bob = await make("alice"), await make("bob")
    a_call = await alice.call("bob", audio_source=SyntheticAudioTrack())
    b_call = await bob.next_call(10)
    for call in (a_call, b_call):  # calling, ringing: not answered yet
        with pytest.raises(CallStateError, match="answered"):
            await call.join_group_media()
        assert call.group_media is None
    await b_call.answer()
    await a_call.wait_connected(20)
    with pytest.raises(ValueError):
        await a_call.join_group_media(slots=0)

    # refused by the SFU: the server's code and message; P2P media goes on
    with pytest.raises(CallError) as refused:
        await a_call.join_group_media(slots=4)  # the server's rooms have 3 slots per kind
    assert refused.value.code == "offer_refused" and "3 of each to receive" in refused.value.message
    sfu_of(group_server).registry.max_rooms = 0  # the server holds as many rooms as it may
    with pytest.raises(CallError) as full:
        await a_call.join_group_media()
    assert full.value.code == "sfu_full" and "group calls" in full.value.message
    assert a_call.group_media is None and a_call.peer_connection is not None
    frames = a_call.remote_video.frames
    await until(lambda: a_call.remote_video.frames > frames + 5, what="alice's P2P video going on")
    assert a_call.state is CallState.CONNECTED

    await a_call.hangup()
    with pytest.raises(CallStateError):  # ended
        await a_call.join_group_media()


async def test_a_call_moved_to_another_device_takes_its_group_media_along(
        make: MakeDevice, group_server: LiveServer) -> None:
    """alice moves the call to her other device: the first one's GroupMedia closes with its
    part of the call; bob's goes on (``handed_off`` reported, no P2P offer); the device that
    took the call joins the SFU by itself (the server's reply says the call's media is there)
    and bob's slot names it, with its pictures."""
    a1, bob, a2 = await make("alice"), await make("bob"), await make("alice")
    a_call = await a1.call("bob", video_source=MarkedVideoTrack(1))
    b_call = await bob.next_call(10)
    await b_call.answer(video_source=MarkedVideoTrack(2))
    a_group, b_group = await asyncio.gather(a_call.join_group_media(),
                                            b_call.join_group_media())
    watcher = Watcher(b_group)
    handed: list[dict[str, str]] = []
    b_call.on("handed_off", lambda event: handed.append(event.data))
    sfu = sfu_of(group_server)

    def bob_decodes(device: Device, mark: int) -> bool:
        slot = b_group.slot_of(str(a1.user_id), "video")
        if slot is None or slot.device_id != device.device_id:
            return False
        marks = watcher.marks.get(slot.mid)
        return bool(marks) and marks[-1] == mark

    try:
        await until(lambda: bob_decodes(a1, 1), what="bob decoding alice's first device")
        a2_call = await a2.take_call(a_call.id, video_source=MarkedVideoTrack(3))
        assert await a_call.wait_ended(10) is EndReason.HANDED_OFF
        assert a_group.closed
        await until(lambda: sfu.members(a_call.id) == {bob.device_id, a2.device_id},
                    what="alice's first device out of the room, her other one in")
        await until(lambda: bool(handed), what="bob told of the handoff")
        assert handed == [{"user_id": a1.user_id, "from_device": a1.device_id,
                           "to_device": a2.device_id}]
        a2_group = a2_call.group_media  # joined by take_call: the call's media is on the SFU
        assert a2_group is not None and await a2_call.join_group_media() is a2_group
        await a2_call.wait_connected(10)  # through the SFU: nobody offered P2P to it
        watcher.reset()
        await until(lambda: bob_decodes(a2, 3), what="bob decoding alice's other device")
        assert not b_group.closed and b_call.state is CallState.CONNECTED
        assert b_call.peer_connection is None and a2_call.peer_connection is None
    finally:
        watcher.stop()


async def test_keys_reach_only_devices_that_can_prove_them(
        make: MakeDevice, group_server: LiveServer, tmp_path: Path) -> None:
    """carol's device has no agreement key on the server (as a client that never published
    one): the others cannot seal to it — it is named in ``unsealed`` and reads nothing of
    theirs — while what carol sends is read. A key forged in alice's name (signed by carol's
    identity key) is refused by bob and changes nothing."""
    devices, calls = await three_in_a_call(make)
    alice, bob, carol = devices
    with sqlite3.connect(tmp_path / "facecall.db") as db:
        db.execute("UPDATE user_devices SET agreement_key = NULL, agreement_signature = NULL "
                   "WHERE id = ?", (carol.device_id,))
    groups = list(await asyncio.gather(*(call.join_group_media(slots=2) for call in calls)))
    a_keys, b_keys, c_keys = (group.keys for group in groups)
    try:
        await until(lambda: a_keys.senders() == {bob.device_id, carol.device_id}
                    and b_keys.senders() == {alice.device_id, carol.device_id},
                    what="alice and bob holding each other's and carol's keys")
        assert a_keys.unsealed == b_keys.unsealed == {carol.device_id}
        assert c_keys.unsealed == frozenset() and c_keys.senders() == set()
        await until(lambda: c_keys.cipher.counts["UnknownKeyId"] > 20, what="carol refusing frames")
        assert c_keys.cipher.counts["decrypted"] == 0

        # a key "from alice" that carol's identity key signed: refused, nothing changes
        assert alice.identity is not None and bob.identity is not None and carol.identity is not None
        bob_agreement = await carol.identity.agreement_key_of(carol.api, str(carol.token),
                                                             str(bob.user_id), str(bob.device_id))
        forged = carol.identity.sender_keys(calls[0].id, str(alice.user_id), str(alice.device_id))
        message = forged.rotate([bob_agreement])
        held = b_keys._received.held()
        calls[1]._deliver({"type": "call.key", "call_id": calls[1].id, "from_user": alice.user_id,
                           "from_device": alice.device_id, "key": message})
        await until(lambda: b_keys.refused["BadSignature"] == 1, what="the forged key refused")
        assert b_keys._received.held() == held
    finally:
        for call in calls:
            await call.hangup()


async def test_a_device_the_sfu_lost_joins_again_by_itself(
        make: MakeDevice, group_server: LiveServer) -> None:
    """The SFU drops bob's connection (as after a server restart, or nothing heard from him for
    15 s: here the server's SFU lets him go, which closes his DTLS): his GroupMedia says
    ``failed``, joins again with a new connection and says ``connected``; the slots keep their
    tracks, alice and bob make new keys for each other (bob is a new member), and each decodes
    the other again."""
    alice, bob = await make("alice"), await make("bob")
    a_call = await alice.call("bob", video_source=MarkedVideoTrack(MARKS["alice"]))
    b_call = await bob.next_call(10)
    await b_call.answer(video_source=MarkedVideoTrack(MARKS["bob"]))
    a_group, b_group = await asyncio.gather(a_call.join_group_media(), b_call.join_group_media())
    watchers = [Watcher(a_group), Watcher(b_group)]
    states: list[str] = []
    b_call.on("group_media", lambda event: states.append(event.data["state"]))
    sfu = sfu_of(group_server)

    def decoding() -> bool:
        return watchers[0].decodes({str(bob.user_id): "bob"}) and watchers[1].decodes(
            {str(alice.user_id): "alice"})

    try:
        await until(decoding, what="alice and bob decoding each other")
        tracks = [slot.track for slot in b_group.slots.values()]
        kids = (a_group.keys.cipher.kid, b_group.keys.cipher.kid)
        first_pc = b_group.pc
        assert await sfu.leave(a_call.id, str(bob.device_id))
        await until(lambda: b_group.rejoins == 1 and b_group.state == "connected",
                    what="bob joined again")
        assert states[-2:] == ["failed", "connected"] and not b_group.closed
        assert b_group.pc is not first_pc and first_pc.connectionState == "closed"
        assert [slot.track for slot in b_group.slots.values()] == tracks
        assert sfu.members(a_call.id) == {alice.device_id, bob.device_id}
        await until(lambda: a_group.keys.cipher.kid not in (None, kids[0])
                    and b_group.keys.cipher.kid not in (None, kids[1]), what="new keys both ways")
        for watcher in watchers:
            watcher.reset()
        await until(decoding, what="alice and bob decoding each other again")
        assert a_call.state is b_call.state is CallState.CONNECTED
    finally:
        for watcher in watchers:
            watcher.stop()
        await a_call.hangup()
    assert await b_call.wait_ended(10) is EndReason.HUNG_UP
    assert b_group.closed and b_group.rejoins == 1  # the end of the call closed it: no rejoin
