"""Per-sender media keys: a sender device's SFrame ``base_key`` (RFC 9605 §4.4.2), sealed to each
other device of the call, and the rules for rotating them (docs/sframe.md, "Key distribution (the
core)"). The pure core: no I/O, no clock (callers pass ``now``).

**Sealing** (in the spirit of HPKE base mode, RFC 9180 §5.1, with DHKEM(X25519) and AES-256-GCM;
the differences are in docs/sframe.md). A sender makes one ephemeral X25519 key per message
(RFC 7748 §6.1) and, for each recipient device whose agreement key it checked
(facecall.e2ee.agreement), computes::

    context = "facecall sender key seal v1\\n" + call_id + "\\n" + sender_user + "\\n"
              + sender_device + "\\n" + recipient_user + "\\n" + recipient_device + "\\n"
              + kid + "\\n" + epk + "\\n" + recipient_key
    dh = X25519(ephemeral, recipient_key)                  (all zeros refused, RFC 7748 §6.1)
    key || nonce = HKDF-SHA256(salt="", IKM=dh, info=context, L=44)        (RFC 5869 §2)
    sealed = AES-256-GCM(key, nonce, plaintext=base_key, aad=context)      (32 + 16 bytes)

(``kid`` in decimal, keys as 43-character base64url). The nonce is derived, so the message is a
function of the ephemeral key: the tests pin it. The whole message is signed by the sender's
Ed25519 identity key (RFC 8032 §5.1.6) over::

    "facecall sender key v1\\n" + call_id + "\\n" + sender_user + "\\n" + sender_device + "\\n"
    + kid + "\\n" + epk + "\\n" + n + ("\\n" + user + "\\n" + device + "\\n" + sealed) * n

**Wire form** (JSON, strings only): ``{"v": "1", "call_id", "sender_user", "sender_device",
"kid", "epk", "recipients": [{"user", "device", "sealed"}, ...], "signature"}``; at most
:data:`MAX_RECIPIENTS` recipients, each device once, never the sender itself.

**KIDs** (RFC 9605 §4.3): ``tag << 16 | number``, ``tag`` a random 32-bit value a sender picks
for the call, ``number`` its key count (0-65535). KIDs never repeat for a sender in a call; a
receiver refuses an older number than one it has from that sender (:class:`StaleKey`). KIDs
are unique per sender only: a receiver keeps each sender device's keys apart and decrypts a
frame with the keys of the device it comes from (the one the SFU says fills the slot), so two
senders may use one tag and neither can take the other's.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from facecall.e2ee.agreement import (
    AgreementKey,
    BadSignature,
    KeyConflict,
    KeysExhausted,
    MalformedMessage,
    MediaKeyError,
    MessageTooLarge,
    NotAddressedToMe,
    SmallOrderKey,
    StaleKey,
    TooManySenders,
    UncertifiedKey,
    UndecryptableEntry,
    WrongCall,
    agreement_public_from_text,
    agreement_public_text,
    b64,
    check_id,
    shared_secret,
    unb64,
)
from facecall.e2ee.identity import IdentityError, public_key_from_text

__all__ = [
    "GRACE", "MAX_KID", "MAX_RECIPIENTS", "MESSAGE_FIELDS", "BadSignature", "KeyChanges", "KeyConflict",
    "KeysExhausted", "MalformedMessage", "MediaKeyError", "MessageTooLarge",
    "NotAddressedToMe", "OpenedKey", "ReceivedKeys", "SealedSenderKey", "SenderKeys", "SmallOrderKey",
    "StaleKey", "TooManySenders", "UncertifiedKey", "UndecryptableEntry", "WrongCall", "make_kid",
    "open_sender_key", "parse_sender_key", "seal_context", "seal_sender_key", "signed_statement",
]

SEAL_DOMAIN = "facecall sender key seal v1\n"
SIGN_DOMAIN = "facecall sender key v1\n"
VERSION = "1"
MESSAGE_FIELDS = ("v", "call_id", "sender_user", "sender_device", "kid", "epk", "recipients",
                  "signature")
ENTRY_FIELDS = ("user", "device", "sealed")
#: the most devices one message seals a key to (a call of 65 devices)
MAX_RECIPIENTS = 64
#: the bytes of a base_key (RFC 9605 §4.4.2 asks for at least the AEAD key size), of a sealed one
BASE_KEY_BYTES = 32
SEALED_BYTES = BASE_KEY_BYTES + 16
#: a KID is a 32-bit tag and a 16-bit key number
TAG_BITS, NUMBER_BITS = 32, 16
MAX_NUMBER = (1 << NUMBER_BITS) - 1
MAX_KID = (1 << (TAG_BITS + NUMBER_BITS)) - 1
_KID_PATTERN = re.compile(r"0|[1-9][0-9]{0,14}")
#: seconds a receiver keeps a sender's previous key once a new one came (frames in flight)
GRACE = 5.0
#: the most sender devices a receiver keeps state for (departed ones are forgotten first)
MAX_SENDERS = 256
#: the most earlier tags (restarts) remembered per sender
MAX_RETIRED_TAGS = 8


def make_kid(tag: int, number: int) -> int:
    """The KID of key ``number`` of the sender with ``tag``: ``tag << 16 | number``."""
    if not 0 <= tag < 1 << TAG_BITS or not 0 <= number <= MAX_NUMBER:
        raise ValueError("a tag is 32 bits and a key number 16")
    return tag << NUMBER_BITS | number


def _kid_text(kid: object) -> str:
    if not isinstance(kid, int) or isinstance(kid, bool) or not 0 <= kid <= MAX_KID:
        raise MalformedMessage(f"a KID is an int in 0..2^48-1, not {kid!r}")
    return str(kid)


def _kid(text: object) -> int:
    if not isinstance(text, str) or not _KID_PATTERN.fullmatch(text) or int(text) > MAX_KID:
        raise MalformedMessage("a KID is the decimal of 0..2^48-1, no leading zeros")
    return int(text)


def seal_context(call_id: str, sender_user: str, sender_device: str, recipient_user: str,
                 recipient_device: str, kid: int, epk: str, recipient_key: str) -> bytes:
    """The HKDF info and AES-GCM AAD of one sealed entry (module docstring)."""
    ids = (check_id("call_id", call_id), check_id("sender_user", sender_user),
           check_id("sender_device", sender_device), check_id("user", recipient_user),
           check_id("device", recipient_device))
    return (SEAL_DOMAIN + "\n".join((*ids, _kid_text(kid), epk, recipient_key))).encode("ascii")


def _aead(dh: bytes, context: bytes) -> tuple[AESGCM, bytes]:
    """HKDF-SHA256 (RFC 5869 §2.2-2.3, salt empty: HashLen zeros) of the shared secret, bound to
    the context: an AES-256-GCM key and its 12-byte nonce."""
    okm = HKDF(hashes.SHA256(), 44, salt=None, info=context).derive(dh)
    return AESGCM(okm[:32]), okm[32:]


@dataclass(frozen=True, slots=True)
class SealedSenderKey:
    """A parsed message (its fields checked, its signature not yet)."""

    call_id: str
    sender_user: str
    sender_device: str
    kid: int
    epk: str
    recipients: tuple[tuple[str, str, bytes], ...]  # (user, device, sealed)
    signature: bytes

    def statement(self) -> bytes:
        return signed_statement(self.call_id, self.sender_user, self.sender_device, self.kid,
                                self.epk, self.recipients)

    def wire(self) -> dict[str, object]:
        return {"v": VERSION, "call_id": self.call_id, "sender_user": self.sender_user,
                "sender_device": self.sender_device, "kid": str(self.kid), "epk": self.epk,
                "recipients": [{"user": u, "device": d, "sealed": b64(s)} for u, d, s in self.recipients],
                "signature": b64(self.signature)}


def signed_statement(call_id: str, sender_user: str, sender_device: str, kid: int, epk: str,
                     recipients: Sequence[tuple[str, str, bytes]]) -> bytes:
    """The bytes the sender's identity key signs (module docstring)."""
    lines = [call_id, sender_user, sender_device, _kid_text(kid), epk, str(len(recipients))]
    for user, device, sealed in recipients:
        lines += [user, device, b64(sealed)]
    return (SIGN_DOMAIN + "\n".join(lines)).encode("ascii")


