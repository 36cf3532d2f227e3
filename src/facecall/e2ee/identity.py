"""Device identity keys: each device signs the SDP it sends, so that the device it calls can
refuse a description that the server (ours, or whoever controls it) changed (docs/security.md,
"Device identity keys").

The media of a 1:1 call is DTLS-SRTP between the two devices, and each side's DTLS accepts the
certificate whose fingerprint the other side's SDP names (``a=fingerprint``, RFC 8122 §5;
RFC 5763 §5). That SDP travels through the signaling server, which could put its own
fingerprints in. With identity keys it cannot do so unseen:

* every device holds an Ed25519 key pair (RFC 8032) of its own, made on the device; the private
  key never leaves it. The public key is published once with the device
  (``identity_key`` of ``POST /v1/devices``, or ``PUT /v1/devices/{id}/identity-key`` for a
  device registered before) and cannot be changed after;
* every ``call.sdp`` carries ``signature``: the device's Ed25519 signature over the
  :func:`statement` of the description — the whole SDP, so no line of it (fingerprints in any
  m-section, with any hash function) can be changed, added or dropped, and which call, sender
  and receiver it is for, so that it cannot be replayed into another;
* the receiving device checks the signature with the key it has pinned for the sending device
  (trust on first use: the first key it sees for a device is the one it keeps; a device's key
  never changes) before it applies the description, and leaves the call with
  ``identity_check_failed`` when the check fails.

Version 1, for implementations that must agree (the web client signs and checks the same in
``web/js/identity.js``):

* a key is written as the unpadded base64url (RFC 4648 §5) of its 32 raw bytes (RFC 8032
  §5.1.5), 43 characters; a signature as the unpadded base64url of its 64 bytes, 86 characters;
* the statement is the UTF-8 of ``"facecall sdp v1\\n" + call_id + "\\n" + from_user + "\\n" +
  from_device + "\\n" + to_device + "\\n" + type + "\\n" + sdp``, where ``type`` is ``offer`` or
  ``answer`` and ``sdp`` the description exactly as sent. Ids never hold a line break (the
  protocol's ``Id``), and the SDP comes last, so no two statements share bytes;
* the signature is pure Ed25519 (RFC 8032 §5.1.6), deterministic: one key and one statement
  give one signature (the known answer in the tests).
"""

from __future__ import annotations

import base64
import binascii

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

#: what every statement starts with: the signature's version (a new one gets a new domain)
DOMAIN = "facecall sdp v1\n"
#: characters of a written key (32 bytes) and of a written signature (64 bytes)
KEY_CHARS = 43
SIGNATURE_CHARS = 86
#: the most devices a user has (the server refuses more): a longer list of keys is not one
MAX_DEVICES = 32
#: the encodings of the eight points of small order (RFC 8032 §5.1.7 accepts them; a key that
#: is one verifies signatures of anything under it): refused as keys, as libsodium does
SMALL_ORDER_KEYS = frozenset(bytes.fromhex(h) for h in (
    "0100000000000000000000000000000000000000000000000000000000000000",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000080",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
))


class IdentityError(ValueError):
    """A key or signature that is malformed, or a signature that does not verify."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str, size: int, what: str) -> bytes:
    """The bytes of an unpadded base64url string that must hold exactly ``size`` bytes."""
    chars = (size * 4 + 2) // 3
    if not isinstance(text, str) or len(text) != chars:
        raise IdentityError(f"{what} must be {chars} base64url characters")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise IdentityError(f"{what} is not base64url: {exc}") from None
    if len(data) != size or _b64(data) != text:  # the last character's spare bits must be 0
        raise IdentityError(f"{what} is not the canonical base64url of {size} bytes")
    return data


def new_private_key() -> Ed25519PrivateKey:
    """A new identity key pair for this device (RFC 8032 §5.1.5)."""
    return Ed25519PrivateKey.generate()


def private_key_text(key: Ed25519PrivateKey) -> str:
    """The private key's 32-byte seed as base64url, for the device's own state file."""
    return _b64(key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()))


def private_key_from_text(text: str) -> Ed25519PrivateKey:
    """The private key :func:`private_key_text` wrote."""
    return Ed25519PrivateKey.from_private_bytes(_unb64(text, 32, "a private key"))


def public_key_text(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The public key as it is published: base64url of its 32 raw bytes."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return _b64(public.public_bytes(Encoding.Raw, PublicFormat.Raw))


def public_key_from_text(text: str) -> Ed25519PublicKey:
    """The public key of a published key; :class:`IdentityError` if it is not one."""
    raw = _unb64(text, 32, "an identity key")
    if raw in SMALL_ORDER_KEYS:
        raise IdentityError("an identity key of small order (it would verify anything)")
    try:
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise IdentityError(f"not an Ed25519 public key: {exc}") from None


def statement(call_id: str, from_user: str, from_device: str, to_device: str,
              type_: str, sdp: str) -> bytes:
    """The bytes a device signs for a description it sends (version 1, above)."""
    for name, value in (("call_id", call_id), ("from_user", from_user),
                        ("from_device", from_device), ("to_device", to_device)):
        if not value or "\n" in value or "\r" in value:
            raise IdentityError(f"{name} must be a non-empty id without line breaks")
    if type_ not in ("offer", "answer"):
        raise IdentityError(f"a description's type is offer or answer, not {type_!r}")
    fields = (call_id, from_user, from_device, to_device, type_, sdp)
    try:
        return (DOMAIN + "\n".join(fields)).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: no UTF-8, and no one text to sign
        raise IdentityError("a description that is not valid Unicode") from None


def sign_description(key: Ed25519PrivateKey, call_id: str, from_user: str, from_device: str,
                     to_device: str, type_: str, sdp: str) -> str:
    """The ``signature`` of a ``call.sdp`` this device sends (RFC 8032 §5.1.6)."""
    return _b64(key.sign(statement(call_id, from_user, from_device, to_device, type_, sdp)))


def verify_description(key: str | Ed25519PublicKey, signature: object, call_id: str,
                       from_user: str, from_device: str, to_device: str, type_: str,
                       sdp: str) -> None:
    """Check a relayed description's signature with the sending device's key (RFC 8032
    §5.1.7); :class:`IdentityError` says why it does not hold (no signature, a malformed one,
    or one that another key or another statement made)."""
    public = public_key_from_text(key) if isinstance(key, str) else key
    if signature is None:
        raise IdentityError(f"device {from_device} sent a description without a signature")
    if not isinstance(signature, str):
        raise IdentityError("a signature is a base64url string")
    raw = _unb64(signature, 64, "a signature")
    try:
        public.verify(raw, statement(call_id, from_user, from_device, to_device, type_, sdp))
    except InvalidSignature:
        raise IdentityError(
            f"the description from device {from_device} is not signed by its identity key"
        ) from None

