"""``call.key``: sealed SFrame sender keys relayed between the joined devices of a call
(docs/protocol.md, "Calls"; docs/sframe.md, "Key distribution (the core)").

A real server on a free port and real WebSocket devices; the keys are made with the real
``facecall.e2ee.agreement`` and ``facecall.e2ee.media_keys`` functions and opened by the device
they reach, which proves that the server relayed them unchanged. Every refusal gets its code, the
connection stays up, and nothing reaches anyone."""

from __future__ import annotations

import asyncio
import copy
import json
import os
from dataclasses import dataclass, field
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from facecall.client.signaling import SignalingConnection, SignalingError
from facecall.e2ee.agreement import (
    AgreementKey,
    certify_agreement_key,
    new_agreement_key,
    verify_agreement_key,
)
from facecall.e2ee.identity import public_key_text
from facecall.e2ee.media_keys import MAX_RECIPIENTS, make_kid, open_sender_key, seal_sender_key
from facecall.signaling.effects import Deliver
from facecall.signaling.errors import ErrorCode, ProtocolError
from facecall.signaling.events import RELAY_KINDS, Answer, Relay
from facecall.signaling.machine import CallMachine
from facecall.signaling.protocol import MAX_FRAME_BYTES, parse_client_message, parse_server_message
from facecall.signaling.server_messages import CallKeyRelayed
from tests.live import LiveServer


@dataclass
class KeyDevice:
    """A device of a call with its own identity key and agreement key (made on the device)."""

    user_id: str
    device_id: str
    conn: SignalingConnection
    identity: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    agreement: X25519PrivateKey = field(default_factory=new_agreement_key)

    def certified(self) -> AgreementKey:
        """Its agreement key as another device takes it: the certificate checked with the
        identity key pinned for this device."""
        certificate = certify_agreement_key(self.identity, self.user_id, self.device_id, self.agreement)
        return verify_agreement_key(public_key_text(self.identity.public_key()), certificate,
                                    user_id=self.user_id, device_id=self.device_id)

    def seal(self, call_id: str, to: list[KeyDevice], base_key: bytes,
             number: int = 0) -> dict[str, object]:
        """This device's sender key ``base_key`` sealed to ``to``, in its wire form."""
        return seal_sender_key(self.identity, call_id, self.user_id, self.device_id,
                               make_kid(0x0A0B0C0D, number), base_key,
                               [device.certified() for device in to])

    def open(self, call_id: str, sender: KeyDevice, key: object) -> bytes:
        """Open this device's entry of ``key`` with the identity key pinned for ``sender``."""
        pinned = public_key_text(sender.identity.public_key())
        opened = open_sender_key(key, call_id=call_id, sender_key=pinned, user_id=self.user_id,
                                 device_id=self.device_id, agreement=self.agreement)
        assert (opened.sender_user, opened.sender_device) == (sender.user_id, sender.device_id)
        return opened.base_key


def device(account: dict[str, Any], conn: SignalingConnection) -> KeyDevice:
    return KeyDevice(account["user"]["id"], conn.device_id, conn)  # type: ignore[attr-defined]


@dataclass
class Call:
    call_id: str
    alice: KeyDevice
    bob: KeyDevice  # bob's device that answered
    bob_other: KeyDevice  # rang, answered elsewhere: in the call's legs, not joined
    carol: KeyDevice


async def group_call(server: LiveServer) -> Call:
    """alice calls bob (two devices; the second answers), bob invites carol, carol answers."""
    alice, (a1,) = await server.user_with_devices("alice", 1)
    bob, (b1, b2) = await server.user_with_devices("bob", 2)
    carol, (c1,) = await server.user_with_devices("carol", 1)
    call_id = (await a1.request("call.start", to=[bob["user"]["id"]], media="video"))["call_id"]
    for conn in (b1, b2):
        await conn.next_event("call.ring")
    await b2.request("call.answer", call_id=call_id)
    await b1.next_event("call.stop_ringing")
    await b2.request("call.invite", call_id=call_id, to=[carol["user"]["id"]])
    await c1.next_event("call.ring")
    await c1.request("call.answer", call_id=call_id)
    return Call(call_id, device(alice, a1), device(bob, b2), device(bob, b1), device(carol, c1))


