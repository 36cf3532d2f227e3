"""After a congestion step down to a smaller picture the sender sends nothing more of the old one
(sender.py), and the receiver's queue report ignores retransmissions (receiver.py)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
from aiortc.rtcrtpparameters import (
    RTCRtpCodecParameters,
    RTCRtpHeaderExtensionParameters,
    RTCRtpParameters,
)
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

from facecall.media.engine import MediaEngine
from facecall.media.engine.adaptation import LADDER, QualityState, Reason, Rung
from facecall.media.engine.codecs import h264_packet_starts_keyframe, packet_starts_keyframe
from facecall.media.engine.engine import install_hooks
from facecall.media.engine.loopback import new_peer_connection
from facecall.media.engine.sender import (
    ABS_SEND_TIME_URI,
    RTP_HISTORY,
    STALE_PACKET_LIMIT,
    EngineSender,
    rtp_payload,
)

VP8_KEY_START = bytes([0x10, 0x00])       # descriptor: S=1, partition 0; VP8 header: P=0 (key)
VP8_DELTA_START = bytes([0x10, 0x01])     # S=1, P=1 (inter frame)
VP8_MIDDLE = bytes([0x00, 0x55])          # not a frame's first packet


def rung(height: int, fps: int) -> Rung:
    return next(r for r in LADDER if r.height == height and r.fps == fps)


def state(height: int, fps: int, reason: Reason, available: int | None = None) -> QualityState:
    r = rung(height, fps)
    return QualityState(r, r.min_bps, available or 2 * r.min_bps, None, 0.0, None, reason, 0.0)


def rtp(seq: int, ssrc: int, payload: bytes, *, extension: bool = True) -> bytes:
    packet = RtpPacket(payload_type=96, sequence_number=seq, timestamp=1000, ssrc=ssrc, payload=payload)
    if extension:
        packet.extensions.abs_send_time = 0x123456
    extensions = HeaderExtensionsMap()
    extensions.configure(RTCRtpParameters(headerExtensions=[RTCRtpHeaderExtensionParameters(
        id=3, uri=ABS_SEND_TIME_URI)]))
    return packet.serialize(extensions)


@contextlib.asynccontextmanager
async def video_sender(codec: str = "VP8") -> AsyncIterator[EngineSender]:
    install_hooks()
    engine = MediaEngine()
    pc = new_peer_connection()
    try:
        with engine.activate():
            transceiver = pc.addTransceiver("video")
        sender = transceiver.sender
        assert isinstance(sender, EngineSender)
        sender._codec_name = codec
        sender.apply(state(720, 30, Reason.START))
        yield sender
    finally:
        await pc.close()


def test_rtp_payload_skips_header_csrcs_extension_and_padding() -> None:
    assert rtp_payload(rtp(1, 5, b"\x10\x00abc")) == b"\x10\x00abc"
    assert rtp_payload(rtp(1, 5, b"xyz", extension=False)) == b"xyz"
    csrc = bytes([0x81, 96, 0, 1]) + bytes(8) + bytes(4) + b"pay"    # CC=1
    assert rtp_payload(csrc) == b"pay"
    padded = bytes([0xA0, 96, 0, 1]) + bytes(8) + b"pay" + b"\x00\x00\x03"   # P=1, 3 bytes
    assert rtp_payload(padded) == b"pay"


@pytest.mark.parametrize("data", [b"", b"\x80" * 11, bytes([0x90, 96]) + bytes(12),   # X=1, no room
                                  bytes([0xA0, 96, 0, 1]) + bytes(8) + b"\xff"])        # padding > size
def test_rtp_payload_of_malformed_packets_is_empty(data: bytes) -> None:
    assert rtp_payload(data) == b""


def test_h264_key_frame_starts() -> None:
    assert h264_packet_starts_keyframe(bytes([0x65, 0x88]))            # IDR slice
    assert h264_packet_starts_keyframe(bytes([0x67, 0x42]))            # SPS
    assert not h264_packet_starts_keyframe(bytes([0x41, 0x9A]))        # non-IDR slice
    assert h264_packet_starts_keyframe(bytes([0x78, 0x00, 0x0A, 0x67]))     # STAP-A, SPS first
    assert not h264_packet_starts_keyframe(bytes([0x78, 0x00, 0x0A, 0x41]))
    assert h264_packet_starts_keyframe(bytes([0x7C, 0x85]))            # FU-A start of an IDR
    assert not h264_packet_starts_keyframe(bytes([0x7C, 0x05]))        # FU-A, not the start
    assert not h264_packet_starts_keyframe(bytes([0x7C, 0x81]))        # FU-A start, non-IDR
    for malformed in (b"", b"\x78\x00", b"\x7c"):
        assert not h264_packet_starts_keyframe(malformed)


def test_key_frame_start_by_codec() -> None:
    assert packet_starts_keyframe("VP8", VP8_KEY_START)
    assert not packet_starts_keyframe("vp8", VP8_DELTA_START)
    assert not packet_starts_keyframe("vp8", VP8_MIDDLE)
    assert packet_starts_keyframe("H264", bytes([0x65]))
    assert not packet_starts_keyframe("opus", VP8_KEY_START)


async def test_old_picture_is_not_sent_after_a_congestion_step_to_a_smaller_one() -> None:
    async with video_sender() as sender:
        ssrc = sender._ssrc
        assert sender._admit(rtp(100, ssrc, VP8_DELTA_START))           # nothing to hold back yet
        sender.apply(state(360, 15, Reason.CONGESTION))
        assert not sender._admit(rtp(101, ssrc, VP8_MIDDLE))            # rest of the 720p frame
        assert not sender._admit(rtp(102, ssrc, VP8_DELTA_START))       # a 720p frame still encoding
        assert sender._admit(rtp(101, ssrc ^ 1, VP8_MIDDLE))            # another stream (RTX): goes
        assert sender._admit(rtp(103, ssrc, VP8_KEY_START))             # the new size's key frame
        assert sender._admit(rtp(104, ssrc, VP8_MIDDLE))
        assert sender.stale_packets_dropped == 2
        # NACKs for the old picture are not answered, for the new one they are
        for seq in (99, 101, 102, (103 - RTP_HISTORY) % 65536):
            await sender._retransmit(seq)
        assert sender.stale_retransmissions_refused == 4
        await sender._retransmit(103)
        await sender._retransmit(104)
        assert sender.stale_retransmissions_refused == 4


async def test_no_retransmission_while_waiting_for_the_key_frame() -> None:
    async with video_sender() as sender:
        sender.apply(state(180, 15, Reason.CONGESTION))
        await sender._retransmit(7)
        assert sender.stale_retransmissions_refused == 1


async def test_holding_back_is_bounded_when_no_key_frame_is_recognised() -> None:
    async with video_sender(codec="AV1") as sender:                 # a codec we cannot parse
        sender.apply(state(360, 30, Reason.CONGESTION))
        sent = [sender._admit(rtp(seq, sender._ssrc, VP8_MIDDLE)) for seq in range(STALE_PACKET_LIMIT + 3)]
        assert sent.count(False) == STALE_PACKET_LIMIT and all(sent[STALE_PACKET_LIMIT:])


async def test_nothing_held_back_after_a_mild_step_to_a_smaller_picture() -> None:
    """Random loss cut the rate by a fifth: the frames in flight still decode."""
    async with video_sender() as sender:
        sender.apply(state(540, 30, Reason.CONGESTION, available=int(0.8 * 2 * rung(720, 30).min_bps)))
        assert sender._admit(rtp(1, sender._ssrc, VP8_MIDDLE))
        await sender._retransmit(0)
        assert sender.stale_packets_dropped == sender.stale_retransmissions_refused == 0


@pytest.mark.parametrize(("height", "fps", "reason"), [
    (720, 24, Reason.CONGESTION),        # same picture size: the encoder keeps its references
    (1080, 30, Reason.RECOVERY),         # larger
    (360, 30, Reason.SOURCE),            # the source changed, not the network
])
async def test_nothing_held_back_without_a_congestion_step_to_a_smaller_picture(
        height: int, fps: int, reason: Reason) -> None:
    async with video_sender() as sender:
        sender.apply(state(height, fps, reason))
        assert sender._admit(rtp(1, sender._ssrc, VP8_MIDDLE))
        await sender._retransmit(0)
        assert sender.stale_packets_dropped == sender.stale_retransmissions_refused == 0


async def test_queue_report_ignores_retransmissions() -> None:
    install_hooks()
    engine = MediaEngine()
    pc = new_peer_connection()
    try:
        with engine.activate():
            receiver = pc.addTransceiver("video").receiver
        vp8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
        rtx = RTCRtpCodecParameters(mimeType="video/rtx", clockRate=90000, payloadType=97,
                                    parameters={"apt": 96})
        receiver._RTCRtpReceiver__codecs.update({96: vp8, 97: rtx})
        detector = receiver.queue_delay
        assert detector is not None
        retransmission = RtpPacket(payload_type=97, sequence_number=1, timestamp=1, ssrc=2222,
                                   payload=b"\x00\x01" + VP8_MIDDLE)
        retransmission.extensions.abs_send_time = 1000
        await receiver._handle_rtp_packet(retransmission, 5000)
        assert detector._first_arrival is None                      # not a delay sample
        media = RtpPacket(payload_type=96, sequence_number=1, timestamp=1, ssrc=1111, payload=VP8_MIDDLE)
        media.extensions.abs_send_time = 1000
        await receiver._handle_rtp_packet(media, 5000)
        assert detector._first_arrival == 5.0
    finally:
        await pc.close()
