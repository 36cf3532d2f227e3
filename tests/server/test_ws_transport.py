"""The signaling WebSocket transport (facecall.api.ws_transport): RFC 6455 behaviour a client
sees — tokens (header or subprotocol), close codes, fragmentation, ping/pong, invalid UTF-8,
other paths, keepalive."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from types import SimpleNamespace
from typing import Any

import pytest
import websockets
from fastapi import HTTPException
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import OPEN
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from facecall.api import ws_transport
from facecall.api.auth import token_hash
from facecall.api.ws_frames import encode_text_frames
from facecall.api.ws_transport import (
    SignalingWebSocket,
    _Resumed,
    bearer_token,
    offered_subprotocols,
)
from tests.live import LiveServer


async def _device_token(server: LiveServer, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    account = await server.sign_up(name)
    reg = await server.register_device(account["token"])
    return account, reg


async def _connect(server: LiveServer, token: str | None, url: str | None = None,
                   via: str = "header") -> Any:
    """A connection sending ``token`` in ``Authorization: Bearer`` (``via="header"``, as the
    SDK does) or in a subprotocol beside ``facecall.v1`` (``via="subprotocol"``, as browsers)."""
    if via == "subprotocol":
        offers = [Subprotocol("facecall.v1")]
        if token is not None:
            offers.append(Subprotocol(f"facecall.token.{token}"))
        return await websockets.connect(url or server.ws_url, subprotocols=offers)
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


@pytest.mark.parametrize("via", ["header", "subprotocol"])
async def test_expired_and_revoked_device_tokens_close_with_4401(server: LiveServer,
                                                                 via: str) -> None:
    account, reg = await _device_token(server, "tokens")
    store = server.app.app.state.store  # inside uvicorn's proxy-headers middleware
    now = time.time()
    expired, revoked = "expired-device-token-0123456789", "revoked-device-token-0123456789"
    user_id, device_id = account["user"]["id"], reg["device"]["id"]
    await store.create_token(token_hash(expired), user_id, device_id, now - 100, now - 10)
    await store.create_token(token_hash(revoked), user_id, device_id, now, None)
    ws = await _connect(server, revoked, via=via)
    assert (await _hello(ws))["type"] == "welcome"  # live until revoked
    await ws.close()
    assert await store.revoke_token(token_hash(revoked), time.time())
    for token in (expired, revoked):
        ws = await _connect(server, token, via=via)
        assert await _closed_with(ws) == 4401
        assert ws.close_reason == "invalid, expired or revoked token"


async def test_token_in_a_subprotocol_selects_facecall_v1(server: LiveServer) -> None:
    """A browser's way (RFC 6455 §4.1): the server selects facecall.v1, never the token one."""
    _, reg = await _device_token(server, "browser")
    async with await _connect(server, reg["token"], via="subprotocol") as ws:
        assert ws.subprotocol == "facecall.v1"
        assert ws.response.headers.get_all("Sec-WebSocket-Protocol") == ["facecall.v1"]
        assert (await _hello(ws))["device_id"] == reg["device"]["id"]
    offers = [Subprotocol(f"facecall.token.{reg['token']}"), Subprotocol("facecall.v1")]
    async with websockets.connect(server.ws_url, subprotocols=offers) as ws:  # in any order
        assert ws.subprotocol == "facecall.v1"
        assert reg["token"] not in str(ws.response.headers)
        assert (await _hello(ws))["device_id"] == reg["device"]["id"]


async def test_the_header_comes_before_the_subprotocol(server: LiveServer) -> None:
    _, reg = await _device_token(server, "both")
    offers = [Subprotocol("facecall.v1"), Subprotocol("facecall.token.not-this-one")]
    async with websockets.connect(server.ws_url, subprotocols=offers, additional_headers={
            "Authorization": f"Bearer {reg['token']}"}) as ws:
        assert ws.subprotocol == "facecall.v1"
        assert (await _hello(ws))["device_id"] == reg["device"]["id"]


