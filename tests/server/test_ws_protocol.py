"""The signaling WebSocket transport (facecall.api.ws_transport) without a server: stepping
a coroutine by hand (``_Resumed``), the protocol class over an in-memory transport (paths,
keepalive, tokens), and frames (RFC 6455 §5) on the lean data-frame path. The behaviour a
client sees through a real server is in test_ws_transport.py."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi import HTTPException
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import OPEN
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from facecall.api import ws_transport
from facecall.api.ws_frames import encode_text_frames
from facecall.api.ws_transport import (
    SignalingWebSocket,
    _Resumed,
    bearer_token,
    offered_subprotocols,
)

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
