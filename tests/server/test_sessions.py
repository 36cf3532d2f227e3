"""Signaling sessions: resume without loss, grace expiry, replaced connections, removed devices."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from facecall.client.signaling import SignalingConnection, SignalingError
from tests.live import LiveServer, live_server


async def answered_call(server: LiveServer, media: str = "audio"
                        ) -> tuple[SignalingConnection, dict[str, Any], SignalingConnection, str]:
    """alice's device a1 calls bob, whose device b1 answers: (a1, bob's account, b1, call id)."""
    _, (a1,) = await server.user_with_devices("alice", 1)
    bob, (b1,) = await server.user_with_devices("bob", 1)
    call_id = (await a1.request("call.start", to=[bob["user"]["id"]], media=media))["call_id"]
    await b1.next_event("call.ring")
    await b1.request("call.answer", call_id=call_id)
    return a1, bob, b1, call_id


def slow_down(monkeypatch: pytest.MonkeyPatch, owner: object, name: str, seconds: float,
              started: asyncio.Event | None = None) -> None:
    """``owner.name`` (a coroutine method) waits ``seconds`` first, as on a loaded database;
    ``started`` is set when a call of it begins."""
    method = getattr(owner, name)

    async def slow(*args: Any, **kwargs: Any) -> Any:
        if started is not None:
            started.set()
        await asyncio.sleep(seconds)
        return await method(*args, **kwargs)

    monkeypatch.setattr(owner, name, slow)


async def test_resume_replays_what_was_missed(server: LiveServer) -> None:
    a1, _bob, b1, call_id = await answered_call(server, "video")
    await a1.next_event("call.answered")

    await b1.drop()  # the network goes away without a close frame
    for i in range(5):  # events while b1 is away
        await a1.request("call.candidate", call_id=call_id, to_device=b1.device_id,  # type: ignore[attr-defined]
                         candidate={"candidate": f"candidate:{i} 1 udp 1 127.0.0.1 9 typ host",
                                    "sdpMid": "0", "sdpMLineIndex": 0})
    welcome = await b1.resume()
    assert welcome["resumed"] is True
    got = []
    for _ in range(5):
        event = await b1.next_event("call.candidate")
        got.append(event["candidate"]["candidate"].split()[0])
    assert got == [f"candidate:{i}" for i in range(5)]
    # the call is still up: b1 can keep talking
    await b1.request("call.hangup", call_id=call_id)
    assert (await a1.next_event("call.ended"))["reason"] == "hung_up"


async def test_resent_request_is_not_executed_twice(server: LiveServer) -> None:
    alice, (_a1,) = await server.user_with_devices("alice", 1)
    bob, (b1,) = await server.user_with_devices("bob", 1)
    await b1.close()
    import json

    import websockets

    dev_token = None
    # a raw client that sends the same call.start id twice
    reg = await server.register_device(alice["token"], "raw")
    dev_token = reg["token"]
    async with websockets.connect(server.ws_url,
                                  additional_headers={"Authorization": f"Bearer {dev_token}"}) as ws:
        await ws.send(json.dumps({"v": 1, "id": "h", "type": "hello"}))
        assert json.loads(await ws.recv())["type"] == "welcome"
        start = {"v": 1, "id": "same-id", "type": "call.start", "to": [bob["user"]["id"]],
                 "media": "audio"}
        await ws.send(json.dumps(start))
        first = await _reply(ws, "same-id")
        await ws.send(json.dumps(start))
        second = await _reply(ws, "same-id")
        assert first == second
    history = await server.http.get("/v1/calls/history",
                                    headers={"Authorization": f"Bearer {bob['token']}"})
    assert len(history.json()["items"]) == 1


async def _reply(ws: object, re: str) -> dict[str, object]:
    import json

    while True:
        frame = json.loads(await ws.recv())  # type: ignore[attr-defined]
        if frame.get("re") == re:
            return frame  # type: ignore[no-any-return]


async def test_device_that_never_returns_leaves_the_call(server: LiveServer) -> None:
    a1, bob, b1, _call_id = await answered_call(server, "video")
    await b1.drop()
    # the fixture's resume grace is 2 s
    ended = await a1.next_event("call.ended", timeout=15)
    assert ended["reason"] == "connection_lost"
    history = await server.http.get("/v1/calls/history",
                                    headers={"Authorization": f"Bearer {bob['token']}"})
    assert history.json()["items"][0]["my_end_reason"] == "connection_lost"


async def test_newer_connection_replaces_older(server: LiveServer) -> None:
    account = await server.sign_up("carol")
    reg = await server.register_device(account["token"])
    old = await server.device(reg["token"])
    new = await server.device(reg["token"])
    closed = await old.next_event("connection.closed")
    assert closed["code"] == 4409
    assert (await new.request("ping"))["type"] == "pong"


async def test_removed_device_is_disconnected_and_leaves_calls(server: LiveServer) -> None:
    _, (a1,) = await server.user_with_devices("alice", 1)
    bob, (b1, b2) = await server.user_with_devices("bob", 2)
    call_id = (await a1.request("call.start", to=[bob["user"]["id"]], media="video"))["call_id"]
    await b1.next_event("call.ring")
    await b1.request("call.answer", call_id=call_id)
    r = await server.http.delete(f"/v1/devices/{b1.device_id}",  # type: ignore[attr-defined]
                                 headers={"Authorization": f"Bearer {bob['token']}"})
    assert r.status_code == 204
    assert (await b1.next_event("connection.closed"))["code"] == 4009
    assert (await a1.next_event("call.ended"))["reason"] == "device_removed"
    # the removed device's token cannot connect again
    with pytest.raises(Exception):  # noqa: B017 - closed during the handshake/hello
        again = SignalingConnection(server.ws_url, b1.token)
        await again.connect()
    assert (await b2.request("ping"))["type"] == "pong"


async def test_signing_out_a_device_token_removes_the_device(server: LiveServer) -> None:
    """A device token is the device's only credential: once it is signed out the device can
    never connect again, so it is removed -- it stops ringing and its connection closes."""
    _, (a1,) = await server.user_with_devices("alice", 1)
    bob, (b1, b2) = await server.user_with_devices("bob", 2)
    call_id = (await a1.request("call.start", to=[bob["user"]["id"]], media="audio"))["call_id"]
    await b1.next_event("call.ring")
    await b1.request("call.answer", call_id=call_id)
    r = await server.http.delete("/v1/sessions/current",
                                 headers={"Authorization": f"Bearer {b1.token}"})
    assert r.status_code == 204
    assert (await b1.next_event("connection.closed"))["code"] == 4009
    assert (await a1.next_event("call.ended"))["reason"] == "device_removed"
    listed = await server.http.get("/v1/devices", headers={"Authorization": f"Bearer {bob['token']}"})
    assert [d["id"] for d in listed.json()] == [b2.device_id]  # type: ignore[attr-defined]
    # the next call rings only the device that is left
    await a1.request("call.start", to=[bob["user"]["id"]], media="audio")
    assert (await b2.next_event("call.ring"))["type"] == "call.ring"
    # the account token is untouched
    assert (await server.http.get("/v1/me", headers={"Authorization": f"Bearer {bob['token']}"})
            ).status_code == 200


async def test_requests_before_hello_and_after_disconnect(server: LiveServer) -> None:
    _, (a1,) = await server.user_with_devices("alice", 1)
    await a1.close()
    with pytest.raises(Exception):  # noqa: B017
        await a1.request("ping")
    with pytest.raises(SignalingError) as unknown:
        await (await server.device((await server.register_device(
            (await server.sign_up("dan"))["token"]))["token"])).request(
                "call.hangup", call_id="nope")
    assert unknown.value.code == "unknown_call"


async def test_resume_after_the_grace_expired_is_not_a_resume(server: LiveServer) -> None:
    """The device left its calls while away: its welcome says so (resumed false) and it is
    told to rebuild its view, not handed a replay that silently skips the end of its call."""
    a1, _bob, b1, call_id = await answered_call(server, "audio")
    await b1.drop()
    assert (await a1.next_event("call.ended", timeout=10))["reason"] == "connection_lost"
    welcome = await b1.resume()
    assert welcome["resumed"] is False
    with pytest.raises(SignalingError) as gone:
        await b1.request("call.hangup", call_id=call_id)
    assert gone.value.code == "call_ended"
    # and the next drop within the grace is a resume again
    await b1.drop()
    assert (await b1.resume())["resumed"] is True


async def test_resume_from_a_seq_never_assigned_is_not_a_resume(server: LiveServer) -> None:
    _, (b1,) = await server.user_with_devices("bob", 1)
    await b1.drop()
    b1.last_seq = 1000  # e.g. numbers from before the node restarted
    assert (await b1.resume())["resumed"] is False


async def test_ringing_device_that_drops_rings_on_into_a_missed_call(server: LiveServer) -> None:
    """A ringing device whose connection drops past the grace rings on, like one that was
    offline from the start: the callee is missed at the ring timeout, not "connection lost"."""
    _, (a1,) = await server.user_with_devices("alice", 1)
    bob, (b1,) = await server.user_with_devices("bob", 1)
    await b1.drop()  # gone before the call; its grace (2 s) ends while the call rings (3 s)
    call_id = (await a1.request("call.start", to=[bob["user"]["id"]], media="audio"))["call_id"]
    ended = await a1.next_event("call.ended", timeout=10)
    assert ended["reason"] == "ring_timeout"
    history = await server.http.get("/v1/calls/history",
                                    headers={"Authorization": f"Bearer {bob['token']}"})
    assert [(i["call_id"], i["missed"]) for i in history.json()["items"]] == [(call_id, True)]


async def test_device_removed_before_hello_cannot_say_hello(server: LiveServer) -> None:
    import json

    import websockets

    account = await server.sign_up("carol")
    reg = await server.register_device(account["token"], "stolen")
    async with websockets.connect(server.ws_url, additional_headers={
            "Authorization": f"Bearer {reg['token']}"}) as ws:  # authenticated, no hello yet
        r = await server.http.delete(f"/v1/devices/{reg['device']['id']}",
                                     headers={"Authorization": f"Bearer {account['token']}"})
        assert r.status_code == 204
        await ws.send(json.dumps({"v": 1, "id": "h", "type": "hello"}))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                assert json.loads(await ws.recv())["type"] != "welcome"
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4009


async def test_a_device_that_connects_while_rung_gets_the_ring(server: LiveServer) -> None:
    """A fresh connection of a device that is ringing gets its ring, even when the first one
    is no longer kept (acknowledged and trimmed before the app restarted)."""
    _, (a1,) = await server.user_with_devices("alice", 1)
    bob, (b1,) = await server.user_with_devices("bob", 1)
    call_id = (await a1.request("call.start", to=[bob["user"]["id"]], media="audio"))["call_id"]
    first = await b1.next_event("call.ring")
    await b1._ws.send(json.dumps(  # type: ignore[union-attr]
        {"v": 1, "id": "a", "type": "ack", "seq": first["seq"]}))
    await b1.request("ping")
    await b1.close()
    fresh = SignalingConnection(server.ws_url, b1.token)  # a new app: no seq to resume from
    await fresh.connect()
    ring = await fresh.next_event("call.ring")
    assert ring["call_id"] == call_id and ring["from_name"] == "alice"
    with pytest.raises(TimeoutError):  # once
        await fresh.next_event("call.ring", timeout=0.3)
    await fresh.request("call.answer", call_id=call_id)
    assert (await a1.next_event("call.answered"))["call_id"] == call_id


async def test_a_fresh_start_of_a_joined_device_leaves_its_call(server: LiveServer) -> None:
    """A new connection that does not resume (the app restarted, the page reloaded) holds no
    call: the device leaves the calls it was in, so nobody waits on a ghost."""
    a1, bob, b1, call_id = await answered_call(server, "audio")
    reloaded = SignalingConnection(server.ws_url, b1.token)
    assert (await reloaded.connect())["resumed"] is False
    ended = await a1.next_event("call.ended")
    assert ended["call_id"] == call_id and ended["reason"] == "connection_lost"
    # bob is not busy for the next call
    await a1.request("call.start", to=[bob["user"]["id"]], media="audio")
    assert (await reloaded.next_event("call.ring"))["call_waiting"] is False


async def test_a_fresh_start_keeps_the_calls_the_device_still_holds(server: LiveServer) -> None:
    """A connection that cannot resume (here: a new connection without a seq) but says in its
    hello which calls it still holds stays in those: ``welcome.calls`` lists each as it stands
    now, nobody is told anything, and the call goes on."""
    a1, _bob, b1, call_id = await answered_call(server, "video")
    await b1.close()
    again = SignalingConnection(server.ws_url, b1.token)
    welcome = await again.connect(calls=[call_id])
    assert welcome["resumed"] is False
    assert welcome["calls"] == [{
        "call_id": call_id, "media": "video", "state": "joined",
        "participants": [{"user_id": a1.welcome["user_id"], "device_id": a1.welcome["device_id"]}],
    }]
    await again.request("call.sdp", call_id=call_id, to_device=a1.welcome["device_id"],
                        description={"type": "offer", "sdp": "v=0\r\n"}, ice_restart=True)
    seen = [await a1.next_event() for _ in range(3)]
    assert [e["type"] for e in seen] == ["call.ringing", "call.answered", "call.sdp"]
    assert seen[-1]["ice_restart"] is True
    await again.request("call.hangup", call_id=call_id)
    assert (await a1.next_event("call.ended"))["reason"] == "hung_up"


async def test_a_reloaded_client_asks_its_peer_to_set_the_media_up_anew(server: LiveServer) -> None:
    """A reloaded page keeps its call (``hello.calls``) but lost its peer connection: its
    ``call.rejoin`` reaches the other joined device, which offers again; the call, its
    participants and its history are untouched (docs/protocol.md, "Rejoining the media")."""
    a1, bob, b1, call_id = await answered_call(server, "video")
    await b1.close()
    reloaded = SignalingConnection(server.ws_url, b1.token)
    welcome = await reloaded.connect(calls=[call_id])
    (held,) = welcome["calls"]
    (other,) = held["participants"]
    ok = await reloaded.request("call.rejoin", call_id=call_id, to_device=other["device_id"])
    assert ok["type"] == "ok" and set(ok) == {"v", "type", "re"}
    rejoin = await a1.next_event("call.rejoin")
    assert (rejoin["call_id"], rejoin["from_user"], rejoin["from_device"]) == (
        call_id, bob["user"]["id"], b1.welcome["device_id"])
    await a1.request("call.sdp", call_id=call_id, to_device=b1.welcome["device_id"],
                     description={"type": "offer", "sdp": "v=0\r\n"})
    offer = await reloaded.next_event("call.sdp")
    assert (offer["description"]["type"], offer["ice_restart"]) == ("offer", False)
    # only to another joined device of that call: not to itself, not to a stranger
    for to_device in (b1.welcome["device_id"], "0" * 32):
        with pytest.raises(SignalingError) as refused:
            await reloaded.request("call.rejoin", call_id=call_id, to_device=to_device)
        assert refused.value.code == "not_allowed"
    await a1.request("call.hangup", call_id=call_id)
    assert (await reloaded.next_event("call.ended"))["reason"] == "hung_up"
    with pytest.raises(SignalingError) as ended:
        await reloaded.request("call.rejoin", call_id=call_id, to_device=a1.welcome["device_id"])
    assert ended.value.code == "call_ended"


async def test_a_page_that_said_bye_and_is_gone_hangs_up_after_the_unload_grace(
        tmp_path: Path) -> None:
    """A page that unloads in a call says ``bye``: if it is not back within the (short) unload
    grace, it hangs up -- the call ends ``hung_up`` well before the resume grace would."""
    async with live_server(f"sqlite+aiosqlite:///{tmp_path / 'f.db'}", ring_timeout=30.0,
                           resume_grace=60.0, unload_grace=0.5) as server:
        a1, bob, b1, call_id = await answered_call(server, "video")
        await b1.request("bye")
        await b1.close()
        ended = await a1.next_event("call.ended", timeout=10)
        assert (ended["call_id"], ended["reason"]) == (call_id, "hung_up")
        history = await server.http.get("/v1/calls/history",
                                        headers={"Authorization": f"Bearer {bob['token']}"})
        assert history.json()["items"][0]["my_end_reason"] == "hung_up"


async def test_a_caller_page_gone_while_ringing_cancels_after_the_unload_grace(
        tmp_path: Path) -> None:
    async with live_server(f"sqlite+aiosqlite:///{tmp_path / 'f.db'}", ring_timeout=30.0,
                           resume_grace=60.0, unload_grace=0.5) as server:
        _, (a1,) = await server.user_with_devices("alice", 1)
        bob, (b1,) = await server.user_with_devices("bob", 1)
        call_id = (await a1.request("call.start", to=[bob["user"]["id"]], media="audio"))["call_id"]
        await b1.next_event("call.ring")
        await a1.request("bye")
        await a1.close()
        stop = await b1.next_event("call.stop_ringing", timeout=10)
        assert (stop["call_id"], stop["reason"]) == (call_id, "cancelled")


async def test_a_page_that_said_bye_and_reloads_keeps_its_call(tmp_path: Path) -> None:
    """The same page back within the unload grace, naming its call (a reload), is still in it
    after the grace has passed: nobody was told anything."""
    async with live_server(f"sqlite+aiosqlite:///{tmp_path / 'f.db'}", ring_timeout=30.0,
                           resume_grace=60.0, unload_grace=1.0) as server:
        a1, _bob, b1, call_id = await answered_call(server, "video")
        await a1.next_event("call.answered")
        await b1.request("bye")
        await b1.close()
        reloaded = SignalingConnection(server.ws_url, b1.token)
        welcome = await reloaded.connect(calls=[call_id])
        assert [c["state"] for c in welcome["calls"]] == ["joined"]
        with pytest.raises(TimeoutError):
            await a1.next_event(timeout=2.0)  # twice the unload grace: nothing happens
        await reloaded.request("call.hangup", call_id=call_id)
        assert (await a1.next_event("call.ended"))["reason"] == "hung_up"


async def test_a_ringing_device_cannot_ask_for_the_media(server: LiveServer) -> None:
    _, (a1,) = await server.user_with_devices("alice", 1)
    bob, (b1,) = await server.user_with_devices("bob", 1)
    call_id = (await a1.request("call.start", to=[bob["user"]["id"]], media="audio"))["call_id"]
    await b1.next_event("call.ring")
    with pytest.raises(SignalingError) as refused:
        await b1.request("call.rejoin", call_id=call_id, to_device=a1.welcome["device_id"])
    assert refused.value.code == "not_in_call"
    with pytest.raises(TimeoutError):
        await a1.next_event("call.rejoin", timeout=0.3)


async def test_a_fresh_start_holding_a_ringing_call_is_not_rung_again(server: LiveServer) -> None:
    _, (a1,) = await server.user_with_devices("alice", 1)
    bob, (b1,) = await server.user_with_devices("bob", 1)
    call_id = (await a1.request("call.start", to=[bob["user"]["id"]], media="audio"))["call_id"]
    await b1.next_event("call.ring")
    await b1.close()
    again = SignalingConnection(server.ws_url, b1.token)
    welcome = await again.connect(calls=[call_id])
    assert [(c["call_id"], c["state"], c["participants"]) for c in welcome["calls"]] == [
        (call_id, "ringing", [{"user_id": a1.welcome["user_id"],
                               "device_id": a1.welcome["device_id"]}])]
    with pytest.raises(TimeoutError):
        await again.next_event("call.ring", timeout=0.3)
    await again.request("call.answer", call_id=call_id)
    assert (await a1.next_event("call.answered"))["call_id"] == call_id


async def test_held_calls_the_device_is_not_in_are_left_out_and_change_nothing(
        server: LiveServer) -> None:
    """``hello.calls`` naming another user's call, a call that ended, and a call that does not
    exist: none is listed (so nothing is revealed about them), the device leaves the call it
    did not name, and the others' call goes on."""
    _, (a1,) = await server.user_with_devices("alice", 1)
    bob, (b1,) = await server.user_with_devices("bob", 1)
    carol, (c1,) = await server.user_with_devices("carol", 1)
    _, (d1,) = await server.user_with_devices("dave", 1)
    ended = (await a1.request("call.start", to=[bob["user"]["id"]], media="audio"))["call_id"]
    await a1.request("call.cancel", call_id=ended)
    theirs = (await d1.request("call.start", to=[carol["user"]["id"]], media="audio"))["call_id"]
    await c1.next_event("call.ring")
    await c1.request("call.answer", call_id=theirs)
    mine = (await a1.request("call.start", to=[bob["user"]["id"]], media="audio"))["call_id"]
    await b1.close()
    intruder = SignalingConnection(server.ws_url, a1.token)
    welcome = await intruder.connect(calls=[theirs, ended, "no-such-call"])
    assert welcome["resumed"] is False and welcome["calls"] == []
    # alice's device did not name her ringing call: it left it, which ended it
    history = await server.http.get("/v1/calls/history",
                                    headers={"Authorization": f"Bearer {bob['token']}"})
    by_id = {i["call_id"]: i for i in history.json()["items"]}
    assert by_id[mine]["end_reason"] == "connection_lost"
    await d1.request("call.hangup", call_id=theirs)  # carol and dave's call was untouched
    assert (await c1.next_event("call.ended"))["reason"] == "hung_up"


