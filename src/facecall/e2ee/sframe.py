"""SFrame, RFC 9605: per-frame authenticated encryption of media with per-sender keys.

What is here (the pure core; no I/O, no clock):

- the header codec (§4.3), in :mod:`facecall.e2ee.sframe_header`, re-exported here;
- the cipher suites of §4.5 (:class:`CipherSuite`), including the AES-CTR + HMAC construction
  of §4.5.1 for short tags;
- the key schedule of §4.4.2 (:func:`derive_key_salt`), the nonce of §4.4.3 and the encryption
  and decryption of §4.4.3-§4.4.4 (:class:`SFrameKey`);
- a :class:`Sender` and a :class:`Receiver` holding keys per KID (§4.4.1: a base_key is marked
  for encryption or decryption, never both). The sender keeps the next CTR of each KID and never
  uses one twice (§7.4); the receiver keeps a replay window per KID (§7.4 leaves replay to the
  application; the window is the sliding bitmap of RFC 4303 §3.4.3 / RFC 3711 §3.3.2).

Limits: a plaintext (and the metadata) of at most ``max_frame`` bytes, 1 MiB by default
(:data:`MAX_FRAME`); a ciphertext at most that plus the longest header and the tag. A base_key of
at least 16 bytes. Key distribution and rotation (§5) are not here.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from facecall.e2ee.sframe_header import (
    MAX_HEADER_LENGTH,
    MAX_VALUE,
    Header,
    InvalidInput,
    MalformedFrame,
    MalformedHeader,
    SFrameError,
    ValueOutOfRange,
    _encode_header,
    check_bytes,
    check_value,
    decode_header,
    encode_header,
)

__all__ = [
    "DEFAULT_REPLAY_WINDOW", "MAX_FRAME", "MIN_BASE_KEY", "AesCtrHmac", "AuthenticationFailed", "CipherSuite",
    "CounterExhausted", "CounterReused", "DecryptedFrame", "FrameTooLarge", "Header", "InvalidInput",
    "KeyIdInUse", "MalformedFrame", "MalformedHeader", "Receiver", "ReplayedFrame", "SFrameError",
    "SFrameKey", "Sender", "UnknownKeyId", "ValueOutOfRange", "decode_header", "derive_key_salt",
    "derive_secret", "encode_header", "sframe_key_label", "sframe_salt_label",
]

#: the largest plaintext (and metadata) a Sender encrypts or a Receiver accepts, by default
MAX_FRAME = 1 << 20
#: the default size, in frames, of a Receiver's replay window per KID. A sender's audio and
#: video (every simulcast layer of it) share its KID's counter: some 140 frames a second from a
#: browser (50 audio, 3 x 30 video), of which a receiver gets one layer; 1024 keeps ~7 s of lag
#: between a sender's audio and video acceptable, where 128 kept under a second (one bit each)
DEFAULT_REPLAY_WINDOW = 1024
#: the shortest base_key accepted (128 bits)
MIN_BASE_KEY = 16


class UnknownKeyId(SFrameError):
    """No key for this KID (RFC 9605 §4.4.4: the caller MAY keep the frame and retry later)."""


class KeyIdInUse(SFrameError):
    """The KID already has a key here (or, for a Sender, had one: its counter would restart)."""


class AuthenticationFailed(SFrameError):
    """The AEAD tag does not match: a wrong key, or a header, ciphertext, tag or metadata changed."""


class ReplayedFrame(SFrameError):
    """This (KID, CTR) was already accepted, or is older than the replay window."""


class FrameTooLarge(SFrameError):
    """The plaintext, metadata or ciphertext is larger than the limit."""


class CounterExhausted(SFrameError):
    """The KID has used CTR 2^64-1: it cannot encrypt again (RFC 9605 §7.4); use a new KID."""


class CounterReused(SFrameError):
    """An explicit CTR below the KID's next one: it may have been used (RFC 9605 §7.4)."""


