"""Several nodes: two `facecall serve` processes sharing one PostgreSQL database and one Redis
bus (DESIGN.md invariant 5). Nothing assumes that a device is connected to the node that acts
on its call: a call placed on one node is answered, relayed, resumed, timed out and ended on the
other, a node killed with SIGKILL loses no signaling (the mailboxes live in Redis), and while
Redis is down the nodes answer `internal` and keep their connections, then carry on."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from facecall.client import EndReason
from facecall.client.signaling import SignalingConnection, SignalingError
from tests.client.test_calls import stamped_frames
from tests.live import ReplyEater, ServerProcess, free_socket, sdk_devices
from tests.pg import PostgresServer, running_postgres
from tests.redis_server import RedisServer, running_redis
from tests.server.test_restart import new_user

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

RING_TIMEOUT = 6.0


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with running_postgres() as server:
        yield server


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@dataclass
class Node:
    process: ServerProcess

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.process.port}/v1/signaling"

    @property
    def base_url(self) -> str:
        return self.process.base_url


def _free_port() -> int:
    with free_socket() as sock:
        port: int = sock.getsockname()[1]
    return port


@contextlib.asynccontextmanager
async def two_nodes(postgres: PostgresServer, redis_server: RedisServer,
                    **env: str) -> AsyncIterator[list[Node]]:
    """Two running nodes on a fresh database and ``redis_server``, with ``env`` besides."""
    url = postgres.create_database().replace("postgresql+asyncpg://", "postgresql://")
    started = [Node(ServerProcess(url, _free_port(), ring_timeout=RING_TIMEOUT, resume_grace=30.0,
                                  env={"FACECALL_REDIS_URL": redis_server.url, **env}))
               for _ in range(2)]
    try:
        for node in started:
            node.process.start()
        for node in started:
            await node.process.ready()
        yield started
    finally:
        for node in started:
            node.process.stop()


@pytest.fixture
async def nodes(postgres: PostgresServer, redis_server: RedisServer) -> AsyncIterator[list[Node]]:
    """Two nodes on a fresh database and the module's Redis."""
    async with two_nodes(postgres, redis_server) as started:
        yield started


async def _device(http: httpx.AsyncClient, account_token: str, name: str) -> str:
    reply = await http.post("/v1/devices", json={"kind": "sdk", "name": name},
                            headers={"Authorization": f"Bearer {account_token}"})
    token: str = reply.json()["token"]
    return token


async def _on(node: Node, token: str) -> SignalingConnection:
    conn = SignalingConnection(node.ws_url, token)
    await conn.connect()
    return conn


def _id(conn: SignalingConnection) -> str:
    assert conn.welcome is not None
    device_id: str = conn.welcome["device_id"]
    return device_id


OFFER = {"type": "offer", "sdp": "v=0\r\no=offer\r\n"}
ANSWER = {"type": "answer", "sdp": "v=0\r\no=answer\r\n"}