@pytest.mark.parametrize("calls", [
    ["x"] * 2,  # repeated
    [f"c{i}" for i in range(17)],  # more than 16
    "c1",  # not a list
    [1],  # not ids
    ["has space"],
    ["x" * 65],
])
async def test_bad_held_calls_in_hello_are_refused(server: LiveServer, calls: object) -> None:
    import websockets

    _, (a1,) = await server.user_with_devices("alice", 1)
    async with websockets.connect(server.ws_url, additional_headers={
            "Authorization": f"Bearer {a1.token}"}) as ws:
        await ws.send(json.dumps({"v": 1, "id": "h", "type": "hello", "calls": calls}))
        reply = json.loads(await ws.recv())
        assert (reply["type"], reply["code"], reply["re"]) == ("error", "invalid_field", "h")
        await ws.send(json.dumps({"v": 1, "id": "h2", "type": "hello"}))  # the connection stays
        assert json.loads(await ws.recv())["type"] == "welcome"


async def test_two_hellos_of_one_device_take_turns(server: LiveServer,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Two connections of one device say hello close together: the older names no call, the
    newer names call X, while the older one's fresh start (which leaves X) is still reading
    the store. The hellos take turns, so the newer welcome is not told "still in X" just
    before the older fresh start takes the device out of X."""
    import websockets

    a1, _, b1, x = await answered_call(server)
    await b1.drop()
    slow_down(monkeypatch, server.app.app.state.signaling.store,  # type: ignore[attr-defined]
              "live_calls_of_user", 0.2)
    headers = {"Authorization": f"Bearer {b1.token}"}
    async with websockets.connect(server.ws_url, additional_headers=headers) as older, \
            websockets.connect(server.ws_url, additional_headers=headers) as newer:
        await older.send(json.dumps({"v": 1, "id": "h1", "type": "hello"}))
        assert json.loads(await older.recv())["type"] == "welcome"  # its fresh start runs
        await newer.send(json.dumps({"v": 1, "id": "h2", "type": "hello", "calls": [x]}))
        welcome = json.loads(await newer.recv())
        assert welcome["type"] == "welcome" and welcome["calls"] == []  # X was left first
        assert (await a1.next_event("call.ended"))["reason"] == "connection_lost"


async def test_a_call_starting_during_a_fresh_start_rings_once(
        server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A call that rings the device while its hello is still finishing (its fresh start reads
    the device's calls from a slow store) is rung once, not again by the fresh start."""
    import websockets

    _, (a1,) = await server.user_with_devices("alice", 1)
    bob, (b1,) = await server.user_with_devices("bob", 1)
    await b1.close()
    slow_down(monkeypatch, server.app.app.state.signaling.store,  # type: ignore[attr-defined]
              "live_calls_of_user", 0.1)
    async with websockets.connect(server.ws_url, additional_headers={
            "Authorization": f"Bearer {b1.token}"}) as ws:
        await ws.send(json.dumps({"v": 1, "id": "h", "type": "hello"}))
        assert json.loads(await ws.recv())["type"] == "welcome"
        call_id = (await a1.request("call.start", to=[bob["user"]["id"]], media="audio"))["call_id"]
        frames = []
        with pytest.raises(TimeoutError):
            while True:
                frames.append(json.loads(await asyncio.wait_for(ws.recv(), 0.6)))
        assert [f["call_id"] for f in frames if f["type"] == "call.ring"] == [call_id]


async def test_what_a_kept_call_missed_is_delivered_again(server: LiveServer) -> None:
    """A connection that cannot resume but keeps its call gets again, as new events, what its
    mailbox held about that call (here: candidates sent while it was away); about the calls
    it does not keep, nothing."""
    a1, _bob, b1, call_id = await answered_call(server, "audio")
    await b1.drop()
    for i in range(3):
        await a1.request("call.candidate", call_id=call_id, to_device=b1.device_id,  # type: ignore[attr-defined]
                         candidate={"candidate": f"candidate:{i} 1 udp 1 127.0.0.1 9 typ host",
                                    "sdpMid": "0", "sdpMLineIndex": 0})
    again = SignalingConnection(server.ws_url, b1.token)  # no seq to resume from
    welcome = await again.connect(calls=[call_id])
    assert welcome["resumed"] is False and [c["call_id"] for c in welcome["calls"]] == [call_id]
    got = [await again.next_event() for _ in range(3)]
    assert [e["candidate"]["candidate"].split()[0] for e in got] == [f"candidate:{i}" for i in range(3)]
    assert all(e["seq"] > welcome["last_seq"] for e in got)  # new events, counted on from there
    with pytest.raises(TimeoutError):  # not the ring, nor the answer of the call it holds
        await again.next_event(timeout=0.3)


async def test_what_a_kept_call_missed_comes_before_what_follows(
        server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """An offer kept in the mailbox of a device that cannot resume comes before a candidate
    sent while its hello is still being answered (a candidate before its offer cannot be
    used)."""
    a1, _, b1, call_id = await answered_call(server)
    await b1.drop()
    await a1.request("call.sdp", call_id=call_id, to_device=b1.device_id,  # type: ignore[attr-defined]
                     description={"type": "offer", "sdp": "v=0\r\n"})
    looking = asyncio.Event()
    slow_down(monkeypatch, server.app.app.state.signaling,  # type: ignore[attr-defined]
              "held_calls", 0.3, started=looking)
    again = SignalingConnection(server.ws_url, b1.token)
    hello = asyncio.create_task(again.connect(calls=[call_id]))
    await looking.wait()
    await a1.request("call.candidate", call_id=call_id, to_device=b1.device_id,  # type: ignore[attr-defined]
                     candidate={"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host",
                                "sdpMid": "0", "sdpMLineIndex": 0})
    welcome = await hello
    got = [await again.next_event() for _ in range(2)]
    assert [e["type"] for e in got] == ["call.sdp", "call.candidate"]
    assert welcome["last_seq"] < got[0]["seq"] < got[1]["seq"]


async def test_a_fresh_start_that_fails_closes_1011_and_the_next_hello_starts_afresh(
        server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store fails while a fresh start sorts out the device's calls: the connection is
    closed with 1011, and the device's next hello starts afresh again (here: its ring comes)."""
    import websockets

    store = server.app.app.state.signaling.store  # type: ignore[attr-defined]
    read_calls = store.live_calls_of_user
    failures = [RuntimeError("the database went away")]

    async def flaky_read(user_id: str) -> list[str]:
        if failures:
            raise failures.pop()
        return await read_calls(user_id)

    _, (a1,) = await server.user_with_devices("alice", 1)
    bob, (b1,) = await server.user_with_devices("bob", 1)
    await b1.close()
    call_id = (await a1.request("call.start", to=[bob["user"]["id"]], media="audio"))["call_id"]
    monkeypatch.setattr(store, "live_calls_of_user", flaky_read)
    headers = {"Authorization": f"Bearer {b1.token}"}
    async with websockets.connect(server.ws_url, additional_headers=headers) as ws:
        await ws.send(json.dumps({"v": 1, "id": "h", "type": "hello"}))
        welcome = json.loads(await ws.recv())
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
    again = SignalingConnection(server.ws_url, b1.token)
    again.last_seq = welcome["last_seq"]  # it would resume: the failed fresh start ended that
    assert (await again.connect())["resumed"] is False
    assert (await again.next_event("call.ring"))["call_id"] == call_id


async def test_answering_again_changes_nothing(server: LiveServer) -> None:
    """The device that answered answers again (its reply was lost): the same ok, no event to
    anyone, and nothing written."""
    store = server.app.app.state.signaling.store  # type: ignore[attr-defined]
    a1, _, b1, call_id = await answered_call(server)
    version = (await store.load_call(call_id)).version
    for _ in range(3):
        again = await b1.request("call.answer", call_id=call_id)
        assert again["participants"] == [{"user_id": a1.welcome["user_id"],  # type: ignore[index]
                                          "device_id": a1.welcome["device_id"]}]  # type: ignore[index]
    assert (await store.load_call(call_id)).version == version
    assert [e["type"] for e in [await a1.next_event() for _ in range(2)]] == [
        "call.ringing", "call.answered"]
    with pytest.raises(TimeoutError):
        await a1.next_event(timeout=0.3)