@dataclass(frozen=True, slots=True)
class _Suite:
    nh: int  # Hash.Nh
    nka: int  # AEAD.Nka (0: an AES-GCM suite)
    nk: int  # AEAD.Nk
    nn: int  # AEAD.Nn
    nt: int  # AEAD.Nt
    hash: type[hashes.HashAlgorithm]


class CipherSuite(IntEnum):
    """The cipher suites of RFC 9605 §4.5 (Table 1), with their IANA ids (§8.1)."""

    AES_128_CTR_HMAC_SHA256_80 = 0x0001
    AES_128_CTR_HMAC_SHA256_64 = 0x0002
    AES_128_CTR_HMAC_SHA256_32 = 0x0003
    AES_128_GCM_SHA256_128 = 0x0004
    AES_256_GCM_SHA512_128 = 0x0005

    @property
    def constants(self) -> _Suite:
        return _SUITES[self]

    @property
    def tag_length(self) -> int:
        """AEAD.Nt: the bytes a ciphertext has beyond its plaintext (after the header)."""
        return _SUITES[self].nt


_SUITES = {
    CipherSuite.AES_128_CTR_HMAC_SHA256_80: _Suite(32, 16, 48, 12, 10, hashes.SHA256),
    CipherSuite.AES_128_CTR_HMAC_SHA256_64: _Suite(32, 16, 48, 12, 8, hashes.SHA256),
    CipherSuite.AES_128_CTR_HMAC_SHA256_32: _Suite(32, 16, 48, 12, 4, hashes.SHA256),
    CipherSuite.AES_128_GCM_SHA256_128: _Suite(32, 0, 16, 12, 16, hashes.SHA256),
    CipherSuite.AES_256_GCM_SHA512_128: _Suite(64, 0, 32, 12, 16, hashes.SHA512),
}


def _suite(suite: object) -> CipherSuite:
    try:
        return CipherSuite(suite)
    except ValueError:
        raise ValueOutOfRange(f"unknown SFrame cipher suite {suite!r}") from None


def derive_secret(suite: CipherSuite, base_key: bytes) -> bytes:
    """``sframe_secret = HKDF-Extract("", base_key)`` (RFC 9605 §4.4.2): HMAC-Hash with an empty
    salt, as RFC 5869 §2.2 defines HKDF-Extract."""
    h = crypto_hmac.HMAC(b"", _SUITES[suite].hash())
    h.update(base_key)
    return h.finalize()


def _label(prefix: bytes, suite: CipherSuite, kid: int) -> bytes:
    # the KID as an 8-byte (not the header's compact form) and the suite as a 2-byte integer
    return prefix + check_value("KID", kid).to_bytes(8, "big") + _suite(suite).to_bytes(2, "big")


def sframe_key_label(suite: CipherSuite, kid: int) -> bytes:
    """``"SFrame 1.0 Secret key " + KID + cipher_suite`` (RFC 9605 §4.4.2)."""
    return _label(b"SFrame 1.0 Secret key ", suite, kid)


def sframe_salt_label(suite: CipherSuite, kid: int) -> bytes:
    """``"SFrame 1.0 Secret salt " + KID + cipher_suite`` (RFC 9605 §4.4.2)."""
    return _label(b"SFrame 1.0 Secret salt ", suite, kid)


def derive_key_salt(suite: CipherSuite, kid: int, base_key: bytes) -> tuple[bytes, bytes]:
    """``derive_key_salt(KID, base_key)`` of RFC 9605 §4.4.2: ``(sframe_key, sframe_salt)``,
    HKDF-Expand of the secret with the two labels, to AEAD.Nk and AEAD.Nn bytes."""
    suite = _suite(suite)
    c = _SUITES[suite]
    secret = derive_secret(suite, check_bytes("base_key", base_key))
    key = HKDFExpand(c.hash(), c.nk, sframe_key_label(suite, kid)).derive(secret)
    salt = HKDFExpand(c.hash(), c.nn, sframe_salt_label(suite, kid)).derive(secret)
    return key, salt


