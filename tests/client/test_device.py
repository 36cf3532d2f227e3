"""Device lifecycle and bad SDK input: clear exceptions, nothing half-done."""

from __future__ import annotations

import asyncio
import gc
import json
import os
from pathlib import Path

import httpx
import pytest

from facecall.client import (
    ApiError,
    AuthenticationError,
    Call,
    CallError,
    CallState,
    CallStateError,
    Device,
    EndReason,
    FacecallError,
    NotConnectedError,
    UnknownUserError,
    WaitTimeoutError,
)
from facecall.client.api import ApiClient
from tests.client.conftest import PASSWORD, MakeDevice
from tests.live import LiveServer, ReplyEater, reconnected


async def test_unknown_user(make_device: MakeDevice) -> None:
    alice = await make_device("alice")
    with pytest.raises(UnknownUserError, match="nobody"):
        await alice.call("nobody")
    with pytest.raises(UnknownUserError):
        await alice.call("not a valid name!")
    assert alice.calls == {}


async def test_calling_yourself_is_refused(make_device: MakeDevice) -> None:
    alice = await make_device("alice")
    with pytest.raises(CallError) as refused:
        await alice.call("alice")
    assert refused.value.code == "not_allowed"


async def test_calling_while_disconnected(call_server: LiveServer, make_device: MakeDevice) -> None:
    await make_device("bob")
    never = Device(call_server.base_url, "carol", PASSWORD, sign_up=True)
    with pytest.raises(NotConnectedError):
        await never.call("bob")
    await never.api.close()
    alice = await make_device("alice")
    await alice.close()
    with pytest.raises(NotConnectedError):
        await alice.call("bob")


async def test_wrong_password(call_server: LiveServer, make_device: MakeDevice) -> None:
    await make_device("alice")
    device = Device(call_server.base_url, "alice", "not the password")
    with pytest.raises(AuthenticationError) as refused:
        await device.connect()
    assert refused.value.status == 401
    await device.api.close()


async def test_bad_arguments(call_server: LiveServer, make_device: MakeDevice) -> None:
    with pytest.raises(ValueError, match="http"):
        Device("127.0.0.1:8080", "alice", PASSWORD)
    with pytest.raises(ValueError, match="password"):
        Device(call_server.base_url, "alice")
    with pytest.raises(ValueError, match="video_codec"):
        Device(call_server.base_url, "alice", PASSWORD, video_codec="AV1")
    with pytest.raises(ValueError, match="IP address"):
        Device(call_server.base_url, "alice", PASSWORD, ice_host_addresses=["localhost"])
    alice = await make_device("alice")
    with pytest.raises(ValueError, match="username"):
        await alice.call("")


async def test_wrong_operations_on_calls(make_device: MakeDevice) -> None:
    alice = await make_device("alice")
    bob = await make_device("bob")
    outgoing = await alice.call("bob", video=False)
    with pytest.raises(CallStateError, match="incoming"):
        await outgoing.answer()
    with pytest.raises(CallStateError):
        await outgoing.decline()
    incoming = await bob.next_call()
    with pytest.raises(CallStateError, match="declined, not hung up"):
        await incoming.hangup()
    with pytest.raises(CallStateError, match="no media"):
        await incoming.restart_ice()
    await outgoing.hangup()
    await outgoing.hangup()  # ending twice is a no-op
    await incoming.wait_ended(10)
    with pytest.raises(CallStateError, match="ended"):
        await incoming.answer()


async def test_state_file_keeps_the_device(call_server: LiveServer, tmp_path: Path) -> None:
    state = tmp_path / "alice.json"
    first = Device(call_server.base_url, "alice", PASSWORD, sign_up=True, state_file=state)
    await first.connect()
    device_id = first.device_id
    await first.close()
    assert os.stat(state).st_mode & 0o777 == 0o600
    assert json.loads(state.read_text())["device_id"] == device_id
    again = Device(call_server.base_url, state_file=state)  # no password needed any more
    await again.connect()
    assert again.device_id == device_id and again.username == "alice"
    await again.close()
    devices = await call_server.http.get(
        "/v1/devices", headers={"Authorization": f"Bearer {json.loads(state.read_text())['token']}"})
    assert [d["id"] for d in devices.json()] == [device_id]


