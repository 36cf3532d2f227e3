"""aiortc sender driven by the adaptation controller.

:class:`EngineSender` is aiortc's ``RTCRtpSender`` with:

* its video track wrapped in an :class:`AdaptingVideoTrack`, which drops frames down to the
  chosen frame rate and scales pictures down to the chosen rung before the encoder sees them
  (aiortc rebuilds its encoder at a new size by itself);
* its RTCP handling observed: REMB (draft-alvestrand-rmcat-remb) goes to the
  :class:`~.adaptation.AdaptationController` instead of straight into the encoder, receiver
  reports (RFC 3550 §6.4) give loss and round-trip time, NACKs (RFC 4585 §6.2.1) a faster loss
  measure (share of sent packets NACKed per ``loss_window``);
* the encoder's target rate set from the controller's decision, beyond aiortc's clamps
  (VP8 250 k-1.5 M, H.264 500 k-3 M). aiortc reopens a VP8 encoder whose rate moves by more
  than 10 % (FFmpeg's libvpx wrapper cannot change the rate of an open encoder), so the
  controller moves the rate only by more than its dead band; the SDK's tuned H.264 encoder
  changes x264's rate without reopening it (``facecall.client.encoders``);
* Opus in-band FEC switched on (RFC 6716 §2.1.7), harmless to any decoder;
* a pacer (token bucket, :class:`Pacer`) between the RTP loop and the transport, so a key frame
  leaves at the link's rate instead of overflowing a bottleneck queue;
* nothing of the old picture after a congestion step down to a smaller picture when the available
  rate collapsed (below ``STALE_CUT`` of what it was): the rest of the
  frame in progress is not sent and its packets, and those before it, are not retransmitted
  (RFC 4585 §6.2.1 NACKs for them are ignored) until the key frame of the new size has started.
  Those frames are broken by the very congestion that caused the step (the receiver waits for a
  key frame), and at the new, low rate sending or repairing them only delays that key frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

import av
from aiortc import clock
from aiortc.codecs.opus import OpusEncoder
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_RTPFB_NACK,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSrPacket,
    is_rtcp,
    unpack_remb_fci,
)

from .adaptation import QualityState, Reason, Rung
from .codecs import packet_starts_keyframe
from .rtpseq import SEQ_MOD

if TYPE_CHECKING:
    from .engine import MediaEngine

PRIVATE_SENDER_ATTRIBUTES = (
    "_RTCRtpSender__encoder",
    "_RTCRtpSender__track",
    "_RTCRtpSender__transport",
    "_RTCRtpSender__rtt",
    "_RTCRtpSender__packet_count",
    "_RTCRtpSender__octet_count",
)
"""aiortc 1.16 ``RTCRtpSender`` attributes the engine reads or replaces."""
PRIVATE_ENCODER_BITRATE = {"Vp8Encoder": "_Vp8Encoder__target_bitrate",
                           "H264Encoder": "_H264Encoder__target_bitrate"}
"""aiortc 1.16 encoder attributes behind ``target_bitrate`` (set past the setters' clamps)."""
RTP_HISTORY = 128
"""aiortc 1.16 ``RTP_HISTORY_SIZE``: how far back a NACK can still be answered."""
STALE_CUT = 0.6
"""The old picture is held back only when the available rate fell below this share of what it
was: a collapsed link (a bandwidth drop), whose in-flight frames are lost anyway. A milder step
(random loss) leaves them decodable, and holding them back would freeze the picture until the
new key frame."""
STALE_PACKET_LIMIT = 64
"""At most this many packets are held back waiting for the new picture's key frame (a bound in
case the codec's key frame is not recognised)."""


def codec_encoder(encoder: Any) -> Any:
    """The codec's own encoder behind ``encoder``: an encoder that wraps another (the SDK's
    SFrame encryption, facecall.client.sframe_media) names it ``inner``."""
    while (inner := getattr(encoder, "inner", None)) is not None:
        encoder = inner
    return encoder


def set_encoder_bitrate(encoder: Any, bitrate: int) -> bool:
    """Set an aiortc video encoder's target rate (bit/s), wrapped or not; ``False`` if it has
    none."""
    encoder = codec_encoder(encoder)
    for klass in type(encoder).__mro__:
        name = PRIVATE_ENCODER_BITRATE.get(klass.__name__)
        if name is not None and klass.__module__.startswith("aiortc."):
            setattr(encoder, name, int(bitrate))
            return True
    return False


def scaled_size(width: int, height: int, rung: Rung) -> tuple[int, int]:
    """The source scaled down (never up) to the rung's height, even dimensions, aspect kept."""
    scale = min(1.0, rung.height / height)
    if scale >= 1.0:
        return width, height
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


class AdaptingVideoTrack(MediaStreamTrack):
    """Wraps a video track: frame rate by dropping, resolution by scaling, per the current rung."""

    kind = "video"

    def __init__(self, source: MediaStreamTrack, engine: MediaEngine) -> None:
        super().__init__()
        self.source = source
        self.engine = engine
        self.rung: Rung | None = None
        self._next_time: float | None = None
        self.frames_in = 0
        self.frames_dropped = 0

    async def recv(self) -> Any:
        while True:
            frame = await self.source.recv()
            self.frames_in += 1
            if self.frames_in == 1 and isinstance(frame, av.VideoFrame):
                self.engine._source_seen(frame.width, frame.height)
            rung = self.rung
            if rung is None or not isinstance(frame, av.VideoFrame):
                return frame
            if self._keep(frame, rung.fps):
                return self._scale(frame, rung)
            self.frames_dropped += 1

    def _keep(self, frame: av.VideoFrame, fps: int) -> bool:
        has_time = frame.pts is not None and frame.time_base is not None
        t = float(frame.pts * frame.time_base) if has_time else time.monotonic()
        if self._next_time is None or t >= self._next_time - 0.25 / fps or t < self._next_time - 1.0:
            interval = 1.0 / fps
            self._next_time = max(t, (self._next_time or t)) + interval
            if self._next_time < t:  # fell behind (pause): restart the schedule
                self._next_time = t + interval
            return True
        return False

    def _scale(self, frame: av.VideoFrame, rung: Rung) -> av.VideoFrame:
        width, height = scaled_size(frame.width, frame.height, rung)
        if (width, height) == (frame.width, frame.height):
            return frame
        scaled = frame.reformat(width=width, height=height, format="yuv420p")
        scaled.pts, scaled.time_base = frame.pts, frame.time_base
        return scaled

    def stop(self) -> None:
        super().stop()
        self.source.stop()


class Pacer:
    """Token bucket for outgoing media (RFC 8298-style pacing): ``rate`` bit/s, ``burst`` bytes."""

    def __init__(self, rate: float = 10_000_000, burst: float = 20_000) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._at = time.monotonic()
        self.delayed = 0

    def configure(self, rate: float, burst: float) -> None:
        self._refill()
        self.rate, self.burst = max(rate, 50_000), max(burst, 2_400)
        self._tokens = min(self._tokens, self.burst)

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate / 8)
        self._at = now

    def wait_time(self, size: int) -> float:
        """Take ``size`` bytes; how long to wait before sending them (s)."""
        self._refill()
        self._tokens -= size
        return 0.0 if self._tokens >= 0 else -self._tokens * 8 / self.rate


