"""Fixtures: one throwaway redis-server for the session; each test gets its own key prefix, so
tests share the server without seeing each other's keys."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from facecall.bus import Bus, InProcessBus
from facecall.bus.redis_bus import RedisBus
from tests.redis_server import RedisServer, running_redis


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the session (fails clearly when it is not installed)."""
    with running_redis() as server:
        yield server


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own."""
    return f"t{uuid.uuid4().hex[:12]}:"


class Nodes:
    """Started RedisBus nodes sharing one server and prefix: one cluster; closed at the end."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url, self.prefix = url, prefix
        self.made: list[RedisBus] = []

    async def new(self, **options: Any) -> RedisBus:
        options.setdefault("heartbeat", 0.5)
        bus = RedisBus(self.url, prefix=self.prefix, **options)
        await bus.start()
        self.made.append(bus)
        return bus

    async def keys(self) -> list[bytes]:
        """Every key under this cluster's prefix (SCAN)."""
        client = aioredis.Redis.from_url(self.url)
        try:
            return [key async for key in client.scan_iter(match=self.prefix + "*")]
        finally:
            await client.aclose()

    async def lose_keys(self) -> None:
        """Delete every key under the prefix: what expiry does to an idle device's mailbox."""
        client = aioredis.Redis.from_url(self.url)
        try:
            for key in [key async for key in client.scan_iter(match=self.prefix + "*")]:
                await client.delete(key)
        finally:
            await client.aclose()

    async def close(self) -> None:
        for bus in self.made:
            await bus.close()


@pytest.fixture
async def nodes(redis_server: RedisServer, prefix: str) -> AsyncIterator[Nodes]:
    made = Nodes(redis_server.url, prefix)
    try:
        yield made
    finally:
        await made.close()


class Buses:
    """Started buses of one kind, for the contract tests: for ``memory`` each is its own
    InProcessBus; for ``redis`` each is a node of one cluster."""

    def __init__(self, kind: str, nodes: Nodes | None) -> None:
        self.kind, self.nodes = kind, nodes

    async def new(self, **options: Any) -> Bus:
        if self.nodes is None:
            return InProcessBus(**options)
        return await self.nodes.new(**options)

    async def with_mailboxes_lost(self, **options: Any) -> Bus:
        """A bus whose mailboxes are gone: a restarted process (memory), or expired keys
        (Redis: every key of the cluster deleted)."""
        if self.nodes is not None:
            await self.nodes.lose_keys()
        return await self.new(**options)


@pytest.fixture(params=["memory", "redis"])
async def buses(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[Buses]:
    if request.param == "memory":
        yield Buses("memory", None)
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    made = Nodes(server.url, prefix)
    try:
        yield Buses("redis", made)
    finally:
        await made.close()