class AesCtrHmac:
    """The AEAD of RFC 9605 §4.5.1 (AES-CTR, then HMAC truncated to Nt bytes), for one key."""

    def __init__(self, suite: CipherSuite, key: bytes) -> None:
        c = _SUITES[suite]
        if c.nka == 0 or len(key) != c.nka + c.nh:
            raise ValueOutOfRange(f"{suite.name} takes a {c.nka + c.nh}-byte AEAD key")
        self.nt = c.nt
        self._aes = algorithms.AES(key[:c.nka])  # derive_subkeys: enc_key, then auth_key
        self._hmac = crypto_hmac.HMAC(key[c.nka:], c.hash())

    def _tag(self, nonce: bytes, aad: bytes, ct: bytes) -> bytes:
        """compute_tag: HMAC over the lengths (8 bytes each), the nonce, the AAD and the CT."""
        h = self._hmac.copy()
        h.update(len(aad).to_bytes(8, "big") + len(ct).to_bytes(8, "big")
                 + self.nt.to_bytes(8, "big") + nonce)
        h.update(aad)
        h.update(ct)
        return h.finalize()[:self.nt]

    def _ctr(self, nonce: bytes, data: bytes) -> bytes:
        # initial_counter = nonce + four zero bytes; CTR mode is its own inverse
        crypt = Cipher(self._aes, modes.CTR(nonce + b"\0\0\0\0")).encryptor()
        return crypt.update(data) + crypt.finalize()

    def encrypt(self, nonce: bytes, pt: bytes, aad: bytes) -> bytes:
        ct = self._ctr(nonce, pt)
        return ct + self._tag(nonce, aad, ct)

    def decrypt(self, nonce: bytes, ct: bytes, aad: bytes) -> bytes:
        if len(ct) < self.nt:
            raise InvalidTag
        inner, tag = ct[:-self.nt], ct[-self.nt:]
        if not hmac.compare_digest(tag, self._tag(nonce, aad, inner)):
            raise InvalidTag
        return self._ctr(nonce, inner)


class SFrameKey:
    """One KID's ``sframe_key`` and ``sframe_salt`` (RFC 9605 §4.4.2) and the AEAD with them."""

    def __init__(self, suite: CipherSuite, kid: int, base_key: bytes) -> None:
        base_key = check_bytes("base_key", base_key)
        if len(base_key) < MIN_BASE_KEY:
            raise ValueOutOfRange(f"a base_key takes at least {MIN_BASE_KEY} bytes, not {len(base_key)}")
        self.suite, self.kid = _suite(suite), kid
        self.key, self.salt = derive_key_salt(self.suite, kid, base_key)
        self._salt = int.from_bytes(self.salt, "big")
        self._aead: AESGCM | AesCtrHmac = (
            AESGCM(self.key) if self.suite.constants.nka == 0 else AesCtrHmac(self.suite, self.key))

    def nonce(self, ctr: int) -> bytes:
        """The sframe_salt XOR the CTR, as an AEAD.Nn-byte big-endian integer (§4.4.3)."""
        return (self._salt ^ ctr).to_bytes(len(self.salt), "big")

    def seal(self, ctr: int, metadata: bytes, plaintext: bytes) -> bytes:
        """``encrypt(CTR, KID, metadata, plaintext)`` of §4.4.3: the header, then the AEAD
        output with AAD = header + metadata."""
        header = _encode_header(self.kid, check_value("CTR", ctr))
        return header + self._aead.encrypt(self.nonce(ctr), plaintext, header + metadata)

    def open(self, header: bytes, ctr: int, metadata: bytes, ciphertext: bytes) -> bytes:
        """The AEAD decryption of §4.4.4; :class:`AuthenticationFailed` if the tag is wrong."""
        try:
            return self._aead.decrypt(self.nonce(ctr), ciphertext, header + metadata)
        except InvalidTag:
            raise AuthenticationFailed(
                f"SFrame authentication failed (KID {self.kid}, CTR {ctr})") from None


