"""aiortc receiver with the engine's video and audio receive paths.

:class:`EngineReceiver` is aiortc's ``RTCRtpReceiver`` with its jitter buffer, NACK generator and
decode-error flag swapped for the engine's, right after aiortc's ``__init__`` and before
``receive()`` starts the decoder thread:

* video: packets go to a :class:`~.video_buffer.VideoReceiveBuffer`; complete frames go straight
  to aiortc's decoder queue (several at once when a retransmission completes them); NACKs and
  PLIs go out through the receiver's own ``_send_rtcp_nack`` / ``_send_rtcp_pli``; a timer on the
  event loop runs deadlines and NACK retries. A decode error reaches the buffer (drop until a key
  frame, one throttled PLI) instead of aiortc's unthrottled PLI per error. Send and arrival times
  (abs-send-time) also feed a :class:`~.queue_delay.QueueDelayDetector`: a standing queue is
  reported at once as a REMB of what actually arrives, ahead of aiortc's slower estimate.
* audio (Opus): packets go to an :class:`~.audio_buffer.AudioJitterBuffer`; due slots are decoded
  on the event loop by :class:`~.opus.OpusPlcDecoder` (packet, FEC, or concealment) and put on
  the remote track's queue. Other audio codecs go to aiortc's decoder unchanged, in order.
  A receiver whose decoder queue decrypts what it is given (the SDK's SFrame,
  facecall.client.sframe_media: the queue has ``open_payload``) has each Opus payload decrypted
  as it arrives, before the buffer (FEC and all work on the clear payloads); one that does not
  decrypt is dropped, and its slot concealed like a lost packet.

Private names of aiortc 1.16 used here are listed in :data:`PRIVATE_RECEIVER_ATTRIBUTES` and
checked by ``tests/media_engine/test_hooks.py``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiortc.codecs import is_rtx
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, pack_remb_fci

from .audio_buffer import AudioBufferConfig, AudioJitterBuffer, SlotKind
from .codecs import vp8_packet_info
from .opus import OpusPlcDecoder, load_libopus
from .queue_delay import QueueDelayDetector
from .video_buffer import VideoBufferConfig, VideoOutput, VideoPacket, VideoReceiveBuffer

if TYPE_CHECKING:
    from .engine import MediaEngine

logger = logging.getLogger(__name__)

PRIVATE_RECEIVER_ATTRIBUTES = (
    "_RTCRtpReceiver__jitter_buffer",
    "_RTCRtpReceiver__nack_generator",
    "_RTCRtpReceiver__decoder_error",
    "_RTCRtpReceiver__decoder_queue",
    "_RTCRtpReceiver__decoder_thread",
    "_RTCRtpReceiver__codecs",
    "_RTCRtpReceiver__timestamp_mapper",
    "_RTCRtpReceiver__rtcp_ssrc",
)
"""aiortc 1.16 ``RTCRtpReceiver`` attributes the engine reads or replaces."""


def _private(obj: object, name: str) -> Any:
    try:
        return getattr(obj, name)
    except AttributeError:  # pragma: no cover - only if aiortc changes
        raise RuntimeError(f"aiortc changed: {type(obj).__name__} has no {name}; "
                           "facecall.media.engine needs aiortc==1.16.*") from None


class _DecodeErrorSignal(threading.Event):
    """Stands in for aiortc's decode-error ``threading.Event``: ``set()`` (decoder thread) calls
    back on the event loop; ``is_set()`` stays false so aiortc sends no PLI of its own."""

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        super().__init__()
        self._loop = loop
        self._callback = callback

    def set(self) -> None:
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._callback)

    def is_set(self) -> bool:
        return False


class _Timer:
    """One rescheduled ``call_at`` on the event loop's clock.

    The due time is kept here: uvloop's ``call_at`` for a time already past returns a plain
    ``Handle``, which has no ``when()``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        self._loop = loop
        self._callback = callback
        self._handle: asyncio.Handle | None = None
        self._when: float | None = None

    def set(self, when: float | None) -> None:
        if self._handle is not None:
            if when is not None and self._when is not None and abs(self._when - when) < 1e-4:
                return
            self._handle.cancel()
            self._handle = self._when = None
        if when is not None:
            self._when = when
            self._handle = self._loop.call_at(max(when, self._loop.time()), self._fire)

    def _fire(self) -> None:
        self._handle = self._when = None
        try:
            self._callback()
        except Exception:  # never let a bug stop the stream
            logger.exception("media engine timer failed")

    def cancel(self) -> None:
        self.set(None)


