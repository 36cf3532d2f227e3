"""Moving a live call between a user's devices (``call.handoff``) and telling the user's
other devices where their call is (``call.elsewhere``, ``welcome.elsewhere``), through a real
server and real WebSocket clients."""

from __future__ import annotations

import asyncio

import pytest

from facecall.client.signaling import SignalingConnection, SignalingError
from tests.live import LiveServer
from tests.server.test_calls import ring_ids


async def answered_call(server: LiveServer) -> tuple[str, dict, list[SignalingConnection],
                                                     dict, list[SignalingConnection]]:
    """alice (a1, a2) calls bob (b1, b2); bob answers on b1."""
    alice, (a1, a2) = await server.user_with_devices("alice", 2)
    bob, (b1, b2) = await server.user_with_devices("bob", 2)
    call_id = (await a1.request("call.start", to=[bob["user"]["id"]], media="video"))["call_id"]
    await ring_ids([b1, b2], call_id, from_name="alice")
    await b1.request("call.answer", call_id=call_id)
    await a1.next_event("call.answered")
    return call_id, alice, [a1, a2], bob, [b1, b2]


async def test_an_answered_call_is_announced_to_the_users_other_devices(server: LiveServer) -> None:
    call_id, alice, (a1, a2), bob, (b1, b2) = await answered_call(server)
    mine = await a2.next_event("call.elsewhere")
    assert mine == {**mine, "call_id": call_id, "state": "active", "device_id": a1.device_id,
                    "media": "video", "role": "caller",
                    "participants": [{"user_id": bob["user"]["id"], "name": "bob"}]}
    theirs = await b2.next_event("call.elsewhere")
    assert (theirs["device_id"], theirs["participants"]) == \
        (b1.device_id, [{"user_id": alice["user"]["id"], "name": "alice"}])
    # a device that connects later finds it in its welcome
    late = SignalingConnection(server.ws_url,
                               (await server.register_device(alice["token"], "tablet"))["token"])
    welcome = await late.connect()
    assert welcome["elsewhere"] == [{"call_id": call_id, "device_id": a1.device_id,
                                     "media": "video", "role": "caller",
                                     "participants": mine["participants"]}]
    await a1.request("call.hangup", call_id=call_id)
    for device in (a2, b2, late):
        assert (await device.next_event("call.elsewhere"))["state"] == "ended"
    again = SignalingConnection(server.ws_url,
                                (await server.register_device(alice["token"], "tv"))["token"])
    assert (await again.connect())["elsewhere"] == []


async def test_handoff_moves_the_call_and_the_other_side_goes_on(server: LiveServer) -> None:
    call_id, alice, (a1, a2), bob, (b1, _b2) = await answered_call(server)
    await a2.next_event("call.elsewhere")
    reply = await a2.request("call.handoff", call_id=call_id)
    assert reply["media"] == "video"
    assert reply["participants"] == [{"user_id": bob["user"]["id"], "device_id": b1.device_id}]
    assert reply["group_media"] is False  # P2P: bob offers to the new device
    assert (await a1.next_event("call.ended"))["reason"] == "handed_off"
    moved = await b1.next_event("call.handed_off")
    assert (moved["user_id"], moved["from_device"], moved["to_device"]) == \
        (alice["user"]["id"], a1.device_id, a2.device_id)
    back = await a1.next_event("call.elsewhere")  # the old device may take it back
    assert (back["state"], back["device_id"]) == ("active", a2.device_id)

    # media setup flows between bob and the new device, and no longer with the old one
    await b1.request("call.sdp", call_id=call_id, to_device=a2.device_id,
                     description={"type": "offer", "sdp": "v=0\r\n"})
    assert (await a2.next_event("call.sdp"))["from_device"] == b1.device_id
    with pytest.raises(SignalingError) as gone:
        await b1.request("call.sdp", call_id=call_id, to_device=a1.device_id,
                         description={"type": "offer", "sdp": "v=0\r\n"})
    assert gone.value.code == "not_allowed"
    with pytest.raises(SignalingError) as left:
        await a1.request("call.hangup", call_id=call_id)
    assert left.value.code == "invalid_state" and "handed_off" in left.value.message

    # a resend (its reply lost) answers the same and changes nothing
    again = await a2.request("call.handoff", call_id=call_id)
    assert (again["media"], again["participants"]) == (reply["media"], reply["participants"])
    await b1.request("call.hangup", call_id=call_id)
    assert (await a2.next_event("call.ended"))["reason"] == "hung_up"
    history = await server.http.get("/v1/calls/history",
                                    headers={"Authorization": f"Bearer {alice['token']}"})
    item = history.json()["items"][0]
    assert item["call_id"] == call_id and item["end_reason"] == "hung_up"
    assert item["duration"] is not None
    legs = (await server.app.app.state.store.load_call(call_id)).legs
    assert {leg.device_id: leg.end_reason for leg in legs if leg.user_id == alice["user"]["id"]} \
        == {a1.device_id: "handed_off", a2.device_id: "hung_up"}


