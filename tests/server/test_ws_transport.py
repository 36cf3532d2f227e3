"""The signaling WebSocket transport (facecall.api.ws_transport): RFC 6455 behaviour a client
sees — tokens (header or subprotocol), close codes, fragmentation, ping/pong, invalid UTF-8,
other paths, keepalive."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import pytest
import websockets
from websockets.typing import Subprotocol

from facecall.api.auth import token_hash
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