class _VideoPath:
    """Stands in for aiortc's ``JitterBuffer`` on a video receiver."""

    capacity = 512  # read by nobody in aiortc 1.16; kept for its shape

    def __init__(self, receiver: EngineReceiver, config: VideoBufferConfig) -> None:
        self.receiver = receiver
        self.buffer = VideoReceiveBuffer(config)
        self.loop = asyncio.get_event_loop()
        self.timer = _Timer(self.loop, self._on_timer)
        self.ssrc = 0
        self.codec: Any = None
        self.tasks: set[asyncio.Future[None]] = set()

    def add(self, packet: Any) -> tuple[bool, JitterFrame | None]:
        try:
            return self._add(packet)
        except Exception:  # an exception here would end aiortc's whole DTLS receive loop
            logger.exception("media engine video path failed on a packet")
            return False, None

    def _add(self, packet: Any) -> tuple[bool, JitterFrame | None]:
        codec = _private(self.receiver, "_RTCRtpReceiver__codecs").get(packet.payload_type)
        if codec is not None:
            self.codec = codec
            name = codec.name.lower()
            if name in ("h264", "vp8") and self.buffer.config.codec != name:
                self.buffer.config = dataclasses.replace(self.buffer.config, codec=name)
        self.ssrc = packet.ssrc
        starts, key = vp8_packet_info(packet.payload) if self.buffer.config.codec == "vp8" else (False, False)
        engine = self.receiver.engine
        if engine.rtt_measured or self.buffer.measured_rtt is None:
            self.buffer.rtt = engine.rtt
        else:
            self.buffer.rtt = self.buffer.measured_rtt
        out = self.buffer.add(VideoPacket(packet.sequence_number, packet.timestamp, bool(packet.marker),
                                          getattr(packet, "_data", b""), starts, key), self.loop.time())
        self._act(out)
        return False, None

    def remove(self, count: int) -> None:  # aiortc's JitterBuffer API; unused here
        pass

    def _on_timer(self) -> None:
        self._act(self.buffer.on_timer(self.loop.time()))

    def decode_error(self) -> None:
        self._act(self.buffer.decode_error(self.loop.time()))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _act(self, out: VideoOutput) -> None:
        receiver = self.receiver
        if out.frames and self.codec is not None and _private(receiver, "_RTCRtpReceiver__decoder_thread"):
            mapper = _private(receiver, "_RTCRtpReceiver__timestamp_mapper")
            queue = _private(receiver, "_RTCRtpReceiver__decoder_queue")
            for frame in out.frames:
                queue.put((self.codec, JitterFrame(frame.data, mapper.map(frame.timestamp))))
        if out.nack:
            self._spawn(receiver._send_rtcp_nack(self.ssrc, out.nack))
        if out.keyframe_request:
            self._spawn(receiver._send_rtcp_pli(self.ssrc))
        self.timer.set(self.buffer.next_timer())


class _AudioPath:
    """Stands in for aiortc's ``JitterBuffer`` on an audio receiver."""

    capacity = 16

    def __init__(self, receiver: EngineReceiver, config: AudioBufferConfig) -> None:
        self.receiver = receiver
        self.buffer = AudioJitterBuffer(config)
        self.loop = asyncio.get_event_loop()
        self.timer = _Timer(self.loop, self._on_timer)
        self.decoder: OpusPlcDecoder | None = None
        self.codec: Any = None

    def add(self, packet: Any) -> tuple[bool, JitterFrame | None]:
        try:
            return self._add(packet)
        except Exception:  # an exception here would end aiortc's whole DTLS receive loop
            logger.exception("media engine audio path failed on a packet")
            return False, None

    def _add(self, packet: Any) -> tuple[bool, JitterFrame | None]:
        codec = _private(self.receiver, "_RTCRtpReceiver__codecs").get(packet.payload_type)
        if codec is None:
            return False, None
        if codec.name.lower() != "opus" or load_libopus() is None:
            # not ours to conceal: straight to aiortc's decoder, no waiting
            return False, JitterFrame(getattr(packet, "_data", packet.payload), packet.timestamp)
        self.codec = codec
        payload = getattr(packet, "_data", b"")
        opener = getattr(_private(self.receiver, "_RTCRtpReceiver__decoder_queue"), "open_payload", None)
        if opener is not None:
            payload = opener(payload)
            if payload is None:  # does not decrypt: as good as lost
                return False, None
        self.buffer.add(packet.sequence_number, packet.timestamp, payload, self.loop.time())
        self._on_timer()
        return False, None

    def remove(self, count: int) -> None:
        pass

    def _on_timer(self) -> None:
        slots = self.buffer.pop(self.loop.time())
        track = self.receiver.track
        if slots and track is not None:
            if self.decoder is None:
                self.decoder = OpusPlcDecoder()
            for slot in slots:
                if slot.kind == SlotKind.PACKET:
                    frame = self.decoder.decode(slot.payload or b"", slot.timestamp)
                elif slot.kind == SlotKind.FEC:
                    frame = self.decoder.decode_fec(slot.payload or b"", slot.samples, slot.timestamp)
                else:
                    frame = self.decoder.conceal(slot.samples, slot.timestamp)
                if frame is not None:
                    track._queue.put_nowait(frame)
        self.timer.set(self.buffer.next_timer())

    def close(self) -> None:
        self.timer.cancel()
        if self.decoder is not None:
            self.decoder.close()


