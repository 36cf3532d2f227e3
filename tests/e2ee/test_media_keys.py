"""Per-sender media keys (facecall.e2ee.agreement, facecall.e2ee.media_keys): the known answer
both clients check (tests/web/test_media_keys_js.py), round trips, the rotation rules, and every
kind of bad input refused with its own error."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from facecall.e2ee.agreement import (
    SMALL_ORDER_U,
    AgreementKey,
    MalformedMessage,
    MediaKeyError,
    MessageTooLarge,
    SmallOrderKey,
    UncertifiedKey,
    agreement_private_from_text,
    agreement_private_text,
    agreement_public_from_text,
    agreement_public_text,
    agreement_statement,
    b64,
    certify_agreement_key,
    new_agreement_key,
    shared_secret,
    verify_agreement_key,
)
from facecall.e2ee.identity import public_key_text
from facecall.e2ee.media_keys import (
    MAX_RECIPIENTS,
    BadSignature,
    KeyConflict,
    KeysExhausted,
    NotAddressedToMe,
    OpenedKey,
    ReceivedKeys,
    SenderKeys,
    StaleKey,
    TooManySenders,
    UndecryptableEntry,
    WrongCall,
    make_kid,
    open_sender_key,
    parse_sender_key,
    seal_context,
    seal_sender_key,
)
from facecall.e2ee.sframe import CipherSuite, Receiver, Sender

P = 2**255 - 19
#: RFC 8032 §7.1 TEST 1's seed: the sender's identity key (tests/e2ee/test_identity.py)
SENDER_SEED = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
#: RFC 7748 §6.1: Alice's private key is the ephemeral, Bob's is device-b's agreement key, and
#: their shared secret is the RFC's
ALICE = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"
BOB = "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"
RFC7748_SHARED = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"
CAROL = bytes(range(32, 64)).hex()  # device-c's agreement key
B_IDENTITY_SEED = bytes(32).hex()  # device-b's identity key
BASE_KEY = bytes(range(32))
TAG, NUMBER = 0x01020304, 5
KID = make_kid(TAG, NUMBER)
CALL = "call-1"

#: device-b's certificate: its identity key's signature over its agreement key (deterministic)
KNOWN_CERTIFICATE = {
    "user_id": "user-b", "device_id": "device-b", "key": "3p7bfXt9wbTTW2HC7OQ1Nz-DQ8hbeGdNrfx-FG-IK08",
    "signature": "XFIGRD9V37UUuV51KXOm5AR_Rvxqh-sHFSW2kGmI9abOePH7qrv_ejok06_M0v8NPBMK_b6XqFUraXi7CsPHBw",
}
#: BASE_KEY for KID sealed by device-a to device-b and device-c with the ephemeral ALICE
KNOWN_MESSAGE = {
    "v": "1", "call_id": "call-1", "sender_user": "user-a", "sender_device": "device-a",
    "kid": "1108152156165", "epk": "hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo",
    "recipients": [
        {"user": "user-b", "device": "device-b",
         "sealed": "DvL06i5bFaiWfyHZsYhct1C24wdsTI7ZHMRTVcvQ6MTTg0-j6K515URhfKOgQ5FQ"},
        {"user": "user-c", "device": "device-c",
         "sealed": "hGIM1p4EvQd9ARDrnCeBO3M4J0w1dkxqDadMSH7PJ3EQjOpygskm97NbWQSZRe8z"},
    ],
    "signature": "FHqmEez0LiuykIl2YkIe1CFb4NTwXAOMOwij7JdIF_qLADe8j6x6wJ_d4lJAFepciDmqSccXb6GDLnH5uAPXDw",
}


def ed(seed_hex: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(seed_hex))


def x(hex_: str) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(bytes.fromhex(hex_))


SENDER = ed(SENDER_SEED)
SENDER_PUBLIC = public_key_text(SENDER)


def agreement(user: str, device: str, key: X25519PrivateKey) -> AgreementKey:
    return AgreementKey(user, device, key.public_key(), agreement_public_text(key))


def known_recipients() -> list[AgreementKey]:
    b = verify_agreement_key(public_key_text(ed(B_IDENTITY_SEED)), KNOWN_CERTIFICATE,
                             user_id="user-b", device_id="device-b")
    return [b, agreement("user-c", "device-c", x(CAROL))]


def open_as_b(message: object, *, call_id: str = CALL, sender_key: str = SENDER_PUBLIC,
              user_id: str = "user-b", device_id: str = "device-b",
              key: X25519PrivateKey | None = None) -> OpenedKey:
    return open_sender_key(message, call_id=call_id, sender_key=sender_key, user_id=user_id,
                           device_id=device_id, agreement=key or x(BOB))


def resign(message: dict[str, Any], identity: Ed25519PrivateKey = SENDER) -> dict[str, Any]:
    """``message`` signed again (what a sender, not a server, can do)."""
    parsed = parse_sender_key({**message, "signature": "A" * 86})
    return {**message, "signature": b64(identity.sign(parsed.statement()))}


# -- known answers -----------------------------------------------------------------------------------

def test_the_known_answer() -> None:
    assert shared_secret(x(ALICE), x(BOB).public_key()).hex() == RFC7748_SHARED  # RFC 7748 §6.1
    assert certify_agreement_key(ed(B_IDENTITY_SEED), "user-b", "device-b", x(BOB)) == KNOWN_CERTIFICATE
    assert agreement_statement("user-b", "device-b", KNOWN_CERTIFICATE["key"]) == (
        b"facecall agreement v1\nuser-b\ndevice-b\n" + KNOWN_CERTIFICATE["key"].encode())
    assert seal_context(CALL, "user-a", "device-a", "user-b", "device-b", KID, "E", "R") == (
        b"facecall sender key seal v1\ncall-1\nuser-a\ndevice-a\nuser-b\ndevice-b\n1108152156165\nE\nR")
    message = seal_sender_key(SENDER, CALL, "user-a", "device-a", KID, BASE_KEY, known_recipients(),
                              ephemeral=x(ALICE))
    assert message == KNOWN_MESSAGE
    assert parse_sender_key(message).statement() == (
        "facecall sender key v1\ncall-1\nuser-a\ndevice-a\n1108152156165\n"
        f"{message['epk']}\n2\nuser-b\ndevice-b\n{message['recipients'][0]['sealed']}\n"  # type: ignore[index]
        f"user-c\ndevice-c\n{message['recipients'][1]['sealed']}").encode()  # type: ignore[index]
    assert open_as_b(message) == OpenedKey(CALL, "user-a", "device-a", KID, BASE_KEY)
    assert open_as_b(message, user_id="user-c", device_id="device-c", key=x(CAROL)).base_key == BASE_KEY
    assert json.loads(json.dumps(message)) == message  # the wire form is JSON


def test_keys_round_trip_through_their_text() -> None:
    key = new_agreement_key()
    again = agreement_private_from_text(agreement_private_text(key))
    assert agreement_public_text(again) == agreement_public_text(key)
    assert agreement_public_text(agreement_public_from_text(agreement_public_text(key))) == (
        agreement_public_text(key))


# -- agreement keys ----------------------------------------------------------------------------------

#: libsodium's blocklist of X25519 public keys (ed25519_ref10.c): 0, 1, the two points of order
#: 8, p-1, p and p+1, little-endian; written out here so that the module's list is checked
LIBSODIUM_BLOCKLIST = [
    "00" * 32, "01" + "00" * 31,
    "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
    "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
    "ec" + "ff" * 30 + "7f", "ed" + "ff" * 30 + "7f", "ee" + "ff" * 30 + "7f",
]


def test_the_small_order_list_is_libsodiums() -> None:
    assert {int.from_bytes(bytes.fromhex(h), "little") % P for h in LIBSODIUM_BLOCKLIST} == SMALL_ORDER_U


def small_order_encodings() -> list[bytes]:
    """Every 32-byte encoding of a small-order u: top bit set or not, p and p+1 for 0 and 1."""
    out = []
    for u in sorted(int.from_bytes(bytes.fromhex(h), "little") % P for h in LIBSODIUM_BLOCKLIST[:5]):
        for value in (u, u + P):
            if value < 2**255:
                out += [value.to_bytes(32, "little"), (value | 1 << 255).to_bytes(32, "little")]
    return out


@pytest.mark.parametrize("raw", small_order_encodings(), ids=lambda r: r.hex()[:8] + r.hex()[-2:])
def test_small_order_keys_are_refused(raw: bytes) -> None:
    # the list is right: X25519 with each gives all zeros (OpenSSL refuses the result)
    with pytest.raises(SmallOrderKey):
        shared_secret(new_agreement_key(), X25519PublicKey.from_public_bytes(raw))
    with pytest.raises(SmallOrderKey):
        agreement_public_from_text(b64(raw))
    certificate = {**KNOWN_CERTIFICATE, "key": b64(raw)}
    with pytest.raises(SmallOrderKey):
        verify_agreement_key(public_key_text(ed(B_IDENTITY_SEED)), certificate, user_id="user-b",
                             device_id="device-b")
    with pytest.raises(SmallOrderKey):  # an ephemeral key of small order, even signed
        open_as_b({**KNOWN_MESSAGE, "epk": b64(raw)})


def test_a_key_of_large_order_is_not_refused() -> None:
    for _ in range(50):
        agreement_public_from_text(agreement_public_text(new_agreement_key()))


def test_uncertified_agreement_keys_are_refused() -> None:
    b_identity = public_key_text(ed(B_IDENTITY_SEED))
    verify_agreement_key(b_identity, KNOWN_CERTIFICATE, user_id="user-b", device_id="device-b")
    with pytest.raises(UncertifiedKey, match="not certified"):  # signed by another key
        verify_agreement_key(SENDER_PUBLIC, KNOWN_CERTIFICATE, user_id="user-b", device_id="device-b")
    with pytest.raises(UncertifiedKey, match="not certified"):  # the server's key in its place
        verify_agreement_key(b_identity, {**KNOWN_CERTIFICATE, "key": agreement_public_text(x(ALICE))},
                             user_id="user-b", device_id="device-b")
    with pytest.raises(UncertifiedKey, match="for device device-b"):  # another device's certificate
        verify_agreement_key(b_identity, KNOWN_CERTIFICATE, user_id="user-b", device_id="device-x")
    with pytest.raises(UncertifiedKey):
        verify_agreement_key(b_identity, KNOWN_CERTIFICATE, user_id="user-x", device_id="device-b")
    forged = certify_agreement_key(SENDER, "user-b", "device-b", x(ALICE))  # by device-a's key
    with pytest.raises(UncertifiedKey):
        verify_agreement_key(b_identity, forged, user_id="user-b", device_id="device-b")
    with pytest.raises(UncertifiedKey):  # an identity key of small order verifies nothing
        verify_agreement_key("A" * 43, KNOWN_CERTIFICATE, user_id="user-b", device_id="device-b")


@pytest.mark.parametrize("change", [
    {"signature": KNOWN_CERTIFICATE["signature"][:-1] + "x"}, {"signature": 5}, {"key": "A" * 42},
    {"key": KNOWN_CERTIFICATE["key"][:-1] + "P"}, {"user_id": "user b"}, {"device_id": "d" * 65},
    {"extra": "1"},
])
def test_malformed_certificates_are_refused(change: dict[str, object]) -> None:
    with pytest.raises(MalformedMessage):
        verify_agreement_key(public_key_text(ed(B_IDENTITY_SEED)), {**KNOWN_CERTIFICATE, **change},
                             user_id="user-b", device_id="device-b")
    with pytest.raises(MalformedMessage):
        verify_agreement_key(SENDER_PUBLIC, [KNOWN_CERTIFICATE], user_id="user-b", device_id="device-b")


# -- opening: each refusal its own error ------------------------------------------------------------

def test_any_flipped_bit_of_the_message_is_refused() -> None:
    """Every single-bit change of the wire JSON is refused: by the JSON parser, or with a
    MediaKeyError; none opens."""
    data = json.dumps(KNOWN_MESSAGE, separators=(",", ":")).encode()
    refused = 0
    for i in range(len(data)):
        for bit in range(8):
            flipped = bytearray(data)
            flipped[i] ^= 1 << bit
            try:
                message = json.loads(bytes(flipped))
            except ValueError:
                continue
            with pytest.raises(MediaKeyError):
                open_as_b(message)
            refused += 1
    assert refused > len(data) * 4


@pytest.mark.parametrize("path", [("sender_user",), ("sender_device",), ("kid",), ("epk",),
                                  ("recipients", 0, "sealed"), ("recipients", 1, "sealed"),
                                  ("recipients", 1, "user"), ("signature",)])
def test_a_changed_field_breaks_the_signature(path: tuple[Any, ...]) -> None:
    message = copy.deepcopy(KNOWN_MESSAGE)
    *parents, last = path
    holder: Any = message
    for step in parents:
        holder = holder[step]
    if last == "kid":
        holder[last] = str(KID + 1)
    elif last in ("user",):
        holder[last] = "user-x"
    else:  # flip one bit of the bytes and write them canonically again
        raw = bytearray(base64.urlsafe_b64decode(holder[last] + "=" * (-len(holder[last]) % 4)))
        raw[3] ^= 0x10
        holder[last] = b64(bytes(raw))
    with pytest.raises(BadSignature):
        open_as_b(message)


def test_another_call_another_signer_another_recipient() -> None:
    with pytest.raises(WrongCall):  # replayed into another call
        open_as_b(KNOWN_MESSAGE, call_id="call-2")
    with pytest.raises(BadSignature):  # ... with its call id rewritten to fit
        open_as_b({**KNOWN_MESSAGE, "call_id": "call-2"}, call_id="call-2")
    with pytest.raises(BadSignature):  # checked with another device's key
        open_as_b(KNOWN_MESSAGE, sender_key=public_key_text(ed(B_IDENTITY_SEED)))
    with pytest.raises(BadSignature):  # signed by another key
        open_as_b(resign(KNOWN_MESSAGE, ed(B_IDENTITY_SEED)))
    with pytest.raises(NotAddressedToMe):  # a device not in the list
        open_as_b(KNOWN_MESSAGE, device_id="device-d")
    with pytest.raises(NotAddressedToMe):  # the device is, as another user's
        open_as_b(KNOWN_MESSAGE, user_id="user-x")
    with pytest.raises(UndecryptableEntry):  # sealed to another agreement key of mine
        open_as_b(KNOWN_MESSAGE, key=new_agreement_key())


def test_entries_moved_between_devices_or_messages_are_refused() -> None:
    fresh = seal_sender_key(SENDER, CALL, "user-a", "device-a", KID, BASE_KEY, known_recipients())
    assert open_as_b(resign(fresh)).base_key == BASE_KEY
    entries = fresh["recipients"]
    assert isinstance(entries, list)
    swapped = [{**entries[0], "sealed": entries[1]["sealed"]},
               {**entries[1], "sealed": entries[0]["sealed"]}]
    with pytest.raises(BadSignature):  # by the server
        open_as_b({**fresh, "recipients": swapped})
    # by a sender (its own signature is good): the entry is bound to its ids and call
    with pytest.raises(UndecryptableEntry):
        open_as_b(resign({**fresh, "recipients": swapped}))
    with pytest.raises(UndecryptableEntry):  # device-b's entry of call-1 in a message for call-2
        open_as_b(resign({**fresh, "call_id": "call-2"}), call_id="call-2")
    # a participant copying device-a's entry into a message of its own: not device-a's key
    stolen = resign({**fresh, "sender_device": "device-m"}, ed(B_IDENTITY_SEED))
    with pytest.raises(UndecryptableEntry):
        open_as_b(stolen, sender_key=public_key_text(ed(B_IDENTITY_SEED)))
    with pytest.raises(UndecryptableEntry):  # or under another KID of the sender
        open_as_b(resign({**fresh, "kid": str(KID + 1)}))


def test_too_many_recipients() -> None:
    last = new_agreement_key()
    keys = [agreement(f"user-{i}", f"device-{i}", new_agreement_key()) for i in range(MAX_RECIPIENTS)]
    keys.append(agreement("user-64", "device-64", last))
    message = seal_sender_key(SENDER, CALL, "user-a", "device-a", KID, BASE_KEY, keys[1:])  # 64: fine
    assert open_as_b(message, user_id="user-64", device_id="device-64", key=last).base_key == BASE_KEY
    with pytest.raises(MessageTooLarge):
        seal_sender_key(SENDER, CALL, "user-a", "device-a", KID, BASE_KEY, keys)
    entries = message["recipients"]
    assert isinstance(entries, list)
    with pytest.raises(MessageTooLarge):
        open_as_b({**message, "recipients": [*entries, {**entries[0], "device": "device-z"}]})
    with pytest.raises(MessageTooLarge):
        open_as_b({**message, "recipients": entries * 1000})


def test_the_largest_message_fits_a_signaling_frame() -> None:
    keys = [agreement("u" * 62 + f"{i:02}", "d" * 62 + f"{i:02}", new_agreement_key())
            for i in range(MAX_RECIPIENTS)]
    message = seal_sender_key(SENDER, "c" * 64, "u" * 64, "x" * 64, 2**48 - 1, BASE_KEY, keys)
    assert 15_000 < len(json.dumps(message, separators=(",", ":"))) < 16 * 1024


ENTRY = KNOWN_MESSAGE["recipients"][0]  # type: ignore[index]


@pytest.mark.parametrize("change", [
    {"v": "2"}, {"v": 1}, {"kid": "01"}, {"kid": "-1"}, {"kid": str(2**48)}, {"kid": KID},
    {"kid": " 5"}, {"call_id": ""}, {"call_id": "call 1"}, {"call_id": "c" * 65},
    {"sender_user": None}, {"sender_device": "device-é"}, {"epk": "A" * 42},
    {"epk": KNOWN_MESSAGE["epk"][:-1] + "p"}, {"epk": "*" * 43}, {"signature": "A" * 85},
    {"recipients": {}}, {"recipients": []}, {"recipients": [ENTRY, ENTRY]},
    {"recipients": [{**ENTRY, "device": "device-a"}]}, {"recipients": [{**ENTRY, "extra": ""}]},
    {"recipients": [{**ENTRY, "sealed": ENTRY["sealed"][:-1]}]}, {"recipients": ["x"]},
    {"recipients": [{**ENTRY, "user": 3}]}, {"extra": "1"},
])
def test_malformed_messages_are_refused(change: dict[str, object]) -> None:
    with pytest.raises(MalformedMessage):
        open_as_b({**KNOWN_MESSAGE, **change})


@pytest.mark.parametrize("message", [None, [], "x", {k: v for k, v in KNOWN_MESSAGE.items() if k != "kid"}])
def test_what_is_no_message_is_refused(message: object) -> None:
    with pytest.raises(MalformedMessage):
        open_as_b(message)


def test_sealing_refuses_bad_recipient_lists_and_keys() -> None:
    b, c = known_recipients()
    with pytest.raises(MalformedMessage):
        seal_sender_key(SENDER, CALL, "user-a", "device-a", KID, BASE_KEY, [b, b])
    with pytest.raises(MalformedMessage):
        seal_sender_key(SENDER, CALL, "user-a", "device-b", KID, BASE_KEY, [b, c])
    with pytest.raises(MessageTooLarge):
        seal_sender_key(SENDER, CALL, "user-a", "device-a", KID, BASE_KEY, [])
    with pytest.raises(ValueError):
        seal_sender_key(SENDER, CALL, "user-a", "device-a", KID, BASE_KEY[:16], [b])
    with pytest.raises(MalformedMessage):
        seal_sender_key(SENDER, CALL, "user-a", "device-a", 2**48, BASE_KEY, [b])


@settings(max_examples=25, deadline=None)
@given(ids=st.lists(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=64),
                    min_size=4, max_size=8, unique=True),
       kid=st.integers(0, 2**48 - 1), base_key=st.binary(min_size=32, max_size=32))
def test_round_trips(ids: list[str], kid: int, base_key: bytes) -> None:
    call_id, sender_user, sender_device, *devices = ids
    keys = {d: new_agreement_key() for d in devices}
    identity = Ed25519PrivateKey.generate()
    message = seal_sender_key(identity, call_id, sender_user, sender_device, kid, base_key,
                              [agreement(f"u{d}", d, k) for d, k in keys.items()])
    message = json.loads(json.dumps(message))
    assert parse_sender_key(message).wire() == message
    for d, k in keys.items():
        assert open_sender_key(message, call_id=call_id, sender_key=public_key_text(identity),
                               user_id=f"u{d}", device_id=d, agreement=k) == (
            call_id, sender_user, sender_device, kid, base_key)


# -- rotation ----------------------------------------------------------------------------------------

class Device:
    def __init__(self, name: str) -> None:
        self.user, self.device = f"user-{name}", f"device-{name}"
        self.identity, self.key = Ed25519PrivateKey.generate(), new_agreement_key()
        certificate = certify_agreement_key(self.identity, self.user, self.device, self.key)
        self.agreement = verify_agreement_key(public_key_text(self.identity), certificate,
                                              user_id=self.user, device_id=self.device)

    def open(self, message: object, sender: Device) -> OpenedKey:
        return open_sender_key(message, call_id=CALL, sender_key=public_key_text(sender.identity),
                               user_id=self.user, device_id=self.device, agreement=self.key)


def test_rotation_on_leave_and_join() -> None:
    a, b, c, d = (Device(n) for n in "abcd")
    keys = SenderKeys(a.identity, CALL, a.user, a.device, tag=TAG)
    first = keys.rotate([b.agreement, c.agreement])
    assert keys.kid == make_kid(TAG, 0) and keys.members == {b.device, c.device}
    assert b.open(first, a).base_key == c.open(first, a).base_key == keys.base_key
    # c leaves: a new KID and key, sealed to b only; c cannot open it
    second = keys.rotate([b.agreement])
    assert keys.kid == make_kid(TAG, 1) and keys.base_key != b.open(first, a).base_key
    assert b.open(second, a).base_key == keys.base_key
    with pytest.raises(NotAddressedToMe):
        c.open(second, a)
    # d joins: a new key again, so d cannot read what was sent before it joined
    third = keys.rotate([b.agreement, d.agreement])
    assert d.open(third, a).kid == make_kid(TAG, 2)
    for earlier in (first, second):
        with pytest.raises(NotAddressedToMe):
            d.open(earlier, a)
    # the current key again, to a device that has it; never to one that does not
    assert b.open(keys.reseal([b.agreement]), a) == b.open(third, a)
    with pytest.raises(MediaKeyError, match="rotate"):
        keys.reseal([c.agreement])
    kids = {make_kid(TAG, n) for n in range(3)}
    assert len(kids) == 3 and len({SenderKeys(a.identity, CALL, a.user, a.device).tag for _ in range(8)}) > 1


def test_a_sender_runs_out_of_kids_rather_than_reuse_one() -> None:
    a, b = Device("a"), Device("b")
    keys = SenderKeys(a.identity, CALL, a.user, a.device, tag=TAG)
    keys._next = 0xFFFF
    keys.rotate([b.agreement])
    assert keys.kid == make_kid(TAG, 0xFFFF)
    with pytest.raises(KeysExhausted):
        keys.rotate([b.agreement])
    with pytest.raises(MediaKeyError):
        SenderKeys(a.identity, CALL, a.user, a.device).reseal([b.agreement])


def opened(device: str, tag: int, number: int, key: bytes | None = None, call_id: str = CALL) -> OpenedKey:
    return OpenedKey(call_id, "user", device, make_kid(tag, number), key or bytes([number]) * 32)


def test_received_keys_grace_and_order() -> None:
    keys = ReceivedKeys(CALL, grace=5.0)
    k0, k1, k2 = (make_kid(7, n) for n in range(3))
    assert keys.add(opened("b", 7, 0), 0.0) == ([], [("b", k0, bytes([0]) * 32)])
    assert keys.add(opened("b", 7, 0), 0.5) == ([], [])  # the same key again: nothing to do
    assert keys.get_timer() is None
    assert keys.add(opened("b", 7, 1), 1.0) == ([], [("b", k1, bytes([1]) * 32)])
    assert keys.held() == {("b", k0), ("b", k1)} and keys.get_timer() == 6.0 and keys.senders() == {"b"}
    assert keys.handle_timer(5.9) == ([], [])
    assert keys.handle_timer(6.0) == ([("b", k0)], [])
    assert keys.held() == {("b", k1)}
    with pytest.raises(StaleKey):  # a replay of the old key
        keys.add(opened("b", 7, 0), 7.0)
    with pytest.raises(KeyConflict):
        keys.add(opened("b", 7, 1, key=bytes(32)), 7.0)
    # two new keys in a row: only the latest previous one is kept
    keys.add(opened("b", 7, 2), 8.0)
    assert keys.add(opened("b", 7, 5), 8.1) == ([("b", k1)], [("b", make_kid(7, 5), bytes([5]) * 32)])
    assert keys.held() == {("b", k2), ("b", make_kid(7, 5))}
    with pytest.raises(WrongCall):
        keys.add(opened("b", 7, 9, call_id="call-2"), 9.0)


def test_received_keys_keep_each_senders_tags_apart() -> None:
    """Tags are a sender's own: another device under b's tag (even b's very KID, with another
    key) is another key store, and takes nothing of b's (a member cannot squat a tag)."""
    keys = ReceivedKeys(CALL)
    keys.add(opened("b", 7, 0), 0.0)
    assert keys.add(opened("c", 7, 0, key=bytes(32)), 0.0) == ([], [("c", make_kid(7, 0), bytes(32))])
    assert keys.add(opened("c", 7, 1), 0.0) == ([], [("c", make_kid(7, 1), bytes([1]) * 32)])
    assert keys.add(opened("b", 7, 1), 0.0) == ([], [("b", make_kid(7, 1), bytes([1]) * 32)])
    assert keys.senders() == {"b", "c"}
    assert keys.remove_sender("c") == ([("c", make_kid(7, 1)), ("c", make_kid(7, 0))], [])
    assert keys.held() == {("b", make_kid(7, 0)), ("b", make_kid(7, 1))}


