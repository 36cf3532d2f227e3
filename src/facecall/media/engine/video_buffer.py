"""Video receive buffer: frames out as soon as they are complete, never held past a deadline.

Stock aiortc (``aiortc.jitterbuffer.JitterBuffer``) hands a frame to the decoder only when the
first packet of the *next* frame arrives — one frame interval of pure waiting — and keeps an
incomplete frame until 512 packets have piled up behind it. :class:`VideoReceiveBuffer` instead:

* releases a frame the moment its last packet (RTP marker, RFC 3550 §5.1) is in and every
  packet since the previous frame's end has arrived, in decode order;
* NACKs the gaps (RFC 4585 §6.2.1) through a :class:`~.nack.NackTracker` that asks only for what
  can still arrive before the frame's deadline, a bounded number of times;
* holds an incomplete frame — and the frames behind it — for at most ``budget`` (about two and
  a half round trips, within ``[min_delay, max_delay]``); then drops it, and, since the frames
  after it reference a picture the decoder never saw, drops them too until a key frame, which it
  asks for with a Picture Loss Indication (RFC 4585 §6.3.1), throttled to one per
  ``keyframe_interval`` while none arrives;
* jumps ahead to any complete key frame behind a gap; while it waits for a key frame it asks for
  no retransmission of what came before the key frame's first packet (those packets belong to
  frames it will drop) but does repair the key frame itself: after a bandwidth drop the key frame
  meets a still-full queue, and losing one of its packets for good would cost another request
  and another key frame;
* after a decode error (:meth:`decode_error`), drops until a key frame and asks for one.

Pure: no sockets, no clock. The caller passes ``now`` (seconds) to :meth:`add` and
:meth:`on_timer`, calls :meth:`on_timer` at :meth:`next_timer`, and acts on the returned
:class:`VideoOutput`: decode its frames, send its NACK and PLI.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .codecs import h264_is_keyframe
from .nack import NackConfig, NackTracker
from .rtpseq import SEQ_MOD, unwrap_seq

RESET_DISTANCE = 3000
"""A sequence jump larger than this (either way) restarts the buffer (new sender, new stream)."""


@dataclass(frozen=True, slots=True)
class VideoPacket:
    """One received RTP packet, depayloaded."""

    seq: int
    """RTP sequence number (16 bits, as on the wire)."""
    timestamp: int
    marker: bool
    data: bytes
    """Depayloaded bytes (what the decoder gets, concatenated per frame)."""
    starts_frame: bool = False
    """The codec says this is a frame's first packet (VP8 ``S`` bit, partition 0)."""
    keyframe: bool = False
    """The codec says this first packet starts a key frame."""


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    """A complete frame for the decoder."""

    timestamp: int
    data: bytes
    keyframe: bool
    first_seq: int
    last_seq: int


@dataclass(slots=True)
class VideoOutput:
    """What the caller must do after :meth:`VideoReceiveBuffer.add` / ``on_timer``."""

    frames: list[EncodedFrame] = field(default_factory=list)
    nack: list[int] = field(default_factory=list)
    """16-bit sequence numbers to NACK now."""
    keyframe_request: bool = False
    """Send a PLI now."""


@dataclass(frozen=True, slots=True)
class VideoBufferConfig:
    """Timing bounds of the video buffer (seconds)."""

    min_delay: float = 0.05
    max_delay: float = 0.4
    rtt_factor: float = 2.5
    """An incomplete frame is held for ``rtt_factor * rtt + jitter_margin``, within the bounds."""
    jitter_margin: float = 0.02
    keyframe_interval: float = 0.3
    """Minimum time between two key frame requests."""
    max_packets: int = 2048
    codec: str = "vp8"
    """``vp8`` or ``h264``: how key frames are recognised."""
    nack: NackConfig = field(default_factory=NackConfig)


@dataclass(slots=True)
class VideoBufferCounters:
    frames_released: int = 0
    keyframes_released: int = 0
    frames_dropped: int = 0
    """Frames given up at their deadline, or skipped while waiting for a key frame."""
    packets_late: int = 0
    packets_duplicate: int = 0
    keyframe_requests: int = 0
    decode_errors: int = 0
    resets: int = 0