async def test_removed_device_registers_again(call_server: LiveServer, tmp_path: Path) -> None:
    state = tmp_path / "alice.json"
    first = Device(call_server.base_url, "alice", PASSWORD, sign_up=True, state_file=state)
    await first.connect()
    old = first.device_id
    await first.close()
    session = await call_server.http.post("/v1/sessions", json={"username": "alice", "password": PASSWORD})
    token = session.json()["token"]
    removed = await call_server.http.delete(f"/v1/devices/{old}",
                                            headers={"Authorization": f"Bearer {token}"})
    assert removed.status_code == 204
    again = Device(call_server.base_url, "alice", PASSWORD, state_file=state)
    await again.connect()
    assert again.device_id != old
    await again.close()


async def test_a_device_holding_more_calls_than_a_hello_may_name_reconnects(
        make_device: MakeDevice) -> None:
    """17 calls ring a device at once (anyone can make that happen); a network blip must not
    cost it its connection: its hello names as many calls as allowed (16)."""
    caller = await make_device("mallory")
    victim = await make_device("victim")
    assert caller.signaling is not None
    for _ in range(17):
        await caller.signaling.request("call.start", to=[victim.user_id], media="audio")
    calls = [await victim.next_call(timeout=10) for _ in range(17)]
    await victim.drop_connection()
    await reconnected(victim)
    assert victim.reconnects == 1
    assert [call.state for call in calls] == [CallState.RINGING] * 17  # resumed: all ring on
    assert len(victim.calls) == 17


async def test_a_ring_after_its_call_stopped_ringing_is_a_new_call(make_device: MakeDevice) -> None:
    """The events of one read, in order: a ring again for the call the device holds (a fresh
    start's) is not a second call; a ring after that call stopped ringing (re-invited into a
    group call) is a new one."""
    from facecall.client import EndReason

    bob = await make_device("bob")
    assert bob.signaling is not None
    events = bob.signaling.events
    ring = {"v": 1, "type": "call.ring", "call_id": "c-1", "from_user": "u-a",
            "from_device": "d-a", "from_name": "alice", "media": "audio",
            "participants": ["u-a", "u-c"], "call_waiting": False}
    events.put_nowait(ring)
    first = await bob.next_call(timeout=5)
    for event in (ring, {"v": 1, "type": "call.stop_ringing", "call_id": "c-1",
                         "reason": "declined_elsewhere"}, ring):
        events.put_nowait(event)
    second = await bob.next_call(timeout=5)
    assert second is not first and second.state is CallState.RINGING
    assert await first.wait_ended(5) is EndReason.DECLINED_ELSEWHERE
    assert bob.calls == {"c-1": second}
    with pytest.raises(TimeoutError):
        await bob.next_call(timeout=0.2)


async def test_a_device_taken_over_by_another_program_does_not_take_it_back(
        call_server: LiveServer, make_device: MakeDevice) -> None:
    """Another program connects with this device's token: the server closes this connection
    with 4409. The SDK does not reconnect on its own (the two would take the device from each
    other in turn): its calls end, it says ``replaced``, and the other program keeps the device."""
    alice = await make_device("alice")
    bob = await make_device("bob")
    outgoing = await alice.call("bob", video=False)
    await bob.next_call(timeout=10)
    changes: list[str] = []
    alice.on("connection", changes.append)
    assert alice.token is not None
    other = await call_server.device(alice.token)
    assert await outgoing.wait_ended(10) is EndReason.CONNECTION_LOST
    assert changes == ["replaced"] and not alice.connected
    await asyncio.sleep(1.0)
    assert changes == ["replaced"]
    assert (await other.request("ping"))["type"] == "pong"  # still the device's connection
    await other.close()


async def remove_device(server: LiveServer, device: Device) -> None:
    """Remove ``device`` as its user would (``DELETE /v1/devices/{id}``)."""
    session = await server.http.post("/v1/sessions", json={"username": device.username,
                                                           "password": PASSWORD})
    removed = await server.http.delete(f"/v1/devices/{device.device_id}", headers={
        "Authorization": f"Bearer {session.json()['token']}"})
    assert removed.status_code == 204