class EngineReceiver(RTCRtpReceiver):
    """``RTCRtpReceiver`` whose receive path is the engine's (see the module docstring)."""

    def __init__(self, kind: str, transport: Any, engine: MediaEngine) -> None:
        super().__init__(kind, transport)
        self.engine = engine
        for name in PRIVATE_RECEIVER_ATTRIBUTES:
            _private(self, name)
        self.path: _VideoPath | _AudioPath
        if kind == "video":
            self.path = _VideoPath(self, engine.config.video)
            self._RTCRtpReceiver__nack_generator = None
            self._RTCRtpReceiver__decoder_error = _DecodeErrorSignal(self.path.loop, self.path.decode_error)
        else:
            self.path = _AudioPath(self, engine.config.audio)
        self._RTCRtpReceiver__jitter_buffer = self.path
        self.queue_delay = QueueDelayDetector(engine.config.queue_delay) if kind == "video" else None
        engine._receivers.append(self)

    async def _handle_rtp_packet(self, packet: Any, arrival_time_ms: int) -> None:
        detector = self.queue_delay
        codec = _private(self, "_RTCRtpReceiver__codecs").get(packet.payload_type)
        # not a retransmission (RFC 4588): it carries the original packet's send time, and the
        # report must name the media stream's SSRC, not the RTX stream's
        if (detector is not None and packet.extensions.abs_send_time is not None
                and codec is not None and not is_rtx(codec)):
            estimate = detector.add(packet.extensions.abs_send_time, arrival_time_ms / 1000,
                                    len(packet.payload) + packet.padding_size, packet.sequence_number)
            rtcp_ssrc = self._RTCRtpReceiver__rtcp_ssrc
            if estimate is not None and rtcp_ssrc is not None:
                # draft-alvestrand-rmcat-remb §2, the message aiortc's estimator sends, with the
                # stream's SSRC listed twice: any REMB reader applies it to that stream, and a
                # facecall sender knows it for a queue report, not aiortc's lagging estimate
                fci = pack_remb_fci(estimate, [packet.ssrc, packet.ssrc])
                await self._send_rtcp(RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=rtcp_ssrc, media_ssrc=0,
                                                     fci=fci))
        await super()._handle_rtp_packet(packet, arrival_time_ms)

    def stats(self) -> dict[str, object]:
        """The engine's receive counters for this track."""
        if isinstance(self.path, _VideoPath):
            c = self.path.buffer.counters
            nacks = self.path.buffer.nacks
            return {"kind": "video", "frames_released": c.frames_released, "frames_dropped": c.frames_dropped,
                    "keyframe_requests": c.keyframe_requests, "decode_errors": c.decode_errors,
                    "nacked": nacks.requested, "nack_given_up": nacks.given_up,
                    "buffer_budget_ms": round(self.path.buffer.budget * 1000, 1),
                    "queue_estimates": self.queue_delay.estimates if self.queue_delay else 0}
        a = self.path.buffer.counters
        return {"kind": "audio", "packets": a.packets, "fec": a.fec, "concealed": a.concealed, "late": a.late,
                "target_ms": round(self.path.buffer.target * 1000, 1)}

    async def stop(self) -> None:
        if isinstance(self.path, _AudioPath):
            self.path.close()
        else:
            self.path.timer.cancel()
        await super().stop()
