"""The private aiortc/aioice hooks the SDK relies on (aiortc==1.16.*, aioice 0.13): each one acts
where asked and nowhere else."""

from __future__ import annotations

import fractions

import aioice.ice
import aiortc.rtcrtpsender
import av
import numpy as np
import pytest
from aiortc import RTCPeerConnection, RTCRtpCodecParameters
from aiortc.codecs.h264 import H264Encoder, h264_depayload
from aiortc.codecs.vpx import Vp8Encoder

from facecall.client.encoders import (
    REALTIME,
    X264_RATE_CEILING,
    EncoderTuning,
    TunedH264Encoder,
    TunedVp8Encoder,
    encoder_tuning,
    install_encoder_hook,
    x264_vbv_bits,
)
from facecall.client.ice import (
    host_addresses,
    keep_best_nominated_pair,
    parse_host_addresses,
    selected_candidate_pair,
)
from facecall.media.engine.codecs import h264_is_keyframe
from facecall.media.engine.sender import set_encoder_bitrate
from facecall.media.sources import MovingPattern


def picture(width: int, height: int) -> av.VideoFrame:
    frame = av.VideoFrame.from_ndarray(np.full((height * 3 // 2, width), 90, np.uint8), format="yuv420p")
    frame.pts, frame.time_base = 0, fractions.Fraction(1, 90000)
    return frame


H264 = RTCRtpCodecParameters(mimeType="video/H264", clockRate=90000, payloadType=102,
                             parameters={"packetization-mode": "1", "profile-level-id": "42e01f"})
VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)


def test_encoder_factory_is_tuned_only_inside_the_context() -> None:
    install_encoder_hook()
    get_encoder = aiortc.rtcrtpsender.get_encoder
    with encoder_tuning(REALTIME):
        assert type(aiortc.rtcrtpsender.get_encoder(H264)) is TunedH264Encoder
        assert type(aiortc.rtcrtpsender.get_encoder(VP8)) is TunedVp8Encoder
    assert type(aiortc.rtcrtpsender.get_encoder(H264)) is H264Encoder
    assert type(aiortc.rtcrtpsender.get_encoder(VP8)) is Vp8Encoder
    with encoder_tuning(None):
        assert type(aiortc.rtcrtpsender.get_encoder(VP8)) is Vp8Encoder
    assert aiortc.rtcrtpsender.get_encoder is get_encoder  # installed once, not stacked


def x264_settings(encoder: H264Encoder) -> bytes:
    payloads, _ = encoder.encode(picture(320, 240))
    data = b"".join(payloads)
    start = data.index(b"x264 - core")  # x264 writes its settings in an SEI of the first frame
    return data[start:start + 2000]


def test_x264_preset_reaches_the_encoder() -> None:
    assert b"subme=2 " in x264_settings(TunedH264Encoder(REALTIME))  # veryfast
    assert b"subme=7 " in x264_settings(H264Encoder())  # aiortc's default: medium
    assert b"subme=7 " in x264_settings(TunedH264Encoder(EncoderTuning(x264_preset=None)))


@pytest.mark.parametrize(("target", "vbv_kbit"), [(130_000, 50), (400_000, 100), (1_200_000, 250)])
def test_x264_vbv_follows_the_rate_it_opens_for(target: int, vbv_kbit: int) -> None:
    assert x264_vbv_bits(target) == vbv_kbit * 1000
    encoder = TunedH264Encoder(REALTIME)
    assert set_encoder_bitrate(encoder, target)
    settings = x264_settings(encoder)
    assert f"vbv_bufsize={vbv_kbit} ".encode() in settings


def test_vp8_threads_reach_the_encoder() -> None:
    encoder = TunedVp8Encoder(EncoderTuning(vp8_threads=2))
    payloads, _ = encoder.encode(picture(320, 240))
    assert payloads and encoder.codec.thread_count == 2
    assert encoder.codec.is_open
    stock = Vp8Encoder()
    stock.encode(picture(320, 240))
    assert stock.codec.thread_count == 1


def encode_moving(encoder: H264Encoder, pattern: MovingPattern, start: int, count: int) -> list[list[bytes]]:
    """RTP payloads of ``count`` pictures of a moving pattern (30 fps, 90 kHz timestamps)."""
    out = []
    for index in range(start, start + count):
        frame = av.VideoFrame.from_ndarray(pattern.render(index), format="yuv420p")
        frame.pts, frame.time_base = index * 3000, fractions.Fraction(1, 90000)
        out.append(encoder.encode(frame)[0])
    return out


def bits(frames: list[list[bytes]]) -> int:
    return sum(len(p) for payloads in frames for p in payloads) * 8


def is_keyframe(payloads: list[bytes]) -> bool:
    return h264_is_keyframe(b"".join(h264_depayload(p) for p in payloads))


def test_h264_rate_follows_the_target_without_reopening_x264() -> None:
    assert callable(H264Encoder._encode_frame)  # the private hook the tuned encoder overrides
    encoder, pattern = TunedH264Encoder(REALTIME), MovingPattern(640, 360)
    set_encoder_bitrate(encoder, 1_000_000)
    before = encode_moving(encoder, pattern, 0, 90)
    context = encoder.codec._context
    set_encoder_bitrate(encoder, 300_000)
    after = encode_moving(encoder, pattern, 90, 90)
    assert encoder.reopened == 1 and encoder.codec._context is context  # the same open x264
    assert is_keyframe(before[0]) and not any(is_keyframe(p) for p in after)  # no new key frame
    assert bits(after[30:]) < 0.5 * bits(before[30:])  # x264 followed the lower target
    set_encoder_bitrate(encoder, 900_000)
    again = encode_moving(encoder, pattern, 180, 90)
    assert encoder.codec._context is context and bits(again[30:]) > 1.5 * bits(after[30:])


def test_h264_reopens_above_the_ceiling_and_at_a_new_size() -> None:
    encoder = TunedH264Encoder(REALTIME)
    encode_moving(encoder, MovingPattern(320, 180), 0, 2)
    set_encoder_bitrate(encoder, X264_RATE_CEILING + 1_000_000)
    frames = encode_moving(encoder, MovingPattern(320, 180), 2, 2)
    assert encoder.reopened == 2 and is_keyframe(frames[0])
    frames = encode_moving(encoder, MovingPattern(640, 360), 4, 2)
    assert encoder.reopened == 3 and is_keyframe(frames[0])


def test_host_address_hook() -> None:
    everything = aioice.ice.get_host_addresses(True, True)
    assert "127.0.0.1" not in everything  # aioice's own rule, the reason for the hook
    with host_addresses(["127.0.0.1", "::1"]):
        assert aioice.ice.get_host_addresses(True, False) == ["127.0.0.1"]
        assert aioice.ice.get_host_addresses(True, True) == ["127.0.0.1", "::1"]
        with host_addresses(None):
            assert aioice.ice.get_host_addresses(True, True) == everything
    assert aioice.ice.get_host_addresses(True, True) == everything


def test_host_addresses_are_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_host_addresses("127.0.0.1, ::1") == ("127.0.0.1", "::1")
    with pytest.raises(ValueError, match="not an IP address"):
        parse_host_addresses(["localhost"])
    assert parse_host_addresses([]) == ()  # no host candidates at all
    monkeypatch.setenv("FACECALL_ICE_HOST_ADDRESSES", "127.0.0.1")
    assert parse_host_addresses(None) == ("127.0.0.1",)
    monkeypatch.delenv("FACECALL_ICE_HOST_ADDRESSES")
    assert parse_host_addresses(None) is None


def _pair(connection: aioice.ice.Connection, local_type: str, priority: int) -> aioice.ice.CandidatePair:
    local = aioice.Candidate("1", 1, "udp", priority, "127.0.0.1", 1000 + priority % 1000, local_type)
    remote = aioice.Candidate("2", 1, "udp", priority, "127.0.0.1", 2000 + priority % 1000, local_type)

    class Protocol:
        local_candidate = local

    pair = aioice.ice.CandidatePair(Protocol(), remote)  # type: ignore[arg-type]
    pair.nominated = True
    pair.state = aioice.ice.CandidatePair.State.SUCCEEDED
    return pair


async def test_nomination_hook_keeps_the_highest_priority_pair() -> None:
    pc = RTCPeerConnection()
    pc.addTransceiver("audio")
    stock = RTCPeerConnection()
    stock.addTransceiver("audio")
    try:
        keep_best_nominated_pair(pc)
        for peer, expected in ((pc, "host"), (stock, "relay")):
            connection = peer.getTransceivers()[0].sender.transport.transport._connection
            host = _pair(connection, "host", aioice.ice.candidate_priority(1, "host"))
            relay = _pair(connection, "relay", aioice.ice.candidate_priority(1, "relay"))
            connection.check_complete(host)
            connection.check_complete(relay)  # a later, lower-priority nomination
            assert connection._nominated[1].local_candidate.type == expected
            info = selected_candidate_pair(peer)
            assert info is not None and info.local_type == expected and info.path == expected
    finally:
        await pc.close()
        await stock.close()
