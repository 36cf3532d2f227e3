"""STUN message codec: RFC 8489 (STUN) with the TURN attributes of RFC 8656.

A :class:`Message` holds its attributes as raw values, in wire order; typed readers
(:func:`decode_xor_address`, :func:`decode_error_code`, ...) interpret them on demand and raise
:class:`StunError` on a malformed value. Parsing never trusts a length it has not checked, so any
byte string either parses or raises :class:`StunError` (never another exception).

ChannelData framing (RFC 8656 §12.4) lives here too, for the stream transports; the relay's
UDP data path reads ChannelData headers itself without building a :class:`Message`.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import ipaddress
import struct
from dataclasses import dataclass, field
from enum import IntEnum

MAGIC_COOKIE = 0x2112A442  # RFC 8489 §5
HEADER_LENGTH = 20
FINGERPRINT_XOR = 0x5354554E  # RFC 8489 §14.7
MESSAGE_INTEGRITY_LENGTH = 20
MESSAGE_INTEGRITY_SHA256_LENGTH = 32
_COOKIE_BYTES = MAGIC_COOKIE.to_bytes(4, "big")
_HEADER = struct.Struct("!HHI12s")
_ATTR_HEADER = struct.Struct("!HH")


class StunError(ValueError):
    """Raised for bytes that are not a well-formed STUN message or attribute value."""


class Class(IntEnum):
    """Message classes, already placed at their bit positions (RFC 8489 §5)."""

    REQUEST = 0x0000
    INDICATION = 0x0010
    SUCCESS = 0x0100
    ERROR = 0x0110


class Method(IntEnum):
    """STUN methods (RFC 8489 §18.2) and TURN methods (RFC 8656 §17)."""

    BINDING = 0x001
    ALLOCATE = 0x003
    REFRESH = 0x004
    SEND = 0x006
    DATA = 0x007
    CREATE_PERMISSION = 0x008
    CHANNEL_BIND = 0x009


# Attribute types: RFC 8489 §18.3 (STUN), RFC 8656 §18 (TURN), RFC 8445 §16.1 (ICE).
MAPPED_ADDRESS = 0x0001
USERNAME = 0x0006
MESSAGE_INTEGRITY = 0x0008
ERROR_CODE = 0x0009
UNKNOWN_ATTRIBUTES = 0x000A
CHANNEL_NUMBER = 0x000C
LIFETIME = 0x000D
XOR_PEER_ADDRESS = 0x0012
DATA = 0x0013
REALM = 0x0014
NONCE = 0x0015
XOR_RELAYED_ADDRESS = 0x0016
REQUESTED_ADDRESS_FAMILY = 0x0017
EVEN_PORT = 0x0018
REQUESTED_TRANSPORT = 0x0019
DONT_FRAGMENT = 0x001A
MESSAGE_INTEGRITY_SHA256 = 0x001C
PASSWORD_ALGORITHM = 0x001D
USERHASH = 0x001E
XOR_MAPPED_ADDRESS = 0x0020
RESERVATION_TOKEN = 0x0022
PRIORITY = 0x0024
USE_CANDIDATE = 0x0025
ADDITIONAL_ADDRESS_FAMILY = 0x8000
ADDRESS_ERROR_CODE = 0x8001
PASSWORD_ALGORITHMS = 0x8002
ALTERNATE_DOMAIN = 0x8003
ICMP = 0x8004
SOFTWARE = 0x8022
ALTERNATE_SERVER = 0x8023
FINGERPRINT = 0x8028
ICE_CONTROLLED = 0x8029
ICE_CONTROLLING = 0x802A

# Address families of the address attributes (RFC 8489 §14.1) and of
# REQUESTED-ADDRESS-FAMILY (RFC 8656 §18.8).
FAMILY_IPV4 = 0x01
FAMILY_IPV6 = 0x02

# Error codes with their RFC reason phrases (RFC 8489 §14.8, RFC 8656 §18).
REASONS: dict[int, str] = {
    300: "Try Alternate",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    420: "Unknown Attribute",
    437: "Allocation Mismatch",
    438: "Stale Nonce",
    440: "Address Family not Supported",
    441: "Wrong Credentials",
    442: "Unsupported Transport Protocol",
    443: "Peer Address Family Mismatch",
    486: "Allocation Quota Reached",
    500: "Server Error",
    508: "Insufficient Capacity",
}

Address = tuple[str, int]


def message_type(method: int, message_class: int) -> int:
    """Interleave method and class bits into the 14-bit message type (RFC 8489 §5)."""
    return (
        (method & 0x000F) | ((method & 0x0070) << 1) | ((method & 0x0F80) << 2) | message_class
    )


def split_message_type(value: int) -> tuple[int, int]:
    """Inverse of :func:`message_type`: return ``(method, class)``."""
    message_class = value & 0x0110
    method = (value & 0x000F) | ((value & 0x00E0) >> 1) | ((value & 0x3E00) >> 2)
    return method, message_class


def padding(length: int) -> int:
    """Bytes of padding after a value of ``length`` bytes (RFC 8489 §14)."""
    return -length % 4


@dataclass
class Message:
    """A STUN message: method, class, transaction ID and attributes as raw values.

    ``offsets`` gives, for each entry of ``attributes`` of a parsed message, the offset of its
    header in ``raw`` (what MESSAGE-INTEGRITY and FINGERPRINT are computed over).
    """

    method: int
    message_class: int
    transaction_id: bytes
    attributes: list[tuple[int, bytes]] = field(default_factory=list)
    raw: bytes = b""
    offsets: list[int] = field(default_factory=list)

    def get(self, attr_type: int) -> bytes | None:
        """The value of the first attribute of ``attr_type``, or None."""
        for kind, value in self.attributes:
            if kind == attr_type:
                return value
        return None

    def get_all(self, attr_type: int) -> list[bytes]:
        """All values of ``attr_type`` in wire order (e.g. several XOR-PEER-ADDRESS)."""
        return [value for kind, value in self.attributes if kind == attr_type]

    def add(self, attr_type: int, value: bytes) -> Message:
        """Append an attribute; returns self so calls chain."""
        self.attributes.append((attr_type, value))
        return self

    def offset_of(self, attr_type: int) -> int | None:
        """Offset in ``raw`` of the first attribute of ``attr_type`` (parsed messages only)."""
        for (kind, _), offset in zip(self.attributes, self.offsets, strict=False):
            if kind == attr_type:
                return offset
        return None

    def encode(self, integrity_key: bytes | None = None, fingerprint: bool = False) -> bytes:
        """Serialise, with zeroed padding, optionally adding MESSAGE-INTEGRITY (§14.5) and
        FINGERPRINT (§14.7) after the other attributes."""
        buf = encode_header_and_attributes(
            self.method, self.message_class, self.transaction_id, self.attributes
        )
        if integrity_key is not None:
            append_message_integrity(buf, integrity_key)
        if fingerprint:
            append_fingerprint(buf)
        return bytes(buf)


def encode_header_and_attributes(
    method: int, message_class: int, transaction_id: bytes, attributes: list[tuple[int, bytes]]
) -> bytearray:
    """The header and attributes of a message (RFC 8489 §5, §14), padding zeroed."""
    if len(transaction_id) != 12:
        raise StunError("transaction ID must be 12 bytes")
    body = bytearray()
    for attr_type, value in attributes:
        if len(value) > 0xFFFF:
            raise StunError("attribute value too long")
        body += _ATTR_HEADER.pack(attr_type, len(value))
        body += value
        body += bytes(padding(len(value)))
    if len(body) > 0xFFFF:
        raise StunError("message too long")
    header = _HEADER.pack(
        message_type(method, message_class), len(body), MAGIC_COOKIE, transaction_id
    )
    return bytearray(header) + body


def _set_length(buf: bytearray, length: int) -> None:
    buf[2:4] = length.to_bytes(2, "big")


def append_message_integrity(buf: bytearray, key: bytes) -> None:
    """Append MESSAGE-INTEGRITY (RFC 8489 §14.5): HMAC-SHA1 over the message with its length
    field already counting the MESSAGE-INTEGRITY attribute."""
    _set_length(buf, len(buf) - HEADER_LENGTH + 4 + MESSAGE_INTEGRITY_LENGTH)
    digest = hmac.new(key, bytes(buf), hashlib.sha1).digest()
    buf += _ATTR_HEADER.pack(MESSAGE_INTEGRITY, MESSAGE_INTEGRITY_LENGTH) + digest


def append_fingerprint(buf: bytearray) -> None:
    """Append FINGERPRINT (RFC 8489 §14.7): CRC-32 of the message XOR 0x5354554E."""
    _set_length(buf, len(buf) - HEADER_LENGTH + 8)
    crc = (binascii.crc32(bytes(buf)) ^ FINGERPRINT_XOR) & 0xFFFFFFFF
    buf += _ATTR_HEADER.pack(FINGERPRINT, 4) + crc.to_bytes(4, "big")


def is_stun(data: bytes) -> bool:
    """Cheap check used to demultiplex STUN from ChannelData (RFC 8656 §12, RFC 7983)."""
    return len(data) >= HEADER_LENGTH and data[0] < 0x40 and data[4:8] == _COOKIE_BYTES


def parse_message(data: bytes) -> Message:
    """Parse one STUN message that occupies all of ``data`` (RFC 8489 §5, §6.3).

    Attributes after MESSAGE-INTEGRITY other than MESSAGE-INTEGRITY-SHA256 and FINGERPRINT are
    ignored, as are attributes after FINGERPRINT (§14.5, §14.7). Raises :class:`StunError`.
    """
    if len(data) < HEADER_LENGTH:
        raise StunError("shorter than a STUN header")
    msg_type, length, cookie, transaction_id = _HEADER.unpack_from(data)
    if msg_type & 0xC000:
        raise StunError("first two bits are not zero")
    if cookie != MAGIC_COOKIE:
        raise StunError("wrong magic cookie")
    if length % 4:
        raise StunError("length is not a multiple of 4")
    if HEADER_LENGTH + length != len(data):
        raise StunError("length does not match the datagram")
    method, message_class = split_message_type(msg_type)
    message = Message(method, message_class, transaction_id, raw=bytes(data))
    pos = HEADER_LENGTH
    end = HEADER_LENGTH + length
    seen_integrity = False
    while pos < end:
        if end - pos < 4:
            raise StunError("truncated attribute header")
        attr_type, attr_length = _ATTR_HEADER.unpack_from(data, pos)
        value_end = pos + 4 + attr_length
        if value_end > end:
            raise StunError("attribute runs past the message")
        if not seen_integrity or attr_type in (MESSAGE_INTEGRITY_SHA256, FINGERPRINT):
            message.attributes.append((attr_type, bytes(data[pos + 4 : value_end])))
            message.offsets.append(pos)
        if attr_type == FINGERPRINT:
            break
        if attr_type in (MESSAGE_INTEGRITY, MESSAGE_INTEGRITY_SHA256):
            seen_integrity = True
        pos = value_end + padding(attr_length)
    return message


def check_fingerprint(message: Message) -> bool | None:
    """None if there is no FINGERPRINT, else whether it matches (RFC 8489 §14.7)."""
    offset = message.offset_of(FINGERPRINT)
    if offset is None:
        return None
    value = message.get(FINGERPRINT)
    if value is None or len(value) != 4:
        return False
    buf = bytearray(message.raw[:offset])
    _set_length(buf, offset - HEADER_LENGTH + 8)
    crc = (binascii.crc32(bytes(buf)) ^ FINGERPRINT_XOR) & 0xFFFFFFFF
    return crc == int.from_bytes(value, "big")


def check_message_integrity(message: Message, key: bytes) -> bool:
    """Whether MESSAGE-INTEGRITY-SHA256 (if present) or else MESSAGE-INTEGRITY matches under
    ``key`` (RFC 8489 §14.5, §14.6). False when neither is present or well-formed."""
    for attr_type, digestmod, size in (
        (MESSAGE_INTEGRITY_SHA256, hashlib.sha256, MESSAGE_INTEGRITY_SHA256_LENGTH),
        (MESSAGE_INTEGRITY, hashlib.sha1, MESSAGE_INTEGRITY_LENGTH),
    ):
        offset = message.offset_of(attr_type)
        if offset is None:
            continue
        value = message.get(attr_type)
        if value is None or len(value) != size:
            return False
        buf = bytearray(message.raw[:offset])
        _set_length(buf, offset - HEADER_LENGTH + 4 + size)
        expected = hmac.new(key, bytes(buf), digestmod).digest()
        return hmac.compare_digest(expected, value)
    return False


# --- typed attribute values ---------------------------------------------------------------


def _xor_bytes(transaction_id: bytes, family: int) -> bytes:
    return _COOKIE_BYTES + transaction_id if family == FAMILY_IPV6 else _COOKIE_BYTES


def encode_address(address: Address) -> bytes:
    """MAPPED-ADDRESS style value (RFC 8489 §14.1)."""
    ip = ipaddress.ip_address(address[0])
    family = FAMILY_IPV4 if ip.version == 4 else FAMILY_IPV6
    return struct.pack("!BBH", 0, family, address[1]) + ip.packed


def decode_address(value: bytes) -> Address:
    """Inverse of :func:`encode_address`; raises :class:`StunError`."""
    if len(value) < 4:
        raise StunError("address attribute too short")
    _, family, port = struct.unpack_from("!BBH", value)
    if family == FAMILY_IPV4 and len(value) == 8:
        return str(ipaddress.IPv4Address(value[4:8])), port
    if family == FAMILY_IPV6 and len(value) == 20:
        return str(ipaddress.IPv6Address(value[4:20])), port
    raise StunError("bad address family or length")


def encode_xor_address(address: Address, transaction_id: bytes) -> bytes:
    """XOR-MAPPED-ADDRESS style value (RFC 8489 §14.2); IPv4-mapped IPv6 addresses are
    written as the IPv4 address they are."""
    ip = ipaddress.ip_address(address[0])
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    family = FAMILY_IPV4 if ip.version == 4 else FAMILY_IPV6
    mask = _xor_bytes(transaction_id, family)
    xored = bytes(a ^ b for a, b in zip(ip.packed, mask, strict=False))
    return struct.pack("!BBH", 0, family, address[1] ^ (MAGIC_COOKIE >> 16)) + xored


def decode_xor_address(value: bytes, transaction_id: bytes) -> Address:
    """Inverse of :func:`encode_xor_address`; raises :class:`StunError`."""
    if len(value) < 4:
        raise StunError("address attribute too short")
    _, family, xport = struct.unpack_from("!BBH", value)
    size = {FAMILY_IPV4: 4, FAMILY_IPV6: 16}.get(family)
    if size is None or len(value) != 4 + size:
        raise StunError("bad address family or length")
    mask = _xor_bytes(transaction_id, family)
    packed = bytes(a ^ b for a, b in zip(value[4:], mask, strict=False))
    ip = ipaddress.IPv4Address(packed) if size == 4 else ipaddress.IPv6Address(packed)
    return str(ip), xport ^ (MAGIC_COOKIE >> 16)


def encode_error_code(code: int, reason: str | None = None) -> bytes:
    """ERROR-CODE value (RFC 8489 §14.8)."""
    text = REASONS.get(code, "") if reason is None else reason
    return struct.pack("!HBB", 0, code // 100, code % 100) + text.encode()


def decode_error_code(value: bytes) -> tuple[int, str]:
    """Inverse of :func:`encode_error_code`; raises :class:`StunError`."""
    if len(value) < 4:
        raise StunError("ERROR-CODE too short")
    hundreds, number = value[2] & 0x07, value[3]
    if not 3 <= hundreds <= 6 or number > 99:
        raise StunError("ERROR-CODE out of range")
    try:
        reason = value[4:].decode()
    except UnicodeDecodeError as exc:
        raise StunError("ERROR-CODE reason is not UTF-8") from exc
    return hundreds * 100 + number, reason


def encode_unknown_attributes(types: list[int]) -> bytes:
    """UNKNOWN-ATTRIBUTES value (RFC 8489 §14.9)."""
    return b"".join(t.to_bytes(2, "big") for t in types)


def decode_uint32(value: bytes) -> int:
    """A 32-bit unsigned value such as LIFETIME (RFC 8656 §18.2)."""
    if len(value) != 4:
        raise StunError("expected a 4-byte value")
    return int.from_bytes(value, "big")


def encode_uint32(number: int) -> bytes:
    return number.to_bytes(4, "big")


def decode_channel_number(value: bytes) -> int:
    """CHANNEL-NUMBER (RFC 8656 §18.1): 16-bit number then 16 reserved bits."""
    if len(value) != 4:
        raise StunError("CHANNEL-NUMBER must be 4 bytes")
    return int.from_bytes(value[:2], "big")


def encode_channel_number(number: int) -> bytes:
    return number.to_bytes(2, "big") + b"\x00\x00"


def decode_text(value: bytes, max_length: int) -> str:
    """USERNAME, REALM, NONCE, SOFTWARE: UTF-8 with a length limit (RFC 8489 §14)."""
    if len(value) > max_length:
        raise StunError("text attribute too long")
    try:
        return value.decode()
    except UnicodeDecodeError as exc:
        raise StunError("text attribute is not UTF-8") from exc


def is_comprehension_required(attr_type: int) -> bool:
    """Types 0x0000-0x7FFF must be understood (RFC 8489 §14)."""
    return attr_type < 0x8000


# --- ChannelData (RFC 8656 §12.4) ---------------------------------------------------------

# RFC 8656 §12 narrows channel numbers to 0x4000-0x4FFF, but RFC 5766 §11 clients (coturn's
# own tools among them) still pick numbers up to 0x7FFF, so those are accepted too.
CHANNEL_NUMBER_MIN = 0x4000
CHANNEL_NUMBER_MAX = 0x7FFF
_CHANNEL_HEADER = struct.Struct("!HH")


def encode_channel_data(number: int, data: bytes, pad: bool = False) -> bytes:
    """A ChannelData message; ``pad`` for stream transports (RFC 8656 §12.5)."""
    frame = _CHANNEL_HEADER.pack(number, len(data)) + data
    return frame + bytes(padding(len(data))) if pad else frame


def parse_channel_data(data: bytes) -> tuple[int, bytes]:
    """``(channel number, application data)`` of a ChannelData message (RFC 8656 §12.4);
    trailing padding is allowed. Raises :class:`StunError`."""
    if len(data) < 4:
        raise StunError("ChannelData shorter than its header")
    number, length = _CHANNEL_HEADER.unpack_from(data)
    if not CHANNEL_NUMBER_MIN <= number <= CHANNEL_NUMBER_MAX:
        raise StunError("not a channel number")
    if 4 + length > len(data):
        raise StunError("ChannelData length past the end")
    return number, bytes(data[4 : 4 + length])


def frame_length(header: bytes) -> int | None:
    """On a stream, the length of the frame starting with ``header`` (at least 4 bytes):
    STUN (20 + length) or ChannelData (4 + length, padded to 4; RFC 8656 §12.5).
    None if the first byte starts neither."""
    first = header[0]
    length = (header[2] << 8) | header[3]
    if first < 0x40:
        return HEADER_LENGTH + length
    if first < 0x80:
        return 4 + length + padding(length)
    return None