def test_received_keys_restart_leave_and_cap() -> None:
    keys = ReceivedKeys(CALL, grace=1.0, max_senders=2)
    keys.add(opened("b", 7, 3), 0.0)
    assert keys.add(opened("b", 9, 0), 1.0) == ([], [("b", make_kid(9, 0), bytes(32))])  # b restarted
    with pytest.raises(StaleKey):  # its earlier tag is over
        keys.add(opened("b", 7, 4), 1.5)
    keys.add(opened("c", 7, 4), 1.5)  # for b only: c's own tag
    assert keys.remove_sender("b") == ([("b", make_kid(9, 0)), ("b", make_kid(7, 3))], [])
    assert keys.held() == {("c", make_kid(7, 4))} and keys.get_timer() is None
    assert keys.remove_sender("b") == ([], [])
    keys.add(opened("d", 2, 0), 2.0)  # room made by forgetting b, who left
    with pytest.raises(TooManySenders):
        keys.add(opened("e", 3, 0), 2.0)


def test_keys_reach_sframe() -> None:
    """A sender's key, sealed, opened and taken by ReceivedKeys, decrypts its SFrame frames."""
    a, b = Device("a"), Device("b")
    sending = SenderKeys(a.identity, CALL, a.user, a.device)
    received = ReceivedKeys(CALL)
    suite = CipherSuite.AES_128_GCM_SHA256_128
    sender, receiver = Sender(suite), Receiver(suite)
    for now, members in enumerate(([b.agreement], [b.agreement])):
        message = sending.rotate(members)
        assert sending.kid is not None and sending.base_key is not None
        sender.add_key(sending.kid, sending.base_key)
        removed, added = received.add(b.open(message, a), float(now))
        for device, kid in removed:
            assert device == a.device
            receiver.remove_key(kid)
        for device, kid, key in added:
            assert device == a.device
            receiver.add_key(kid, key)
        assert receiver.decrypt_frame(b"", sender.encrypt(sending.kid, b"", b"frame")) == (
            sending.kid, 0, b"frame")