async def no_key_event(*devices: KeyDevice, wait: float = 0.3) -> None:
    """None of ``devices`` gets a ``call.key`` within ``wait`` seconds."""
    await asyncio.sleep(wait)
    for dev in devices:
        while not dev.conn.events.empty():
            assert dev.conn.events.get_nowait()["type"] != "call.key", dev.device_id


async def refused(dev: KeyDevice, **fields: Any) -> SignalingError:
    with pytest.raises(SignalingError) as err:
        await dev.conn.request("call.key", **fields)
    assert err.value.message
    return err.value


async def test_a_sealed_key_reaches_each_addressed_joined_device_unchanged(server: LiveServer) -> None:
    call = await group_call(server)
    store = server.app.app.state.store
    version = (await store.load_call(call.call_id, with_rows=False)).version
    base_key = os.urandom(32)
    key = call.alice.seal(call.call_id, [call.bob, call.carol], base_key)

    for to in (call.bob, call.carol):  # one message, sent to each device it is sealed to
        ok = await call.alice.conn.request("call.key", call_id=call.call_id, to_device=to.device_id,
                                           key=key)
        assert set(ok) == {"v", "type", "re"}
        event = await to.conn.next_event("call.key")
        assert isinstance(parse_server_message(event), CallKeyRelayed)
        assert {k: v for k, v in event.items() if k != "seq"} == {
            "v": 1, "type": "call.key", "call_id": call.call_id, "from_user": call.alice.user_id,
            "from_device": call.alice.device_id, "key": key}
        assert to.open(call.call_id, call.alice, event["key"]) == base_key

    # the others send theirs back the same way; a key sealed to one device only is fine too
    answer = os.urandom(32)
    await call.bob.conn.request("call.key", call_id=call.call_id, to_device=call.alice.device_id,
                                key=call.bob.seal(call.call_id, [call.alice], answer))
    event = await call.alice.conn.next_event("call.key")
    assert event["from_device"] == call.bob.device_id
    assert call.alice.open(call.call_id, call.bob, event["key"]) == answer

    # nobody else heard of any of it, and nothing was written: a relay changes no state
    await no_key_event(call.bob_other, call.bob, call.carol)
    assert (await store.load_call(call.call_id, with_rows=False)).version == version


async def test_the_largest_key_fits_and_a_frame_over_the_limit_is_too_large(server: LiveServer) -> None:
    """A key sealed to 64 devices with the longest ids (the largest a message is) is about
    15 KB, well under the 64 KiB frame: it is relayed. A frame over the limit is
    ``too_large``, whatever it holds."""
    call = await group_call(server)
    others = [KeyDevice(f"user-{i}".ljust(64, "u"), f"device-{i}".ljust(64, "d"), call.carol.conn)
              for i in range(MAX_RECIPIENTS - 1)]
    key = call.alice.seal(call.call_id, [call.bob, *others], os.urandom(32))
    size = len(json.dumps({"v": 1, "id": "x", "type": "call.key", "call_id": call.call_id,
                           "to_device": call.bob.device_id, "key": key}))
    assert 14_000 < size < MAX_FRAME_BYTES // 4
    await call.alice.conn.request("call.key", call_id=call.call_id, to_device=call.bob.device_id, key=key)
    assert (await call.bob.conn.next_event("call.key"))["key"] == key

    # the size is checked before the id is read: the error answers no id (``re`` is null), so
    # the frame goes out as it is and its error comes among the events
    padded = {**key, "recipients": [*key["recipients"],  # type: ignore[list-item]
                                    {"user": "x", "device": "y", "sealed": "A" * MAX_FRAME_BYTES}]}
    raw = json.dumps({"v": 1, "id": "big", "type": "call.key", "call_id": call.call_id,
                      "to_device": call.bob.device_id, "key": padded})
    assert call.alice.conn._ws is not None
    await call.alice.conn._ws.send(raw)
    error = await call.alice.conn.next_event("error")
    assert (error["code"], error["re"]) == ("too_large", None)
    await no_key_event(call.bob)
    assert (await call.alice.conn.request("ping"))["type"] == "pong"