@pytest.mark.parametrize("via", ["header", "subprotocol", None])
async def test_a_token_in_the_query_string_is_refused(server: LiveServer, via: str | None) -> None:
    """URLs end up in proxy access logs: a token there closes with 4401, even beside a good
    token where it belongs."""
    _, reg = await _device_token(server, "leaky")
    url = f"{server.ws_url}?token={reg['token']}"
    ws = await (_connect(server, reg["token"], url, via) if via else websockets.connect(url))
    assert await _closed_with(ws) == 4401
    assert ws.close_reason == ("the token belongs in Authorization: Bearer or a facecall.token. "
                               "subprotocol, not in the URL")
    async with await _connect(server, reg["token"], via="subprotocol") as ws:  # still fine
        assert (await _hello(ws))["type"] == "welcome"


async def test_the_handshake_is_not_logged_with_credentials(
        server: LiveServer, caplog: pytest.LogCaptureFixture) -> None:
    """websockets logs the request line and every header at DEBUG: never a token."""
    _, reg = await _device_token(server, "quiet")
    caplog.set_level(logging.DEBUG, logger="facecall.ws")
    async with await _connect(server, reg["token"], via="subprotocol") as ws:
        await _hello(ws)
    async with await _connect(server, reg["token"]) as ws:
        await _hello(ws)
    ws = await websockets.connect(f"{server.ws_url}?token={reg['token']}")
    await _closed_with(ws)
    handshake = [r.getMessage().lower() for r in caplog.records if r.name == "facecall.ws"]
    assert "< sec-websocket-protocol: [redacted]" in handshake  # the log was on
    assert "< authorization: [redacted]" in handshake
    assert "< get /v1/signaling?[redacted] http/1.1" in handshake
    assert not [line for line in caplog.text.splitlines() if reg["token"] in line]


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
    app = SimpleNamespace(state=SimpleNamespace(store=store or _Unauthorised(), signaling=None))
    config = SimpleNamespace(app=app, ws_max_size=2**20, ws_ping_interval=ping,
                             ws_ping_timeout=ping)
    proto = SignalingWebSocket(config, SimpleNamespace(connections=set(), tasks=set()), {})
    transport = _MemoryTransport()
    proto.connection_made(transport)
    return proto, transport


def _client(path: str, token: str | None = None) -> tuple[ClientProtocol, bytes]:
    """A client offering ``token`` the browser's way (facecall.v1 and facecall.token.<token>);
    websockets checks that the answer selects one of its offers (RFC 6455 §4.1)."""
    offers = [Subprotocol("facecall.v1"), Subprotocol(f"facecall.token.{token}")] if token else None
    client = ClientProtocol(parse_uri(f"ws://test{path}"), subprotocols=offers)
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
    client, request = _client("/v1/signaling", "whatever")
    proto.data_received(request)
    (response,) = _read(client, transport)
    assert response.status_code == 101
    assert client.subprotocol == "facecall.v1"
    await asyncio.sleep(0)  # the token check runs: 4401 starts the closing handshake
    events = _read(client, transport)
    assert events and events[-1].opcode is Opcode.CLOSE

    proto, transport = _protocol(0.02, _NeverAnswers())  # authentication hangs: only keepalive acts
    client, request = _client("/v1/signaling", "pending")
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
    client, request = _client("/v1/signaling", "pending")
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


async def test_a_pong_after_the_close_began_does_not_cancel_the_drop(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ws_transport, "CLOSE_TIMEOUT", 0.05)
    proto, transport = _protocol(0.01, _NeverAnswers())
    client, request = _client("/v1/signaling", "pending")
    proto.data_received(request)
    _read(client, transport)
    for _ in range(400):  # the first keepalive ping
        if any(isinstance(e, Frame) and e.opcode is Opcode.PING for e in _read(client, transport)):
            break
        await asyncio.sleep(0.005)
    pong = b"".join(client.data_to_send())  # websockets answered the ping
    proto.close(1001, "going away")  # the server starts closing; the peer never answers it
    proto.data_received(pong)
    await asyncio.sleep(0.2)
    assert transport.closed  # dropped after CLOSE_TIMEOUT all the same


class _NeverAnswers:
    async def resolve_token(self, *_: Any) -> None:
        await asyncio.Event().wait()