async def test_a_call_rings_answers_relays_and_ends_across_nodes(nodes: list[Node]) -> None:
    one, two = nodes
    async with httpx.AsyncClient(base_url=one.base_url) as http:
        _, _, alice_token = await new_user(http, "alice")
        bob_account, bob_id, bob_phone_token = await new_user(http, "bob")
        bob_laptop_token = await _device(http, bob_account, "laptop")
    alice = await _on(one, alice_token)
    bob_phone, bob_laptop = await _on(one, bob_phone_token), await _on(two, bob_laptop_token)
    try:
        call_id = (await alice.request("call.start", to=[bob_id], media="video"))["call_id"]
        for device in (bob_phone, bob_laptop):  # every device rings, on either node
            ring = await device.next_event("call.ring")
            assert (ring["call_id"], ring["from_name"]) == (call_id, "alice")
        ringing = await alice.next_event("call.ringing")
        assert ringing["online"] == 2  # presence is the bus's, not node one's
        # the call was placed on node one; node two answers it...
        await bob_laptop.request("call.answer", call_id=call_id)
        assert (await alice.next_event("call.answered"))["device_id"] == _id(bob_laptop)
        stopped = await bob_phone.next_event("call.stop_ringing")
        assert stopped["reason"] == "answered_elsewhere"
        # ...and node one, which placed it, relays to the device that answered on node two
        await alice.request("call.sdp", call_id=call_id, to_device=_id(bob_laptop),
                            description=OFFER)
        assert (await bob_laptop.next_event("call.sdp"))["description"] == OFFER
        await bob_laptop.request("call.sdp", call_id=call_id, to_device=_id(alice),
                                 description=ANSWER)
        assert (await alice.next_event("call.sdp"))["description"] == ANSWER
        with pytest.raises(SignalingError) as denied:  # the phone lost the race, on node one
            await bob_phone.request("call.sdp", call_id=call_id, to_device=_id(alice),
                                    description=ANSWER)
        assert denied.value.code in ("invalid_state", "not_in_call")
        await alice.request("call.hangup", call_id=call_id)
        assert (await bob_laptop.next_event("call.ended"))["reason"] == "hung_up"
    finally:
        for conn in (alice, bob_phone, bob_laptop):
            await conn.close()


async def test_a_device_resumes_on_the_other_node_with_nothing_lost(nodes: list[Node]) -> None:
    one, two = nodes
    async with httpx.AsyncClient(base_url=one.base_url) as http:
        _, _, alice_token = await new_user(http, "alice")
        _, bob_id, bob_token = await new_user(http, "bob")
    alice, bob = await _on(one, alice_token), await _on(two, bob_token)
    try:
        call_id = (await alice.request("call.start", to=[bob_id], media="audio"))["call_id"]
        await bob.next_event("call.ring")
        await bob.request("call.answer", call_id=call_id)
        await alice.next_event("call.answered")
        await bob.drop()  # bob's network changes: node two loses him
        await alice.request("call.sdp", call_id=call_id, to_device=_id(bob), description=OFFER,
                            ice_restart=True)
        bob.ws_url = one.ws_url  # and he comes back through node one
        welcome = await bob.connect(calls=[call_id])
        assert welcome["resumed"] is True
        assert (await bob.next_event("call.sdp"))["description"] == OFFER  # kept for him
        await bob.request("call.sdp", call_id=call_id, to_device=_id(alice), description=ANSWER)
        assert (await alice.next_event("call.sdp"))["description"] == ANSWER
    finally:
        await alice.close()
        await bob.close()


async def test_two_users_calling_each_other_on_different_nodes_get_one_call(
        nodes: list[Node]) -> None:
    one, two = nodes
    async with httpx.AsyncClient(base_url=one.base_url) as http:
        _, alice_id, alice_token = await new_user(http, "alice")
        _, bob_id, bob_token = await new_user(http, "bob")
    alice, bob = await _on(one, alice_token), await _on(two, bob_token)
    try:
        for _ in range(3):  # glare, settled by the bus's lock whatever the timing
            placed = await asyncio.gather(
                alice.request("call.start", to=[bob_id], media="video"),
                bob.request("call.start", to=[alice_id], media="video"))
            assert placed[0]["call_id"] == placed[1]["call_id"]
            assert sum(p.get("glare") == "merged" for p in placed) == 1
            call_id = placed[0]["call_id"]
            await alice.request("call.hangup", call_id=call_id)
            await bob.next_event("call.ended")
    finally:
        await alice.close()
        await bob.close()