def too_many_recipients(key: dict[str, Any]) -> dict[str, Any]:
    entry = key["recipients"][0]
    extra = [{**entry, "device": f"device-{i}"} for i in range(MAX_RECIPIENTS)]
    return {**key, "recipients": [*key["recipients"], *extra]}


def changed(key: dict[str, Any], **fields: Any) -> dict[str, Any]:
    out = copy.deepcopy(key)
    out.update(fields)
    return out


async def test_every_bad_key_is_an_invalid_field_and_changes_nothing(server: LiveServer) -> None:
    call = await group_call(server)
    alice, bob, carol = call.alice, call.bob, call.carol
    key: dict[str, Any] = alice.seal(call.call_id, [bob, carol], os.urandom(32))  # type: ignore[assignment]
    to_bob = {"call_id": call.call_id, "to_device": bob.device_id}
    entry = key["recipients"][0]

    # the shape and size of facecall.e2ee.media_keys.parse_sender_key
    shapes = {
        "missing": None,
        "not an object": "a key",
        "a list": [key],
        "empty": {},
        "an extra field": changed(key, extra="x"),
        "a field missing": {k: v for k, v in key.items() if k != "epk"},
        "another version": changed(key, v="2"),
        "a number where a string goes": changed(key, v=1),
        "a kid with a leading zero": changed(key, kid="0" + key["kid"]),
        "a kid over 48 bits": changed(key, kid=str(1 << 48)),
        "a short epk": changed(key, epk=key["epk"][:-1]),
        "a small-order epk": changed(key, epk="A" * 43),
        "a sealed key cut short": changed(key, recipients=[{**entry, "sealed": entry["sealed"][:-4]}]),
        "a recipient with an extra field": changed(key, recipients=[{**entry, "x": "y"}]),
        "no recipients": changed(key, recipients=[]),
        "a device twice": changed(key, recipients=[entry, entry]),
        "the sender among its recipients": changed(
            key, recipients=[entry, {**entry, "device": alice.device_id}]),
        "more than 64 recipients": too_many_recipients(key),
        "a short signature": changed(key, signature=key["signature"][:-2]),
        "an id with a space": changed(key, sender_user="al ice"),
    }
    for what, bad in shapes.items():
        fields = to_bob if bad is None else {**to_bob, "key": bad}
        err = await refused(alice, **fields)
        assert (err.code, what) == ("invalid_field", what)
        assert err.message.startswith("key"), (what, err.message)

    # for another call than the message's
    err = await refused(alice, call_id=call.call_id, to_device=bob.device_id,
                        key=alice.seal("another-call", [bob], os.urandom(32)))
    assert err.code == "invalid_field" and "key.call_id" in err.message
    # not sealed to the device it is sent to (carol's device is joined, but not in this key)
    err = await refused(alice, call_id=call.call_id, to_device=carol.device_id,
                        key=alice.seal(call.call_id, [bob], os.urandom(32)))
    assert err.code == "invalid_field" and "key.recipients" in err.message
    # another device's key, even one signed by that device: a device sends only its own
    err = await refused(bob, call_id=call.call_id, to_device=carol.device_id, key=key)
    assert err.code == "invalid_field" and "key.sender_user" in err.message
    posing = KeyDevice(bob.user_id, call.bob_other.device_id, bob.conn)  # bob's other device
    err = await refused(bob, call_id=call.call_id, to_device=carol.device_id,
                        key=posing.seal(call.call_id, [carol], os.urandom(32)))
    assert err.code == "invalid_field" and "key.sender_device" in err.message
    posing = KeyDevice(carol.user_id, bob.device_id, bob.conn)  # bob's device, carol's name
    err = await refused(bob, call_id=call.call_id, to_device=alice.device_id,
                        key=posing.seal(call.call_id, [alice], os.urandom(32)))
    assert err.code == "invalid_field" and "key.sender_user" in err.message

    # nothing reached anyone, every connection is up, and the good key still goes through
    await no_key_event(alice, bob, carol, call.bob_other)
    for dev in (alice, bob, carol):
        assert (await dev.conn.request("ping"))["type"] == "pong"
    await alice.conn.request("call.key", key=key, **to_bob)
    assert (await bob.conn.next_event("call.key"))["key"] == key


