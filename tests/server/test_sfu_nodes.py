"""Group media on two nodes sharing PostgreSQL and Redis (docs/sfu.md, "Several nodes"): a
call's room is on one node, its owner (``facecall:sfu:<call id>`` in Redis names it), whichever
node a device is connected to. Real `facecall serve` processes, real aiortc peers in the SFU's
slot shape: three users on two nodes join one room, decode each other through it and get the
``sfu.*`` events; the room follows leaves and hang-ups made on the other node, and closes with
the call. A stopped owner's call is taken over by the next join; malformed requests between
nodes get a clear error."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
import redis.asyncio as aioredis

from facecall.bus.redis_bus import RedisBus, RequestFailed
from facecall.client.signaling import SignalingConnection
from tests.pg import PostgresServer
from tests.redis_server import RedisServer
from tests.server.test_nodes import (  # noqa: F401
    Node,
    _id,
    _on,
    postgres,
    redis_server,
    two_nodes,
)
from tests.server.test_restart import new_user
from tests.server.test_sfu_signaling import Member, decodes
from tests.sfu.test_transport import until

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

PREFIX = "facecall:"  # `facecall serve`'s


@pytest.fixture
async def nodes(postgres: PostgresServer, redis_server: RedisServer  # noqa: F811
                ) -> AsyncIterator[list[Node]]:
    """Two nodes whose SFUs gather on loopback."""
    async with two_nodes(postgres, redis_server, FACECALL_SFU_HOST_ADDRESSES="127.0.0.1") as started:
        yield started


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:  # noqa: F811
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        yield client
    finally:
        await client.aclose()


class Party(Member):
    """A :class:`Member` that also keeps the ``sfu.members`` events it got, in order."""

    def __init__(self, name: str, mark: int, user_id: str, conn: SignalingConnection) -> None:
        conn.device_id = _id(conn)  # type: ignore[attr-defined]
        super().__init__(name, mark, {"user": {"id": user_id}}, conn)
        self.rosters: list[list[str]] = []  # device ids of each sfu.members event
        self.ended = False

    def read_events(self) -> None:
        while not self.conn.events.empty():
            event = self.conn.events.get_nowait()
            if event["type"] == "sfu.slots":
                self.slot_events += 1
                self.slots = {slot["mid"]: slot for slot in event["slots"]}
            elif event["type"] == "sfu.members":
                self.rosters.append([m["device_id"] for m in event["members"]])
            elif event["type"] == "call.ended":
                self.ended = True

    def roster_is(self, *parties: Party) -> bool:
        self.read_events()
        return bool(self.rosters) and sorted(self.rosters[-1]) == sorted(p.device_id for p in parties)


async def _party(node: Node, http: httpx.AsyncClient, name: str, mark: int) -> Party:
    _, user_id, token = await new_user(http, name)
    return Party(name, mark, user_id, await _on(node, token))


async def _owner(redis: aioredis.Redis, call_id: str) -> str | None:
    owner = await redis.get(f"{PREFIX}sfu:{call_id}")
    return None if owner is None else owner.decode()


async def _node_ids(redis: aioredis.Redis) -> set[str]:
    return {key.decode()[len(PREFIX) + 2:] async for key in redis.scan_iter(match=f"{PREFIX}n:*")}


async def test_three_users_on_two_nodes_share_one_room_on_its_owner(
        nodes: list[Node], redis: aioredis.Redis) -> None:
    one, two = nodes
    async with httpx.AsyncClient(base_url=one.base_url) as http:
        alice = await _party(one, http, "alice", 1)
        bob = await _party(two, http, "bob", 2)
        carol = await _party(two, http, "carol", 3)
    people = [alice, bob, carol]
    try:
        call_id = (await alice.conn.request("call.start", to=[bob.user_id], media="video"))["call_id"]
        await bob.conn.next_event("call.ring")
        await bob.conn.request("call.answer", call_id=call_id)
        await bob.conn.request("call.invite", call_id=call_id, to=[carol.user_id])
        await carol.conn.next_event("call.ring")
        await carol.conn.request("call.answer", call_id=call_id)

        # alice (node one) joins first: node one owns the room; bob and carol join it from two
        assert [m["device_id"] for m in (await alice.join(call_id))["members"]] == [alice.device_id]
        owner = await _owner(redis, call_id)
        assert owner is not None and owner in await _node_ids(redis)
        for joiner in (bob, carol):
            ok = await joiner.join(call_id)
            so_far = people[:people.index(joiner) + 1]
            assert sorted(m["device_id"] for m in ok["members"]) == sorted(p.device_id for p in so_far)
            recvonly = {t.mid for t in joiner.client.pc.getTransceivers() if t.direction == "recvonly"}
            assert {s["mid"] for s in ok["slots"]} == recvonly
            assert "a=candidate:" in ok["sdp"] and " 127.0.0.1 " in ok["sdp"]  # the owner's
        assert await _owner(redis, call_id) == owner  # one room, one owner
        await until(lambda: alice.roster_is(alice, bob, carol) and bob.roster_is(alice, bob, carol),
                    what="sfu.members of the three, on both nodes")
        for member in people:
            others = [o for o in people if o is not member]
            await until(lambda m=member, o=others: decodes(m, o), what=f"{member.name} decoding")
            assert member.slot_events > 0
        # nobody got an event older than its ok: every list a joiner got names it
        for member in people:
            assert all(member.device_id in roster for roster in member.rosters), member.rosters
        assert not carol.rosters  # nobody joined after her

        # carol (node two) hangs up, still in the room: node two's save takes her out of it
        await carol.conn.request("call.hangup", call_id=call_id)
        await until(lambda: alice.roster_is(alice, bob) and bob.roster_is(alice, bob),
                    what="carol out of the room after her hang-up")
        await carol.client.close()
        for member in (alice, bob):
            member.client.reset()
        await until(lambda: decodes(alice, [bob]) and decodes(bob, [alice]),
                    what="alice and bob decoding each other without carol")

        # bob (node two) leaves the room, then the call: it ends, its room closes
        assert (await bob.conn.request("sfu.leave", call_id=call_id))["type"] == "ok"
        await until(lambda: alice.roster_is(alice), what="bob out of the room")
        await bob.conn.request("call.hangup", call_id=call_id)
        await until(lambda: alice.roster_is(alice) and alice.ended, what="the call ending")
        for _ in range(100):
            if await _owner(redis, call_id) is None:
                break
            await asyncio.sleep(0.05)
        assert await _owner(redis, call_id) is None  # the room closed and gave its call up
    finally:
        for member in people:
            await member.client.close()
            await member.conn.close()


async def test_a_stopped_owners_call_is_taken_over_and_bad_requests_are_refused(
        nodes: list[Node], redis: aioredis.Redis, redis_server: RedisServer) -> None:  # noqa: F811
    one, two = nodes
    async with httpx.AsyncClient(base_url=one.base_url) as http:
        alice = await _party(one, http, "alice", 1)
        bob = await _party(two, http, "bob", 2)
    asker = RedisBus(redis_server.url, prefix=PREFIX)
    await asker.start()
    try:
        call_id = (await alice.conn.request("call.start", to=[bob.user_id], media="video"))["call_id"]
        await bob.conn.next_event("call.ring")
        await bob.conn.request("call.answer", call_id=call_id)
        await alice.join(call_id)
        first = await _owner(redis, call_id)
        assert first is not None and first != asker.node_id

        # the owner answers a well-formed request, and refuses bad ones with a clear error
        devices = orjson.loads(await asker.request(
            first, orjson.dumps({"op": "devices", "call_id": call_id}), 10.0))
        assert devices == {"devices": [alice.device_id]}
        for bad, says in ((b"not json", "JSON object"), (b"[1]", "JSON object"),
                          (b'{"op": "explode", "call_id": "x"}', "unknown op"),
                          (b'{"op": "join", "call_id": "x"}', "device_id"),
                          (orjson.dumps({"op": "leave", "call_id": "x" * 500, "device_id": "d"}),
                           "call_id")):
            with pytest.raises(RequestFailed, match=says):
                await asker.request(first, bad, 10.0)
        assert orjson.loads(await asker.request(
            first, orjson.dumps({"op": "devices", "call_id": call_id}), 10.0))["devices"]

        # the owner (node one: alice joined first) stops; its key is left as a node killed
        # outright would leave it, its lease running
        one.process.stop()
        await redis.set(f"{PREFIX}sfu:{call_id}", first, px=30_000)
        for _ in range(400):  # dead once its heartbeat key is gone (at most 3 heartbeats: 15 s)
            if first not in await _node_ids(redis):
                break
            await asyncio.sleep(0.05)
        assert first not in await _node_ids(redis)
        ok = await bob.join(call_id)  # node two takes the room over
        assert [m["device_id"] for m in ok["members"]] == [bob.device_id]
        second = await _owner(redis, call_id)
        assert second is not None and second != first and second in await _node_ids(redis)
    finally:
        await asker.close()
        for member in (alice, bob):
            await member.client.close()
            await member.conn.close()

