"""Requests between RedisBus nodes (``request`` / ``on_request``) and placements (``place``:
one owner node per name, taken over from a dead one), on one redis-server."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from facecall.bus.redis_bus import MAX_REQUEST, RequestFailed
from facecall.bus.redis_scripts import field
from tests.bus.conftest import Nodes
from tests.bus.test_redis_nodes import eventually


async def test_a_request_is_answered_by_the_other_node(nodes: Nodes) -> None:
    a, b = await nodes.new(), await nodes.new()
    seen: list[tuple[str, bytes]] = []

    async def answer(asker: str, payload: bytes) -> bytes:
        seen.append((asker, payload))
        await asyncio.sleep(0.05)  # a slow handler: the other requests go on meanwhile
        return b"re:" + payload

    b.on_request(answer)
    replies = await asyncio.gather(*(a.request(b.node_id, b"%d" % i, 5.0) for i in range(5)))
    assert replies == [b"re:%d" % i for i in range(5)]
    assert sorted(seen) == [(a.node_id, b"%d" % i) for i in range(5)]
    assert await b.request(b.node_id, b"self", 5.0) == b"re:self"  # a node may ask itself


async def test_a_handler_that_raises_is_answered_with_its_error(nodes: Nodes) -> None:
    a, b = await nodes.new(), await nodes.new()

    async def refuse(asker: str, payload: bytes) -> bytes:
        raise ValueError("no such op")

    b.on_request(refuse)
    with pytest.raises(RequestFailed, match="no such op") as failed:
        await a.request(b.node_id, b"x", 5.0)
    assert failed.value.answered
    c = await nodes.new()  # no handler at all: a clear error too
    with pytest.raises(RequestFailed, match="takes no requests"):
        await a.request(c.node_id, b"x", 5.0)


async def test_a_dead_node_or_a_silent_one_fails_the_request(nodes: Nodes) -> None:
    a, b = await nodes.new(), await nodes.new()
    stopped = b.node_id
    await b.close()
    with pytest.raises(RequestFailed, match="not listening"):
        await a.request(stopped, b"x", 5.0)
    c = await nodes.new()
    hang = asyncio.Event()

    async def never(asker: str, payload: bytes) -> bytes:
        await hang.wait()
        return b""

    c.on_request(never)
    with pytest.raises(RequestFailed, match=r"did not answer within 0\.3 s"):
        await a.request(c.node_id, b"x", 0.3)
    assert not a._requests  # nothing left waiting


async def test_odd_replies_and_requests_change_nothing(nodes: Nodes) -> None:
    """A reply for an unknown id is ignored, malformed messages are dropped, oversized payloads
    refused on both sides; the nodes go on answering."""
    a, b = await nodes.new(), await nodes.new()

    async def echo(asker: str, payload: bytes) -> bytes:
        return payload

    b.on_request(echo)
    client = aioredis.Redis.from_url(nodes.url)
    try:
        channel = (nodes.prefix + "node:").encode()
        await client.publish(channel + a.node_id.encode(),
                             b"p" + field(b"999999") + field(b"ok") + b"stray")
        await client.publish(channel + a.node_id.encode(), b"pnot-a-reply")
        await client.publish(channel + b.node_id.encode(), b"q" + field(b"bad node!") + field(b"1"))
        await client.publish(channel + b.node_id.encode(), b"q12:")
        await client.publish(channel + b.node_id.encode(),  # too big: answered with an error
                             b"q" + field(a.node_id.encode()) + field(b"424242")
                             + b"x" * (MAX_REQUEST + 1))
    finally:
        await client.aclose()
    with pytest.raises(ValueError, match="past"):
        await a.request(b.node_id, b"x" * (MAX_REQUEST + 1), 5.0)
    with pytest.raises(ValueError, match="not a node id"):
        await a.request("no such node!", b"x", 5.0)

    async def too_big(asker: str, payload: bytes) -> bytes:
        return b"x" * (MAX_REQUEST + 1)

    c = await nodes.new()
    c.on_request(too_big)
    with pytest.raises(RequestFailed, match="past"):
        await a.request(c.node_id, b"x", 5.0)
    assert await a.request(b.node_id, b"still here", 5.0) == b"still here"


async def test_a_name_is_placed_on_one_node_and_taken_over_from_a_dead_one(nodes: Nodes) -> None:
    a, b = await nodes.new(heartbeat=0.2), await nodes.new(heartbeat=0.2)
    placed = await asyncio.gather(a.place("sfu:k", 30.0), b.place("sfu:k", 30.0))
    owner, other = (a, b) if placed[0] == a.node_id else (b, a)
    assert placed == [owner.node_id, owner.node_id]  # never two owners
    assert await other.keep_placed("sfu:k", 30.0) is False
    assert await owner.keep_placed("sfu:k", 30.0) is True
    assert await other.unplace("sfu:k") is False
    assert await other.placed("sfu:k") == owner.node_id
    # the owner dies without a word (its heartbeat key expires): the next place takes over
    for task in list(owner._tasks):
        task.cancel()
    await eventually(lambda: _no_heartbeat(nodes, owner.node_id), within=5.0)
    assert await other.place("sfu:k", 30.0) == other.node_id
    assert await other.unplace("sfu:k") is True
    assert await other.placed("sfu:k") is None


async def _no_heartbeat(nodes: Nodes, node: str) -> bool:
    client = aioredis.Redis.from_url(nodes.url)
    try:
        return not await client.exists(f"{nodes.prefix}n:{node}")
    finally:
        await client.aclose()

