"""HTTP connection limits (facecall.api.http_transport) over raw loopback sockets: bounded
request heads, deadlines for heads and bodies, the connection cap; the node keeps serving."""

from __future__ import annotations

import asyncio
import json
import resource
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from facecall.api.http_transport import RESERVED_DESCRIPTORS, connection_limit
from facecall.config import Settings
from tests.live import LiveServer, live_server


@asynccontextmanager
async def limited_server(tmp_path: Path, **overrides: Any) -> AsyncIterator[LiveServer]:
    async with live_server(f"sqlite+aiosqlite:///{tmp_path / 'facecall.db'}", **overrides) as live:
        yield live


async def _connect(live: LiveServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", live.settings.port)


async def _response(reader: asyncio.StreamReader, timeout: float = 5.0) -> tuple[int, bytes]:
    """Status and body of one response; the server closes after it."""
    raw = await asyncio.wait_for(reader.read(-1), timeout)
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def _kept_alive_status(reader: asyncio.StreamReader) -> int:
    """Status of one response on a connection that stays open (its body read by length)."""
    line = await asyncio.wait_for(reader.readline(), 5)
    length = 0
    while (header := await reader.readline()) != b"\r\n":
        if header.lower().startswith(b"content-length:"):
            length = int(header.split(b":")[1])
    await reader.readexactly(length)
    return int(line.split(b" ", 2)[1])


async def _healthy(live: LiveServer) -> None:
    assert (await live.http.get("/healthz")).status_code == 200


async def test_oversized_head_is_431_and_closed(tmp_path: Path) -> None:
    async with limited_server(tmp_path, http_max_head_bytes=4096) as live:
        reader, writer = await _connect(live)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 64 * 1024)
        status, body = await _response(reader)
        assert status == 431
        assert json.loads(body) == {"detail": "request head larger than 4096 bytes"}
        writer.close()
        await _healthy(live)


async def test_many_header_fields_count_towards_the_head(tmp_path: Path) -> None:
    async with limited_server(tmp_path, http_max_head_bytes=4096) as live:
        reader, writer = await _connect(live)
        fields = b"".join(b"X-F%d: v\r\n" % i for i in range(2000))
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n")
        status, _ = await _response(reader)
        assert status == 431
        writer.close()


async def test_head_just_under_the_limit_and_keep_alive_are_served(tmp_path: Path) -> None:
    async with limited_server(tmp_path, http_max_head_bytes=4096) as live:
        reader, writer = await _connect(live)
        for _ in range(3):  # one connection, three requests: each head is counted on its own
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 3000 + b"\r\n\r\n")
            assert await _kept_alive_status(reader) == 200
        writer.close()


async def test_a_body_larger_than_the_head_limit_is_not_a_head(tmp_path: Path) -> None:
    async with limited_server(tmp_path, http_max_head_bytes=1024) as live:
        body = json.dumps({"username": "padded", "password": "p" * 200,
                           "display_name": "x" * 60}).encode() + b" " * 8000
        reader, writer = await _connect(live)
        writer.write(b"POST /v1/accounts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        status, _ = await _response(reader)
        assert status == 201
        writer.close()


async def test_unfinished_head_gets_408(tmp_path: Path) -> None:
    async with limited_server(tmp_path, http_head_timeout=0.5) as live:
        reader, writer = await _connect(live)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        status, body = await _response(reader)
        assert status == 408
        assert b"request head" in body
        writer.close()
        await _healthy(live)


async def test_silent_connection_is_closed(tmp_path: Path) -> None:
    async with limited_server(tmp_path, http_head_timeout=0.5) as live:
        reader, writer = await _connect(live)
        assert await asyncio.wait_for(reader.read(-1), 5) == b""  # closed, nothing said
        writer.close()


async def test_body_that_never_arrives_closes_the_connection(tmp_path: Path) -> None:
    async with limited_server(tmp_path, http_body_timeout=0.5) as live:
        reader, writer = await _connect(live)
        writer.write(b"POST /v1/accounts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"username\":")
        assert await asyncio.wait_for(reader.read(-1), 5) == b""
        writer.close()
        await _healthy(live)
        taken = await live.http.post("/v1/sessions", json={"username": "anyone", "password": "x" * 8})
        assert taken.status_code == 401  # nothing was stored from the cut-off request


async def test_slow_route_is_not_cut_by_the_head_deadline(tmp_path: Path) -> None:
    """Deadlines cover reading the request, never the app's answer (argon2 takes a while)."""
    async with limited_server(tmp_path, http_head_timeout=0.05, http_body_timeout=0.05) as live:
        account = await live.sign_up("patient")
        assert account["user"]["username"] == "patient"


async def test_connections_over_the_cap_get_503(tmp_path: Path) -> None:
    async with limited_server(tmp_path, max_connections=3) as live:
        held = [await _connect(live) for _ in range(3)]
        await asyncio.sleep(0.05)
        reader, writer = await _connect(live)
        status, body = await _response(reader)
        assert status == 503
        assert json.loads(body)["detail"] == "too many connections; retry later"
        writer.close()
        for _, w in held:
            w.close()
        await asyncio.sleep(0.1)
        await _healthy(live)  # room again once they closed


async def test_websocket_is_not_cut_by_http_deadlines(tmp_path: Path) -> None:
    async with limited_server(tmp_path, http_head_timeout=0.2, http_body_timeout=0.2) as live:
        _, (conn,) = await live.user_with_devices("lingering", 1)
        await asyncio.sleep(0.6)  # past both deadlines
        assert (await conn.request("ping"))["type"] == "pong"
        await conn.close()


def test_connection_limit_defaults_to_the_descriptor_limit() -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert connection_limit(Settings()) == max(64, soft - RESERVED_DESCRIPTORS)
    assert connection_limit(Settings(max_connections=10)) == 10


async def test_a_body_arriving_after_its_head_is_not_counted_as_a_head(tmp_path: Path) -> None:
    """Body bytes that come in reads of their own (and the end of a body) are no head: a
    32 KiB+ body under the API's 64 KiB limit is served, and so is the next request."""
    async with limited_server(tmp_path) as live:
        body = json.dumps({"username": "split", "password": "p" * 200}).encode() + b" " * 40_000
        reader, writer = await _connect(live)
        writer.write(b"POST /v1/accounts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body))
        await writer.drain()
        for part in (body[:1_000], body[1_000:]):  # the last read holds over 32 KiB
            await asyncio.sleep(0.05)  # separate reads on the server
            writer.write(part)
            await writer.drain()
        assert await _kept_alive_status(reader) == 201
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        status, _ = await _response(reader)
        assert status == 200
        writer.close()