async def test_removing_a_device_on_one_node_closes_its_connection_on_the_other(
        nodes: list[Node]) -> None:
    one, two = nodes
    async with httpx.AsyncClient(base_url=one.base_url) as http:
        bob_account, _, bob_token = await new_user(http, "bob")
        bob = await _on(two, bob_token)
        try:
            listed = await http.get("/v1/devices",
                                    headers={"Authorization": f"Bearer {bob_account}"})
            [device] = listed.json()
            assert device["online"] is True  # connected to node two, seen from node one
            removed = await http.delete(f"/v1/devices/{device['id']}",
                                        headers={"Authorization": f"Bearer {bob_account}"})
            assert removed.status_code == 204, removed.text
            closed = await bob.next_event("connection.closed")
            assert closed["code"] == 4009
        finally:
            await bob.close()


async def test_a_rename_on_one_node_rings_with_the_new_name_from_the_other(
        nodes: list[Node]) -> None:
    one, two = nodes
    async with httpx.AsyncClient(base_url=one.base_url) as http:
        alice_account, _, alice_token = await new_user(http, "alice")
        _, bob_id, bob_token = await new_user(http, "bob")
        alice, bob = await _on(two, alice_token), await _on(one, bob_token)
        try:
            first = (await alice.request("call.start", to=[bob_id], media="audio"))["call_id"]
            assert (await bob.next_event("call.ring"))["from_name"] == "alice"  # node two knows
            await alice.request("call.cancel", call_id=first)
            renamed = await http.patch("/v1/me", json={"display_name": "Alice Liddell"},
                                       headers={"Authorization": f"Bearer {alice_account}"})
            assert renamed.status_code == 200, renamed.text
            await alice.request("call.start", to=[bob_id], media="audio")
            assert (await bob.next_event("call.ring"))["from_name"] == "Alice Liddell"
        finally:
            await alice.close()
            await bob.close()


async def test_a_node_killed_mid_call_loses_no_signaling(nodes: list[Node]) -> None:
    """SIGKILL the node a callee and the caller are connected to: they resume on the other node
    with what was delivered to them meanwhile, and a ring placed before the kill still times out
    into a missed call there."""
    one, two = nodes
    async with httpx.AsyncClient(base_url=two.base_url) as http:
        _, _, alice_token = await new_user(http, "alice")
        _, bob_id, bob_token = await new_user(http, "bob")
        carol_account, carol_id, carol_token = await new_user(http, "carol")
        alice, bob = await _on(one, alice_token), await _on(two, bob_token)
        carol = await _on(one, carol_token)
        try:
            call_id = (await alice.request("call.start", to=[bob_id], media="audio"))["call_id"]
            await bob.next_event("call.ring")
            await bob.request("call.answer", call_id=call_id)
            await alice.next_event("call.answered")
            missed = (await alice.request("call.start", to=[carol_id], media="audio"))["call_id"]
            await carol.next_event("call.ring")
            one.process.kill()
            await alice.next_event("connection.closed")
            await bob.request("call.sdp", call_id=call_id, to_device=_id(alice),
                              description=OFFER, ice_restart=True)  # alice is on no node now
            alice.ws_url = two.ws_url
            assert (await alice.connect(calls=[call_id, missed]))["resumed"] is True
            assert (await alice.next_event("call.sdp"))["description"] == OFFER
            ended = await alice.next_event("call.ended", timeout=RING_TIMEOUT + 10)
            assert (ended["call_id"], ended["reason"]) == (missed, "ring_timeout")
            history = await http.get("/v1/calls/history",
                                     headers={"Authorization": f"Bearer {carol_account}"})
            assert history.status_code == 200, history.text
            [entry] = [c for c in history.json()["items"] if c["call_id"] == missed]
            assert entry["missed"] is True
        finally:
            for conn in (alice, bob, carol):
                await conn.close()


