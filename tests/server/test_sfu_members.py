"""Who is in a call's group media room (docs/protocol.md, "Group media (SFU)"): ``members`` in
the ``ok`` of ``sfu.join`` and the ``sfu.members`` event, which tells every device in the room
when the list changes -- a join, a join again (its ``joined`` number changes: a new member, with
no keys), ``sfu.leave``, leaving the call (hang-up, handoff, connection lost for good), and a
device the SFU drops by itself. The list a device holds always ends up as the room's own.

A real server, real WebSocket devices and real aiortc peers in the SFU's slot shape (the
helpers of tests/server/test_sfu_signaling.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import websockets

from facecall.bus.memory import InProcessBus
from facecall.client.ice import host_addresses
from facecall.client.signaling import SignalingConnection, SignalingError
from facecall.sfu.control import InProcessSfu
from facecall.sfu.rooms import RoomRegistry
from facecall.signaling.events import Answer
from facecall.signaling.group_media import GroupMedia
from facecall.signaling.machine import CallMachine
from facecall.signaling.protocol import parse_client_message, parse_server_message
from facecall.signaling.server_messages import SfuMembers
from tests.live import LiveServer, live_server
from tests.server.test_sfu_signaling import Member, sfu_of, three_in_a_call
from tests.sfu.test_transport import LOOPBACK, Client, until

Roster = list[tuple[str, str, int]]


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[LiveServer]:
    with host_addresses(LOOPBACK):  # the SFU gathers on loopback (see test_sfu_signaling.py)
        async with live_server(f"sqlite+aiosqlite:///{tmp_path / 'facecall.db'}",
                               ring_timeout=5.0, resume_grace=3.0) as live:
            yield live


def roster(members: list[dict[str, Any]]) -> Roster:
    """``(user_id, device_id, joined)`` of each member, in the order given."""
    return [(m["user_id"], m["device_id"], m["joined"]) for m in members]


def who(roster_: Roster) -> list[str]:
    return [device_id for _, device_id, _ in roster_]


def room_roster(server: LiveServer, call_id: str) -> Roster:
    """The room's members as the SFU holds them."""
    sfu = sfu_of(server)
    return [(sfu._users[(call_id, m.participant)], m.participant, m.joined)
            for m in sfu.registry.members(call_id)]


async def join(member: Member, call_id: str, client: Client | None = None) -> Roster:
    """``sfu.join`` from ``member`` (with ``client``'s offer: a new peer connection); the
    ``members`` of its ``ok``."""
    peer = client or member.client
    ok = await member.conn.request("sfu.join", call_id=call_id, sdp=await peer.offer())
    await peer.accept(ok["sdp"])
    return roster(ok["members"])


async def next_members(conn: SignalingConnection, timeout: float = 10.0) -> Roster:
    """The next ``sfu.members`` event's list (other events are skipped)."""
    event = await conn.next_event("sfu.members", timeout=timeout)
    assert isinstance(parse_server_message(event), SfuMembers)
    return roster(event["members"])


async def no_members_event(*conns: SignalingConnection, wait: float = 0.5) -> None:
    """None of ``conns`` gets ``sfu.members`` within ``wait`` seconds (other events are skipped)."""
    await asyncio.sleep(wait)
    for conn in conns:
        while not conn.events.empty():
            assert conn.events.get_nowait()["type"] != "sfu.members"


