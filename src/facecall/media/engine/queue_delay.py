"""A standing queue on the path, seen by the receiver from send and arrival times.

aiortc's remote bitrate estimator (the receive side of draft-ietf-rmcat-gcc §5, fed by the
abs-send-time header extension, http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time) reports
its estimate as REMB, but the estimate follows the *incoming rate averaged over a second or more*:
after a drop from 2 Mbit/s to 500 kbit/s its first REMBs still say ~1 Mbit/s, and the sender
walks down in ~15 % steps while every picture is damaged (docs/benchmarks.md, "Media engine").

:class:`QueueDelayDetector` looks at the same two clocks for one thing only: a queue that
*stays*. For every packet it takes ``arrival - send`` (one-way delay plus an unknown constant
offset); the smallest value of the last ``baseline_window`` seconds is the empty-queue baseline,
and the smallest excess over it during the last ``sustain`` seconds is the standing queue —
random jitter leaves some packet near the baseline in any such window, a filling bottleneck
queue delays every packet. A standing queue over ``threshold`` is congestion only when the
bottleneck also shows it is overrun during that window: packets lost (gaps in the RTP sequence
numbers, ``min_loss``; a full drop-tail queue) or the queue still growing (the window's packets
took ``min_growth`` times longer to arrive than to be sent). Variable delay on a path that does
not reorder — each packet waits for the one before it — can hold every packet of a short window
above the baseline while everything sent arrives, at the rate it was sent; such a report walked
a 720p call over a 150 ms ± 30 ms path down to 180p (``bench/media.py``, session 3). Then the
detector returns what actually arrives (bytes over the last ``rate_window`` seconds) times
``backoff`` — GCC's decrease (§5.5: 0.85 of the incoming rate), but from a window short enough
to describe the bottleneck now. The receiver sends that as a REMB at once.

Pure: times in seconds on any clock; abs-send-time values (24 bits, 6.18 fixed point seconds,
wrapping every 64 s) are unwrapped here.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from .rtpseq import unwrap_seq

ABS_SEND_TIME_WRAP = 1 << 24
ABS_SEND_TIME_UNITS = 1 << 18  # per second (6.18 fixed point)


@dataclass(frozen=True, slots=True)
class QueueDelayConfig:
    threshold: float = 0.040
    """Standing queue (s) that counts as congestion; loopback and LAN paths stay under ~10 ms."""
    sustain: float = 0.15
    """The queue must hold for this long (s): longer than a paced key frame's own spread."""
    baseline_window: float = 3.0
    """The empty-queue baseline is the smallest delay seen in this many seconds."""
    rate_window: float = 0.15
    """Incoming rate over this many seconds."""
    backoff: float = 0.85
    interval: float = 0.2
    """At most one estimate per this many seconds."""
    min_loss: float = 0.05
    """Share of the sustain window's packets missing (sequence gaps) that shows an overrun queue."""
    min_growth: float = 1.3
    """Arrival span / send span of the sustain window's packets that shows a growing queue."""


class QueueDelayDetector:
    """Feed :meth:`add` every packet of one stream; it returns an estimate (bit/s) when a standing
    queue is seen, else ``None``."""

    def __init__(self, config: QueueDelayConfig | None = None) -> None:
        self.config = config or QueueDelayConfig()
        self._send_unwrapped = 0
        self._last_send_raw: int | None = None
        self._delays: deque[tuple[float, float]] = deque()
        """(arrival, delay) for the baseline window, delays increasing from the left (monotonic
        minimum queue)."""
        self._recent: deque[tuple[float, float, int | None]] = deque()
        """(arrival, delay, unwrapped RTP sequence number) for the sustain window."""
        self._last_seq: int | None = None
        self._bytes: deque[tuple[float, int]] = deque()
        self._bytes_total = 0
        self._first_arrival: float | None = None
        self._last_estimate = float("-inf")
        self.estimates = 0

    def _send_seconds(self, abs_send_time: int) -> float:
        """Unwrapped send time (s); a value more than half the range behind is a late packet."""
        raw = abs_send_time % ABS_SEND_TIME_WRAP
        if self._last_send_raw is None:
            self._last_send_raw, self._send_unwrapped = raw, raw
            return raw / ABS_SEND_TIME_UNITS
        step = (raw - self._last_send_raw) % ABS_SEND_TIME_WRAP
        if step < ABS_SEND_TIME_WRAP // 2:
            self._send_unwrapped += step
            self._last_send_raw = raw
            return self._send_unwrapped / ABS_SEND_TIME_UNITS
        return (self._send_unwrapped - (ABS_SEND_TIME_WRAP - step)) / ABS_SEND_TIME_UNITS

    def queue_delay(self) -> float:
        """The standing queue now (s): the smallest excess delay of the sustain window."""
        if not self._delays or not self._recent:
            return 0.0
        return min(d for _, d, _ in self._recent) - self._delays[0][1]

    def overrun(self) -> bool:
        """Whether the sustain window shows the bottleneck overrun: packets missing, or arriving
        over a longer span than they were sent in (see the module docstring)."""
        c = self.config
        first_arrival, first_delay, _ = self._recent[0]
        last_arrival, last_delay, _ = self._recent[-1]
        sent_span = (last_arrival - last_delay) - (first_arrival - first_delay)
        if sent_span > 0 and (last_arrival - first_arrival) >= c.min_growth * sent_span:
            return True
        seqs = [q for _, _, q in self._recent if q is not None]
        if len(seqs) < 2:
            return False
        expected = max(seqs) - min(seqs) + 1
        return 1 - len(set(seqs)) / expected >= c.min_loss

    def _unwrap_seq(self, seq: int | None) -> int | None:
        if seq is None:
            return None
        unwrapped = unwrap_seq(seq, self._last_seq)
        if self._last_seq is None or unwrapped > self._last_seq:
            self._last_seq = unwrapped
        return unwrapped

    def incoming_rate(self, now: float) -> float:
        """Bits per second that arrived over the rate window (0 until a window has passed)."""
        span = self.config.rate_window
        if self._first_arrival is None or now - self._first_arrival < span:
            return 0.0
        return self._bytes_total * 8 / span

    def add(self, abs_send_time: int, arrival: float, size: int, seq: int | None = None) -> int | None:
        """One media packet: its abs-send-time, arrival (s), size (bytes) and RTP sequence
        number (RFC 3550 §5.1; ``None`` if unknown: only growth then shows an overrun)."""
        c = self.config
        if self._first_arrival is None:
            self._first_arrival = arrival
        delay = arrival - self._send_seconds(abs_send_time)
        while self._delays and self._delays[-1][1] >= delay:
            self._delays.pop()
        self._delays.append((arrival, delay))
        while self._delays[0][0] < arrival - c.baseline_window:
            self._delays.popleft()
        self._recent.append((arrival, delay, self._unwrap_seq(seq)))
        while self._recent[0][0] < arrival - c.sustain:
            self._recent.popleft()
        self._bytes.append((arrival, size))
        self._bytes_total += size
        while self._bytes[0][0] < arrival - c.rate_window:
            self._bytes_total -= self._bytes.popleft()[1]
        if delay - self._delays[0][1] <= c.threshold or arrival - self._last_estimate < c.interval:
            return None  # this packet is not queued (the cheap test, for almost every packet)
        sustained = self._recent[0][0] <= arrival - 0.8 * c.sustain  # a window's worth of packets
        if sustained and self.queue_delay() > c.threshold and self.overrun():
            rate = self.incoming_rate(arrival)
            if rate > 0:
                self._last_estimate = arrival
                self.estimates += 1
                return int(rate * c.backoff)
        return None
