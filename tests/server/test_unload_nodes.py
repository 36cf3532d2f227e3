"""The unload grace (``bye``) with two nodes sharing PostgreSQL and Redis: a page reloaded
onto the other node."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest

from facecall.client.signaling import SignalingConnection
from tests.pg import PostgresServer
from tests.redis_server import RedisServer
from tests.server.test_nodes import Node, _on, postgres, redis_server, two_nodes  # noqa: F401
from tests.server.test_restart import new_user

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
async def short_unload_nodes(postgres: PostgresServer,  # noqa: F811
                             redis_server: RedisServer) -> AsyncIterator[list[Node]]:  # noqa: F811
    async with two_nodes(postgres, redis_server, FACECALL_UNLOAD_GRACE="1.5") as started:
        yield started


@contextlib.asynccontextmanager
async def reloaded_onto_node_two(nodes: list[Node]) -> AsyncIterator[
        tuple[SignalingConnection, SignalingConnection, str]]:
    """alice and bob in a call on node one; bob's page says bye there and comes back on node
    two naming the call (a reload behind a load balancer): (alice, bob's new connection,
    call id)."""
    one, two = nodes
    async with httpx.AsyncClient(base_url=one.base_url) as http:
        _, _, alice_token = await new_user(http, "alice")
        _, bob_id, bob_token = await new_user(http, "bob")
    alice, bob = await _on(one, alice_token), await _on(one, bob_token)
    reloaded = SignalingConnection(two.ws_url, bob_token)
    try:
        call_id = (await alice.request("call.start", to=[bob_id], media="audio"))["call_id"]
        await bob.next_event("call.ring")
        await bob.request("call.answer", call_id=call_id)
        await alice.next_event("call.answered")
        await bob.request("bye")
        await bob.close()  # node one: the unload grace starts
        welcome = await reloaded.connect(calls=[call_id])
        assert [c["state"] for c in welcome["calls"]] == ["joined"]
        yield alice, reloaded, call_id
    finally:
        await alice.close()
        await bob.close()
        await reloaded.close()


async def test_a_page_reloaded_onto_another_node_keeps_the_resume_grace(
        short_unload_nodes: list[Node]) -> None:
    """Bob's page says bye on node one and reloads onto node two (a load balancer), keeping
    the call. Then his network drops (no bye): he has the resume grace (30 s) to come back.
    Node one's unload grace for the page that went away must not hang him up meanwhile."""
    async with reloaded_onto_node_two(short_unload_nodes) as (alice, reloaded, _call_id):
        await reloaded.drop()  # a network loss on node two, no bye: the resume grace
        with pytest.raises(TimeoutError):  # well past the unload grace, within the resume grace
            await alice.next_event("call.ended", timeout=4.0)


async def test_a_page_reloaded_onto_another_node_keeps_its_call(
        short_unload_nodes: list[Node]) -> None:
    """The plain case: bye on node one, back on node two within the unload grace, and staying
    there: node one's unload grace passes and changes nothing."""
    async with reloaded_onto_node_two(short_unload_nodes) as (alice, reloaded, call_id):
        with pytest.raises(TimeoutError):
            await alice.next_event("call.ended", timeout=3.0)
        await reloaded.request("call.rejoin", call_id=call_id,
                               to_device=alice.welcome["device_id"])  # type: ignore[index]
        assert (await alice.next_event("call.rejoin"))["call_id"] == call_id
