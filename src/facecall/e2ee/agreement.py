"""Agreement keys: each device's X25519 key pair (RFC 7748), certified by its identity key, so
that other devices can seal media keys to it (facecall.e2ee.media_keys; docs/sframe.md, "Key
distribution (the core)").

An identity key (facecall.e2ee.identity) is Ed25519: it signs, it does not agree keys, and the
browser's is not extractable, so it cannot be converted to X25519 either. So every device also
makes an X25519 key pair, and publishes its public key with a *certificate*: its identity key's
Ed25519 signature (RFC 8032 §5.1.6) over the UTF-8 of::

    "facecall agreement v1\\n" + user_id + "\\n" + device_id + "\\n" + key

``key`` the unpadded base64url (RFC 4648 §5) of the 32-byte X25519 public key (RFC 7748 §5),
43 characters. Ids are the protocol's ``Id`` (1-64 printable ASCII characters, no space or line
break), so no two statements share bytes. The certificate's wire form is a dict of strings:
``{"user_id", "device_id", "key", "signature"}``.

A device checks a certificate with the identity key it pinned for that device
(:func:`verify_agreement_key`), and only then seals to the key. Public keys of small order are
refused, and so is an all-zero shared secret (RFC 7748 §6.1): with such a key the "shared"
secret is one anyone knows.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from facecall.e2ee.identity import IdentityError, public_key_from_text

#: what every certificate's statement starts with (a new version gets a new domain)
AGREEMENT_DOMAIN = "facecall agreement v1\n"
#: the field order of a certificate's wire form
CERTIFICATE_FIELDS = ("user_id", "device_id", "key", "signature")
#: an id: the signaling protocol's ``Id`` (facecall.signaling.frames)
ID_PATTERN = re.compile(r"[!-~]{1,64}")
#: the prime of Curve25519 (RFC 7748 §4.1)
P = 2**255 - 19
#: the u-coordinates of the points of small order on Curve25519 and its twist: 0 and 1 (orders
#: 4 and 1), p-1 (order 2) and the two of order 8 (the list libsodium refuses). A public key is
#: refused if its u, top bit masked and reduced mod p (RFC 7748 §5 accepts the non-canonical
#: p and p+1), is one of them: X25519 with it gives all zeros whatever the private key.
SMALL_ORDER_U = frozenset((
    0, 1, P - 1,
    325606250916557431795983626356110631294008115727848805560023387167927233504,
    39382357235489614581723060781553021112529911719440698176882885853963445705823,
))


class MediaKeyError(ValueError):
    """Any refusal of the media-key core (this module and facecall.e2ee.media_keys, whose errors
    are all defined here): every error below is one."""


class MalformedMessage(MediaKeyError):
    """A field is missing, of the wrong type, too long, not canonical base64url, or extra."""


class MessageTooLarge(MediaKeyError):
    """More recipients than the limit, or a message larger than any valid one."""


class SmallOrderKey(MediaKeyError):
    """An X25519 public key of small order, or an all-zero shared secret (RFC 7748 §6.1)."""


class UncertifiedKey(MediaKeyError):
    """An agreement key whose certificate the device's identity key did not sign, or one
    certified for another user or device."""


class BadSignature(MediaKeyError):
    """The message is not signed by the sender device's identity key (or was changed)."""


class WrongCall(MediaKeyError):
    """The message is for another call."""


class NotAddressedToMe(MediaKeyError):
    """No entry of the message is for this device."""


class UndecryptableEntry(MediaKeyError):
    """This device's entry does not open: sealed to another agreement key, or for other ids."""


class StaleKey(MediaKeyError):
    """A key older than one this receiver has from the same sender (a replay)."""


class KeyConflict(MediaKeyError):
    """A KID this receiver has from the same sender with another key."""


class TooManySenders(MediaKeyError):
    """More sender devices than the receiver keeps."""


class KeysExhausted(MediaKeyError):
    """The sender has used all 65,536 key numbers of its tag."""