#: a receiver's life (max_senders=3, grace 5 s), run by Python here and by media-keys.js in
#: tests/web/test_media_keys_js.py: ["add", sender device, tag, number, now] (the key is
#: number + 1 in every byte), "conflict" (the same with another key), "other-call", "timer",
#: "remove"
SCENARIO: list[list[Any]] = [
    ["add", "b", 7, 0, 0.0], ["add", "b", 7, 0, 0.5], ["add", "b", 7, 1, 1.0], ["timer", 5.9],
    ["timer", 6.0], ["add", "b", 7, 0, 7.0], ["conflict", "b", 7, 1, 7.0], ["add", "c", 7, 2, 7.0],
    ["add", "c", 8, 0, 7.0], ["add", "b", 9, 0, 8.0], ["add", "b", 7, 5, 8.5], ["add", "b", 9, 3, 9.0],
    ["remove", "b"], ["remove", "b"], ["add", "d", 10, 0, 9.0], ["add", "e", 11, 0, 9.0],
    ["add", "f", 12, 0, 9.0], ["other-call", "c", 8, 1, 9.0], ["remove", "c"], ["add", "f", 12, 0, 9.5],
]


def run_scenario(ops: list[list[Any]]) -> list[Any]:
    """Each step's changes ``[removed, added, timer, held]`` (``[device, KID]`` pairs, held
    sorted), or its error's name."""
    keys, out = ReceivedKeys(CALL, grace=5.0, max_senders=3), []
    for op, *args in ops:
        try:
            if op == "timer":
                removed, added = keys.handle_timer(args[0])
            elif op == "remove":
                removed, added = keys.remove_sender(args[0])
            else:
                device, tag, number, now = args
                key = bytes(32) if op == "conflict" else bytes([number + 1]) * 32
                call_id = "call-2" if op == "other-call" else CALL
                removed, added = keys.add(OpenedKey(call_id, "user", device, make_kid(tag, number), key), now)
                assert all(k == bytes([(kid & 0xFFFF) + 1]) * 32 for _, kid, k in added)
        except MediaKeyError as error:
            out.append(type(error).__name__)
            continue
        out.append([[list(r) for r in removed], [[d, kid] for d, kid, _ in added], keys.get_timer(),
                    sorted([d, kid] for d, kid in keys.held())])
    return out


