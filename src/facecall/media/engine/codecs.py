"""What the receive buffer needs to know about a video payload, without decoding it.

* VP8 (RFC 7741 §4.2): the payload descriptor's ``S`` bit with partition index 0 marks the first
  packet of a frame; the VP8 payload header's ``P`` bit (inverted) marks a key frame (§4.3).
* H.264 (RFC 6184): a frame is a key frame when it carries an IDR slice (NAL type 5) or a
  sequence parameter set (type 7). aiortc's depayloader turns single NAL units, STAP-A and the
  first fragment of an FU-A into Annex B (start code + NAL header), so a frame's joined data can
  be scanned for start codes.
"""

from __future__ import annotations

from aiortc import RTCRtpSender
from aiortc.rtcrtpparameters import RTCRtpCodecCapability

H264_NAL_IDR = 5
H264_NAL_SPS = 7
H264_NAL_STAP_A = 24
H264_NAL_FU_A = 28


def vp8_packet_info(payload: bytes) -> tuple[bool, bool]:
    """``(starts_frame, keyframe)`` from a raw VP8 RTP payload (descriptor included).

    ``keyframe`` is only meaningful when ``starts_frame`` is true. Malformed payloads give
    ``(False, False)``.
    """
    if not payload:
        return False, False
    first = payload[0]
    extended, start, partition = first & 0x80, first & 0x10, first & 0x0F
    pos = 1
    if extended:
        if len(payload) < 2:
            return False, False
        ext = payload[1]
        pos = 2
        if ext & 0x80:  # I: picture ID, 7 or 15 bits
            if len(payload) <= pos:
                return False, False
            pos += 2 if payload[pos] & 0x80 else 1
        if ext & 0x40:  # L: TL0PICIDX
            pos += 1
        if ext & 0x30:  # T or K: TID/Y/KEYIDX
            pos += 1
    starts = bool(start) and partition == 0
    if not starts or len(payload) <= pos:
        return starts, False
    return True, (payload[pos] & 0x01) == 0


def h264_is_keyframe(data: bytes) -> bool:
    """True when Annex B ``data`` holds an IDR slice or an SPS."""
    i = data.find(b"\x00\x00\x01")
    while i != -1 and i + 3 < len(data):
        if data[i + 3] & 0x1F in (H264_NAL_IDR, H264_NAL_SPS):
            return True
        i = data.find(b"\x00\x00\x01", i + 3)
    return False


def h264_packet_starts_keyframe(payload: bytes) -> bool:
    """True when a raw H.264 RTP payload (RFC 6184 §5.2) begins a key frame: a single IDR or SPS
    NAL unit, a STAP-A (§5.7.1) whose first unit is one, or the first FU-A fragment (§5.8) of one."""
    if not payload:
        return False
    kind = payload[0] & 0x1F
    if kind == H264_NAL_STAP_A:
        return len(payload) > 3 and payload[3] & 0x1F in (H264_NAL_IDR, H264_NAL_SPS)
    if kind == H264_NAL_FU_A:
        first_fragment = len(payload) > 1 and bool(payload[1] & 0x80)
        return first_fragment and payload[1] & 0x1F in (H264_NAL_IDR, H264_NAL_SPS)
    return kind in (H264_NAL_IDR, H264_NAL_SPS)


def packet_starts_keyframe(codec: str, payload: bytes) -> bool:
    """True when the RTP payload of ``codec`` (``"vp8"`` or ``"h264"``, any case) is the first
    packet of a key frame; other codecs: never."""
    name = codec.lower()
    if name == "vp8":
        starts, key = vp8_packet_info(payload)
        return starts and key
    if name == "h264":
        return h264_packet_starts_keyframe(payload)
    return False


def video_codec_preferences(first: str, *, only: bool = False) -> list[RTCRtpCodecCapability]:
    """aiortc's video codecs with ``first`` (a MIME type such as ``"video/H264"``) ahead of the
    others, or alone with ``only`` — for ``RTCRtpTransceiver.setCodecPreferences``. RTX stays (it
    repairs whichever codec is negotiated). A peer that lacks ``first`` negotiates the next one."""
    capabilities = RTCRtpSender.getCapabilities("video").codecs
    mime = first.lower()
    chosen = [c for c in capabilities if c.mimeType.lower() == mime]
    if not chosen:
        raise ValueError(f"unknown video codec {first!r}")
    rtx = [c for c in capabilities if c.mimeType.lower() == "video/rtx"]
    rest = [] if only else [c for c in capabilities if c.mimeType.lower() not in (mime, "video/rtx")]
    return chosen + rest + rtx