async def test_a_removed_device_ends_its_calls_and_wakes_whoever_waits_for_one(
        call_server: LiveServer, make_device: MakeDevice) -> None:
    """The server closes the removed device's connection with 4009: its calls end with
    ``device_removed``, it says ``closed`` and does not reconnect, and a program waiting for the
    next call (``next_call``, ``incoming_calls``) hears of it instead of waiting for ever."""
    alice = await make_device("alice")
    bob = await make_device("bob")
    outgoing = await alice.call("bob", video=False)
    incoming = await bob.next_call(timeout=10)
    await incoming.answer()
    changes: list[str] = []
    bob.on("connection", changes.append)
    waiting = asyncio.create_task(bob.next_call(timeout=None))
    iterating = asyncio.ensure_future(anext(bob.incoming_calls(), None))
    await asyncio.sleep(0.1)
    await remove_device(call_server, bob)
    assert await incoming.wait_ended(10) is EndReason.DEVICE_REMOVED
    assert await outgoing.wait_ended(10) is not None
    with pytest.raises(NotConnectedError, match="removed"):
        await asyncio.wait_for(waiting, 5)
    assert await asyncio.wait_for(iterating, 5) is None  # the iterator ended
    await asyncio.sleep(1.0)
    assert changes == ["closed"] and not bob.connected and bob.reconnects == 0
    with pytest.raises(NotConnectedError):
        await bob.call("alice")


async def test_a_device_removed_while_away_stops_when_its_token_is_refused(
        call_server: LiveServer, make_device: MakeDevice) -> None:
    """bob's device is away (its network is down) when it is removed; the call ends for alice,
    bob's ICE restarts fail (no TURN credentials for a removed device) without an unretrieved
    exception. When bob's network is back the server accepts the WebSocket and closes it before
    the welcome (4401): the device stops, its call ends with ``device_removed``."""
    alice = await make_device("alice")
    bob = await make_device("bob", ice_restart_after=1.0)
    outgoing = await alice.call("bob", video=True)
    incoming = await bob.next_call(timeout=10)
    await incoming.answer()
    await asyncio.gather(outgoing.wait_connected(30), incoming.wait_connected(30))
    changes: list[str] = []
    bob.on("connection", changes.append)
    signaling = bob.signaling
    assert signaling is not None
    url, signaling.ws_url = signaling.ws_url, "ws://127.0.0.1:9/v1/signaling"  # no network
    await bob.drop_connection()
    await remove_device(call_server, bob)
    assert await outgoing.wait_ended(10) is not None
    await incoming.wait_state(CallState.RECONNECTING, timeout=10)  # media stopped: ICE restarts
    await asyncio.sleep(1.0)  # ... which cannot get TURN credentials
    signaling.ws_url = url  # the network is back
    assert await incoming.wait_ended(10) is EndReason.DEVICE_REMOVED
    assert changes == ["reconnecting", "closed"] and not bob.connected
    failed = [t for t in incoming._background if t.done() and not t.cancelled() and t.exception()]
    assert failed == []  # each failure was retrieved (and logged), none is left to the loop
    await asyncio.sleep(2.5)
    assert changes == ["reconnecting", "closed"] and bob.reconnects == 0


async def test_closing_a_device_wakes_whoever_waits_for_a_call(make_device: MakeDevice) -> None:
    bob = await make_device("bob")
    waiting = asyncio.create_task(bob.next_call(timeout=None))
    got: list[Call] = []

    async def bot() -> None:
        async for call in bob.incoming_calls():
            got.append(call)

    iterating = asyncio.create_task(bot())
    await asyncio.sleep(0.1)
    await bob.close()
    with pytest.raises(NotConnectedError, match="closed"):
        await asyncio.wait_for(waiting, 5)
    await asyncio.wait_for(iterating, 5)
    assert got == []
    with pytest.raises(NotConnectedError):
        await bob.next_call(timeout=None)