async def test_members_on_join_join_again_and_leave(server: LiveServer) -> None:
    call_id, people = await three_in_a_call(server)
    alice, bob, carol = people
    again = Client("bob", 2, slots=2)
    try:
        # the first in: the list is itself
        first = await join(alice, call_id)
        assert first == [(alice.user_id, alice.device_id, first[0][2])]

        # bob joins: his ok has both, in the order they joined; alice hears the same list
        with_bob = await join(bob, call_id)
        assert who(with_bob) == [alice.device_id, bob.device_id]
        assert with_bob[0] == first[0] and with_bob[1][2] > first[0][2]
        assert await next_members(alice.conn) == with_bob

        # a refused offer changes nothing, and tells nobody anything
        with pytest.raises(SignalingError) as err:
            await carol.conn.request("sfu.join", call_id=call_id, sdp="v=0\r\nnot an offer")
        assert err.value.code == "offer_refused"
        await no_members_event(alice.conn, bob.conn)

        # carol joins: both others hear it; bob heard nothing of his own join
        everyone = await join(carol, call_id)
        assert who(everyone) == [alice.device_id, bob.device_id, carol.device_id]
        assert await next_members(alice.conn) == everyone
        assert await next_members(bob.conn) == everyone

        # bob joins again (a new peer connection): his number changes, and he goes last
        rejoined = await join(bob, call_id, again)
        assert who(rejoined) == [alice.device_id, carol.device_id, bob.device_id]
        assert rejoined[2][2] > everyone[2][2] > everyone[1][2]
        assert await next_members(alice.conn) == rejoined
        assert await next_members(carol.conn) == rejoined
        assert rejoined == room_roster(server, call_id)

        # carol leaves the group media (the call goes on): the two others hear it, not she
        await carol.conn.request("sfu.leave", call_id=call_id)
        left = [rejoined[0], rejoined[2]]
        assert await next_members(alice.conn) == left
        assert await next_members(bob.conn) == left  # bob's first: none for his own joins
        await no_members_event(carol.conn)
        assert room_roster(server, call_id) == left
    finally:
        await again.close()
        for member in people:
            await member.client.close()


async def test_members_when_devices_leave_the_call(server: LiveServer) -> None:
    """Hang-up, handoff and a connection lost for good take a device out of the room: the
    others hear it. The room of an ended call closes without a word."""
    call_id, people = await three_in_a_call(server)
    alice, bob, carol = people
    (b2_conn,) = await server.connected_devices(bob.account, 1)
    b2 = Member("bob", 4, bob.account, b2_conn)
    dave_account, (d1,) = await server.user_with_devices("dave", 1)
    dave = Member("dave", 5, dave_account, d1)
    try:
        for member in people:
            await join(member, call_id)
        assert (await next_members(alice.conn))[-1][1] == bob.device_id
        everyone = await next_members(alice.conn)
        assert everyone == await next_members(bob.conn) == room_roster(server, call_id)

        # carol hangs up: out of the call, out of the room
        await carol.conn.request("call.hangup", call_id=call_id)
        assert await next_members(alice.conn) == everyone[:2]
        assert await next_members(bob.conn) == everyone[:2]

        # bob takes the call to his other device: the first one goes, the new one joins
        await b2.conn.request("call.handoff", call_id=call_id)
        assert await next_members(alice.conn) == everyone[:1]
        with_b2 = await join(b2, call_id)
        assert who(with_b2) == [alice.device_id, b2.device_id]
        assert await next_members(alice.conn) == with_b2
        await no_members_event(bob.conn)  # out of the call: it hears nothing more

        # dave joins the call and its room, then his connection is lost for good (3 s grace)
        await b2.conn.request("call.invite", call_id=call_id, to=[dave.user_id])
        await dave.conn.next_event("call.ring")
        await dave.conn.request("call.answer", call_id=call_id)
        with_dave = await join(dave, call_id)
        assert await next_members(alice.conn) == with_dave
        assert await next_members(b2.conn) == with_dave
        await dave.conn.drop()
        assert await next_members(alice.conn, timeout=15) == with_b2
        assert await next_members(b2.conn) == with_b2

        # alice hangs up: bob is alone, the call ends and its room closes, telling nobody
        await alice.conn.request("call.hangup", call_id=call_id)
        while (event := await b2.conn.next_event())["type"] != "call.ended":
            assert event["type"] != "sfu.members"
        assert event["reason"] == "hung_up"
        assert len(sfu_of(server).registry) == 0
        await no_members_event(b2.conn)
    finally:
        for member in (*people, b2, dave):
            await member.client.close()


async def test_members_when_the_sfu_drops_a_silent_device(server: LiveServer) -> None:
    """A device the SFU hears nothing from is dropped by the SFU itself (here after 3 s, its
    media never connected): signaling hears of it and tells the others. The device is still
    in the call, and joins again as a new member."""
    call_id, people = await three_in_a_call(server)
    alice, bob, _ = people
    sfu_of(server).registry.silence_timeout = 3.0  # for the rooms made from now on
    try:
        alone = await join(alice, call_id)  # its media connects: it keeps talking
        ok = await bob.conn.request("sfu.join", call_id=call_id, sdp=await bob.client.offer())
        with_bob = roster(ok["members"])  # bob never applies the answer: silent
        assert await next_members(alice.conn) == with_bob
        assert await next_members(alice.conn, timeout=15) == alone
        assert room_roster(server, call_id) == alone
        await no_members_event(bob.conn)

        await bob.client.close()
        bob.client = Client("bob", 2, slots=2)
        back = await join(bob, call_id)
        assert who(back) == [alice.device_id, bob.device_id] and back[1][2] > with_bob[1][2]
        assert await next_members(alice.conn) == back
    finally:
        for member in people:
            await member.client.close()