class DecryptedFrame(NamedTuple):
    kid: int
    ctr: int
    plaintext: bytes


def _check_limit(max_frame: object) -> int:
    if not isinstance(max_frame, int) or isinstance(max_frame, bool) or max_frame < 0:
        raise ValueOutOfRange(f"max_frame must be a non-negative int, not {max_frame!r}")
    return max_frame


def _limit(name: str, data: object, limit: int) -> bytes:
    if type(data) is not bytes:
        data = check_bytes(name, data)
    if len(data) > limit:
        raise FrameTooLarge(f"the {name} has {len(data)} bytes, more than the limit of {limit}")
    return data


class Sender:
    """Encryption keys by KID, each with the next CTR to use (RFC 9605 §4.4.1, initially 0).

    A CTR is never used twice with a KID: :meth:`encrypt` takes the next one, or an explicit one
    no lower than it, and refuses past 2^64-1 (:class:`CounterExhausted`, §7.4). For the same
    reason a KID removed cannot be added again to this Sender (its counter would restart).
    """

    def __init__(self, suite: CipherSuite, *, max_frame: int = MAX_FRAME) -> None:
        self.suite, self.max_frame = _suite(suite), _check_limit(max_frame)
        self._keys: dict[int, SFrameKey] = {}
        self._next: dict[int, int] = {}  # KID -> next CTR (MAX_VALUE + 1: exhausted)

    def add_key(self, kid: int, base_key: bytes) -> None:
        if check_value("KID", kid) in self._next:
            raise KeyIdInUse(f"KID {kid} was already used by this sender: take a new KID")
        self._keys[kid] = SFrameKey(self.suite, kid, base_key)
        self._next[kid] = 0

    def remove_key(self, kid: int) -> None:
        if self._keys.pop(kid, None) is None:
            raise UnknownKeyId(f"no SFrame key for KID {kid}")

    def next_ctr(self, kid: int) -> int:
        """The CTR the next :meth:`encrypt` with ``kid`` will use."""
        self._key(kid)
        return self._next[kid]

    def _key(self, kid: int) -> SFrameKey:
        key = self._keys.get(check_value("KID", kid))
        if key is None:
            raise UnknownKeyId(f"no SFrame key for KID {kid}")
        return key

    def encrypt(self, kid: int, metadata: bytes, plaintext: bytes, *, ctr: int | None = None) -> bytes:
        """The SFrame ciphertext of ``plaintext`` with ``kid``'s key (RFC 9605 §4.4.3), its
        ``metadata`` authenticated but not included."""
        key = self._key(kid)
        metadata = _limit("metadata", metadata, self.max_frame)
        plaintext = _limit("plaintext", plaintext, self.max_frame)
        next_ctr = self._next[kid]
        if ctr is None:
            ctr = next_ctr
        elif check_value("CTR", ctr) < next_ctr:
            raise CounterReused(f"CTR {ctr} is below KID {kid}'s next CTR {next_ctr}")
        if ctr > MAX_VALUE:
            raise CounterExhausted(f"KID {kid} has used CTR 2^64-1: take a new KID")
        frame = key.seal(ctr, metadata, plaintext)
        self._next[kid] = ctr + 1
        return frame