async def test_no_password_and_no_saved_device_is_a_clear_error(
        call_server: LiveServer, tmp_path: Path) -> None:
    device = Device(call_server.base_url, "alice", state_file=tmp_path / "nothing-saved.json")
    with pytest.raises(FacecallError, match="password"):
        await device.connect()
    await device.api.close()


async def test_the_state_file_may_start_with_a_tilde(
        call_server: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    device = Device(call_server.base_url, "alice", PASSWORD, sign_up=True,
                    state_file="~/.facecall/alice.json")
    await device.connect()
    await device.close()
    assert json.loads((tmp_path / "home/.facecall/alice.json").read_text())["username"] == "alice"
    assert not (tmp_path / "~").exists()


async def test_errors_are_facecall_errors(make_device: MakeDevice) -> None:
    """docs/sdk.md: every SDK error derives from FacecallError; the waits' timeouts are
    also built-in TimeoutErrors."""
    alice = await make_device("alice")
    await make_device("bob")
    with pytest.raises(FacecallError, match="already connected"):
        await alice.connect()
    with pytest.raises(WaitTimeoutError, match=r"no call rang within 0\.1 s") as waited:
        await alice.next_call(timeout=0.1)
    assert isinstance(waited.value, TimeoutError)
    outgoing = await alice.call("bob", video=False)
    with pytest.raises(WaitTimeoutError, match="connected"):
        await outgoing.wait_connected(timeout=0.1)
    with pytest.raises(WaitTimeoutError, match="end"):
        await outgoing.wait_ended(timeout=0.1)
    await outgoing.hangup()


async def test_refusals_are_one_readable_line(call_server: LiveServer) -> None:
    """A validation error shows its messages (not a list of dicts); an HTML page (a server that
    is not facecall) shows the status and its reason (not the page)."""
    device = Device(call_server.base_url, "ab", PASSWORD, sign_up=True)  # too short a name
    with pytest.raises(ApiError) as refused:
        await device.connect()
    await device.api.close()
    message = str(refused.value)
    assert message.startswith("HTTP 422: ") and "username" in message
    assert "[{" not in message and "'loc'" not in message and "\n" not in message

    page = "<!DOCTYPE HTML>\n<html>\n<body>\n<h1>Error response</h1>\n</body>\n</html>\n"
    api = ApiClient("http://127.0.0.1:9")
    api.http = httpx.AsyncClient(base_url=api.base_url, transport=httpx.MockTransport(
        lambda _: httpx.Response(501, text=page, headers={"content-type": "text/html"})))
    with pytest.raises(ApiError) as refused:
        await api.sign_in("alice", PASSWORD)
    await api.close()
    assert str(refused.value) == "HTTP 501: Not Implemented (not a facecall server?)"


async def test_a_call_that_rings_while_the_device_closes_ends_too(
        make_device: MakeDevice) -> None:
    """close() waits up to CLOSE_WAIT for the server to take its hang-ups (here the reply to
    alice's cancel never comes); a call that rings her meanwhile must end with the others, and
    the request nobody waits for any more is not reported as an unretrieved error."""
    alice = await make_device("alice")
    bob = await make_device("bob")
    carol = await make_device("carol")
    unretrieved: list[dict[str, object]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: unretrieved.append(context))
    assert alice.signaling is not None
    async with ReplyEater(alice.signaling.ws_url, {"call.cancel"}) as proxy:
        alice.signaling.ws_url = proxy.url
        await alice.signaling.drop()
        await reconnected(alice)
        outgoing = await alice.call("bob", video=False)
        await bob.next_call(timeout=10)
        rung: list[Call] = []
        alice.on("call", rung.append)
        closing = asyncio.create_task(alice.close())
        await asyncio.wait_for(proxy.eaten.wait(), 5)
        await carol.call("alice", video=False)
        await asyncio.wait_for(closing, 10)
    assert outgoing.state is CallState.ENDED
    assert rung and all(call.state is CallState.ENDED for call in rung)
    assert alice.calls == {}
    gc.collect()
    await asyncio.sleep(0.1)
    assert not [c for c in unretrieved if "never retrieved" in str(c.get("message"))]
    loop.set_exception_handler(None)
