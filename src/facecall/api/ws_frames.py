"""The common case of RFC 6455 framing, without a parser object: whole, unfragmented data frames.

Nearly every frame on ``/v1/signaling`` is one masked TEXT message from the client (§5.3) or one
unmasked TEXT message from the server (§5.1). :func:`frame_at` reads a frame's base header
(§5.2) so the transport can unmask such a frame itself (websockets' C ``apply_mask``) and hand
everything else — control frames (§5.5), fragments (§5.4), RSV bits, unmasked or over-size
frames — to websockets' :class:`~websockets.server.ServerProtocol`, whole, so that parser is
always at a frame boundary. :func:`encode_text_frames` writes server frames.
"""

from __future__ import annotations

import struct

from websockets.frames import apply_mask  # websockets picks its C speedup when built

__all__ = ["FIN_BINARY", "FIN_TEXT", "apply_mask", "encode_text_frames", "frame_at"]

FIN_TEXT = 0x81  # FIN, RSV1-3 clear, opcode %x1 (§5.2)
FIN_BINARY = 0x82  # FIN, RSV1-3 clear, opcode %x2
MASK = 0x80  # the MASK bit of the second byte
_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")
_HEAD16 = struct.Struct("!BBH")
_HEAD64 = struct.Struct("!BBQ")


def frame_at(buf: bytes, pos: int) -> tuple[int, int, bool] | None:
    """The frame starting at ``buf[pos]``: (payload offset, payload length, masked), or None
    while its header is incomplete. The masking key is the 4 bytes before the payload (§5.2)."""
    have = len(buf) - pos
    if have < 2:
        return None
    second = buf[pos + 1]
    length = second & 0x7F
    start = pos + 2
    if length == 126:  # 16-bit extended payload length
        if have < 4:
            return None
        length = _U16.unpack_from(buf, start)[0]
        start += 2
    elif length == 127:  # 64-bit extended payload length
        if have < 10:
            return None
        length = _U64.unpack_from(buf, start)[0]
        start += 8
    masked = bool(second & MASK)
    if masked:
        start += 4
    return start, length, masked


def encode_text_frames(texts: list[bytes]) -> bytes:
    """Unmasked, unfragmented TEXT frames (§5.1, §5.6) for UTF-8 payloads, as one buffer."""
    parts: list[bytes] = []
    for text in texts:
        n = len(text)
        if n < 126:
            parts.append(bytes((FIN_TEXT, n)))
        elif n < 0x10000:
            parts.append(_HEAD16.pack(FIN_TEXT, 126, n))
        else:
            parts.append(_HEAD64.pack(FIN_TEXT, 127, n))
        parts.append(text)
    return b"".join(parts)