class VideoReceiveBuffer:
    """Reassemble frames of one video stream; see the module docstring."""

    def __init__(self, config: VideoBufferConfig | None = None) -> None:
        self.config = config or VideoBufferConfig()
        self.nacks = NackTracker(self.config.nack)
        self.counters = VideoBufferCounters()
        self.rtt = 0.05
        """Round-trip time estimate (s); the caller updates it."""
        self.measured_rtt: float | None = None
        """Round trip seen from NACK to retransmission (EWMA), for receive-only connections."""
        self._packets: dict[int, VideoPacket] = {}
        self._arrival: dict[int, float] = {}
        self._highest: int | None = None
        self._next: int | None = None
        """First unwrapped sequence number not yet released or dropped."""
        self._prev_ts: int | None = None
        """Timestamp of the packet at ``_next - 1`` (released or dropped), if known."""
        self._waiting_keyframe = True
        self._keyframe_start: int | None = None
        """While waiting for a key frame: the (unwrapped) first packet of the newest one seen."""
        self._last_request = float("-inf")
        self._request_pending = False

    # -- public API ---------------------------------------------------------------------------

    @property
    def waiting_for_keyframe(self) -> bool:
        return self._waiting_keyframe

    @property
    def budget(self) -> float:
        c = self.config
        return min(c.max_delay, max(c.min_delay, c.rtt_factor * self.rtt + c.jitter_margin))

    def buffered(self) -> int:
        return len(self._packets)

    def add(self, packet: VideoPacket, now: float) -> VideoOutput:
        """A packet arrived at ``now``."""
        out = VideoOutput()
        seq = self._unwrap(packet.seq)
        if self._next is None or abs(seq - self._highest) > RESET_DISTANCE:  # type: ignore[operator]
            if self._next is not None:
                self.counters.resets += 1
                self._reset()
            self._next = seq
            self._highest = seq - 1
        if seq < self._next:
            self.counters.packets_late += 1
            return self._finish(out, now)
        if seq in self._packets:
            self.counters.packets_duplicate += 1
            return self._finish(out, now)
        self._packets[seq] = packet
        self._arrival[seq] = now
        newest_key = self._keyframe_start is None or seq > self._keyframe_start
        if packet.keyframe and packet.starts_frame and newest_key:
            self._keyframe_start = seq
        assert self._highest is not None
        if seq > self._highest:
            gap = range(self._highest + 1, seq)
            if not self.nacks.add_missing(gap, now, now + self.budget):
                self._request_keyframe(now, out)
            self._highest = seq
        else:
            sample = self.nacks.received(seq, now)
            if sample is not None:
                self.measured_rtt = sample if self.measured_rtt is None else (
                    0.8 * self.measured_rtt + 0.2 * sample)
        if len(self._packets) > self.config.max_packets:
            self._drop_head(now, out)
        self._release(now, out)
        return self._finish(out, now)

    def on_timer(self, now: float) -> VideoOutput:
        """Deadlines, NACK retries and key frame re-requests due at ``now``."""
        out = VideoOutput()
        deadline = self._head_deadline()
        if deadline is not None and now >= deadline:
            self._drop_head(now, out)
            self._release(now, out)
        return self._finish(out, now)

    def decode_error(self, now: float) -> VideoOutput:
        """The decoder failed on a frame: drop until a key frame and ask for one."""
        out = VideoOutput()
        self.counters.decode_errors += 1
        self._waiting_keyframe = True
        self._request_keyframe(now, out)
        return self._finish(out, now)

    def next_timer(self) -> float | None:
        """When :meth:`on_timer` should next run (``None``: only on the next packet)."""
        times = [t for t in (self._head_deadline(), self.nacks.next_due(self.rtt)) if t is not None]
        if self._request_pending:
            times.append(self._last_request + self.config.keyframe_interval)
        return min(times) if times else None

    # -- internals ----------------------------------------------------------------------------

    def _unwrap(self, seq: int) -> int:
        return unwrap_seq(seq, self._highest)

    def _reset(self) -> None:
        self._packets.clear()
        self._arrival.clear()
        self.nacks.clear()
        self._prev_ts = None
        self._waiting_keyframe = True
        self._keyframe_start = None

    def _finish(self, out: VideoOutput, now: float) -> VideoOutput:
        if self._waiting_keyframe:
            # what is missing before the key frame belongs to frames that will be dropped: asking
            # for it only takes bandwidth from the key frame (the NACK storm of a bandwidth drop)
            if self._keyframe_start is None:
                self.nacks.clear()
            else:
                self.nacks.forget_before(self._keyframe_start)
        out.nack = [s % SEQ_MOD for s in self.nacks.due(now, self.rtt)]
        if self._request_pending and now - self._last_request >= self.config.keyframe_interval:
            self._send_request(now, out)
        return out

    def _request_keyframe(self, now: float, out: VideoOutput) -> None:
        self._request_pending = True
        if now - self._last_request >= self.config.keyframe_interval:
            self._send_request(now, out)

    def _send_request(self, now: float, out: VideoOutput) -> None:
        self._last_request = now
        out.keyframe_request = True
        self.counters.keyframe_requests += 1

    def _starts_frame(self, seq: int) -> bool:
        packet = self._packets.get(seq)
        if packet is None:
            return False
        if packet.starts_frame:
            return True
        before = self._packets.get(seq - 1)
        if before is not None:
            return before.timestamp != packet.timestamp
        return seq == self._next and self._prev_ts is not None and self._prev_ts != packet.timestamp

    def _frame_at(self, start: int) -> int | None:
        """Last sequence number of the complete frame starting at ``start``, or ``None``."""
        first = self._packets.get(start)
        if first is None:
            return None
        seq = start
        while True:
            packet = self._packets.get(seq)
            if packet is None or packet.timestamp != first.timestamp:
                return None
            if packet.marker:
                return seq
            nxt = self._packets.get(seq + 1)
            if nxt is not None and nxt.timestamp != first.timestamp:
                return seq  # the marker packet was not marked: the timestamp tells the end
            seq += 1

    def _is_keyframe(self, start: int, end: int) -> bool:
        if self.config.codec == "h264":
            return h264_is_keyframe(b"".join(self._packets[s].data for s in range(start, end + 1)))
        return self._packets[start].keyframe

    def _take(self, start: int, end: int) -> EncodedFrame:
        packets = [self._packets.pop(s) for s in range(start, end + 1)]
        for s in range(start, end + 1):
            self._arrival.pop(s, None)
        keyframe = packets[0].keyframe if self.config.codec != "h264" else h264_is_keyframe(
            b"".join(p.data for p in packets))
        self._next = end + 1
        self._prev_ts = packets[-1].timestamp
        self.nacks.forget_before(end + 1)
        return EncodedFrame(packets[0].timestamp, b"".join(p.data for p in packets), keyframe, start, end)

    def _release(self, now: float, out: VideoOutput) -> None:
        while self._packets:
            assert self._next is not None
            end = self._frame_at(self._next) if self._starts_frame(self._next) else None
            if end is not None:
                keyframe = self._is_keyframe(self._next, end)
                frame = self._take(self._next, end)
                if self._waiting_keyframe and not keyframe:
                    self.counters.frames_dropped += 1
                    self._request_keyframe(now, out)
                    continue
                self._deliver(frame, out)
                continue
            if not self._jump_to_keyframe(out):
                return

    def _deliver(self, frame: EncodedFrame, out: VideoOutput) -> None:
        if frame.keyframe:
            self._waiting_keyframe = False
            self._keyframe_start = None
            self._request_pending = False
            self.counters.keyframes_released += 1
        self.counters.frames_released += 1
        out.frames.append(frame)

    def _jump_to_keyframe(self, out: VideoOutput) -> bool:
        """Skip a blocked head when a complete key frame waits behind it."""
        assert self._next is not None
        for seq in sorted(s for s in self._packets if s > self._next):
            if self._starts_frame(seq):
                end = self._frame_at(seq)
                if end is not None and self._is_keyframe(seq, end):
                    self._discard(seq)
                    self._deliver(self._take(seq, end), out)
                    return True
        return False

    def _discard(self, upto: int) -> None:
        """Drop everything below ``upto`` (counting the frames given up)."""
        assert self._next is not None
        dropped = [s for s in self._packets if s < upto]
        timestamps = {self._packets[s].timestamp for s in dropped}
        for s in dropped:
            last = self._packets.pop(s)
            self._arrival.pop(s, None)
            if s == upto - 1:
                self._prev_ts = last.timestamp
        if upto - 1 not in dropped:
            self._prev_ts = None
        self.counters.frames_dropped += max(1, len(timestamps))
        self._next = upto
        self.nacks.forget_before(upto)

    def _head_deadline(self) -> float | None:
        if not self._arrival:
            return None
        return min(self._arrival.values()) + self.budget

    def _drop_head(self, now: float, out: VideoOutput) -> None:
        """The head frame missed its deadline: drop it, wait for a key frame."""
        assert self._next is not None and self._highest is not None
        head = self._packets.get(self._next)
        later = sorted(s for s in self._packets if s > self._next and self._starts_frame(s)
                       and (head is None or self._packets[s].timestamp != head.timestamp))
        upto = later[0] if later else self._highest + 1
        self._discard(upto)
        self._waiting_keyframe = True
        self._request_keyframe(now, out)