def test_a_receivers_life() -> None:
    def k(device: str, tag: int, number: int) -> list[Any]:
        return [device, make_kid(tag, number)]

    assert run_scenario(SCENARIO) == [
        [[], [k("b", 7, 0)], None, [k("b", 7, 0)]], [[], [], None, [k("b", 7, 0)]],
        [[], [k("b", 7, 1)], 6.0, [k("b", 7, 0), k("b", 7, 1)]],
        [[], [], 6.0, [k("b", 7, 0), k("b", 7, 1)]],
        [[k("b", 7, 0)], [], None, [k("b", 7, 1)]], "StaleKey", "KeyConflict",
        [[], [k("c", 7, 2)], None, [k("b", 7, 1), k("c", 7, 2)]],  # b's tag, c's own key
        [[], [k("c", 8, 0)], 12.0, [k("b", 7, 1), k("c", 7, 2), k("c", 8, 0)]],  # c restarted
        [[], [k("b", 9, 0)], 12.0, [k("b", 7, 1), k("b", 9, 0), k("c", 7, 2), k("c", 8, 0)]],  # b too
        "StaleKey",
        [[k("b", 7, 1)], [k("b", 9, 3)], 12.0, [k("b", 9, 0), k("b", 9, 3), k("c", 7, 2), k("c", 8, 0)]],
        [[k("b", 9, 3), k("b", 9, 0)], [], 12.0, [k("c", 7, 2), k("c", 8, 0)]],
        [[], [], 12.0, [k("c", 7, 2), k("c", 8, 0)]],
        [[], [k("d", 10, 0)], 12.0, [k("c", 7, 2), k("c", 8, 0), k("d", 10, 0)]],
        # b, departed, forgotten
        [[], [k("e", 11, 0)], 12.0, [k("c", 7, 2), k("c", 8, 0), k("d", 10, 0), k("e", 11, 0)]],
        "TooManySenders", "WrongCall",
        [[k("c", 8, 0), k("c", 7, 2)], [], None, [k("d", 10, 0), k("e", 11, 0)]],
        [[], [k("f", 12, 0)], None, [k("d", 10, 0), k("e", 11, 0), k("f", 12, 0)]],
    ]