def test_bearer_token_prefers_the_header_and_refuses_the_query() -> None:
    client, _ = _client("/v1/signaling", "from-protocol")
    request = client.connect()
    offered = offered_subprotocols(request)
    assert offered == ["facecall.v1", "facecall.token.from-protocol"]
    assert bearer_token(request, offered) == "from-protocol"
    assert bearer_token(request, ["facecall.v1"]) is None
    assert bearer_token(request, ["facecall.v1", "facecall.token."]) == ""  # 4401: missing
    with pytest.raises(HTTPException, match="more than one"):
        bearer_token(request, [*offered, Subprotocol("facecall.token.another")])
    request.headers["Authorization"] = "Bearer from-header"
    assert bearer_token(request, offered) == "from-header"
    for query in ("?token=from-query", "?token=", "?x=1&token=a"):
        request.path = f"/v1/signaling{query}"
        with pytest.raises(HTTPException, match="not in the URL"):
            bearer_token(request, offered)
    request.path = "/v1/signaling?tokens=1"
    assert bearer_token(request, offered) == "from-header"


# -- frames, over an in-memory transport (RFC 6455 §5): the lean data-frame path and websockets ----


class _Recorder:
    """Stands in for DeviceSession: records each message; the message "slow" suspends first."""

    last: _Recorder

    def __init__(self, service: Any, user_id: str, device_id: str, link: Any) -> None:
        self.seen: list[str | bytes] = []
        _Recorder.last = self

    async def handle_frame(self, raw: str | bytes) -> None:
        if raw == "slow":
            await asyncio.sleep(0.01)
        self.seen.append(raw)

    async def detach(self) -> None:
        pass

    def end_of_read(self) -> None:
        self.reads_ended = getattr(self, "reads_ended", 0) + 1


class _Authorises:
    async def resolve_token(self, *_: Any) -> Any:
        return SimpleNamespace(user_id="u", device_id="d")


async def _open(monkeypatch: pytest.MonkeyPatch) -> tuple[SignalingWebSocket, _MemoryTransport,
                                                          ClientProtocol, _Recorder]:
    monkeypatch.setattr(ws_transport, "DeviceSession", _Recorder)
    proto, transport = _protocol(None, _Authorises())
    client, request = _client("/v1/signaling", "ok")
    proto.data_received(request)
    (response,) = _read(client, transport)
    assert response.status_code == 101
    await asyncio.sleep(0)  # authentication: the session exists
    return proto, transport, client, _Recorder.last


def _frames(client: ClientProtocol, *frames: Frame) -> bytes:
    """Masked client frames (§5.3), as the client would put them on the wire."""
    for frame in frames:
        client.send_frame(frame)
    return b"".join(client.data_to_send())


def _close_code(client: ClientProtocol, transport: _MemoryTransport) -> int | None:
    _read(client, transport)
    return client.close_rcvd.code if client.close_rcvd is not None else None


async def test_frames_split_anywhere_are_read_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """7-, 16- and 64-bit payload lengths (§5.2), a ping between them, cut at every size."""
    big = bytes(range(256)) * 300  # 76,800 bytes: the 64-bit length
    wire_frames = [Frame(Opcode.TEXT, b"hi"), Frame(Opcode.TEXT, "é".encode() * 200),
                   Frame(Opcode.PING, b"p"), Frame(Opcode.BINARY, big), Frame(Opcode.TEXT, b"end")]
    expected: list[str | bytes] = ["hi", "é" * 200, big, "end"]
    for size in (1, 2, 3, 7, 100, 4096, 1 << 20):
        proto, transport, client, session = await _open(monkeypatch)
        wire = _frames(client, *wire_frames)
        for i in range(0, len(wire), size):
            proto.data_received(wire[i:i + size])
        assert session.seen == expected, size
        pongs = [e for e in _read(client, transport) if e.opcode is Opcode.PONG]
        assert [p.data for p in pongs] == [b"p"]  # websockets answered the ping (§5.5.3)


async def test_fragments_with_a_control_frame_between(monkeypatch: pytest.MonkeyPatch) -> None:
    proto, transport, client, session = await _open(monkeypatch)
    proto.data_received(_frames(
        client, Frame(Opcode.TEXT, b"frag", fin=False), Frame(Opcode.PING, b""),
        Frame(Opcode.CONT, b"ment", fin=False), Frame(Opcode.CONT, b"ed"),
        Frame(Opcode.BINARY, b"next")))
    assert session.seen == ["fragmented", b"next"]  # §5.4: control frames may come between
    assert [e.opcode for e in _read(client, transport)] == [Opcode.PONG]


