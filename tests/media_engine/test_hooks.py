"""Every private aiortc name the engine relies on, checked so an aiortc upgrade fails here first."""

from __future__ import annotations

import asyncio
import inspect
import time

import aiortc
import aiortc.rtcpeerconnection
import aiortc.rtcrtpreceiver
import aiortc.rtcrtpsender
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.rtcrtpreceiver import RemoteStreamTrack, RTCRtpReceiver
from aiortc.rtcrtpsender import RTCRtpSender

from facecall.media.engine import MediaEngine
from facecall.media.engine.engine import install_hooks
from facecall.media.engine.loopback import new_peer_connection
from facecall.media.engine.receiver import PRIVATE_RECEIVER_ATTRIBUTES, EngineReceiver
from facecall.media.engine.sender import (
    PRIVATE_ENCODER_BITRATE,
    PRIVATE_SENDER_ATTRIBUTES,
    RTP_HISTORY,
    EngineSender,
    set_encoder_bitrate,
)


def test_aiortc_is_the_pinned_version() -> None:
    assert aiortc.__version__.startswith("1.16."), aiortc.__version__


def test_peer_connection_builds_senders_and_receivers_from_module_names() -> None:
    source = inspect.getsource(aiortc.rtcpeerconnection.RTCPeerConnection)
    assert "RTCRtpSender(sender_track or kind, dtlsTransport)" in source
    assert "RTCRtpReceiver(kind, dtlsTransport)" in source


async def test_engine_classes_only_inside_activate() -> None:
    install_hooks()
    engine = MediaEngine()
    stock, ours = new_peer_connection(), new_peer_connection()
    try:
        stock.addTransceiver("video")
        with engine.activate():
            ours.addTransceiver("video")
            ours.addTransceiver("audio")
        plain = stock.getTransceivers()[0]
        assert type(plain.sender) is RTCRtpSender and type(plain.receiver) is RTCRtpReceiver
        assert all(isinstance(t.sender, EngineSender) and isinstance(t.receiver, EngineReceiver)
                   for t in ours.getTransceivers())
        assert len(engine.attach(ours)) == 4
    finally:
        await stock.close()
        await ours.close()


async def test_private_receiver_and_sender_attributes_exist() -> None:
    pc = new_peer_connection()
    try:
        transceiver = pc.addTransceiver("video")
        for name in PRIVATE_RECEIVER_ATTRIBUTES:
            assert hasattr(transceiver.receiver, name), name
        for name in PRIVATE_SENDER_ATTRIBUTES:
            assert hasattr(transceiver.sender, name), name
    finally:
        await pc.close()


def test_receiver_internals_the_engine_stands_in_for() -> None:
    # decoder thread gets the decode-error Event as its 4th argument, decoding frames it is handed
    params = list(inspect.signature(aiortc.rtcrtpreceiver.decoder_worker).parameters)
    assert params == ["loop", "input_q", "output_q", "decode_error"]
    handle = inspect.getsource(RTCRtpReceiver._handle_rtp_packet)
    assert "self.__jitter_buffer.add(packet)" in handle
    assert "self.__decoder_error.is_set()" in handle
    assert "self.__nack_generator is not None" in handle
    assert "packet._data = depayload(codec, packet.payload)" in handle
    assert hasattr(RemoteStreamTrack(kind="audio"), "_queue")
    for name in ("_send_rtcp_nack", "_send_rtcp_pli"):
        assert inspect.iscoroutinefunction(getattr(RTCRtpReceiver, name))


def test_sender_internals_the_engine_wraps() -> None:
    for name in ("_next_encoded_frame", "_handle_rtcp_packet", "send", "stop"):
        assert inspect.iscoroutinefunction(getattr(RTCRtpSender, name)), name
    next_frame = inspect.getsource(RTCRtpSender._next_encoded_frame)
    assert "self.__encoder = get_encoder(codec)" in next_frame
    assert "self.transport._send_rtp" in inspect.getsource(RTCRtpSender._run_rtp)
    assert "self.__encoder.target_bitrate = bitrate" in inspect.getsource(RTCRtpSender._handle_rtcp_packet)
    # the old picture held back after a step down (sender.py): NACKs reach _retransmit, whose
    # history is RTP_HISTORY packets long
    assert inspect.iscoroutinefunction(RTCRtpSender._retransmit)
    assert "await self._retransmit(seq)" in inspect.getsource(RTCRtpSender._handle_rtcp_packet)
    assert aiortc.rtcrtpsender.RTP_HISTORY_SIZE == RTP_HISTORY


def test_encoder_bitrate_attributes_bypass_the_clamps() -> None:
    assert set(PRIVATE_ENCODER_BITRATE) == {"Vp8Encoder", "H264Encoder"}
    for klass in (Vp8Encoder, H264Encoder):
        encoder = klass()
        assert set_encoder_bitrate(encoder, 120_000)
        assert encoder.target_bitrate == 120_000           # below aiortc's clamp, read back
    assert not set_encoder_bitrate(object(), 1)


def test_timer_survives_uvloop_past_due_handles() -> None:
    import uvloop

    from facecall.media.engine.receiver import _Timer

    fired: list[int] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        timer = _Timer(loop, lambda: fired.append(1))
        timer.set(loop.time() - 1)          # uvloop returns a plain Handle (no when())
        timer.set(loop.time() + 0.01)       # must reschedule, not raise
        await asyncio.sleep(0.05)

    uvloop.run(main())
    assert fired == [1]


def test_abs_send_time_is_stamped_on_aiortcs_ntp_clock() -> None:
    """The pacer restamps abs-send-time on the clock aiortc stamps it with (sender.py)."""
    import inspect

    from aiortc import clock
    from aiortc.rtcrtpsender import RTCRtpSender

    assert "clock.current_ntp_time() >> 14" in inspect.getsource(RTCRtpSender._run_rtp)
    assert abs(clock.current_ntp_time() / (1 << 32) - (time.time() + 2208988800)) < 1.0