ABS_SEND_TIME_URI = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"


def restamp_abs_send_time(data: bytes, extension_id: int, now: float) -> bytes:
    """``data`` (an RTP packet) with its abs-send-time extension set to ``now`` (NTP seconds, as
    6.18 fixed point, 24 bits); unchanged if it has none. RFC 3550 §5.3.1 header extension, RFC 8285 §4.2
    one-byte elements (the form aiortc writes)."""
    if len(data) < 12 or not data[0] & 0x10:
        return data
    start = 12 + 4 * (data[0] & 0x0F)
    if len(data) < start + 4 or data[start:start + 2] != b"\xbe\xde":
        return data
    end = start + 4 + 4 * int.from_bytes(data[start + 2:start + 4], "big")
    pos = start + 4
    while pos < min(end, len(data)):
        header = data[pos]
        if header == 0:  # padding
            pos += 1
            continue
        ident, length = header >> 4, (header & 0x0F) + 1
        if ident == 15:
            break
        if ident == extension_id and length == 3 and pos + 4 <= len(data):
            value = int(now * (1 << 18)) & 0xFFFFFF
            return data[:pos + 1] + value.to_bytes(3, "big") + data[pos + 4:]
        pos += 1 + length
    return data


def rtp_payload(data: bytes) -> bytes:
    """The payload of the RTP packet ``data``: after the fixed header and CSRCs (RFC 3550 §5.1)
    and the header extension (§5.3.1), without padding; ``b""`` when malformed."""
    if len(data) < 12:
        return b""
    pos = 12 + 4 * (data[0] & 0x0F)
    if data[0] & 0x10:
        if len(data) < pos + 4:
            return b""
        pos += 4 + 4 * int.from_bytes(data[pos + 2:pos + 4], "big")
    end = len(data) - (data[-1] if data[0] & 0x20 else 0)
    return data[pos:end] if pos < end else b""


