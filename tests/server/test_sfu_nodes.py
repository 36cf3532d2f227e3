"""A node sharing a Redis bus with others does not split a call's group media between the
nodes' rooms: it refuses ``sfu.join`` and ``sfu.leave`` with ``sfu_unavailable`` (group media
needs the single-node server for now: docs/sfu.md), and the call itself goes on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from facecall.client.signaling import SignalingConnection, SignalingError
from facecall.config import Settings
from facecall.server import build_uvicorn, open_bus
from facecall.store import Store
from tests.live import free_socket
from tests.redis_server import RedisServer, running_redis
from tests.sfu.test_transport import Client


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@pytest.fixture
async def node(tmp_path: Path, redis_server: RedisServer) -> AsyncIterator[tuple[str, str]]:
    """One node on SQLite and the Redis bus, as `facecall serve --redis-url` runs it: its
    HTTP base URL and signaling URL."""
    sock = free_socket()
    port = sock.getsockname()[1]
    settings = Settings(host="127.0.0.1", port=port, redis_url=redis_server.url,
                        database_url=f"sqlite+aiosqlite:///{tmp_path / 'facecall.db'}")
    store = await Store.open(settings.database_url)
    bus = await open_bus(settings)
    assert bus is not None and bus.shared
    server = build_uvicorn(settings, store=store, bus=bus)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/v1/signaling"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)
        await bus.close()
        await store.close()
        sock.close()


async def test_group_media_is_refused_on_a_shared_bus(node: tuple[str, str]) -> None:
    base, ws_url = node
    conns: dict[str, SignalingConnection] = {}
    users: dict[str, str] = {}
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        for name in ("alice", "bob"):
            account = (await http.post("/v1/accounts", json={
                "username": name, "password": "correct horse battery"})).json()
            reg = (await http.post("/v1/devices", json={"kind": "sdk", "name": name}, headers={
                "Authorization": f"Bearer {account['token']}"})).json()
            conns[name] = SignalingConnection(ws_url, reg["token"])
            await conns[name].connect()
            users[name] = account["user"]["id"]
    alice, bob = conns["alice"], conns["bob"]
    client = Client("alice", 1, slots=2)
    try:
        call_id = (await alice.request("call.start", to=[users["bob"]], media="video"))["call_id"]
        await bob.next_event("call.ring")
        await bob.request("call.answer", call_id=call_id)
        for kind, fields in (("sfu.join", {"sdp": await client.offer()}), ("sfu.leave", {})):
            with pytest.raises(SignalingError) as refused:
                await alice.request(kind, call_id=call_id, **fields)
            assert refused.value.code == "sfu_unavailable"
            assert "single-node" in refused.value.message
        await alice.request("call.hangup", call_id=call_id)  # the call was untouched
        assert (await bob.next_event("call.ended"))["reason"] == "hung_up"
    finally:
        await client.close()
        for conn in conns.values():
            await conn.close()