async def test_a_request_resent_to_the_other_node_is_acted_on_once(nodes: list[Node]) -> None:
    """The reply to alice's call.start is lost as her connection to node one breaks; her client
    resends it, same id, through node two: it gets node one's reply, and bob rings once."""
    one, two = nodes
    async with httpx.AsyncClient(base_url=one.base_url) as http:
        _, _, alice_token = await new_user(http, "alice")
        bob_account, bob_id, bob_token = await new_user(http, "bob")
        bob = await _on(two, bob_token)
        async with ReplyEater(one.ws_url, {"call.start"}) as proxy:
            alice = SignalingConnection(proxy.url, alice_token)
            await alice.connect()
            try:
                placing = asyncio.create_task(
                    alice.request("call.start", to=[bob_id], media="audio", timeout=30))
                await asyncio.wait_for(proxy.eaten.wait(), 10)
                ring = await bob.next_event("call.ring")
                await alice.drop()
                alice.ws_url = two.ws_url
                assert (await alice.connect())["resumed"] is True  # and resends call.start
                assert (await placing)["call_id"] == ring["call_id"]
                with pytest.raises(TimeoutError):  # no second call
                    await bob.next_event("call.ring", timeout=1.0)
                history = await http.get("/v1/calls/history",
                                         headers={"Authorization": f"Bearer {bob_account}"})
                assert [c["call_id"] for c in history.json()["items"]] == [ring["call_id"]]
            finally:
                await alice.close()
                await bob.close()


async def test_nodes_answer_internal_while_redis_is_down_and_carry_on_after(
        tmp_path: Path, postgres: PostgresServer) -> None:
    """Redis killed: a request that needs it is answered `internal` (retry) and the connection
    stays up; Redis back (empty: it kept nothing), the nodes register their devices again and
    a new call rings across them."""
    url = postgres.create_database().replace("postgresql+asyncpg://", "postgresql://")
    with running_redis() as redis:
        one, two = (Node(ServerProcess(url, _free_port(), ring_timeout=RING_TIMEOUT,
                                       env={"FACECALL_REDIS_URL": redis.url}))
                    for _ in range(2))
        try:
            for node in (one, two):
                node.process.start()
                await node.process.ready()
            async with httpx.AsyncClient(base_url=one.base_url) as http:
                _, _, alice_token = await new_user(http, "alice")
                _, bob_id, bob_token = await new_user(http, "bob")
            alice, bob = await _on(one, alice_token), await _on(two, bob_token)
            try:
                redis.kill()
                with pytest.raises(SignalingError) as refused:
                    await alice.request("call.start", to=[bob_id], media="audio")
                assert refused.value.code == "internal"
                assert alice.connected and bob.connected
                redis.start()
                for _ in range(100):  # until the node has its Redis connection back
                    try:
                        placed = await alice.request("call.start", to=[bob_id], media="audio")
                        break
                    except SignalingError as exc:
                        assert exc.code == "internal"
                        await asyncio.sleep(0.2)
                else:
                    raise AssertionError("the node never came back to Redis")
                ring = await bob.next_event("call.ring", timeout=20)
                assert ring["call_id"] == placed["call_id"]
            finally:
                await alice.close()
                await bob.close()
        finally:
            for node in (one, two):
                node.process.stop()


async def test_sdk_devices_on_two_nodes_call_with_real_media(nodes: list[Node]) -> None:
    """The Python SDK, as a user runs it, with its two devices behind different nodes: the call
    connects peer to peer (its offer, answer and candidates relayed across nodes) and pictures
    flow both ways until the hang-up ends it on both."""
    one, two = nodes
    async with sdk_devices(one.base_url) as on_one, sdk_devices(two.base_url) as on_two:
        alice, bob = await on_one("alice"), await on_two("bob")
        outgoing = await alice.call("bob", video=True)
        incoming = await bob.next_call(timeout=10)
        assert incoming.id == outgoing.id and incoming.remote_name == "alice"
        await incoming.answer()
        await asyncio.gather(outgoing.wait_connected(30), incoming.wait_connected(30))
        for call in (outgoing, incoming):
            assert (await stamped_frames(call, 10)).summary().stamped >= 10
        await outgoing.hangup()
        assert await incoming.wait_ended(10) is EndReason.HUNG_UP