async def test_what_cannot_be_moved(server: LiveServer) -> None:
    _alice, (a1, a2) = await server.user_with_devices("alice", 2)
    bob, (b1,) = await server.user_with_devices("bob", 1)
    _mallory, (m1,) = await server.user_with_devices("mallory", 1)
    call_id = (await a1.request("call.start", to=[bob["user"]["id"]], media="audio"))["call_id"]
    await b1.next_event("call.ring")
    for device, code in ((a2, "invalid_state"),  # still ringing: nothing to move yet
                         (b1, "invalid_state"),  # it rings: answer it
                         (m1, "unknown_call")):  # another user's call: not even that it exists
        with pytest.raises(SignalingError) as refused:
            await device.request("call.handoff", call_id=call_id)
        assert refused.value.code == code
    with pytest.raises(SignalingError) as unknown:
        await a2.request("call.handoff", call_id="no-such-call")
    assert unknown.value.code == "unknown_call"
    with pytest.raises(SignalingError) as malformed:
        await a2.request("call.handoff", call_id=call_id, to_device=b1.device_id)
    assert malformed.value.code == "invalid_field"
    await b1.request("call.answer", call_id=call_id)
    await a1.next_event("call.answered")
    with pytest.raises(SignalingError) as stolen:
        await m1.request("call.handoff", call_id=call_id)
    assert stolen.value.code == "unknown_call"
    await a1.request("call.hangup", call_id=call_id)
    with pytest.raises(SignalingError) as over:
        await a2.request("call.handoff", call_id=call_id)
    assert over.value.code == "call_ended"
    # the connections survived every refusal
    assert (await a2.request("ping"))["type"] == "pong"


async def test_a_device_in_another_call_cannot_take_one_over(server: LiveServer) -> None:
    """alice talks to bob on a1 and to carol on a2 (she took carol's waiting call there): a2
    cannot also take bob's call -- it would be in two calls at once -- until it hangs up."""
    call_id, alice, (a1, a2), _bob, (b1, _b2) = await answered_call(server)
    _carol, (c1,) = await server.user_with_devices("carol", 1)
    other = (await c1.request("call.start", to=[alice["user"]["id"]], media="audio"))["call_id"]
    assert (await a2.next_event("call.ring"))["call_waiting"] is True
    await a2.request("call.answer", call_id=other)
    with pytest.raises(SignalingError) as refused:
        await a2.request("call.handoff", call_id=call_id)
    assert refused.value.code == "not_allowed" and other in refused.value.message
    await b1.request("call.media", call_id=call_id, to_device=a1.device_id, audio=True, video=True)
    assert (await a1.next_event("call.media"))["from_device"] == b1.device_id  # still a1's
    await a2.request("call.hangup", call_id=other)
    assert (await c1.next_event("call.ended"))["reason"] == "hung_up"
    await a2.request("call.handoff", call_id=call_id)
    assert (await a1.next_event("call.ended"))["reason"] == "handed_off"
    assert (await b1.next_event("call.handed_off"))["to_device"] == a2.device_id


async def test_two_devices_taking_the_call_at_once_move_it_twice_in_order(server: LiveServer) -> None:
    """Both requests succeed, one after the other: the call ends up on the one applied last,
    the other gets call.ended(handed_off) as any device the call left, and bob follows both."""
    call_id, alice, (a1, a2), bob, (b1, _b2) = await answered_call(server)
    (a3,) = await server.connected_devices(alice, 1)
    first, second = await asyncio.gather(a2.request("call.handoff", call_id=call_id),
                                         a3.request("call.handoff", call_id=call_id))
    assert first["participants"] == second["participants"] == \
        [{"user_id": bob["user"]["id"], "device_id": b1.device_id}]
    moves = [await b1.next_event("call.handed_off") for _ in range(2)]
    assert moves[0]["from_device"] == a1.device_id
    assert moves[1]["from_device"] == moves[0]["to_device"]
    holder = moves[1]["to_device"]
    loser = a2 if holder == a3.device_id else a3
    assert (await loser.next_event("call.ended"))["reason"] == "handed_off"
    assert (await a1.next_event("call.ended"))["reason"] == "handed_off"
    store = server.app.app.state.store
    legs = {leg.device_id: leg.end_reason for leg in (await store.load_call(call_id)).legs}
    assert legs[a1.device_id] == legs[loser.device_id] == "handed_off"
