"""The signaling WebSocket transport (facecall.api.ws_transport): RFC 6455 behaviour a client
sees — tokens, close codes, fragmentation, ping/pong, invalid UTF-8, other paths, keepalive."""

from __future__ import annotations

import asyncio
import json
import time
from types import SimpleNamespace
from typing import Any

import pytest
import websockets
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from facecall.api.auth import token_hash
from facecall.api.ws_transport import SignalingWebSocket, _Resumed, bearer_token
from tests.live import LiveServer


async def _device_token(server: LiveServer, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    account = await server.sign_up(name)
    reg = await server.register_device(account["token"])
    return account, reg


async def _connect(server: LiveServer, token: str | None, url: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return await websockets.connect(url or server.ws_url, additional_headers=headers)


async def _closed_with(ws: Any) -> int | None:
    with pytest.raises(websockets.ConnectionClosed):
        while True:
            await ws.recv()
    return ws.close_code  # type: ignore[no-any-return]


async def _hello(ws: Any) -> dict[str, Any]:
    await ws.send(json.dumps({"v": 1, "id": "h", "type": "hello"}))
    reply: dict[str, Any] = json.loads(await ws.recv())
    return reply


async def test_expired_and_revoked_device_tokens_close_with_4401(server: LiveServer) -> None:
    account, reg = await _device_token(server, "tokens")
    store = server.app.app.state.store  # inside uvicorn's proxy-headers middleware
    now = time.time()
    expired, revoked = "expired-device-token-0123456789", "revoked-device-token-0123456789"
    user_id, device_id = account["user"]["id"], reg["device"]["id"]
    await store.create_token(token_hash(expired), user_id, device_id, now - 100, now - 10)
    await store.create_token(token_hash(revoked), user_id, device_id, now, None)
    ws = await _connect(server, revoked)
    assert (await _hello(ws))["type"] == "welcome"  # live until revoked
    await ws.close()
    assert await store.revoke_token(token_hash(revoked), time.time())
    for token in (expired, revoked):
        ws = await _connect(server, token)
        assert await _closed_with(ws) == 4401
        assert ws.close_reason


async def test_token_in_the_query_string(server: LiveServer) -> None:
    _, reg = await _device_token(server, "browser")
    async with websockets.connect(f"{server.ws_url}?token={reg['token']}") as ws:
        assert (await _hello(ws))["device_id"] == reg["device"]["id"]


async def test_fragmented_messages_are_reassembled(server: LiveServer) -> None:
    _, reg = await _device_token(server, "fragments")
    async with await _connect(server, reg["token"]) as ws:
        hello = json.dumps({"v": 1, "id": "h", "type": "hello"})
        await ws.send([hello[:5], hello[5:9], hello[9:]])  # RFC 6455 §5.4: three frames
        assert json.loads(await ws.recv())["type"] == "welcome"
        ping = json.dumps({"v": 1, "id": "p", "type": "ping"}).encode()
        await ws.send([ping[:3], ping[3:]])  # binary fragments holding UTF-8 JSON
        assert json.loads(await ws.recv()) == {"v": 1, "type": "pong", "re": "p"}


async def test_websocket_ping_is_answered_and_the_session_goes_on(server: LiveServer) -> None:
    _, reg = await _device_token(server, "pinger")
    async with await _connect(server, reg["token"]) as ws:
        await _hello(ws)
        for _ in range(3):
            await asyncio.wait_for(await ws.ping(b"are you there"), 10)  # RFC 6455 §5.5.2
        await ws.send(json.dumps({"v": 1, "id": "p", "type": "ping"}))
        assert json.loads(await ws.recv())["type"] == "pong"


async def test_invalid_utf8_in_a_text_message_closes_with_1007(server: LiveServer) -> None:
    _, reg = await _device_token(server, "mojibake")
    ws = await _connect(server, reg["token"])
    await _hello(ws)
    await ws.send(b'{"v": 1, "id": "\xff", "type": "ping"}', text=True)
    assert await _closed_with(ws) == 1007  # RFC 6455 §8.1


async def test_client_close_is_echoed(server: LiveServer) -> None:
    _, reg = await _device_token(server, "polite")
    ws = await _connect(server, reg["token"])
    await _hello(ws)
    await ws.close(1000, "bye")
    assert ws.close_code == 1000
    # the device is offline now (the resume grace runs): a new connection gets a fresh welcome
    async with await _connect(server, reg["token"]) as again:
        assert (await _hello(again))["type"] == "welcome"


async def test_other_websocket_paths_are_refused(server: LiveServer) -> None:
    _, reg = await _device_token(server, "lost")
    url = server.ws_url.replace("/v1/signaling", "/v1/elsewhere")
    with pytest.raises(websockets.InvalidStatus) as err:
        await _connect(server, reg["token"], url)
    assert err.value.response.status_code == 404


async def test_plain_http_to_the_signaling_path_is_refused(server: LiveServer) -> None:
    r = await server.http.get("/v1/signaling")
    assert r.status_code == 404  # not a WebSocket upgrade: the HTTP app has no such route


async def test_messages_before_authentication_finishes_are_kept_in_order(server: LiveServer) -> None:
    _, reg = await _device_token(server, "hasty")
    async with await _connect(server, reg["token"]) as ws:
        frames = [{"v": 1, "id": "h", "type": "hello"}]
        frames += [{"v": 1, "id": f"p{i}", "type": "ping"} for i in range(5)]
        for frame in frames:  # sent at once, without waiting for welcome
            await ws.send(json.dumps(frame))
        replies = [json.loads(await ws.recv()) for _ in frames]
        assert [r["re"] for r in replies] == [f["id"] for f in frames]


async def test_a_burst_is_answered_in_order_whether_or_not_a_message_suspends(
        server: LiveServer) -> None:
    """Pings finish where they are read; a call.start waits on the store (it suspends and goes
    on as a task): what follows it must not overtake it."""
    _, reg = await _device_token(server, "burst")
    callee = await server.sign_up("burst-callee")
    async with await _connect(server, reg["token"]) as ws:
        await _hello(ws)
        frames: list[dict[str, Any]] = []
        for i in range(4):
            frames.append({"v": 1, "id": f"p{i}", "type": "ping"})
            frames.append({"v": 1, "id": f"s{i}", "type": "call.start",
                           "to": [callee["user"]["id"]], "media": "audio"})
            frames.append({"v": 1, "id": f"x{i}", "type": "call.hangup", "call_id": "nope"})
        for frame in frames:  # at once, without waiting for replies
            await ws.send(json.dumps(frame))
        replies: list[dict[str, Any]] = []
        while len(replies) < len(frames):
            message = json.loads(await ws.recv())
            if "seq" not in message:  # not an event (the callee has no device: call.ended)
                replies.append(message)
        assert [r["re"] for r in replies] == [f["id"] for f in frames]
        assert [r["type"] for r in replies[:3]] == ["pong", "ok", "error"]


async def test_client_close_during_a_burst(server: LiveServer) -> None:
    """Requests then a Close in one write: the server answers what it handled, echoes the Close
    (RFC 6455 §7.1.2) and the device can come straight back."""
    _, reg = await _device_token(server, "hasty-closer")
    ws = await _connect(server, reg["token"])
    await _hello(ws)
    for i in range(20):
        await ws.send(json.dumps({"v": 1, "id": f"p{i}", "type": "ping"}))
    await ws.close(1000, "done")
    assert ws.close_code == 1000
    async with await _connect(server, reg["token"]) as again:
        assert (await _hello(again))["type"] == "welcome"


# -- stepping a coroutine by hand (_Resumed) ---------------------------------------------------


async def test_resumed_finishes_a_coroutine_started_by_hand() -> None:
    trace: list[Any] = []

    async def work() -> None:
        trace.append("start")
        await asyncio.sleep(0)  # a bare yield
        trace.append(await asyncio.get_running_loop().run_in_executor(None, lambda: 7))
        with pytest.raises(KeyError):
            await _raise_later(KeyError("inner"))
        trace.append("end")

    coro = work()
    yielded = coro.send(None)  # what SignalingWebSocket._handle_eagerly does
    assert trace == ["start"]
    await _Resumed(coro, yielded)
    assert trace == ["start", 7, "end"]


async def test_resumed_propagates_errors_and_cancellation() -> None:
    async def fails() -> None:
        await asyncio.sleep(0)
        raise ValueError("boom")

    coro = fails()
    with pytest.raises(ValueError, match="boom"):
        await _Resumed(coro, coro.send(None))

    cleaned: list[bool] = []

    async def waits() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.append(True)

    coro = waits()
    task = asyncio.get_running_loop().create_task(_await(_Resumed(coro, coro.send(None))))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == [True]


async def _raise_later(exc: Exception) -> None:
    await asyncio.sleep(0)
    raise exc


async def _await(awaitable: Any) -> None:
    await awaitable


# -- the protocol class alone, over an in-memory transport --------------------------------------


class _MemoryTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.out += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


class _Unauthorised:
    async def resolve_token(self, *_: Any) -> None:
        return None


def _protocol(ping: float | None, store: Any = None) -> tuple[SignalingWebSocket, _MemoryTransport]:
    app = SimpleNamespace(state=SimpleNamespace(store=store or _Unauthorised()))
    config = SimpleNamespace(app=app, ws_max_size=2**20, ws_ping_interval=ping,
                             ws_ping_timeout=ping)
    proto = SignalingWebSocket(config, SimpleNamespace(connections=set(), tasks=set()), {})
    transport = _MemoryTransport()
    proto.connection_made(transport)
    return proto, transport


def _client(path: str) -> tuple[ClientProtocol, bytes]:
    client = ClientProtocol(parse_uri(f"ws://test{path}"))
    client.send_request(client.connect())
    return client, b"".join(client.data_to_send())


def _read(client: ClientProtocol, transport: _MemoryTransport) -> list[Any]:
    client.receive_data(bytes(transport.out))
    transport.out.clear()
    return client.events_received()


async def test_other_path_gets_404_and_tcp_is_closed() -> None:
    proto, transport = _protocol(None)
    client, request = _client("/nowhere")
    proto.data_received(request)
    (response,) = _read(client, transport)
    assert isinstance(response, Response) and response.status_code == 404
    assert transport.closed


async def test_keepalive_closes_with_1011_when_no_pong_comes() -> None:
    proto, transport = _protocol(0.02)
    client, request = _client("/v1/signaling?token=whatever")
    proto.data_received(request)
    (response,) = _read(client, transport)
    assert response.status_code == 101
    await asyncio.sleep(0)  # the token check runs: 4401 starts the closing handshake
    events = _read(client, transport)
    assert events and events[-1].opcode is Opcode.CLOSE

    proto, transport = _protocol(0.02, _NeverAnswers())  # authentication hangs: only keepalive acts
    client, request = _client("/v1/signaling?token=pending")
    proto.data_received(request)
    _read(client, transport)
    seen: list[Frame] = []
    for _ in range(500):
        seen += [e for e in _read(client, transport) if isinstance(e, Frame)]
        if transport.closed:
            break
        await asyncio.sleep(0.01)
    assert [f.opcode for f in seen][:1] == [Opcode.PING]
    assert seen[-1].opcode is Opcode.CLOSE
    assert client.close_rcvd is not None and client.close_rcvd.code == 1011
    assert transport.closed


async def test_keepalive_pongs_keep_the_connection() -> None:
    proto, transport = _protocol(0.01, _NeverAnswers())
    client, request = _client("/v1/signaling?token=pending")
    proto.data_received(request)
    _read(client, transport)
    pings = 0
    while pings < 5:
        for event in _read(client, transport):
            if isinstance(event, Frame) and event.opcode is Opcode.PING:
                pings += 1
        answer = b"".join(client.data_to_send())  # websockets queued the pongs itself
        if answer:
            proto.data_received(answer)
        assert not transport.closed
        await asyncio.sleep(0.005)
    assert client.close_rcvd is None


class _NeverAnswers:
    async def resolve_token(self, *_: Any) -> None:
        await asyncio.Event().wait()


def test_bearer_token_prefers_the_header() -> None:
    client, _ = _client("/v1/signaling?token=from-query")
    request = client.connect()
    assert bearer_token(request) == "from-query"
    request.headers["Authorization"] = "Bearer from-header"
    assert bearer_token(request) == "from-header"