class _PacedTransport:
    """The sender's view of its DTLS transport: RTP waits for the pacer, the rest forwards.

    aiortc stamps abs-send-time before the packet reaches the pacer; a packet the pacer held is
    stamped again when it really leaves, so the receiver's delay-based estimates (aiortc's and
    :mod:`.queue_delay`) see the network's queue, not ours."""

    def __init__(self, transport: Any, pacer: Pacer, sender: EngineSender) -> None:
        self._transport = transport
        self._pacer = pacer
        self._sender = sender

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    async def _send_rtp(self, data: bytes) -> None:
        if not is_rtcp(data):
            if not self._sender._admit(data):
                return
            self._sender._sent_packet(data)
            wait = self._pacer.wait_time(len(data))
            if wait > 0.001:
                self._pacer.delayed += 1
                await asyncio.sleep(wait)
                if self._sender.abs_send_time_id is not None:
                    # on aiortc's clock: NTP time (RFC 5905), as ``RTCRtpSender._run_rtp`` stamps it
                    data = restamp_abs_send_time(data, self._sender.abs_send_time_id,
                                                 clock.current_ntp_time() / (1 << 32))
        await self._transport._send_rtp(data)


class EngineSender(RTCRtpSender):
    """``RTCRtpSender`` under the engine's adaptation (see the module docstring)."""

    def __init__(self, trackOrKind: Any, transport: Any, engine: MediaEngine) -> None:
        self.engine = engine
        self.pacer = Pacer()
        self._paced: _PacedTransport | None = None
        super().__init__(trackOrKind, transport)
        for name in PRIVATE_SENDER_ATTRIBUTES:
            getattr(self, name)
        self._nacked: set[int] = set()
        self._window_seqs: set[int] = set()
        self.abs_send_time_id: int | None = None
        self._window_start = time.monotonic()
        self._window_sent = 0
        self._window_octets = 0
        self._adapt_task: asyncio.Task[None] | None = None
        self._applied_bitrate: int | None = None
        self._applied_height: int | None = None
        self._applied_available: int | None = None
        self._codec_name = ""
        self._awaiting_keyframe = False
        """After a congestion resize, until the new picture's key frame starts: send no media."""
        self._held_back = 0
        self._stale_seqs: set[int] = set()
        """Sequence numbers of the old picture whose NACKs are ignored."""
        self.stale_packets_dropped = 0
        self.stale_retransmissions_refused = 0
        engine._senders.append(self)

    # -- track ---------------------------------------------------------------------------------

    def replaceTrack(self, track: MediaStreamTrack | None) -> None:
        if track is not None and track.kind == "video" and not isinstance(track, AdaptingVideoTrack):
            track = AdaptingVideoTrack(track, self.engine)
            state = self.engine.controller.state
            track.rung = state.rung if state else None
        super().replaceTrack(track)

    @property
    def track(self) -> Any:
        track = getattr(self, "_RTCRtpSender__track", None)
        return track.source if isinstance(track, AdaptingVideoTrack) else track

    @property
    def adapting_track(self) -> AdaptingVideoTrack | None:
        track = getattr(self, "_RTCRtpSender__track", None)
        return track if isinstance(track, AdaptingVideoTrack) else None

    @property
    def transport(self) -> Any:
        real = self._RTCRtpSender__transport
        if self._paced is None or self._paced._transport is not real:
            self._paced = _PacedTransport(real, self.pacer, self)
        return self._paced

    # -- encoder -------------------------------------------------------------------------------

    async def _next_encoded_frame(self, codec: Any) -> Any:
        if self._RTCRtpSender__encoder is None:
            import aiortc.rtcrtpsender as module  # the (possibly SDK-wrapped) factory

            encoder = module.get_encoder(codec)
            opus = codec_encoder(encoder)
            if isinstance(opus, OpusEncoder) and self.engine.config.opus_fec:
                opus.codec.options = {**opus.codec.options, "fec": "1",
                                      "packet_loss": str(self.engine.config.opus_expected_loss)}
            self._RTCRtpSender__encoder = encoder
            self._applied_bitrate = None
            self._apply_bitrate()
        return await super()._next_encoded_frame(codec)

    def _apply_bitrate(self) -> None:
        state = self.engine.controller.state
        encoder = self._RTCRtpSender__encoder
        if self.kind != "video" or state is None or encoder is None:
            return
        if state.video_bitrate != self._applied_bitrate and set_encoder_bitrate(encoder, state.video_bitrate):
            self._applied_bitrate = state.video_bitrate

    def apply(self, state: QualityState) -> None:
        """Make the encoder, scaler and pacer follow ``state``."""
        if self.kind != "video":
            return
        track = self.adapting_track
        if track is not None:
            track.rung = state.rung
        smaller = self._applied_height is not None and state.rung.height < self._applied_height
        collapsed = (self._applied_available is not None
                     and state.available < STALE_CUT * self._applied_available)
        if smaller and collapsed and state.reason == Reason.CONGESTION:
            self._awaiting_keyframe, self._held_back = True, 0
        self._applied_height = state.rung.height
        self._applied_available = state.available
        self._apply_bitrate()
        config = self.engine.config
        # up to pacing_factor x the video rate, but not past the link's estimate, so that a key
        # frame waits in the pacer rather than overflowing the bottleneck's queue
        rate = min(config.pacing_factor * state.video_bitrate, 0.95 * state.available)
        self.pacer.configure(rate=max(rate, 1.2 * state.video_bitrate, 150_000),
                             burst=state.available / 8 * config.pacing_burst)

    # -- RTCP ----------------------------------------------------------------------------------

    async def _handle_rtcp_packet(self, packet: Any) -> None:
        now = asyncio.get_event_loop().time()
        controller = self.engine.controller
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
            with contextlib.suppress(ValueError):
                bitrate, ssrcs = unpack_remb_fci(packet.fci)
                if ssrcs.count(self._ssrc) > 1:  # a facecall receiver's queue report (receiver.py)
                    controller.on_queue_report(bitrate, now)
                    self.engine._update(now)
                elif self._ssrc in ssrcs:
                    controller.on_remb(bitrate, now)
                    self.engine._update(now)
            return  # the controller, not aiortc, sets the encoder rate
        if isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK and self.kind == "video":
            self._nacked.update(packet.lost)
        await super()._handle_rtcp_packet(packet)
        if isinstance(packet, RtcpRrPacket | RtcpSrPacket) and self.kind == "video":
            for report in packet.reports:
                if report.ssrc == self._ssrc:
                    controller.on_loss(report.fraction_lost / 256, now)
                    rtt = self._RTCRtpSender__rtt
                    if rtt is not None:
                        controller.on_rtt(rtt, now)
                        self.engine.rtt = rtt
                        self.engine.rtt_measured = True
                    self.engine._update(now)

    def send_rate(self, seconds: float) -> int:
        """Payload bit/s sent since the last call (``seconds`` ago)."""
        octets = self._RTCRtpSender__octet_count
        sent = octets - self._window_octets
        self._window_octets = octets
        return int(sent * 8 / seconds) if seconds > 0 else 0

    def _sent_packet(self, data: bytes) -> None:
        """Note the sequence number of a media packet leaving (RTX has its own SSRC)."""
        if len(data) >= 12 and int.from_bytes(data[8:12], "big") == self._ssrc:
            seq = int.from_bytes(data[2:4], "big")
            self._window_seqs.add(seq)
            self._stale_seqs.discard(seq)  # a number reused after the 16-bit wrap

    def _admit(self, data: bytes) -> bool:
        """Whether an outgoing RTP packet goes on the wire: while awaiting the key frame of a
        smaller picture (see the module docstring), media packets of the old one do not."""
        if not self._awaiting_keyframe or len(data) < 12 or int.from_bytes(data[8:12], "big") != self._ssrc:
            return True
        seq = int.from_bytes(data[2:4], "big")
        key = packet_starts_keyframe(self._codec_name, rtp_payload(data))
        if key or self._held_back >= STALE_PACKET_LIMIT:
            self._awaiting_keyframe = False
            self._stale_seqs = {(seq - k) % SEQ_MOD for k in range(1, RTP_HISTORY + 1)}
            return True
        self._held_back += 1
        self.stale_packets_dropped += 1
        return False

    async def _retransmit(self, sequence_number: int) -> None:
        if self.kind == "video" and (self._awaiting_keyframe or sequence_number in self._stale_seqs):
            self.stale_retransmissions_refused += 1
            return
        await super()._retransmit(sequence_number)

    def nack_loss(self) -> float | None:
        """Share of the packets sent since the last call that the receiver NACKed (``None``: none
        sent). NACKs for packets of earlier windows are not counted: after a drop they would be
        set against the few packets of a window that sends little, reading as 100 % loss."""
        sent_total = self._RTCRtpSender__packet_count
        sent = sent_total - self._window_sent
        nacked = len(self._nacked & self._window_seqs) if self._window_seqs else len(self._nacked)
        self._window_sent = sent_total
        self._nacked.clear()
        self._window_seqs.clear()
        if sent <= 0:
            return None
        return min(1.0, nacked / sent)

    # -- lifecycle ------------------------------------------------------------------------------

    async def send(self, parameters: Any) -> None:
        if parameters.codecs:
            self._codec_name = parameters.codecs[0].mimeType.split("/")[-1]
        for extension in parameters.headerExtensions:
            if extension.uri == ABS_SEND_TIME_URI:
                self.abs_send_time_id = extension.id
        await super().send(parameters)
        if self.kind == "video" and self._adapt_task is None:
            self._window_sent = self._RTCRtpSender__packet_count
            self._adapt_task = asyncio.ensure_future(self._adapt())

    async def _adapt(self) -> None:
        loop = asyncio.get_event_loop()
        window = self.engine.config.loss_window
        last = loop.time()
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                await asyncio.sleep(0.1)
                now = loop.time()
                if now - last >= window:
                    self.engine.controller.on_send_rate(self.send_rate(now - last), now)
                    last = now
                    loss = self.nack_loss()
                    if loss is not None:
                        self.engine.controller.on_loss(loss, now)
                self.engine._update(now)

    async def stop(self) -> None:
        if self._adapt_task is not None:
            self._adapt_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._adapt_task
        await super().stop()


