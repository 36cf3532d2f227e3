"""Call flows over a real server and real WebSocket clients (multi-device ringing and friends)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from facecall.client.signaling import SignalingConnection, SignalingError
from tests.live import LiveServer, live_server


async def ring_ids(conns: list[SignalingConnection], call_id: str,
                   from_name: str | None = None) -> None:
    for conn in conns:
        ring = await conn.next_event("call.ring")
        assert ring["call_id"] == call_id
        if from_name is not None:
            assert ring["from_name"] == from_name


async def test_every_device_rings_first_answer_wins(server: LiveServer) -> None:
    _alice, (a1,) = await server.user_with_devices("alice", 1)
    bob, (b1, b2, b3) = await server.user_with_devices("bob", 3)
    call_id = (await a1.request("call.start", to=[bob["user"]["id"]], media="video"))["call_id"]
    await ring_ids([b1, b2, b3], call_id, from_name="alice")
    ringing = await a1.next_event("call.ringing")
    assert ringing["devices"] == 3 and ringing["online"] == 3

    await b2.request("call.answer", call_id=call_id)
    answered = await a1.next_event("call.answered")
    assert answered["device_id"] == b2.device_id  # type: ignore[attr-defined]
    for other in (b1, b3):
        stop = await other.next_event("call.stop_ringing")
        assert stop["reason"] == "answered_elsewhere"
    with pytest.raises(SignalingError) as late:
        await b3.request("call.answer", call_id=call_id)
    assert late.value.code in ("invalid_state", "not_in_call")

    # SDP and candidates flow between the two joined devices only.
    await a1.request("call.sdp", call_id=call_id, to_device=b2.device_id,  # type: ignore[attr-defined]
                     description={"type": "offer", "sdp": "v=0\r\n"})
    offer = await b2.next_event("call.sdp")
    assert offer["from_device"] == a1.device_id  # type: ignore[attr-defined]
    assert offer["description"]["sdp"] == "v=0\r\n"
    await b2.request("call.candidate", call_id=call_id, to_device=a1.device_id,  # type: ignore[attr-defined]
                     candidate={"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host",
                                "sdpMid": "0", "sdpMLineIndex": 0})
    cand = await a1.next_event("call.candidate")
    assert cand["candidate"]["sdpMid"] == "0"
    await b2.request("call.media", call_id=call_id, to_device=a1.device_id,  # type: ignore[attr-defined]
                     audio=True, video=False)  # bob's camera went off
    media = await a1.next_event("call.media")
    assert (media["from_device"], media["audio"], media["video"], media["screen"]) == (
        b2.device_id, True, False, False)  # type: ignore[attr-defined]
    await b2.request("call.media", call_id=call_id, to_device=a1.device_id,  # type: ignore[attr-defined]
                     audio=True, video=True, screen=True)  # bob shares his screen
    assert (await a1.next_event("call.media"))["screen"] is True
    with pytest.raises(SignalingError) as denied:  # b1 lost the race: no relaying for it
        await b1.request("call.sdp", call_id=call_id, to_device=a1.device_id,  # type: ignore[attr-defined]
                         description={"type": "answer", "sdp": "v=0\r\n"})
    assert denied.value.code in ("invalid_state", "not_in_call")
    with pytest.raises(SignalingError) as denied:
        await b1.request("call.media", call_id=call_id, to_device=a1.device_id,  # type: ignore[attr-defined]
                         audio=False, video=False)
    assert denied.value.code in ("invalid_state", "not_in_call")

    await a1.request("call.hangup", call_id=call_id)
    ended = await b2.next_event("call.ended")
    assert ended["reason"] == "hung_up"

    history = await server.http.get("/v1/calls/history",
                                    headers={"Authorization": f"Bearer {bob['token']}"})
    item = history.json()["items"][0]
    assert item["call_id"] == call_id and item["missed"] is False
    assert item["end_reason"] == "hung_up" and item["direction"] == "incoming"


@pytest.mark.parametrize("reason", ["no_media", "connection_lost", "identity_check_failed"])
async def test_a_hang_up_says_why_the_client_gave_up(server: LiveServer, reason: str) -> None:
    """A client that gives up on the media, or refuses the other device's SDP, hangs up with
    why: the other device is told, and history keeps it. A call whose media never connected
    has no duration: it never lasted. (A refused SDP may come at an ICE restart, after minutes
    of talk: the server cannot tell, and keeps the duration.)"""
    alice, (a1,) = await server.user_with_devices("alice", 1)
    bob, (b1,) = await server.user_with_devices("bob", 1)
    call_id = (await a1.request("call.start", to=[bob["user"]["id"]], media="video"))["call_id"]
    await b1.next_event("call.ring")
    await b1.request("call.answer", call_id=call_id)
    await asyncio.sleep(0.3)
    await a1.request("call.hangup", call_id=call_id, reason=reason)
    assert (await b1.next_event("call.ended"))["reason"] == reason
    for account in (alice, bob):
        history = await server.http.get("/v1/calls/history",
                                        headers={"Authorization": f"Bearer {account['token']}"})
        item = history.json()["items"][0]
        assert (item["call_id"], item["end_reason"], item["my_end_reason"]) == (call_id, reason, reason)
        assert item["missed"] is False
        if reason == "no_media":
            assert item["duration"] is None and item["answered_at"] is not None
        else:
            assert item["duration"] >= 0.3
    with pytest.raises(SignalingError) as refused:
        await b1.request("call.hangup", call_id=call_id, reason="declined")
    assert refused.value.code == "invalid_field"


async def test_decline_stops_all_devices_and_ends_1to1(server: LiveServer) -> None:
    _alice, (a1,) = await server.user_with_devices("alice", 1)
    bob, (b1, b2) = await server.user_with_devices("bob", 2)
    call_id = (await a1.request("call.start", to=[bob["user"]["id"]], media="audio"))["call_id"]
    await ring_ids([b1, b2], call_id)
    await b1.request("call.decline", call_id=call_id)
    assert (await b2.next_event("call.stop_ringing"))["reason"] == "declined_elsewhere"
    assert (await a1.next_event("call.ended"))["reason"] == "declined"


async def test_busy_decline_and_call_waiting(server: LiveServer) -> None:
    _alice, (a1,) = await server.user_with_devices("alice", 1)
    bob, (b1,) = await server.user_with_devices("bob", 1)
    _carol, (c1,) = await server.user_with_devices("carol", 1)
    first = (await a1.request("call.start", to=[bob["user"]["id"]], media="audio"))["call_id"]
    await b1.next_event("call.ring")
    await b1.request("call.answer", call_id=first)
    second = (await c1.request("call.start", to=[bob["user"]["id"]], media="audio"))["call_id"]
    waiting = await b1.next_event("call.ring")
    assert waiting["call_id"] == second and waiting["call_waiting"] is True
    await b1.request("call.decline", call_id=second, busy=True)
    assert (await c1.next_event("call.ended"))["reason"] == "busy"
    # the first call is untouched
    await a1.request("call.hangup", call_id=first)
    assert (await b1.next_event("call.ended"))["reason"] == "hung_up"


async def test_cancel_before_answer(server: LiveServer) -> None:
    _alice, (a1,) = await server.user_with_devices("alice", 1)
    bob, (b1, b2) = await server.user_with_devices("bob", 2)
    call_id = (await a1.request("call.start", to=[bob["user"]["id"]], media="video"))["call_id"]
    await ring_ids([b1, b2], call_id)
    await a1.request("call.cancel", call_id=call_id)
    for conn in (b1, b2):
        assert (await conn.next_event("call.stop_ringing"))["reason"] == "cancelled"
    history = await server.http.get("/v1/calls/history",
                                    headers={"Authorization": f"Bearer {bob['token']}"})
    assert history.json()["items"][0]["missed"] is True


async def test_ring_timeout_is_a_missed_call_on_every_device(server: LiveServer) -> None:
    _alice, (a1,) = await server.user_with_devices("alice", 1)
    bob, (b1, b2) = await server.user_with_devices("bob", 2)
    call_id = (await a1.request("call.start", to=[bob["user"]["id"]], media="video"))["call_id"]
    await ring_ids([b1, b2], call_id)
    # the fixture's ring timeout is 3 s
    for conn in (b1, b2):
        assert (await conn.next_event("call.stop_ringing", timeout=15))["reason"] == "ring_timeout"
    assert (await a1.next_event("call.ended", timeout=15))["reason"] == "ring_timeout"
    history = await server.http.get("/v1/calls/history",
                                    headers={"Authorization": f"Bearer {bob['token']}"})
    item = history.json()["items"][0]
    assert item["missed"] is True and item["my_end_reason"] == "ring_timeout"
    with pytest.raises(SignalingError) as ended:
        await b1.request("call.answer", call_id=call_id)
    assert ended.value.code == "call_ended"


async def test_glare_is_resolved_into_one_call(server: LiveServer) -> None:
    alice, (a1,) = await server.user_with_devices("alice", 1)
    bob, (b1,) = await server.user_with_devices("bob", 1)
    a_to_b, b_to_a = await asyncio.gather(
        a1.request("call.start", to=[bob["user"]["id"]], media="audio"),
        b1.request("call.start", to=[alice["user"]["id"]], media="audio"),
    )
    # Both end up in the same call, answered by the device that placed the other one. (When
    # the two calls cross, the one placed by the lower user id survives; when one was already
    # ringing, that one does.)
    assert a_to_b["call_id"] == b_to_a["call_id"]
    call_id = a_to_b["call_id"]
    events = {a1: [], b1: []}  # type: ignore[var-annotated]
    answered = None
    for _ in range(20):
        for conn in (a1, b1):
            while not conn.events.empty():
                event = conn.events.get_nowait()
                events[conn].append(event)
                if event["type"] == "call.answered" and event["call_id"] == call_id:
                    answered = (conn, event)
        if answered:
            break
        await asyncio.sleep(0.1)
    assert answered is not None
    conn, event = answered
    other = b1 if conn is a1 else a1
    assert event["device_id"] == other.device_id  # type: ignore[attr-defined]


async def test_invite_a_third_user_into_an_ongoing_call(server: LiveServer) -> None:
    _alice, (a1,) = await server.user_with_devices("alice", 1)
    bob, (b1,) = await server.user_with_devices("bob", 1)
    carol, (c1, c2) = await server.user_with_devices("carol", 2)
    call_id = (await a1.request("call.start", to=[bob["user"]["id"]], media="video"))["call_id"]
    await b1.next_event("call.ring")
    await b1.request("call.answer", call_id=call_id)
    await b1.request("call.invite", call_id=call_id, to=[carol["user"]["id"]])
    await ring_ids([c1, c2], call_id)
    await c2.request("call.answer", call_id=call_id)
    assert (await c1.next_event("call.stop_ringing"))["reason"] == "answered_elsewhere"
    joined = await a1.next_event("call.answered")
    if joined["user_id"] == bob["user"]["id"]:  # bob's own answer came first
        joined = await a1.next_event("call.answered")
    assert joined["user_id"] == carol["user"]["id"]
    # one leaves, the call goes on for the other two
    await a1.request("call.hangup", call_id=call_id)
    await b1.request("call.sdp", call_id=call_id, to_device=c2.device_id,  # type: ignore[attr-defined]
                     description={"type": "offer", "sdp": "v=0\r\n"})
    assert (await c2.next_event("call.sdp"))["from_user"] == bob["user"]["id"]


async def test_calling_unknown_users_and_yourself(server: LiveServer) -> None:
    alice, (a1,) = await server.user_with_devices("alice", 1)
    with pytest.raises(SignalingError) as unknown:
        await a1.request("call.start", to=["0" * 32], media="audio")
    assert unknown.value.code == "unknown_user"
    with pytest.raises(SignalingError) as myself:
        await a1.request("call.start", to=[alice["user"]["id"]], media="audio")
    assert myself.value.code == "not_allowed"


async def test_callee_without_devices_is_unavailable(server: LiveServer) -> None:
    _alice, (a1,) = await server.user_with_devices("alice", 1)
    bob = await server.sign_up("bob")
    await a1.request("call.start", to=[bob["user"]["id"]], media="audio")
    assert (await a1.next_event("call.ended"))["reason"] == "unavailable"


async def test_caller_learns_that_the_callee_is_offline(server: LiveServer) -> None:
    _, (a1,) = await server.user_with_devices("alice", 1)
    bob, (b1,) = await server.user_with_devices("bob", 1)
    await b1.close()
    call_id = (await a1.request("call.start", to=[bob["user"]["id"]], media="audio"))["call_id"]
    ringing = await a1.next_event("call.ringing")
    assert ringing["call_id"] == call_id and ringing["devices"] == 1 and ringing["online"] == 0
    # bob's device connects while it still rings: the ring waits in its mailbox
    again = await server.device(b1.token)
    assert (await again.next_event("call.ring"))["call_id"] == call_id
    await again.request("call.answer", call_id=call_id)
    assert (await a1.next_event("call.answered"))["user_id"] == bob["user"]["id"]


async def test_answered_and_ended_calls_are_not_reloaded_when_their_ring_deadline_passes(
    tmp_path: Path,
) -> None:
    """The timer loop skips the ring deadline of a call that was answered (or ended) since:
    no store read, no timer event, nothing sent."""
    async with live_server(f"sqlite+aiosqlite:///{tmp_path / 'f.db'}", ring_timeout=0.5) as live:
        _, (a1,) = await live.user_with_devices("alice", 1)
        bob, (b1,) = await live.user_with_devices("bob", 1)
        service = live.app.app.state.signaling
        loads: list[str] = []
        load_call = service.store.load_call

        async def counting_load(call_id: str, **kwargs: Any) -> Any:
            loads.append(call_id)
            return await load_call(call_id, **kwargs)

        service.store.load_call = counting_load
        answered = (await a1.request("call.start", to=[bob["user"]["id"]], media="audio"))["call_id"]
        await b1.next_event("call.ring")
        await b1.request("call.answer", call_id=answered)
        _carol, (c1,) = await live.user_with_devices("carol", 1)
        dave, (d1,) = await live.user_with_devices("dave", 1)
        ended = (await c1.request("call.start", to=[dave["user"]["id"]], media="audio"))["call_id"]
        await d1.next_event("call.ring")
        await c1.request("call.cancel", call_id=ended)
        await asyncio.sleep(1.5)  # both ring deadlines (0.5 s) and a store poll (1 s) pass
        assert loads == []
        await a1.request("call.hangup", call_id=answered)
        assert (await b1.next_event("call.ended"))["reason"] == "hung_up"


async def test_device_legs_are_stored_with_their_end_reason_as_they_end(server: LiveServer) -> None:
    """`call_device_legs` is the devices' history: a leg's row is written when it ends, with
    its reason; ringing and joined legs are kept in the stored snapshot only."""
    _, (a1,) = await server.user_with_devices("alice", 1)
    bob, (b1, b2) = await server.user_with_devices("bob", 2)
    store = server.app.app.state.store
    call_id = (await a1.request("call.start", to=[bob["user"]["id"]], media="video"))["call_id"]
    await ring_ids([b1, b2], call_id)
    ringing = await store.load_call(call_id)
    assert ringing is not None and ringing.legs == ()
    assert {leg["device_id"] for leg in ringing.snapshot["legs"]} == {
        a1.device_id, b1.device_id, b2.device_id}  # type: ignore[attr-defined]
    await b1.request("call.answer", call_id=call_id)
    await a1.next_event("call.answered")
    answered = await store.load_call(call_id)
    assert answered is not None
    assert [(leg.device_id, leg.state, leg.end_reason) for leg in answered.legs] == [
        (b2.device_id, "ended", "answered_elsewhere")]  # type: ignore[attr-defined]
    await a1.request("call.hangup", call_id=call_id)
    await b1.next_event("call.ended")
    ended = await store.load_call(call_id)
    assert ended is not None
    assert {leg.device_id: leg.end_reason for leg in ended.legs} == {
        a1.device_id: "hung_up", b1.device_id: "hung_up",  # type: ignore[attr-defined]
        b2.device_id: "answered_elsewhere"}  # type: ignore[attr-defined]
    assert all(leg.state == "ended" for leg in ended.legs)


async def test_a_callee_only_ringing_is_not_call_waiting(server: LiveServer) -> None:
    """``call_waiting`` means "already in a call"; another call that only rings does not count."""
    _, (a1,) = await server.user_with_devices("alice", 1)
    _, (c1,) = await server.user_with_devices("carol", 1)
    bob, (b1,) = await server.user_with_devices("bob", 1)
    first = (await a1.request("call.start", to=[bob["user"]["id"]], media="audio"))["call_id"]
    assert (await b1.next_event("call.ring"))["call_waiting"] is False
    second = (await c1.request("call.start", to=[bob["user"]["id"]], media="audio"))["call_id"]
    ring = await b1.next_event("call.ring")
    assert ring["call_id"] == second and ring["call_waiting"] is False
    await b1.request("call.answer", call_id=first)
    _, (d1,) = await server.user_with_devices("dave", 1)
    third = (await d1.request("call.start", to=[bob["user"]["id"]], media="audio"))["call_id"]
    while (ring := await b1.next_event("call.ring"))["call_id"] != third:
        pass
    assert ring["call_waiting"] is True  # now bob is in a call


async def test_glare_from_a_device_the_other_call_does_not_ring(server: LiveServer) -> None:
    """Bob calls back from a device registered after alice's call rang his others: that
    device is not in alice's call, so it places its own call (alice gets call waiting)."""
    alice, (a1,) = await server.user_with_devices("alice", 1)
    bob, (b1,) = await server.user_with_devices("bob", 1)
    first = (await a1.request("call.start", to=[bob["user"]["id"]], media="audio"))["call_id"]
    await b1.next_event("call.ring")
    reg = await server.register_device(bob["token"], "new-tablet")
    tablet = await server.device(reg["token"])
    placed = await tablet.request("call.start", to=[alice["user"]["id"]], media="audio")
    assert placed["call_id"] != first and "glare" not in placed
    ring = await a1.next_event("call.ring")
    assert ring["call_id"] == placed["call_id"] and ring["call_waiting"] is True


async def test_the_rate_limit_is_per_device_not_per_connection(tmp_path: Path) -> None:
    async with live_server(f"sqlite+aiosqlite:///{tmp_path / 'facecall.db'}",
                           messages_per_second=0.01, message_burst=4) as live:
        _, (d1,) = await live.user_with_devices("chatty", 1)
        for _ in range(4):
            await d1.request("ping")
        await d1.drop()
        await d1.resume()  # a hello is never refused, and the bucket stays empty
        with pytest.raises(SignalingError) as limited:
            await d1.request("ping")
        assert limited.value.code == "rate_limited"
