"""The SFrame header (RFC 9605 §4.3) and the errors of the SFrame core (facecall.e2ee.sframe).

::

     0 1 2 3 4 5 6 7
    +-+-+-+-+-+-+-+-+------------+------------+
    |X|  K  |Y|  C  |   KID...   |   CTR...   |
    +-+-+-+-+-+-+-+-+------------+------------+

A KID or CTR in 0-7 is carried in the config byte (K or C, flag X or Y clear). A larger one follows
the config byte, KID first, as a big-endian integer in the minimum number of bytes (1-8); the
field then holds that length minus one and the flag is set. The RFC says the value "MUST be
encoded with the minimum number of bytes required", so :func:`decode_header` refuses any other
encoding (a value below 8 in the long form, or a leading zero byte): every (KID, CTR) has exactly
one header, and the header is authenticated as part of the AAD.
"""

from __future__ import annotations

from typing import NamedTuple

#: the largest KID or CTR: both are 64-bit unsigned integers (RFC 9605 §4.3, §4.4.2)
MAX_VALUE = (1 << 64) - 1
#: the longest header: the config byte, an 8-byte KID and an 8-byte CTR
MAX_HEADER_LENGTH = 17

_EXTENDED = 0x8  # the X or Y flag, in the nibble of K or C


class SFrameError(Exception):
    """Any error of the SFrame core: a frame that is refused, or a call that cannot be done."""


class MalformedFrame(SFrameError):
    """The SFrame ciphertext cannot be parsed: too short for its header and tag."""


class MalformedHeader(MalformedFrame):
    """The SFrame header (RFC 9605 §4.3) is truncated or not in its minimal encoding."""


class InvalidInput(SFrameError, TypeError):
    """An argument of the wrong type: bytes where bytes are needed, an int for a KID or CTR."""


class ValueOutOfRange(SFrameError, ValueError):
    """A KID or CTR outside 0..2^64-1, or another argument outside what is allowed."""


def check_value(name: str, value: object) -> int:
    """``value`` as a KID or CTR: an int (not a bool) in 0..2^64-1."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidInput(f"the {name} must be an int, not {type(value).__name__}")
    if not 0 <= value <= MAX_VALUE:
        raise ValueOutOfRange(f"the {name} must be in 0..2^64-1, not {value}")
    return value


def check_bytes(name: str, value: object) -> bytes:
    """``value`` as bytes: bytes, bytearray or memoryview; anything else is :class:`InvalidInput`."""
    if type(value) is bytes:
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise InvalidInput(f"the {name} must be bytes, not {type(value).__name__}")


def _extension_length(value: int) -> int:
    """How many bytes ``value`` takes after the config byte: none below 8, else its minimum."""
    return 0 if value < 8 else (value.bit_length() + 7) // 8


class Header(NamedTuple):
    """An SFrame header: the key id (KID) that selects the key and the counter (CTR) the nonce
    is built from (RFC 9605 §4.3)."""

    kid: int
    ctr: int

    def encode(self) -> bytes:
        """The header's (only, minimal) encoding: 1 to 17 bytes."""
        return encode_header(self.kid, self.ctr)


def encode_header(kid: int, ctr: int) -> bytes:
    """``encode_sframe_header(CTR, KID)`` of RFC 9605 §4.4.3, in the form of §4.3."""
    return _encode_header(check_value("KID", kid), check_value("CTR", ctr))


def _encode_header(kid: int, ctr: int) -> bytes:
    """:func:`encode_header` of a KID and CTR already checked."""
    if kid < 8 and ctr < 8:
        return bytes((kid << 4 | ctr,))
    klen, clen = _extension_length(kid), _extension_length(ctr)
    config = (kid if klen == 0 else _EXTENDED | (klen - 1)) << 4
    config |= ctr if clen == 0 else _EXTENDED | (clen - 1)
    return (bytes((config,)) + (kid.to_bytes(klen, "big") if klen else b"")
            + (ctr.to_bytes(clen, "big") if clen else b""))


def _config(byte: int) -> tuple[int, int, int, int]:
    """The config byte as (KID or 0, KID length, CTR or 0, CTR length)."""
    k, c = byte >> 4, byte & 0x0F
    return ((0, (k & 7) + 1) if k & _EXTENDED else (k, 0)) + ((0, (c & 7) + 1) if c & _EXTENDED else (c, 0))


_CONFIGS = [_config(byte) for byte in range(256)]


def _long_value(name: str, field: bytes) -> int:
    value = int.from_bytes(field, "big")
    if _extension_length(value) != len(field):
        raise MalformedHeader(f"{name} {value} is not in its minimal encoding ({len(field)} bytes, "
                              "RFC 9605 §4.3)")
    return value


def decode_header(data: bytes) -> tuple[Header, int]:
    """The header at the start of ``data`` and its length in bytes; the rest of ``data`` is the
    AEAD output. Raises :class:`MalformedHeader` if ``data`` is empty, shorter than the lengths
    its config byte gives, or holds a value not in its minimal encoding (RFC 9605 §4.3)."""
    if type(data) is not bytes:
        data = check_bytes("SFrame ciphertext", data)
    if not data:
        raise MalformedHeader("empty SFrame ciphertext: no config byte")
    kid, klen, ctr, clen = _CONFIGS[data[0]]
    end = 1 + klen + clen
    if len(data) < end:
        name, length, left = ("KID", klen, len(data) - 1) if len(data) < 1 + klen else (
            "CTR", clen, len(data) - 1 - klen)
        raise MalformedHeader(f"truncated SFrame header: the {name} takes {length} bytes, {left} left")
    if klen:
        kid = _long_value("KID", data[1:1 + klen])
    if clen:
        ctr = _long_value("CTR", data[1 + klen:end])
    return Header(kid, ctr), end
