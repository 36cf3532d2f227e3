"""The bus's scripts coalesced into pipelines (facecall.bus.redis_pipeline), on a real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from facecall.bus.redis_pipeline import ScriptRunner
from tests.redis_server import RedisServer, running_redis

ECHO = "return {KEYS[1], ARGV[1]}"
INCR = "return redis.call('INCR', KEYS[1])"
FAIL = "return redis.error_reply('refused ' .. ARGV[1])"


class Counted:
    """The client, counting the pipelines made from it."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self.pipelines = 0
        made = client.pipeline

        def pipeline(*args: Any, **kwargs: Any) -> Any:
            self.pipelines += 1
            return made(*args, **kwargs)

        client.pipeline = pipeline  # type: ignore[method-assign]


@pytest.fixture
async def redis_server() -> AsyncIterator[RedisServer]:
    with running_redis() as server:
        yield server


async def runner_for(server: RedisServer) -> tuple[ScriptRunner, Counted]:
    client = aioredis.Redis.from_url(server.url)
    runner = ScriptRunner(client)
    for name, source in (("ECHO", ECHO), ("INCR", INCR), ("FAIL", FAIL)):
        await runner.load(name, source)
    return runner, Counted(client)


async def test_the_scripts_of_one_pass_go_as_one_pipeline_each_with_its_reply(
        redis_server: RedisServer) -> None:
    runner, counted = await runner_for(redis_server)
    replies = await asyncio.gather(*(runner.run("ECHO", [b"k%d" % i], [i]) for i in range(20)))
    assert replies == [[b"k%d" % i, b"%d" % i] for i in range(20)]
    assert counted.pipelines == 1
    # one at a time: each alone, no pipeline
    assert await runner.run("INCR", [b"n"], []) == 1
    assert await runner.run("INCR", [b"n"], []) == 2
    assert counted.pipelines == 1
    await counted.client.aclose()


async def test_an_error_is_its_callers_alone(redis_server: RedisServer) -> None:
    runner, counted = await runner_for(redis_server)
    results = await asyncio.gather(
        runner.run("INCR", [b"n"], []), runner.run("FAIL", [], [b"x"]), runner.run("INCR", [b"n"], []),
        return_exceptions=True)
    assert results[0] == 1 and results[2] == 2
    assert isinstance(results[1], ResponseError) and "refused x" in str(results[1])
    assert counted.pipelines == 1
    await counted.client.aclose()


async def test_scripts_that_redis_forgot_are_run_again_in_a_pipeline_and_alone(
        redis_server: RedisServer) -> None:
    """A restarted Redis has no scripts: EVALSHA answers NOSCRIPT, and EVAL runs them."""
    runner, counted = await runner_for(redis_server)
    await counted.client.script_flush()
    assert await asyncio.gather(*(runner.run("INCR", [b"n"], []) for _ in range(3))) == [1, 2, 3]
    await counted.client.script_flush()
    assert await runner.run("ECHO", [b"k"], [b"v"]) == [b"k", b"v"]
    await counted.client.aclose()


async def test_a_cancelled_caller_leaves_the_others_their_replies(redis_server: RedisServer) -> None:
    runner, counted = await runner_for(redis_server)
    """The caller that leads a pipeline is cancelled while the others join it (its connection
    closed): theirs are sent all the same, and only theirs."""
    runner, counted = await runner_for(redis_server)
    leader = asyncio.create_task(runner.run("INCR", [b"n"], []))
    others = [asyncio.create_task(runner.run("INCR", [b"n"], [])) for _ in range(3)]
    await asyncio.sleep(0)  # the leader waits for its pass to end, the others have joined it
    leader.cancel()
    assert await asyncio.gather(*others) == [1, 2, 3]
    with pytest.raises(asyncio.CancelledError):
        await leader
    assert await counted.client.get(b"n") == b"3"
    # cancelled after it sent the pipeline: the others still get their replies
    leader = asyncio.create_task(runner.run("INCR", [b"n"], []))
    others = [asyncio.create_task(runner.run("INCR", [b"n"], [])) for _ in range(3)]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    leader.cancel()
    assert sorted(await asyncio.gather(*others)) == [5, 6, 7]
    assert await counted.client.get(b"n") == b"7"
    await counted.client.aclose()


async def test_a_lost_connection_fails_every_caller(redis_server: RedisServer) -> None:
    runner, counted = await runner_for(redis_server)
    assert await runner.run("INCR", [b"n"], []) == 1
    redis_server.kill()
    results = await asyncio.gather(*(runner.run("INCR", [b"n"], []) for _ in range(3)),
                                   return_exceptions=True)
    assert all(isinstance(r, RedisConnectionError | OSError) for r in results), results
    redis_server.start()  # back, empty: the client reconnects, the scripts are loaded again
    assert await asyncio.gather(*(runner.run("INCR", [b"n"], []) for _ in range(2))) == [1, 2]
    await counted.client.aclose()