async def test_members_missed_while_away_are_replayed_on_resume(server: LiveServer) -> None:
    call_id, people = await three_in_a_call(server)
    alice, bob, carol = people
    try:
        await join(alice, call_id)
        with_bob = await join(bob, call_id)
        assert await next_members(alice.conn) == with_bob
        before = alice.conn.last_seq

        await alice.conn.drop()  # back within the 3 s grace: still in the call and its room
        everyone = await join(carol, call_id)
        welcome = await alice.conn.resume()
        assert welcome["resumed"] is True
        event = await alice.conn.next_event("sfu.members")
        assert event["seq"] > before  # type: ignore[operator]
        assert roster(event["members"]) == everyone
        assert await next_members(bob.conn) == everyone
    finally:
        for member in people:
            await member.client.close()


class WireView:
    """A device's signaling read in wire order, as a client keeps its member list: the
    ``members`` of each ``sfu.join`` ``ok``, then each ``sfu.members`` after it (the SDK's
    connection hands replies and events over apart, which loses their order)."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.view: Roster = []
        self.replies: dict[str, dict[str, Any]] = {}
        self._ids = 0
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def resume(cls, server: LiveServer, conn: SignalingConnection, call_id: str) -> WireView:
        """Take the device of ``conn`` over on a connection of its own (``conn`` is closed)."""
        await conn.close()
        ws = await websockets.connect(server.ws_url, additional_headers={
            "Authorization": f"Bearer {conn.token}"})
        await ws.send(json.dumps({"v": 1, "id": "h", "type": "hello", "resume_from": conn.last_seq,
                                  "calls": [call_id]}))
        welcome = json.loads(await ws.recv())
        assert welcome["type"] == "welcome" and welcome["resumed"] is True
        return cls(ws)

    async def _read(self) -> None:
        async for raw in self.ws:
            frame = json.loads(raw)
            if frame["type"] in ("ok", "error"):
                self.replies[frame["re"]] = frame
                if frame["type"] == "ok" and "members" in frame:
                    self.view = roster(frame["members"])
            elif frame["type"] == "sfu.members":
                self.view = roster(frame["members"])

    async def request(self, kind: str, **fields: Any) -> dict[str, Any]:
        self._ids += 1
        msg_id = f"w{self._ids}"
        await self.ws.send(json.dumps({"v": 1, "id": msg_id, "type": kind, **fields}))
        await until(lambda: msg_id in self.replies, timeout=10, what=f"the reply to {kind}")
        return self.replies[msg_id]

    async def close(self) -> None:
        self._reader.cancel()
        await self.ws.close()


async def test_concurrent_changes_leave_every_device_with_the_rooms_list(server: LiveServer) -> None:
    """Joins, joins again and leaves at once, round after round: the list a device keeps from
    what it reads in order -- its ``ok``, then every ``sfu.members`` -- is the room's own each
    time things settle. Events about changes older than a device's join are not sent to it
    after its ``ok``; newer ones are."""
    call_id, people = await three_in_a_call(server)
    alice, bob, carol = people
    await join(bob, call_id)
    wire = await WireView.resume(server, alice.conn, call_id)
    peers: list[Client] = []
    try:
        for round_ in range(4):
            offers = []
            for name, mark in (("alice", 1), ("bob", 2), ("carol", 3)):  # new peer connections
                peers.append(Client(name, mark, slots=2))
                offers.append(await peers[-1].offer())
            carol_change = (carol.conn.request("sfu.join", call_id=call_id, sdp=offers[2])
                            if round_ % 2 == 0 else carol.conn.request("sfu.leave", call_id=call_id))
            ok, *_ = await asyncio.gather(
                wire.request("sfu.join", call_id=call_id, sdp=offers[0]), carol_change,
                bob.conn.request("sfu.join", call_id=call_id, sdp=offers[1]))
            assert ok["type"] == "ok", ok
            final = room_roster(server, call_id)
            assert alice.device_id in who(final) and bob.device_id in who(final)
            await until(lambda f=final: wire.view == f, timeout=10,  # type: ignore[misc]
                        what=f"alice's list being the room's in round {round_}")
            await asyncio.sleep(0.3)  # and nothing older comes after
            assert wire.view == final
    finally:
        await wire.close()
        for peer in peers:
            await peer.close()
        for member in people:
            await member.client.close()


async def test_events_for_a_joining_device_wait_for_its_ok_and_older_ones_are_dropped() -> None:
    """The hold of :class:`~facecall.signaling.group_media.GroupMedia`, made to show: the real
    SFU and bus, and the service's call loader made slow where ``sfu.join`` checks the call again
    after the SFU took the device. alice joins again; carol leaves while alice's join is under
    way (older than alice's join: her ``ok`` has it, so that event is dropped), then bob leaves
    while alice's request still waits (newer: sent to her, after her ``ok``)."""
    with host_addresses(LOOPBACK):
        machine = CallMachine.start(call_id="c1", media="video", caller_user="alice",
                                    caller_device="a1", callees={"bob": ["b1"], "carol": ["c1"]},
                                    now=0.0)
        for user, device_id in (("bob", "b1"), ("carol", "c1")):
            machine.handle(Answer(user, device_id), 1.0)
        gate, waiting = asyncio.Event(), asyncio.Event()
        slow: dict[str, Any] = {"task": None, "loads": 0}  # alice's 2nd load waits for the gate

        async def load(call_id: str) -> tuple[int, CallMachine] | None:
            if asyncio.current_task() is slow["task"]:
                slow["loads"] += 1
                if slow["loads"] == 2:  # sfu.join's check once the SFU took the device
                    waiting.set()
                    await gate.wait()
            return (1, machine) if call_id == "c1" else None

        sfu, bus = InProcessSfu(RoomRegistry()), InProcessBus()
        group = GroupMedia(sfu, bus, load)
        told: list[dict[str, Any]] = []

        async def alice_hears(seq: int, text: bytes) -> None:
            event = json.loads(text)
            if event["type"] == "sfu.members":
                told.append(event)

        await bus.attach("a1", "connection", alice_hears)
        clients = [Client(name, mark, slots=2) for mark, name in enumerate(("a", "b", "c", "a"), 1)]

        def request(kind: str, **fields: Any) -> Any:
            return parse_client_message(json.dumps({"v": 1, "id": "r", "type": kind, "call_id": "c1",
                                                    **fields}))

        try:
            for (user, device_id), client in zip((("alice", "a1"), ("bob", "b1"), ("carol", "c1")),
                                                 clients, strict=False):
                await group.handle(user, device_id, request("sfu.join", sdp=await client.offer()))
            await until(lambda: len(told) == 2, what="alice hearing bob and carol join")
            everyone, told[:] = roster(told[-1]["members"]), []
            entry = sfu.registry._rooms["c1"]  # (to time carol's leave inside alice's join)

            alice_again = asyncio.ensure_future(
                group.handle("alice", "a1", request("sfu.join", sdp=await clients[3].offer())))
            slow["task"] = alice_again
            for _ in range(10_000):  # every turn of the loop: the window is short
                if "a1" in entry.replacing or waiting.is_set():
                    break
                await asyncio.sleep(0)
            assert "a1" in entry.replacing, "alice's join again was not seen under way"
            await group.handle("carol", "c1", request("sfu.leave"))  # told at once: held
            await asyncio.wait_for(waiting.wait(), 10)  # alice's join done; her request waits
            await group.handle("bob", "b1", request("sfu.leave"))
            await asyncio.sleep(0.3)
            assert told == []  # nothing before alice's ok

            gate.set()
            ok = await alice_again
            alice_now = roster(ok["members"])
            assert who(alice_now) == ["b1", "a1"] and alice_now[0] == everyone[1]
            assert alice_now[1][2] > everyone[2][2]
            await until(lambda: len(told) == 1, what="alice hearing bob leave")
            await asyncio.sleep(0.3)
            assert [roster(event["members"]) for event in told] == [[alice_now[1]]]
        finally:
            await group.stop()
            await sfu.shutdown()
            for client in clients:
                await client.close()
