"""What one Redis command costs the node in CPU, through redis-py's asyncio client, alone and
coalesced into pipelines: the figures behind ``facecall.bus.redis_pipeline``.

Runs a throwaway redis-server (``tests.redis_server``) and measures, with ``time.process_time``
of this process only (Redis' own CPU is not counted), a tiny Lua script run N times:

* through a redis-py ``Script`` object (what the bus used before session 14);
* by ``EVALSHA`` straight from the client (what the bus does for a script alone);
* by ``EVALSHA`` in pipelines of 4 and 16 (what the bus does for the scripts of one loop pass);
* and, as the anchor, redis-py's plain ``GET`` alone.

    .venv/bin/python bench/redis_commands.py [--commands 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.redis_server import running_redis

SCRIPT = "return redis.call('GET', KEYS[1])"


async def per_command(n: int, batch: int, run: Callable[[int], Awaitable[object]]) -> float:
    """µs of this process's CPU per command: ``n`` commands, ``run(batch)`` sending ``batch``."""
    started = time.process_time()
    for _ in range(n // batch):
        await run(batch)
    return (time.process_time() - started) / n * 1e6


async def measure(url: str, n: int) -> dict[str, float]:
    client = aioredis.Redis.from_url(url)
    try:
        sha = await client.script_load(SCRIPT)
        script = client.register_script(SCRIPT)

        async def through_script(_: int) -> object:
            return await script(keys=[b"k"], args=[], client=client)

        async def evalsha(_: int) -> object:
            return await client.evalsha(sha, 1, b"k")

        async def get(_: int) -> object:
            return await client.get(b"k")

        async def pipelined(batch: int) -> object:
            pipe = client.pipeline(transaction=False)
            for _ in range(batch):
                pipe.evalsha(sha, 1, b"k")
            return await pipe.execute()

        await per_command(n // 10, 1, evalsha)  # warm up
        return {
            "GET alone (anchor)": await per_command(n, 1, get),
            "Script object alone": await per_command(n, 1, through_script),
            "EVALSHA alone": await per_command(n, 1, evalsha),
            "EVALSHA, pipelines of 4": await per_command(n, 4, pipelined),
            "EVALSHA, pipelines of 16": await per_command(n, 16, pipelined),
        }
    finally:
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commands", type=int, default=3000, help="commands per figure")
    args = parser.parse_args()
    with running_redis() as server:
        figures = asyncio.run(measure(server.url, args.commands))
    anchor = figures["GET alone (anchor)"]
    print(f"{'µs CPU per command (this process)':36}{'µs':>8}{'/ GET':>8}")
    for name, value in figures.items():
        print(f"{name:36}{value:>8.1f}{value / anchor:>8.2f}")


if __name__ == "__main__":
    main()