def seal_sender_key(identity: Ed25519PrivateKey, call_id: str, sender_user: str,
                    sender_device: str, kid: int, base_key: bytes,
                    recipients: Sequence[AgreementKey], *,
                    ephemeral: X25519PrivateKey | None = None) -> dict[str, object]:
    """The signed message that gives ``base_key`` (32 bytes) for ``kid`` to ``recipients``
    (agreement keys whose certificates were checked), in its wire form. ``ephemeral``: for
    known answers only; by default a fresh key (RFC 7748 §6.1)."""
    if type(base_key) is not bytes or len(base_key) != BASE_KEY_BYTES:
        raise ValueError(f"a base_key is {BASE_KEY_BYTES} bytes")
    if not 1 <= len(recipients) <= MAX_RECIPIENTS:
        raise MessageTooLarge(f"a message has 1 to {MAX_RECIPIENTS} recipients, not {len(recipients)}")
    devices = [r.device_id for r in recipients]
    if len(set(devices)) != len(devices) or sender_device in devices:
        raise MalformedMessage("each recipient device once, and never the sender itself")
    ephemeral = ephemeral or X25519PrivateKey.generate()
    epk = agreement_public_text(ephemeral)
    entries = []
    for r in recipients:
        context = seal_context(call_id, sender_user, sender_device, r.user_id, r.device_id, kid,
                               epk, r.text)
        aead, nonce = _aead(shared_secret(ephemeral, r.public), context)
        entries.append((r.user_id, r.device_id, aead.encrypt(nonce, base_key, context)))
    statement = signed_statement(call_id, sender_user, sender_device, kid, epk, entries)
    return SealedSenderKey(call_id, sender_user, sender_device, kid, epk, tuple(entries),
                           identity.sign(statement)).wire()