def b64(data: bytes) -> str:
    """Unpadded base64url (RFC 4648 §5)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64(text: object, size: int, what: str) -> bytes:
    """The ``size`` bytes of an unpadded, canonical base64url string; :class:`MalformedMessage`
    otherwise (also for a last character whose spare bits are not 0)."""
    chars = (size * 4 + 2) // 3
    if not isinstance(text, str) or len(text) != chars:
        raise MalformedMessage(f"{what} must be {chars} base64url characters")
    try:
        data = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise MalformedMessage(f"{what} is not base64url") from None
    if len(data) != size or b64(data) != text:
        raise MalformedMessage(f"{what} is not the canonical base64url of {size} bytes")
    return data


def check_id(name: str, value: object) -> str:
    """``value`` as an id (1-64 printable ASCII characters); :class:`MalformedMessage` if not."""
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        raise MalformedMessage(f"{name} must be 1-64 printable ASCII characters without spaces")
    return value


def new_agreement_key() -> X25519PrivateKey:
    """A new X25519 key pair for this device (RFC 7748 §6.1)."""
    return X25519PrivateKey.generate()


def agreement_private_text(key: X25519PrivateKey) -> str:
    """The private key's 32 bytes as base64url, for the device's own state file."""
    return b64(key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()))


def agreement_private_from_text(text: str) -> X25519PrivateKey:
    """The private key :func:`agreement_private_text` wrote."""
    return X25519PrivateKey.from_private_bytes(unb64(text, 32, "an agreement private key"))


def agreement_public_text(key: X25519PrivateKey | X25519PublicKey) -> str:
    """The public key as it is published: base64url of its 32 bytes (RFC 7748 §5)."""
    public = key.public_key() if isinstance(key, X25519PrivateKey) else key
    return b64(public.public_bytes(Encoding.Raw, PublicFormat.Raw))


def is_small_order(raw: bytes) -> bool:
    """True if X25519 with the public key ``raw`` gives all zeros for any private key."""
    return (int.from_bytes(raw, "little") & ((1 << 255) - 1)) % P in SMALL_ORDER_U


def agreement_public_from_text(text: object) -> X25519PublicKey:
    """The public key of a written one; :class:`MalformedMessage` if it is not 43 canonical
    base64url characters, :class:`SmallOrderKey` if it is of small order."""
    raw = unb64(text, 32, "an agreement key")
    if is_small_order(raw):
        raise SmallOrderKey("an agreement key of small order (its shared secret is all zeros)")
    return X25519PublicKey.from_public_bytes(raw)


def shared_secret(private: X25519PrivateKey, public: X25519PublicKey) -> bytes:
    """X25519(private, public) (RFC 7748 §5); :class:`SmallOrderKey` if it is all zeros, which
    RFC 7748 §6.1 says to check."""
    try:
        secret = private.exchange(public)
    except ValueError:  # OpenSSL refuses an all-zero result itself
        raise SmallOrderKey("the X25519 shared secret is all zeros (a key of small order)") from None
    if secret == bytes(32):
        raise SmallOrderKey("the X25519 shared secret is all zeros (a key of small order)")
    return secret


def agreement_statement(user_id: str, device_id: str, key: str) -> bytes:
    """The bytes an identity key signs to certify the agreement key ``key`` (text form)."""
    check_id("user_id", user_id)
    check_id("device_id", device_id)
    unb64(key, 32, "an agreement key")
    return (AGREEMENT_DOMAIN + "\n".join((user_id, device_id, key))).encode("ascii")


@dataclass(frozen=True, slots=True)
class AgreementKey:
    """A device's agreement public key whose certificate checked out: what a sender seals to."""

    user_id: str
    device_id: str
    public: X25519PublicKey
    text: str  # the 43-character base64url form


def certify_agreement_key(identity: Ed25519PrivateKey, user_id: str, device_id: str,
                          key: X25519PrivateKey | X25519PublicKey) -> dict[str, str]:
    """The certificate of this device's agreement key: the wire form, signed with the device's
    identity key (RFC 8032 §5.1.6; deterministic)."""
    text = agreement_public_text(key)
    signature = identity.sign(agreement_statement(user_id, device_id, text))
    return {"user_id": user_id, "device_id": device_id, "key": text, "signature": b64(signature)}


def verify_agreement_key(identity_key: str | Ed25519PublicKey, certificate: object, *,
                         user_id: str, device_id: str) -> AgreementKey:
    """Check a certificate with the identity key pinned for ``device_id`` (RFC 8032 §5.1.7):
    the agreement key it certifies, or :class:`MalformedMessage`, :class:`SmallOrderKey` or
    :class:`UncertifiedKey` (signed by another key, or for another user or device)."""
    if not isinstance(certificate, dict) or set(certificate) != set(CERTIFICATE_FIELDS):
        raise MalformedMessage(f"a certificate is a dict of exactly {', '.join(CERTIFICATE_FIELDS)}")
    got_user = check_id("user_id", certificate["user_id"])
    got_device = check_id("device_id", certificate["device_id"])
    public = agreement_public_from_text(certificate["key"])
    signature = unb64(certificate["signature"], 64, "a certificate's signature")
    if (got_user, got_device) != (user_id, device_id):
        raise UncertifiedKey(f"the certificate is for device {got_device} of {got_user}, "
                             f"not device {device_id} of {user_id}")
    try:
        verifier = public_key_from_text(identity_key) if isinstance(identity_key, str) else identity_key
        verifier.verify(signature, agreement_statement(user_id, device_id, certificate["key"]))
    except (IdentityError, InvalidSignature):
        raise UncertifiedKey(f"the agreement key of device {device_id} is not certified by its "
                             "identity key") from None
    return AgreementKey(user_id, device_id, public, certificate["key"])