async def test_keys_go_only_between_joined_devices_of_the_call(server: LiveServer) -> None:
    call = await group_call(server)
    alice, bob, carol, bob_other = call.alice, call.bob, call.carol, call.bob_other
    mallory_account, (m1,) = await server.user_with_devices("mallory", 1)
    mallory = device(mallory_account, m1)
    dave_account, (d1,) = await server.user_with_devices("dave", 1)
    dave = device(dave_account, d1)

    # a user never in the call, and a call that does not exist: nothing is learnt
    err = await refused(mallory, call_id=call.call_id, to_device=bob.device_id,
                        key=mallory.seal(call.call_id, [bob], os.urandom(32)))
    assert err.code == "unknown_call"
    err = await refused(alice, call_id="0" * 32, to_device=bob.device_id,
                        key=alice.seal("0" * 32, [bob], os.urandom(32)))
    assert err.code == "unknown_call"
    # bob's other device rang but another answered: it is not joined
    err = await refused(bob_other, call_id=call.call_id, to_device=alice.device_id,
                        key=bob_other.seal(call.call_id, [alice], os.urandom(32)))
    assert err.code == "not_in_call"
    # to a device that is not joined: bob's other device, dave ringing (invited), nobody
    await bob.conn.request("call.invite", call_id=call.call_id, to=[dave.user_id])
    await d1.next_event("call.ring")
    for target in (bob_other, dave, KeyDevice("nobody", "no-device", alice.conn)):
        err = await refused(alice, call_id=call.call_id, to_device=target.device_id,
                            key=alice.seal(call.call_id, [target], os.urandom(32)))
        assert (err.code, target.device_id) == ("not_allowed", target.device_id)
    # a ringing device may not send one either
    err = await refused(dave, call_id=call.call_id, to_device=alice.device_id,
                        key=dave.seal(call.call_id, [alice], os.urandom(32)))
    assert err.code == "not_in_call"

    # carol leaves: no key to her, none from her
    await carol.conn.request("call.hangup", call_id=call.call_id)
    err = await refused(alice, call_id=call.call_id, to_device=carol.device_id,
                        key=alice.seal(call.call_id, [carol], os.urandom(32)))
    assert err.code == "not_allowed"
    err = await refused(carol, call_id=call.call_id, to_device=alice.device_id,
                        key=carol.seal(call.call_id, [alice], os.urandom(32)))
    assert err.code == "not_in_call"

    # the call ends: it accepts nothing
    await d1.request("call.decline", call_id=call.call_id)
    await alice.conn.request("call.hangup", call_id=call.call_id)
    await bob.conn.next_event("call.ended")
    err = await refused(bob, call_id=call.call_id, to_device=alice.device_id,
                        key=bob.seal(call.call_id, [alice], os.urandom(32)))
    assert err.code == "call_ended"

    await no_key_event(alice, bob, carol, bob_other, mallory, dave)
    for dev in (alice, bob, carol, bob_other, mallory, dave):
        assert (await dev.conn.request("ping"))["type"] == "pong"