async def test_a_suspending_message_keeps_its_place(monkeypatch: pytest.MonkeyPatch) -> None:
    proto, _transport, client, session = await _open(monkeypatch)
    proto.data_received(_frames(client, *(Frame(Opcode.TEXT, t.encode())
                                          for t in ("a", "slow", "b"))))
    proto.data_received(_frames(client, Frame(Opcode.TEXT, b"c")))
    await asyncio.sleep(0.05)
    proto.data_received(_frames(client, Frame(Opcode.TEXT, b"d")))
    assert session.seen == ["a", "slow", "b", "c", "d"]


async def test_close_in_a_burst_ends_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    """§7.1.2: the Close is echoed and what follows it is not read; the server closes TCP."""
    proto, transport, client, session = await _open(monkeypatch)
    proto.data_received(_frames(client, Frame(Opcode.TEXT, b"1"), Frame(Opcode.TEXT, b"2")))
    client.send_close(1000, "bye")
    wire = b"".join(client.data_to_send())
    client.state = OPEN  # a client breaking §5.5.1: more data after its Close
    proto.data_received(wire + _frames(client, Frame(Opcode.TEXT, b"3")))
    assert session.seen == ["1", "2"]
    assert _close_code(client, transport) == 1000
    assert transport.closed


async def test_bad_frames_fail_the_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    unmasked = Frame(Opcode.TEXT, b"x").serialize(mask=False)  # §5.1: a client masks
    for wire, code in [(unmasked, 1002), (b"\x81\xff" + (2**20 + 1).to_bytes(8, "big"), 1009)]:
        proto, transport, client, session = await _open(monkeypatch)
        proto.data_received(wire)
        assert _close_code(client, transport) == code
        assert session.seen == []
    proto, transport, client, session = await _open(monkeypatch)
    proto.data_received(_frames(client, Frame(Opcode.TEXT, b"a", fin=False),
                                Frame(Opcode.TEXT, b"b")))  # §5.4: a continuation was due
    assert _close_code(client, transport) == 1002
    assert session.seen == []
    proto, transport, client, session = await _open(monkeypatch)
    rsv1 = bytearray(_frames(client, Frame(Opcode.TEXT, b"x")))
    rsv1[0] |= 0x40  # RSV1 without an extension that defines it (§5.2)
    proto.data_received(bytes(rsv1) + _frames(client, Frame(Opcode.TEXT, b"after")))
    assert _close_code(client, transport) == 1002
    assert session.seen == []


async def test_invalid_utf8_fails_and_nothing_after_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    proto, transport, client, session = await _open(monkeypatch)
    proto.data_received(_frames(client, Frame(Opcode.TEXT, b"ok"), Frame(Opcode.TEXT, b"\xff"),
                                Frame(Opcode.TEXT, b"late")))
    assert session.seen == ["ok"]
    assert _close_code(client, transport) == 1007  # §8.1


async def test_frames_sent_with_the_upgrade_request_are_read(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A client should wait for the 101 (§4.1); one that does not still gets its messages."""
    monkeypatch.setattr(ws_transport, "DeviceSession", _Recorder)
    proto, _transport = _protocol(None, _Authorises())
    client, request = _client("/v1/signaling", "ok")
    client.state = OPEN
    wire = request + _frames(client, Frame(Opcode.TEXT, b"early"))
    proto.data_received(wire[:-2])  # the frame's last bytes come with the next ones
    proto.data_received(wire[-2:] + _frames(client, Frame(Opcode.TEXT, b"x" * 300)))
    await asyncio.sleep(0)
    proto.data_received(_frames(client, Frame(Opcode.TEXT, b"later")))
    assert _Recorder.last.seen == ["early", "x" * 300, "later"]


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
def test_encode_text_frames_lengths(size: int) -> None:
    """The 7-, 16- and 64-bit payload length forms (§5.2), read back by websockets."""
    client = ClientProtocol(parse_uri("ws://t/"), state=OPEN)
    texts = [b"a" * size, b"b"]
    client.receive_data(encode_text_frames(texts))
    frames = client.events_received()
    assert [(f.opcode, f.fin, f.data) for f in frames] == [(Opcode.TEXT, True, t) for t in texts]