def parse_sender_key(message: object) -> SealedSenderKey:
    """A message's fields, checked for shape and size (not its signature): say, to look up the
    sender device's pinned identity key. :class:`MalformedMessage` or :class:`MessageTooLarge`."""
    if not isinstance(message, dict) or set(message) != set(MESSAGE_FIELDS):
        raise MalformedMessage(f"a sender key message is a dict of exactly {', '.join(MESSAGE_FIELDS)}")
    if message["v"] != VERSION:
        raise MalformedMessage(f"unknown sender key message version {message['v']!r}")
    entries = message["recipients"]
    if not isinstance(entries, list):
        raise MalformedMessage("recipients is a list")
    if len(entries) > MAX_RECIPIENTS:
        raise MessageTooLarge(f"{len(entries)} recipients, more than {MAX_RECIPIENTS}")
    if not entries:
        raise MalformedMessage("a sender key message has at least one recipient")
    sender_device = check_id("sender_device", message["sender_device"])
    recipients = []
    for entry in entries:
        if not isinstance(entry, dict) or set(entry) != set(ENTRY_FIELDS):
            raise MalformedMessage(f"a recipient is a dict of exactly {', '.join(ENTRY_FIELDS)}")
        recipients.append((check_id("user", entry["user"]), check_id("device", entry["device"]),
                           unb64(entry["sealed"], SEALED_BYTES, "a sealed key")))
    devices = [device for _, device, _ in recipients]
    if len(set(devices)) != len(devices) or sender_device in devices:
        raise MalformedMessage("each recipient device once, and never the sender itself")
    epk = message["epk"]
    agreement_public_from_text(epk)  # malformed or small order: refused before any work
    return SealedSenderKey(check_id("call_id", message["call_id"]),
                           check_id("sender_user", message["sender_user"]), sender_device,
                           _kid(message["kid"]), epk, tuple(recipients),
                           unb64(message["signature"], 64, "a signature"))


class OpenedKey(NamedTuple):
    call_id: str
    sender_user: str
    sender_device: str
    kid: int
    base_key: bytes


