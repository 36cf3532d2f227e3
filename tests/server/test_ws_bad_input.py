"""Bad input on the signaling WebSocket: each gets a clear error, the connection survives where
safe, and nothing changes."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import websockets
from websockets.typing import Subprotocol

from tests.live import LiveServer


async def _raw(server: LiveServer, token: str | None, via: str = "header") -> Any:
    """Connect with ``token`` in ``Authorization: Bearer`` or, ``via="subprotocol"``, in a
    ``facecall.token.`` subprotocol beside ``facecall.v1`` (as browsers do)."""
    if via == "subprotocol":
        offers = [Subprotocol("facecall.v1")]
        if token is not None:
            offers.append(Subprotocol(f"facecall.token.{token}"))
        return await websockets.connect(server.ws_url, subprotocols=offers, max_size=2**22)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return await websockets.connect(server.ws_url, additional_headers=headers, max_size=2**22)


async def _next(ws: Any) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await ws.recv())
    return frame


async def _device(server: LiveServer, name: str) -> tuple[dict[str, Any], str]:
    account = await server.sign_up(name)
    reg = await server.register_device(account["token"])
    return account, reg["token"]


@pytest.mark.parametrize("via", ["header", "subprotocol"])
@pytest.mark.parametrize("token", [None, "", "wrong", "x" * 4000])
async def test_bad_tokens_close_with_4401(server: LiveServer, token: str | None, via: str) -> None:
    ws = await _raw(server, token, via)
    with pytest.raises(websockets.ConnectionClosed):
        await ws.recv()
    assert ws.close_code == 4401
    assert ws.close_reason in ("missing bearer token", "malformed bearer token",
                               "invalid, expired or revoked token")


@pytest.mark.parametrize("via", ["header", "subprotocol"])
async def test_account_token_is_not_a_device(server: LiveServer, via: str) -> None:
    account = await server.sign_up("acct")
    ws = await _raw(server, account["token"], via)
    with pytest.raises(websockets.ConnectionClosed):
        await ws.recv()
    assert ws.close_code == 4403


async def _refused(server: LiveServer, *fields: str) -> websockets.InvalidStatus:
    """The handshake answer to ``Sec-WebSocket-Protocol`` fields sent as they are."""
    headers = [("Sec-WebSocket-Protocol", value) for value in fields]
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(server.ws_url, additional_headers=headers)
    return refused.value


async def test_bad_subprotocol_offers_are_refused_and_the_server_goes_on(
        server: LiveServer) -> None:
    """RFC 6455 §4.1: subprotocols are tokens; the server selects only one that was offered."""
    _, token = await _device(server, "offers")
    for field in (f"facecall.v1, facecall.token.{token} extra", f"facecall.v1; {token}",
                  f'facecall.v1, "facecall.token.{token}"', f"facecall.v1,facecall.token.{token}/",
                  ", ,"):
        refused = await _refused(server, field)
        assert refused.response.status_code == 400, field
        assert refused.response.body == b"invalid Sec-WebSocket-Protocol header\n"
    refused = await _refused(server, f"facecall.token.{token}")  # facecall.v1 not offered
    assert refused.response.status_code == 400
    assert b"facecall.v1" in refused.response.body and token.encode() not in refused.response.body
    refused = await _refused(server, "facecall.v2, chat")
    assert refused.response.status_code == 400
    for fields in (["facecall.v1, " + "x" * 9000],  # one field over websockets' line limit
                   ["facecall.v1, " + "x" * 7000] * 5):  # a head over the node's 32 KiB
        refused = await _refused(server, *fields)
        assert refused.response.status_code == 431
    # several token subprotocols, or one with nothing after its prefix: 4401 after the handshake
    # (a browser sees the code, and does not retry)
    for offers, reason in (([token, "another"], "more than one facecall.token. subprotocol"),
                           ([""], "missing bearer token")):
        ws = await websockets.connect(server.ws_url, subprotocols=[
            Subprotocol("facecall.v1"), *(Subprotocol(f"facecall.token.{t}") for t in offers)])
        assert ws.subprotocol == "facecall.v1"
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()
        assert (ws.close_code, ws.close_reason) == (4401, reason)
    # many offers, within the limits, split over several fields: the one token among them works
    many = [", ".join(f"other{i}.{j}" for j in range(200)) for i in range(3)]
    headers = [("Sec-WebSocket-Protocol", v) for v in [*many, f"facecall.token.{token}"]]
    async with websockets.connect(server.ws_url, additional_headers=headers, subprotocols=[
            Subprotocol("facecall.v1")]) as ws:
        assert ws.subprotocol == "facecall.v1"
        await ws.send(json.dumps({"v": 1, "id": "h", "type": "hello"}))
        assert (await _next(ws))["type"] == "welcome"


BAD_FRAMES: list[tuple[str, str]] = [
    ("{not json", "malformed_json"),
    ("[1, 2]", "malformed_json"),
    ('"hello"', "malformed_json"),
    ('{"v": 1, "id": "a"}', "unknown_type"),
    ('{"v": 1, "id": "a", "type": "call.explode"}', "unknown_type"),
    ('{"v": 2, "id": "a", "type": "ping"}', "unsupported_version"),
    ('{"v": 1, "id": "a", "type": "call.start", "to": "bob", "media": "video"}', "invalid_field"),
    ('{"v": 1, "id": "a", "type": "call.start", "to": [], "media": "video"}', "invalid_field"),
    ('{"v": 1, "id": "a", "type": "call.start", "to": ["b"], "media": "smell"}', "invalid_field"),
    ('{"v": 1, "id": "a", "type": "call.answer", "call_id": 7}', "invalid_field"),
    ('{"v": 1, "id": "a", "type": "call.media", "call_id": "c", "to_device": "d", "audio": 1, '
     '"video": true}', "invalid_field"),
    ('{"v": 1, "id": "a", "type": "call.media", "call_id": "c", "to_device": "d", "audio": true}',
     "invalid_field"),
    ('{"v": 1, "id": "a", "type": "call.media", "call_id": "c", "to_device": "d", "audio": true, '
     '"video": true, "screen": "yes"}', "invalid_field"),
    ('{"v": 1, "id": "a", "type": "bye", "calls": []}', "invalid_field"),
    ('{"v": 1, "id": "a", "type": "call.rejoin", "call_id": "c"}', "invalid_field"),
    ('{"v": 1, "id": "a", "type": "call.rejoin", "call_id": "c", "to_device": 5}', "invalid_field"),
    ('{"v": 1, "id": "a", "type": "call.rejoin", "call_id": "c", "to_device": "d", "sdp": "x"}',
     "invalid_field"),
    ('{"v": 1, "id": "a", "type": "call.answer", "call_id": "c", "extra": 1}', "invalid_field"),
    ('{"v": 1, "id": "a", "type": "sfu.join", "call_id": "c"}', "invalid_field"),
    ('{"v": 1, "id": "a", "type": "sfu.join", "call_id": "c", "sdp": ""}', "invalid_field"),
    ('{"v": 1, "id": "a", "type": "sfu.join", "call_id": "c", "sdp": "' + "x" * 40_000 + '"}',
     "invalid_field"),  # over the 32 KiB of an SDP, under the frame limit
    ('{"v": 1, "id": "a", "type": "sfu.join", "call_id": "nope", "sdp": "v=0"}', "unknown_call"),
    ('{"v": 1, "id": "a", "type": "sfu.leave", "call_id": "c", "sdp": "v=0"}', "invalid_field"),
    ('{"v": 1, "id": "a", "type": "sfu.leave", "call_id": "nope"}', "unknown_call"),
    ('{"v": 1, "id": "' + "i" * 200 + '", "type": "ping"}', "invalid_field"),
    ('{"v": 1, "id": "a", "type": "call.hangup", "call_id": "nope"}', "unknown_call"),
    ('{"v": 1, "id": "a", "type": "hello"}', "invalid_state"),  # a second hello
]


async def test_bad_frames_get_stable_codes_and_the_connection_survives(server: LiveServer) -> None:
    _, token = await _device(server, "fuzzy")
    async with await _raw(server, token) as ws:
        await ws.send(json.dumps({"v": 1, "id": "h", "type": "hello"}))
        assert (await _next(ws))["type"] == "welcome"
        for raw, code in BAD_FRAMES:
            await ws.send(raw)
            reply = await _next(ws)
            assert reply["type"] == "error", raw
            assert reply["code"] == code, (raw, reply)
            assert reply["message"]
        await ws.send(b"\xff\xfe binary garbage")
        assert (await _next(ws))["code"] == "malformed_json"
        await ws.send(json.dumps({"v": 1, "id": "p", "type": "ping"}))
        assert (await _next(ws))["type"] == "pong"


async def test_oversized_frames(server: LiveServer) -> None:
    _, token = await _device(server, "biggie")
    async with await _raw(server, token) as ws:
        await ws.send(json.dumps({"v": 1, "id": "h", "type": "hello"}))
        await _next(ws)
        # over the message limit (64 KiB) but under the transport limit: an error, still connected
        big = json.dumps({"v": 1, "id": "big", "type": "ping", "pad": "x" * 100_000})
        await ws.send(big)
        reply = await _next(ws)
        assert reply["code"] == "too_large"
        await ws.send(json.dumps({"v": 1, "id": "p", "type": "ping"}))
        assert (await _next(ws))["type"] == "pong"
        # over the transport limit (1 MiB): the server closes with 1009 (RFC 6455 §7.4.1)
        await ws.send("x" * (2 * 1024 * 1024))
        with pytest.raises(websockets.ConnectionClosed):
            await _next(ws)
        assert ws.close_code == 1009


async def test_hello_required_first(server: LiveServer) -> None:
    _, token = await _device(server, "eager")
    async with await _raw(server, token) as ws:
        await ws.send(json.dumps({"v": 1, "id": "p", "type": "ping"}))
        assert (await _next(ws))["code"] == "hello_required"


async def test_messages_about_calls_the_device_is_not_in(server: LiveServer) -> None:
    _, (a1,) = await server.user_with_devices("alice", 1)
    bob, (b1,) = await server.user_with_devices("bob", 1)
    _, (m1,) = await server.user_with_devices("mallory", 1)
    call_id = (await a1.request("call.start", to=[bob["user"]["id"]], media="video"))["call_id"]
    await b1.next_event("call.ring")
    from facecall.client.signaling import SignalingError

    requests = [
        ("call.answer", {}), ("call.decline", {}), ("call.hangup", {}), ("call.cancel", {}),
        ("call.sdp", {"to_device": b1.device_id,  # type: ignore[attr-defined]
                      "description": {"type": "offer", "sdp": "v=0"}}),
        ("call.invite", {"to": [bob["user"]["id"]]}),
        ("call.media", {"to_device": b1.device_id,  # type: ignore[attr-defined]
                        "audio": False, "video": False}),
        ("call.rejoin", {"to_device": a1.device_id}),  # type: ignore[attr-defined]
        ("sfu.join", {"sdp": "v=0\r\n"}), ("sfu.leave", {}),
    ]
    # mallory learns nothing: the call answers as one that does not exist, ended or not
    for about in (call_id, "0" * 32):
        for kind, extra in requests:
            with pytest.raises(SignalingError) as err:
                await m1.request(kind, call_id=about, **extra)
            assert err.value.code == "unknown_call", (kind, err.value.code)
    # nothing changed: bob can still answer
    await b1.request("call.answer", call_id=call_id)
    assert (await a1.next_event("call.answered"))["user_id"] == bob["user"]["id"]
    await a1.request("call.hangup", call_id=call_id)
    for kind, extra in requests:
        with pytest.raises(SignalingError) as err:
            await m1.request(kind, call_id=call_id, **extra)
        assert err.value.code == "unknown_call", (kind, err.value.code)
    with pytest.raises(SignalingError) as err:  # bob was in it: he may know that it ended
        await b1.request("call.hangup", call_id=call_id)
    assert err.value.code == "call_ended"


async def test_rate_limit(server: LiveServer) -> None:
    _, token = await _device(server, "chatty")
    async with await _raw(server, token) as ws:
        await ws.send(json.dumps({"v": 1, "id": "h", "type": "hello"}))
        await _next(ws)
        for i in range(400):
            await ws.send(json.dumps({"v": 1, "id": f"p{i}", "type": "ping"}))
        replies = [await _next(ws) for _ in range(400)]
        limited = [r for r in replies if r.get("code") == "rate_limited"]
        assert limited, "400 pings at once must hit the limit"
        assert all(r["re"].startswith("p") for r in limited)  # each names the request it refuses
        await asyncio.sleep(0.5)  # the bucket refills; the connection is still fine
        await ws.send(json.dumps({"v": 1, "id": "after", "type": "ping"}))
        assert (await _next(ws))["type"] == "pong"