def test_the_parser_checks_the_key_against_the_message() -> None:
    """The model's own checks, without a server: the shape of the key (through
    ``parse_sender_key``), its call and its recipient; the sender is the machine's to check."""
    sender = KeyDevice("alice", "a1", None)  # type: ignore[arg-type]
    receiver = KeyDevice("bob", "b1", None)  # type: ignore[arg-type]
    key = sender.seal("c1", [receiver], bytes(32))

    def frame(**fields: Any) -> str:
        return json.dumps({"v": 1, "id": "m1", "type": "call.key", "call_id": "c1",
                           "to_device": "b1", "key": key, **fields})

    message = parse_client_message(frame())
    assert message.type == "call.key" and message.key == key  # type: ignore[union-attr]
    assert message.model_dump(mode="json")["key"] == key
    for fields, names in (({"call_id": "c2"}, "key.call_id"), ({"to_device": "b2"}, "key.recipients"),
                          ({"key": {**key, "kid": "x"}}, "KID"), ({"key": []}, "object")):
        with pytest.raises(ProtocolError) as err:
            parse_client_message(frame(**fields))
        assert (err.value.code, err.value.re) == (ErrorCode.INVALID_FIELD, "m1")
        assert names in err.value.message
    # a bad call_id is reported for itself, not again as a mismatch of the key
    with pytest.raises(ProtocolError) as err:
        parse_client_message(frame(call_id=""))
    assert "call_id" in err.value.message and "key.call_id" not in err.value.message


def joined_machine() -> CallMachine:
    """A call in which a1 (alice), b1 (bob) and c1 (carol) are joined; b2 (bob) rang."""
    machine = CallMachine.start(call_id="k1", media="video", caller_user="alice", caller_device="a1",
                                callees={"bob": ["b1", "b2"], "carol": ["c1"]}, now=0.0)
    machine.handle(Answer("bob", "b1"), 1.0)
    machine.handle(Answer("carol", "c1"), 1.0)
    machine.drain_effects()
    return machine


DEVICES = [("alice", "a1"), ("bob", "b1"), ("bob", "b2"), ("carol", "c1")]


@given(actor=st.sampled_from(DEVICES), claimed=st.sampled_from([*DEVICES, ("carol", "a1")]),
       target=st.sampled_from([d for _, d in DEVICES]))
def test_the_machine_relays_a_key_only_in_its_senders_own_name(
        actor: tuple[str, str], claimed: tuple[str, str], target: str) -> None:
    """Whatever device sends whatever device's key to whichever device: relayed exactly when
    the sender is a joined device, the key names it as its sender, and the target is another
    joined device; refused with the first of not_in_call, invalid_field, not_allowed, and
    nothing changes."""
    assert "call.key" in RELAY_KINDS
    machine = joined_machine()
    before = machine.to_dict()
    key = {"call_id": "k1", "sender_user": claimed[0], "sender_device": claimed[1], "recipients": []}
    relay = Relay(actor[0], actor[1], target, "call.key", {"key": key})
    joined = {"a1", "b1", "c1"}
    if actor[1] not in joined:
        expected: ErrorCode | None = ErrorCode.NOT_IN_CALL
    elif claimed != actor:
        expected = ErrorCode.INVALID_FIELD
    elif target not in joined or target == actor[1]:
        expected = ErrorCode.NOT_ALLOWED
    else:
        expected = None
    if expected is not None:
        with pytest.raises(ProtocolError) as err:
            machine.handle(relay, 2.0)
        assert err.value.code is expected
        assert machine.to_dict() == before and machine.drain_effects() == []
        return
    assert machine.handle(relay, 2.0) == {}
    (effect,) = machine.drain_effects()
    assert isinstance(effect, Deliver) and effect.device_id == target
    assert effect.message == {"v": 1, "type": "call.key", "call_id": "k1", "from_user": actor[0],
                              "from_device": actor[1], "key": key}
