"""What an SFU reads and rewrites in a VP8 RTP payload (RFC 7741), without decoding anything:
the payload descriptor's picture numbers, and whether a packet starts a key frame.

The payload descriptor (RFC 7741 §4.2) opens every VP8 RTP payload::

     0 1 2 3 4 5 6 7
    +-+-+-+-+-+-+-+-+
    |X|R|N|S|R| PID |  required
    +-+-+-+-+-+-+-+-+
    |I|L|T|K| RSV   |  if X
    +-+-+-+-+-+-+-+-+
    |M| PictureID   |  if I; with M, PictureID has 15 bits (two octets)
    +-+-+-+-+-+-+-+-+
    |   TL0PICIDX   |  if L
    +-+-+-+-+-+-+-+-+
    |TID|Y| KEYIDX  |  if T or K
    +-+-+-+-+-+-+-+-+

The VP8 payload header follows it in the first packet of a frame (S = 1, PID = 0); its first
octet's lowest bit P is 0 for a key frame (RFC 7741 §4.3; RFC 6386 §9.1).

With SFrame (RFC 9605) the sender encrypts each encoded frame before packetization, so the
descriptor, written by the packetizer, stays readable; the payload header is readable only if
the sender leaves the frame's first octets clear. That is for the SFrame work to settle.
"""

from __future__ import annotations

X_BIT, S_BIT, PID_MASK = 0x80, 0x10, 0x07
I_BIT, L_BIT, T_BIT, K_BIT = 0x80, 0x40, 0x20, 0x10
M_BIT = 0x80


class Vp8Descriptor:
    """Where the numbers sit in one payload: offsets of the PictureID (and whether it is 15
    bits) and of the TL0PICIDX, and where the VP8 payload starts."""

    __slots__ = ("header_at", "long_picture", "partition", "picture_at", "start", "tl0_at")

    def __init__(self, payload: bytes) -> None:
        """Parse the descriptor (RFC 7741 §4.2); ValueError for a payload too short for it."""
        if not payload:
            raise ValueError("an empty VP8 payload")
        first = payload[0]
        self.start = bool(first & S_BIT)
        self.partition = first & PID_MASK
        self.picture_at: int | None = None
        self.long_picture = False
        self.tl0_at: int | None = None
        at = 1
        if first & X_BIT:
            if len(payload) < 2:
                raise ValueError("a VP8 descriptor cut short after X")
            ext = payload[1]
            at = 2
            if ext & I_BIT:
                if len(payload) < at + 1:
                    raise ValueError("a VP8 descriptor cut short in PictureID")
                self.picture_at = at
                self.long_picture = bool(payload[at] & M_BIT)
                at += 2 if self.long_picture else 1
            if ext & L_BIT:
                self.tl0_at = at
                at += 1
            if ext & (T_BIT | K_BIT):
                at += 1
        if at > len(payload):
            raise ValueError("a VP8 descriptor longer than its payload")
        self.header_at = at


def is_keyframe(payload: bytes) -> bool:
    """Whether the packet starts a VP8 key frame: the first packet of partition 0 (S = 1,
    PID = 0) whose payload header's P bit is 0 (RFC 7741 §4.3). False for anything that does
    not parse."""
    try:
        descriptor = Vp8Descriptor(payload)
    except ValueError:
        return False
    at = descriptor.header_at
    return (descriptor.start and descriptor.partition == 0 and at < len(payload)
            and payload[at] & 0x01 == 0)


def keyframe_size(payload: bytes) -> tuple[int, int] | None:
    """``(width, height)`` of the key frame this packet starts, from the VP8 key frame header
    that follows the 3-octet frame tag: the start code 0x9d 0x01 0x2a, then 14 bits of width
    and 14 of height, each after 2 bits of scaling, little-endian (RFC 6386 §9.1). None for a
    packet that does not start a key frame or is cut short. An SFrame sender leaves these ten
    octets clear (docs/sframe.md): the SFU tells a simulcast layer's size by them."""
    if not is_keyframe(payload):
        return None
    at = Vp8Descriptor(payload).header_at + 3
    if payload[at:at + 3] != b"\x9d\x01\x2a" or len(payload) < at + 7:
        return None
    width = int.from_bytes(payload[at + 3:at + 5], "little") & 0x3FFF
    height = int.from_bytes(payload[at + 5:at + 7], "little") & 0x3FFF
    return width, height


def picture_numbers(payload: bytes) -> tuple[int | None, int | None] | None:
    """``(PictureID, TL0PICIDX)`` of the descriptor, each None when absent; None for a payload
    that does not parse. A 7-bit PictureID is read as it is (0..127)."""
    try:
        descriptor = Vp8Descriptor(payload)
    except ValueError:
        return None
    picture = None
    if (at := descriptor.picture_at) is not None:
        picture = ((payload[at] & 0x7F) << 8 | payload[at + 1]) if descriptor.long_picture \
            else payload[at] & 0x7F
    tl0 = None if descriptor.tl0_at is None else payload[descriptor.tl0_at]
    return picture, tl0


def rewrite_picture_numbers(payload: bytes, picture: int | None, tl0: int | None) -> bytes:
    """The payload with its PictureID and TL0PICIDX replaced (where present), in the same
    form and length: a 7-bit PictureID takes the low 7 bits of ``picture``."""
    descriptor = Vp8Descriptor(payload)
    out = bytearray(payload)
    if picture is not None and (at := descriptor.picture_at) is not None:
        if descriptor.long_picture:
            out[at] = M_BIT | (picture >> 8) & 0x7F
            out[at + 1] = picture & 0xFF
        else:
            out[at] = picture & 0x7F
    if tl0 is not None and descriptor.tl0_at is not None:
        out[descriptor.tl0_at] = tl0 & 0xFF
    return bytes(out)
