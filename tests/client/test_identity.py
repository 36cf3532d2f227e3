"""Device identity keys in the SDK (docs/security.md, "Device identity keys"): every SDP a
device sends is signed, every one it gets is checked against the sender's key, pinned on first
use; a server that changes a description, strips its signature or hands out another key for a
device is refused, and the call ends ``identity_check_failed`` on both sides."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from facecall.client import CallState, CallStateError, Device, EndReason, FacecallError, IdentityError
from facecall.client.api import ApiClient
from facecall.e2ee.identity import new_private_key, public_key_text, sign_description
from tests.client.conftest import PASSWORD, MakeDevice
from tests.live import LiveServer, SignalingProxy, through


class ServerInTheMiddle(SignalingProxy):
    """The signaling server as an attacker would run it, in front of one device: each relayed
    ``call.sdp`` offer reaches that device through ``change`` (what it returns, it gets)."""

    def __init__(self, upstream_ws_url: str, change: Any) -> None:
        super().__init__(upstream_ws_url)
        self.change = change
        self.changed = 0

    def from_node(self, message: dict[str, Any]) -> dict[str, Any] | None:
        if message.get("type") == "call.sdp" and message["description"]["type"] == "offer":
            self.changed += 1
            return self.change(message)  # type: ignore[no-any-return]
        return message


def own_fingerprint(message: dict[str, Any]) -> dict[str, Any]:
    """The offer with the server's certificate in place of the caller's (every sha-256 line)."""
    sdp = message["description"]["sdp"]
    lines = [("a=fingerprint:sha-256 " + ":".join(["AB"] * 32)) if line.startswith("a=fingerprint:sha-256")
             else line for line in sdp.split("\r\n")]
    return {**message, "description": {**message["description"], "sdp": "\r\n".join(lines)}}


async def refused(alice: Device, bob: Device, proxy: ServerInTheMiddle) -> tuple[Any, Any]:
    """alice calls bob (behind ``proxy``), bob answers; returns both calls once ended."""
    await through(proxy, bob)
    outgoing = await alice.call("bob")
    incoming = await bob.next_call(10)
    await incoming.answer()
    assert await incoming.wait_ended(15) is EndReason.IDENTITY_CHECK_FAILED
    assert await outgoing.wait_ended(15) is EndReason.IDENTITY_CHECK_FAILED
    assert proxy.changed >= 1
    assert outgoing.timings.connected is None and incoming.timings.connected is None
    return outgoing, incoming


async def test_calls_are_signed_checked_and_keys_pinned(
        call_server: LiveServer, make_device: MakeDevice, tmp_path: Path) -> None:
    """Both devices published their keys when they registered; a call between them connects
    (each checked the other's signed SDP) and each pinned the other's key, in its state file."""
    state = tmp_path / "alice.json"
    alice = await make_device("alice", state_file=state)
    bob = await make_device("bob")
    assert alice.identity is not None and bob.identity is not None
    listed = await alice.api.identity_keys(alice.token or "", bob.user_id or "")
    certificate = bob.identity.agreement_certificate(str(bob.user_id), str(bob.device_id))
    assert listed == {"user_id": bob.user_id, "devices": [
        {"device_id": bob.device_id, "identity_key": bob.identity.public_key,
         "agreement_key": {"key": certificate["key"], "signature": certificate["signature"]}}]}
    own = await call_server.http.get("/v1/devices", headers={"Authorization": f"Bearer {alice.token}"})
    assert [d["identity_key"] for d in own.json()] == [alice.identity.public_key]

    outgoing = await alice.call("bob", video=False)
    incoming = await bob.next_call(10)
    await incoming.answer()
    await outgoing.wait_connected(20)
    await incoming.wait_connected(20)
    assert alice.identity.pinned(bob.device_id or "") == (bob.user_id, bob.identity.public_key)
    assert bob.identity.pinned(alice.device_id or "") == (alice.user_id, alice.identity.public_key)
    saved = json.loads(state.read_text())
    assert saved["pinned_keys"] == {bob.device_id: [bob.user_id, bob.identity.public_key]}
    assert saved["identity_key"] and saved["identity_published"] is True
    await outgoing.hangup()


async def test_a_changed_description_is_refused(call_server: LiveServer, make_device: MakeDevice) -> None:
    """The server swaps the caller's certificate fingerprint for its own: bob's device refuses
    the offer before any media, and the call ends ``identity_check_failed`` for both."""
    alice, bob = await make_device("alice"), await make_device("bob")
    async with ServerInTheMiddle(bob.signaling.ws_url, own_fingerprint) as proxy:  # type: ignore[union-attr]
        _, incoming = await refused(alice, bob, proxy)
    assert "not signed by its identity key" in (incoming.identity_failure or "")
    with pytest.raises(CallStateError, match=r"identity_check_failed.*not signed by its identity key"):
        await incoming.wait_connected(1)
    history = await call_server.http.get("/v1/calls/history",
                                         headers={"Authorization": f"Bearer {alice.token}"})
    assert history.json()["items"][0]["end_reason"] == "identity_check_failed"


async def test_a_stripped_signature_is_refused(make_device: MakeDevice) -> None:
    alice, bob = await make_device("alice"), await make_device("bob")
    async with ServerInTheMiddle(bob.signaling.ws_url,  # type: ignore[union-attr]
                                 lambda message: {**message, "signature": None}) as proxy:
        _, incoming = await refused(alice, bob, proxy)
    assert "without a signature" in (incoming.identity_failure or "")


async def test_a_key_the_server_swaps_after_the_first_call_is_refused(
        call_server: LiveServer, make_device: MakeDevice, tmp_path: Path) -> None:
    """bob's device pinned alice's device key in a first call. Then the server hands out a key
    of its own for her device and signs its changed offers with it: every signature checks
    against the key the server lists, but not against the pinned one, so bob refuses."""
    alice, bob = await make_device("alice"), await make_device("bob")
    first = await alice.call("bob", video=False)
    answered = await bob.next_call(10)
    await answered.answer()
    await first.wait_connected(20)
    await first.hangup()
    assert await answered.wait_ended(10) is EndReason.HUNG_UP

    attacker = new_private_key()
    database = sqlite3.connect(tmp_path / "facecall.db")
    with database:
        database.execute("UPDATE user_devices SET identity_key = ? WHERE id = ?",
                         (public_key_text(attacker), alice.device_id))
    database.close()
    listed = await bob.api.identity_keys(bob.token or "", alice.user_id or "")
    assert listed["devices"][0]["identity_key"] == public_key_text(attacker)

    def resigned(message: dict[str, Any]) -> dict[str, Any]:
        changed = own_fingerprint(message)
        description = changed["description"]
        changed["signature"] = sign_description(
            attacker, changed["call_id"], changed["from_user"], changed["from_device"],
            bob.device_id or "", description["type"], description["sdp"])
        return changed

    async with ServerInTheMiddle(bob.signaling.ws_url, resigned) as proxy:  # type: ignore[union-attr]
        _, incoming = await refused(alice, bob, proxy)
    assert "not signed by its identity key" in (incoming.identity_failure or "")


async def test_a_device_registered_without_a_key_publishes_one_once(
        call_server: LiveServer, tmp_path: Path) -> None:
    """A device registered by an older client (no key, a state file without one) publishes a
    key when it next connects, and keeps it; a program holding another key for a device that
    has one cannot sign for it: a clear error, nothing published."""
    api = ApiClient(call_server.base_url)
    try:
        session = await api.sign_up("alice", PASSWORD)
        registered = await api.register_device(session["token"], "old laptop")
    finally:
        await api.close()
    assert registered["device"]["identity_key"] is None
    state = tmp_path / "alice.json"
    state.write_text(json.dumps({
        "server": call_server.base_url, "username": "alice", "user_id": session["user"]["id"],
        "device_id": registered["device"]["id"], "token": registered["token"]}))

    device = Device(call_server.base_url, state_file=state)
    await device.connect()
    try:
        assert device.identity is not None
        published = device.identity.public_key
        listed = await device.api.identity_keys(registered["token"], session["user"]["id"])
        certificate = device.identity.agreement_certificate(session["user"]["id"],
                                                            registered["device"]["id"])
        assert listed["devices"] == [{
            "device_id": registered["device"]["id"], "identity_key": published,
            "agreement_key": {"key": certificate["key"], "signature": certificate["signature"]}}]
    finally:
        await device.close()
    saved = json.loads(state.read_text())
    assert saved["identity_published"] is True
    assert saved["agreement_published"] == device.identity.agreement_public  # kept with its key
    assert saved["agreement_key"]

    again = Device(call_server.base_url, state_file=state)
    await again.connect()
    try:
        assert again.identity is not None and again.identity.public_key == published
    finally:
        await again.close()

    other_state = tmp_path / "someone-else.json"
    other_state.write_text(json.dumps({"server": call_server.base_url, "username": "alice",
                                       "token": "another device's token", "identity_key": "x"}))
    kept = other_state.read_text()
    stranger = Device(call_server.base_url, token=registered["token"], state_file=other_state)
    with pytest.raises(FacecallError, match="another identity key"):
        await stranger.connect()
    assert stranger.signaling is None and not stranger.connected
    assert other_state.read_text() == kept  # another device's state file is left alone
    await stranger.api.close()
    with_file = Device(call_server.base_url, token=registered["token"], state_file=state)
    await with_file.connect()  # the token given, and the state file that holds its key
    try:
        assert with_file.identity is not None and with_file.identity.public_key == published
    finally:
        await with_file.close()
    holder = Device(call_server.base_url, token=registered["token"],
                    identity_key=json.loads(state.read_text())["identity_key"])
    await holder.connect()
    try:
        assert holder.identity is not None and holder.identity.public_key == published
        assert holder.calls == {} and holder.connected
    finally:
        await holder.close()


async def test_a_call_with_a_device_that_has_no_key_is_refused(
        make_device: MakeDevice, tmp_path: Path) -> None:
    """A device that never published a key cannot be checked: bob's device refuses its offer
    (a server could otherwise drop any device's key to turn the checks off)."""
    bob = await make_device("bob")
    alice = await make_device("alice")
    database = sqlite3.connect(tmp_path / "facecall.db")
    with database:
        database.execute("UPDATE user_devices SET identity_key = NULL WHERE id = ?", (alice.device_id,))
    database.close()
    outgoing = await alice.call("bob", video=False)
    incoming = await bob.next_call(10)
    await incoming.answer()
    assert await incoming.wait_ended(15) is EndReason.IDENTITY_CHECK_FAILED
    assert await outgoing.wait_ended(15) is EndReason.IDENTITY_CHECK_FAILED
    assert "has no identity key" in (incoming.identity_failure or "")
    assert outgoing.state is CallState.ENDED


async def test_safety_numbers_match_and_show_a_change(
        call_server: LiveServer, make_device: MakeDevice, tmp_path: Path) -> None:
    """alice and bob get the same sixty digits; once alice marks them compared they are
    ``verified``, until bob adds a device (``changed``). A server that lists another key for a
    device alice met, or leaves her own device's key out, is refused."""
    state = tmp_path / "alice.json"
    alice = await make_device("alice", state_file=state)
    bob = await make_device("bob")
    mine = await alice.safety_number("bob")
    theirs = await bob.safety_number(user_id=alice.user_id)
    assert mine.number == theirs.number and len(mine.number.replace(" ", "")) == 60
    assert (mine.status, theirs.status) == ("unverified", "unverified")
    assert alice.identity is not None and bob.identity is not None
    assert alice.identity.pinned(bob.device_id or "") == (bob.user_id, bob.identity.public_key)
    await alice.mark_verified(mine)
    assert (await alice.safety_number("bob")).status == "verified"
    assert json.loads(state.read_text())["verified_numbers"] == {bob.user_id: mine.number}

    await make_device("bob")  # bob's new tablet
    again = await alice.safety_number("bob")
    assert again.status == "changed" and again.number != mine.number
    assert again.number == (await bob.safety_number("alice")).number

    database = sqlite3.connect(tmp_path / "facecall.db")
    with database:
        database.execute("UPDATE user_devices SET identity_key = ? WHERE id = ?",
                         (public_key_text(new_private_key()), bob.device_id))
    with pytest.raises(IdentityError, match="another identity key for device"):
        await alice.safety_number("bob")
    with database:
        database.execute("UPDATE user_devices SET identity_key = NULL WHERE id = ?", (alice.device_id,))
    database.close()
    with pytest.raises(IdentityError, match="this device's own identity key"):
        await alice.safety_number("bob")
    with pytest.raises(ValueError, match="username or a user_id"):
        await alice.safety_number()