def open_sender_key(message: object, *, call_id: str, sender_key: str | Ed25519PublicKey,
                    user_id: str, device_id: str, agreement: X25519PrivateKey) -> OpenedKey:
    """This device's key from a message (the receiving side of :func:`seal_sender_key`).

    ``sender_key``: the identity key this device pinned for the message's sender device (see
    :func:`parse_sender_key`); ``agreement``: this device's agreement private key. Checks, in
    order: the shape (:class:`MalformedMessage`, :class:`MessageTooLarge`,
    :class:`SmallOrderKey`), the call (:class:`WrongCall`), the signature (RFC 8032 §5.1.7,
    :class:`BadSignature`), an entry for this device (:class:`NotAddressedToMe`), and that it
    opens (:class:`UndecryptableEntry`)."""
    sealed = message if isinstance(message, SealedSenderKey) else parse_sender_key(message)
    if sealed.call_id != call_id:
        raise WrongCall(f"a sender key for call {sealed.call_id}, not {call_id}")
    try:
        verifier = public_key_from_text(sender_key) if isinstance(sender_key, str) else sender_key
        verifier.verify(sealed.signature, sealed.statement())
    except (IdentityError, InvalidSignature):
        raise BadSignature(f"the sender key of device {sealed.sender_device} is not signed by its "
                           "identity key") from None
    mine = [(user, s) for user, device, s in sealed.recipients if device == device_id]
    if not mine or mine[0][0] != user_id:
        raise NotAddressedToMe(f"no entry for device {device_id} of {user_id}")
    context = seal_context(call_id, sealed.sender_user, sealed.sender_device, user_id, device_id,
                           sealed.kid, sealed.epk, agreement_public_text(agreement))
    aead, nonce = _aead(shared_secret(agreement, agreement_public_from_text(sealed.epk)), context)
    try:
        base_key = aead.decrypt(nonce, mine[0][1], context)
    except InvalidTag:
        raise UndecryptableEntry(f"the entry for device {device_id} does not open") from None
    return OpenedKey(call_id, sealed.sender_user, sealed.sender_device, sealed.kid, base_key)


class SenderKeys:
    """The sending device's keys in one call: a new KID and a fresh ``base_key`` on every change
    of the call's member devices (:meth:`rotate`), sealed to the members of that moment only.

    A device that left never gets a key made after it left; a device that joined gets only keys
    made after it joined (RFC 9605 §7.3 on rekeying). A KID is never used twice for this
    sender in this call; after 65,536 keys :class:`KeysExhausted` (a new ``SenderKeys`` has a
    new tag)."""

    def __init__(self, identity: Ed25519PrivateKey, call_id: str, user_id: str, device_id: str,
                 *, tag: int | None = None) -> None:
        self._identity = identity
        self.call_id, self.user_id = check_id("call_id", call_id), check_id("user_id", user_id)
        self.device_id = check_id("device_id", device_id)
        self.tag = int.from_bytes(os.urandom(4), "big") if tag is None else tag
        make_kid(self.tag, 0)
        self._next = 0
        self.kid: int | None = None
        self.base_key: bytes | None = None
        self.members: frozenset[str] = frozenset()  # the devices that hold the current key

    def rotate(self, members: Iterable[AgreementKey]) -> dict[str, object]:
        """A new KID and base_key, sealed to ``members`` (the call's other devices now): the
        message to send. The caller starts encrypting with :attr:`kid` once it is sent."""
        members = list(members)
        if self._next > MAX_NUMBER:
            raise KeysExhausted(f"sender {self.device_id} has used all its KIDs in this call")
        kid, base_key = make_kid(self.tag, self._next), os.urandom(BASE_KEY_BYTES)
        message = seal_sender_key(self._identity, self.call_id, self.user_id, self.device_id, kid,
                                  base_key, members)
        self._next += 1
        self.kid, self.base_key = kid, base_key
        self.members = frozenset(m.device_id for m in members)
        return message

    def reseal(self, members: Iterable[AgreementKey]) -> dict[str, object]:
        """The current key again, to devices that already hold it (a message lost on the way):
        a device not among :attr:`members` gets a new key by :meth:`rotate`, never this one."""
        members = list(members)
        if self.kid is None or self.base_key is None:
            raise MediaKeyError("no key yet: rotate first")
        strangers = {m.device_id for m in members} - self.members
        if strangers:
            raise MediaKeyError(f"devices {sorted(strangers)} do not hold the current key: rotate")
        return seal_sender_key(self._identity, self.call_id, self.user_id, self.device_id, self.kid,
                               self.base_key, members)


class KeyChanges(NamedTuple):
    """What to do to the SFrame receivers (facecall.e2ee.sframe.Receiver), one per sender
    device: remove ``(device, kid)``, then add ``(device, kid, base_key)``."""

    removed: list[tuple[str, int]]
    added: list[tuple[str, int, bytes]]


