"""Audit of device identity keys and safety numbers in the SDK (docs/security.md): what a
server in the middle (ours, or whoever holds it and its database) could do before the fixes of
session 16. Each test was a defect, shown failing before its fix.

The server's powers are played with the real server and its database (as
tests/client/test_identity.py does): a device it invents is a real device registered with the
user's password, a device it hides from a list is one marked removed in the database, and a long
list is rows added to ``user_devices``."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from facecall.client import IdentityError
from facecall.e2ee.identity import new_private_key, public_key_text, sign_description
from tests.client.conftest import MakeDevice
from tests.live import LiveServer, SignalingProxy, through

MAX_PINNED = 4096  # facecall.client.identity.MAX_PINNED


def database(tmp_path: Path) -> sqlite3.Connection:
    return sqlite3.connect(tmp_path / "facecall.db")


async def test_verified_in_a_call_with_a_device_the_server_hides_from_the_list(
        call_server: LiveServer, make_device: MakeDevice, tmp_path: Path) -> None:
    """alice and bob compared their number. The server invents a device of bob's (a key of its
    own), calls alice from it, and leaves it out of the lists it serves: alice's SDK says the
    number with bob is still "verified" while she talks to the server's device."""
    alice, bob = await make_device("alice"), await make_device("bob")
    assert alice.identity is not None
    await alice.mark_verified(await alice.safety_number("bob"))

    invented = await make_device("bob")  # the server's device "of bob's", with its own key
    outgoing = await invented.call("alice", video=False)
    incoming = await alice.next_call(10)
    await incoming.answer()
    await incoming.wait_connected(20)
    await outgoing.wait_connected(20)
    assert incoming.remote_user == bob.user_id and incoming.remote_device == invented.device_id
    assert alice.identity.pinned(invented.device_id or "") is not None  # trusted on first use

    with database(tmp_path) as db:  # ... and hidden from the lists (the live call goes on)
        db.execute("UPDATE user_devices SET removed_at = ? WHERE id = ?", (time.time(), invented.device_id))
    with contextlib.suppress(IdentityError):  # refusing to show a number is a fix too
        shown = await alice.safety_number("bob")
        assert shown.status != "verified", (
            "alice's SDK says her number with bob is verified, while her call is with a device "
            f"{invented.device_id} it pinned as bob's that the number does not cover")


async def test_a_long_key_list_evicts_the_pin_of_a_device_met(
        call_server: LiveServer, make_device: MakeDevice, tmp_path: Path) -> None:
    """alice's SDK pinned bob's device. The server lists 4096 devices for mallory (the server
    lets a user have 32; it holds the database) and alice looks their safety number up: bob's
    pin is gone, and the key the server lists for bob's device next is taken as his."""
    alice, bob = await make_device("alice"), await make_device("bob")
    assert alice.identity is not None and bob.identity is not None
    await alice.safety_number("bob")  # pins bob's device, as a call with it would
    met = (bob.user_id, bob.identity.public_key)
    assert alice.identity.pinned(bob.device_id or "") == met

    mallory = await call_server.sign_up("mallory")
    now = time.time()
    rows = [(uuid.uuid4().hex, mallory["user"]["id"], "sdk", f"m{i}", now, now, None,
             public_key_text(new_private_key())) for i in range(MAX_PINNED)]
    attacker = new_private_key()
    with database(tmp_path) as db:
        db.executemany("INSERT INTO user_devices (id, user_id, kind, name, created_at, last_seen_at, "
                       "removed_at, identity_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    with pytest.raises(IdentityError, match="more than the 32 a user can have"):
        await alice.safety_number(user_id=mallory["user"]["id"])

    with database(tmp_path) as db:  # then it swaps bob's key
        db.execute("UPDATE user_devices SET identity_key = ? WHERE id = ?",
                   (public_key_text(attacker), bob.device_id))
    key = await alice.identity.key_of(alice.api, alice.token or "", bob.user_id or "", bob.device_id or "")
    assert alice.identity.pinned(bob.device_id or "") == met and key == met[1], (
        "bob's pin was evicted by mallory's list: alice now takes the server's key for bob's device")


class AnotherUsersDevice(SignalingProxy):
    """The signaling server in front of alice, as an attacker runs it: in her call with bob,
    bob's device is mallory's device to her (the answer's ``participants``), and bob's offers
    reach her as that device's, from user mallory, signed with its key. Records what alice
    sends as ``call.sdp``."""

    def __init__(self, upstream_ws_url: str, bob_device: str, mallory: str, mallory_device: str,
                 key: Ed25519PrivateKey, alice_device: str) -> None:
        super().__init__(upstream_ws_url)
        self.bob_device, self.mallory, self.mallory_device = bob_device, mallory, mallory_device
        self.key, self.alice_device = key, alice_device
        self.sent: list[dict[str, Any]] = []

    def from_device(self, message: dict[str, Any]) -> bool:
        if message.get("type") == "call.sdp":
            self.sent.append(message)
        return True

    def from_node(self, message: dict[str, Any]) -> dict[str, Any] | None:
        if message.get("type") == "ok" and "participants" in message:
            return {**message, "participants": [
                {**p, "device_id": self.mallory_device} if p.get("device_id") == self.bob_device else p
                for p in message["participants"]]}
        if message.get("from_device") != self.bob_device:
            return message
        message = {**message, "from_device": self.mallory_device}
        if message.get("type") == "call.sdp":
            description = message["description"]
            message["from_user"] = self.mallory
            message["signature"] = sign_description(
                self.key, message["call_id"], self.mallory, self.mallory_device, self.alice_device,
                description["type"], description["sdp"])
        return message


async def test_a_description_signed_by_another_users_device_is_taken_as_the_callers(
        call_server: LiveServer, make_device: MakeDevice) -> None:
    """bob calls alice. The server tells alice that bob's device in the call is mallory's (a
    real device of a real user; the server made the account) and relays bob's offer as that
    device's, signed with its key: alice's SDK checks it against mallory's key and answers it,
    in a call whose ``remote_user`` is bob (whose safety number she may have verified)."""
    key = new_private_key()
    mallory = await call_server.sign_up("mallory")
    registered = await call_server.http.post(
        "/v1/devices", headers={"Authorization": f"Bearer {mallory['token']}"},
        json={"kind": "sdk", "name": "mallory's", "identity_key": public_key_text(key)})
    assert registered.status_code == 201, registered.text
    mallory_device = registered.json()["device"]["id"]
    alice, bob = await make_device("alice"), await make_device("bob")
    async with AnotherUsersDevice(call_server.ws_url, bob.device_id or "", mallory["user"]["id"],
                                  mallory_device, key, alice.device_id or "") as proxy:
        await through(proxy, alice)
        await bob.call("alice", video=False)
        incoming = await alice.next_call(10)
        await incoming.answer()
        for _ in range(80):
            if proxy.sent or incoming.identity_failure is not None:
                break
            await asyncio.sleep(0.1)
        assert incoming.remote_user == bob.user_id
        assert not proxy.sent, (
            f"alice's SDK answered, in a call with bob, an offer from mallory's device {mallory_device} "
            f"(pinned: {alice.identity.pinned(mallory_device) if alice.identity else None})")