class Receiver:
    """Decryption keys by KID (RFC 9605 §4.4.1, §4.4.4), each with a replay window.

    The window (§7.4 leaves replay to the application; this is the sliding window of RFC 4303
    §3.4.3): per KID, the highest CTR accepted and a bitmap of the ``replay_window`` CTRs up to it.
    A frame whose CTR is in the bitmap, or older than the window, is :class:`ReplayedFrame`. The
    window moves only after a frame authenticates, so forged frames cannot move it. Frames may
    arrive out of order within the window. Removing and adding a KID again starts a new window.
    """

    def __init__(self, suite: CipherSuite, *, replay_window: int = DEFAULT_REPLAY_WINDOW,
                 max_frame: int = MAX_FRAME) -> None:
        if not isinstance(replay_window, int) or replay_window < 1:
            raise ValueOutOfRange(f"the replay window must be a positive int, not {replay_window!r}")
        self.suite, self.replay_window = _suite(suite), replay_window
        self.max_frame = _check_limit(max_frame)
        self.max_ciphertext = max_frame + MAX_HEADER_LENGTH + self.suite.tag_length
        self._keys: dict[int, SFrameKey] = {}
        # KID -> (highest CTR accepted, bitmap: bit i set if CTR highest - i was accepted)
        self._windows: dict[int, tuple[int, int]] = {}

    def add_key(self, kid: int, base_key: bytes) -> None:
        if check_value("KID", kid) in self._keys:
            raise KeyIdInUse(f"KID {kid} already has a key: remove it first")
        self._keys[kid] = SFrameKey(self.suite, kid, base_key)

    def remove_key(self, kid: int) -> None:
        if self._keys.pop(kid, None) is None:
            raise UnknownKeyId(f"no SFrame key for KID {kid}")
        self._windows.pop(kid, None)

    def kids(self) -> frozenset[int]:
        """The KIDs this receiver has keys for."""
        return frozenset(self._keys)

    def _check_replay(self, kid: int, ctr: int) -> None:
        if kid not in self._windows:
            return
        highest, seen = self._windows[kid]
        if ctr > highest:
            return
        age = highest - ctr
        if age >= self.replay_window:
            raise ReplayedFrame(f"KID {kid} CTR {ctr} is older than the replay window "
                                f"({self.replay_window} frames below CTR {highest})")
        if seen >> age & 1:
            raise ReplayedFrame(f"KID {kid} CTR {ctr} was already received")

    def _accept(self, kid: int, ctr: int) -> None:
        mask = (1 << self.replay_window) - 1
        if kid not in self._windows:
            self._windows[kid] = (ctr, 1)
            return
        highest, seen = self._windows[kid]
        if ctr > highest:
            self._windows[kid] = (ctr, ((seen << min(ctr - highest, self.replay_window)) | 1) & mask)
        else:
            self._windows[kid] = (highest, seen | 1 << (highest - ctr))

    def decrypt_frame(self, metadata: bytes, ciphertext: bytes) -> DecryptedFrame:
        """``decrypt(metadata, sframe_ciphertext)`` of RFC 9605 §4.4.4, with the KID and CTR."""
        ciphertext = _limit("SFrame ciphertext", ciphertext, self.max_ciphertext)
        metadata = _limit("metadata", metadata, self.max_frame)
        parsed, length = decode_header(ciphertext)
        if len(ciphertext) - length < self.suite.tag_length:
            raise MalformedFrame(f"the SFrame ciphertext has {len(ciphertext) - length} bytes after "
                                 f"its header, fewer than the {self.suite.tag_length}-byte tag")
        key = self._keys.get(parsed.kid)
        if key is None:
            raise UnknownKeyId(f"no SFrame key for KID {parsed.kid}")
        self._check_replay(parsed.kid, parsed.ctr)
        plaintext = key.open(ciphertext[:length], parsed.ctr, metadata, ciphertext[length:])
        self._accept(parsed.kid, parsed.ctr)
        return DecryptedFrame(parsed.kid, parsed.ctr, plaintext)

    def decrypt(self, metadata: bytes, ciphertext: bytes) -> bytes:
        """The plaintext of an SFrame ciphertext (:meth:`decrypt_frame` without KID and CTR)."""
        return self.decrypt_frame(metadata, ciphertext).plaintext