@dataclass(slots=True)
class _Sender:
    tag: int
    number: int
    kid: int | None
    base_key: bytes
    previous: tuple[int, float] | None = None  # (KID, until when it is kept)
    retired: list[int] = field(default_factory=list)  # earlier tags (restarts)


class ReceivedKeys:
    """The keys this device received in one call, by sender device and KID.

    A sender's newest key is current; its previous one is kept for :attr:`grace` seconds after
    (frames in flight), then dropped (:meth:`handle_timer`). Refused: a key older than one held
    from that sender (:class:`StaleKey`), another key for a KID held (:class:`KeyConflict`),
    another call's key (:class:`WrongCall`), more than ``max_senders`` senders. A sender whose
    tag changes has restarted: its earlier tags are refused from then on. Tags are a sender's
    own: another sender under the same tag is another key store (the receiver decrypts a
    frame with the keys of the device the SFU names for it, never with all it holds)."""

    def __init__(self, call_id: str, *, grace: float = GRACE, max_senders: int = MAX_SENDERS) -> None:
        self.call_id, self.grace, self.max_senders = check_id("call_id", call_id), grace, max_senders
        self._senders: dict[str, _Sender] = {}

    def held(self) -> set[tuple[str, int]]:
        """Every ``(sender device, KID)`` whose key this receiver holds."""
        return {(device, kid) for device, s in self._senders.items()
                for kid in (s.kid, s.previous[0] if s.previous else None) if kid is not None}

    def senders(self) -> set[str]:
        """The sender devices whose current key this receiver holds."""
        return {device for device, s in self._senders.items() if s.kid is not None}

    def add(self, key: OpenedKey, now: float) -> KeyChanges:
        """Take a key :func:`open_sender_key` gave; a copy of the current key changes nothing."""
        if key.call_id != self.call_id:
            raise WrongCall(f"a key for call {key.call_id}, not {self.call_id}")
        device, tag, number = key.sender_device, key.kid >> NUMBER_BITS, key.kid & MAX_NUMBER
        s = self._senders.get(device)
        if s is None:
            self._make_room()
            self._senders[device] = _Sender(tag, number, key.kid, key.base_key)
            return KeyChanges([], [(device, key.kid, key.base_key)])
        if tag in s.retired or (tag == s.tag and number < s.number):
            raise StaleKey(f"KID {key.kid} of device {device} is older than its current key")
        if tag == s.tag and number == s.number:
            if key.base_key != s.base_key:
                raise KeyConflict(f"device {device} sent two keys for KID {key.kid}")
            if s.kid is None:  # dropped when it left: a replay must not bring it back
                raise StaleKey(f"KID {key.kid} of device {device} was dropped when it left")
            return KeyChanges([], [])
        removed = [(device, s.previous[0])] if s.previous else []
        s.previous = (s.kid, now + self.grace) if s.kid is not None else None
        if tag != s.tag:  # the sender restarted
            s.retired = [*s.retired, s.tag][-MAX_RETIRED_TAGS:]
        s.tag, s.number, s.kid, s.base_key = tag, number, key.kid, key.base_key
        return KeyChanges(removed, [(device, key.kid, key.base_key)])

    def _make_room(self) -> None:
        if len(self._senders) < self.max_senders:
            return
        departed = next((d for d, s in self._senders.items() if s.kid is None), None)
        if departed is None:
            raise TooManySenders(f"keys of more than {self.max_senders} sender devices")
        del self._senders[departed]

    def remove_sender(self, device: str) -> KeyChanges:
        """A device left the call: drop its keys now. What it sent is remembered, so a replay of
        its keys stays refused if it comes back."""
        s = self._senders.get(device)
        if s is None or s.kid is None:
            return KeyChanges([], [])
        removed = [(device, s.kid)] + ([(device, s.previous[0])] if s.previous else [])
        s.kid, s.previous = None, None
        return KeyChanges(removed, [])

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` has a previous key to drop, if ever."""
        return min((s.previous[1] for s in self._senders.values() if s.previous), default=None)

    def handle_timer(self, now: float) -> KeyChanges:
        """Drop the previous keys whose grace is over."""
        removed = []
        for device, s in self._senders.items():
            if s.previous and s.previous[1] <= now:
                removed.append((device, s.previous[0]))
                s.previous = None
        return KeyChanges(removed, [])
