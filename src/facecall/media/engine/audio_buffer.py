"""Adaptive audio jitter buffer with loss concealment slots.

Stock aiortc holds every audio packet until four more have arrived (``prefetch=4``: 80 ms at
20 ms packets), whatever the network does, and conceals nothing. :class:`AudioJitterBuffer`
plays each packet out at

    ``base + timestamp / clock_rate + target``

where ``base`` is the smallest transit time (arrival - media time) seen over the last
``base_window`` seconds and ``target`` follows the measured jitter: the ``quantile`` of recent
packets' extra delay over ``base``. The target starts at one packet, rises at once when jitter
grows and decays slowly (``decay`` seconds per second), so a clean path runs with almost no
buffering and a jittery one stops underrunning.

Every 20 ms slot of the timeline comes out exactly once, in order, as one of:

* ``PACKET`` — the packet arrived in time;
* ``FEC`` — the packet is lost but the next one is here: decode the next packet's in-band FEC
  data, which carries a lower-quality copy of this one (RFC 6716 §2.1.7, RFC 7587 §3.4). The
  buffer waits up to one more packet time for it when ``fec`` is on;
* ``CONCEAL`` — neither: let the decoder conceal the gap (Opus PLC, RFC 6716 §4.4).

A packet arriving after its slot was concealed is dropped (counted ``late``), but its delay still
raises the target. After ``max_conceal`` concealed slots with nothing arriving (the sender
paused), the buffer stops and resynchronises on the next packet.

Pure: the caller passes ``now`` (seconds), calls :meth:`pop` at :meth:`next_timer`.
"""

from __future__ import annotations

import collections
import enum
from dataclasses import dataclass, field

from .rtpseq import unwrap_seq

TS_MOD = 1 << 32
RESYNC_GAP = 50
"""A sequence jump larger than this (packets) restarts the timeline."""


class SlotKind(enum.StrEnum):
    PACKET = "packet"
    FEC = "fec"
    CONCEAL = "conceal"


@dataclass(frozen=True, slots=True)
class AudioSlot:
    """One packet time of audio to produce."""

    kind: SlotKind
    timestamp: int
    """Unwrapped RTP timestamp of the slot (counts from the first packet's timestamp)."""
    payload: bytes | None
    """The packet (``PACKET``), the *next* packet whose FEC data to decode (``FEC``), or ``None``."""
    samples: int
    """Slot length in samples at the clock rate."""


@dataclass(frozen=True, slots=True)
class AudioBufferConfig:
    clock_rate: int = 48000
    packet_time: float = 0.020
    """Assumed packet duration until two packets show the real one (s)."""
    initial_target: float | None = None
    """Starting target delay (s); ``None``: one packet."""
    min_target: float = 0.0
    max_target: float = 0.25
    quantile: float = 0.95
    history: int = 250
    """Packets in the jitter measurement (5 s at 20 ms): one stall is not jitter."""
    base_window: float = 4.0
    decay: float = 0.1
    """How fast the target may fall (s per s)."""
    conceal_margin: float = 0.004
    """A missing packet is concealed this long after its slot's play-out time."""
    fec: bool = False
    """In-band FEC was negotiated: wait for the next packet before concealing."""
    max_conceal: int = 5


@dataclass(slots=True)
class AudioBufferCounters:
    packets: int = 0
    fec: int = 0
    concealed: int = 0
    late: int = 0
    duplicate: int = 0
    resyncs: int = 0


@dataclass(slots=True)
class _Held:
    timestamp: int
    payload: bytes


@dataclass(slots=True)
class AudioJitterBuffer:
    """Play-out schedule of one audio stream; see the module docstring."""

    config: AudioBufferConfig = field(default_factory=AudioBufferConfig)
    counters: AudioBufferCounters = field(default_factory=AudioBufferCounters)
    target: float = 0.0
    _held: dict[int, _Held] = field(default_factory=dict)
    _highest: int | None = None
    _next: int | None = None
    _next_ts: int = 0
    _ts_last: int | None = None
    _ts_ext: int = 0
    _ts0: int | None = None
    _samples: int = 0
    _base_window: collections.deque[tuple[float, float]] = field(default_factory=collections.deque)
    _delays: collections.deque[float] = field(default_factory=collections.deque)
    _target_at: float | None = None
    _concealed_run: int = 0

    def __post_init__(self) -> None:
        c = self.config
        self.target = c.packet_time if c.initial_target is None else c.initial_target
        self._samples = round(c.packet_time * c.clock_rate)

    # -- public -------------------------------------------------------------------------------

    @property
    def base(self) -> float:
        return self._base_window[0][1] if self._base_window else 0.0

    def jitter(self) -> float:
        """The current ``quantile`` of extra delay over the base (s)."""
        if not self._delays:
            return 0.0
        ordered = sorted(self._delays)
        return ordered[min(len(ordered) - 1, int(self.config.quantile * len(ordered)))]

    def add(self, seq: int, timestamp: int, payload: bytes, now: float) -> None:
        """A packet arrived at ``now``."""
        ext_seq = self._unwrap_seq(seq)
        if self._next is not None and (ext_seq - self._highest > RESYNC_GAP  # type: ignore[operator]
                                       or self._next - ext_seq > RESYNC_GAP):
            self.counters.resyncs += 1
            self._held.clear()
            self._base_window.clear()
            self._delays.clear()
            self._next = self._ts_last = None
        ts = self._unwrap_ts(timestamp)
        self._measure(ts, now)
        if self._next is None:
            self._next, self._next_ts, self._highest = ext_seq, ts, ext_seq
            self._concealed_run = 0
        if ext_seq < self._next:
            self.counters.late += 1
            return
        if ext_seq in self._held:
            self.counters.duplicate += 1
            return
        self._held[ext_seq] = _Held(ts, payload)
        if ext_seq > self._highest:  # type: ignore[operator]
            step = ts - self._held[self._highest].timestamp if self._highest in self._held else 0
            gap = ext_seq - self._highest  # type: ignore[operator]
            if 0 < step // gap <= self.config.clock_rate:
                self._samples = step // gap
            self._highest = ext_seq

    def play_time(self, timestamp: int) -> float:
        """When the slot at unwrapped ``timestamp`` is due."""
        return self.base + timestamp / self.config.clock_rate + self.target

    def pop(self, now: float) -> list[AudioSlot]:
        """Slots due at ``now``, in order."""
        out: list[AudioSlot] = []
        while self._next is not None:
            held = self._held.get(self._next)
            if held is not None:
                if now < self.play_time(held.timestamp):
                    break
                del self._held[self._next]
                out.append(AudioSlot(SlotKind.PACKET, held.timestamp - (self._ts0 or 0), held.payload,
                                     self._samples))
                self.counters.packets += 1
                self._advance(held.timestamp)
                self._concealed_run = 0
                continue
            deadline = self._conceal_deadline()
            if deadline is None or now < deadline:
                break
            following = self._held.get(self._next + 1)
            ts = self._next_ts - (self._ts0 or 0)
            if self.config.fec and following is not None:
                out.append(AudioSlot(SlotKind.FEC, ts, following.payload, self._samples))
                self.counters.fec += 1
            else:
                out.append(AudioSlot(SlotKind.CONCEAL, ts, None, self._samples))
                self.counters.concealed += 1
            self._concealed_run += 1
            self._advance(self._next_ts)
        return out

    def next_timer(self) -> float | None:
        """When :meth:`pop` should next run (``None``: when the next packet arrives)."""
        if self._next is None:
            return None
        held = self._held.get(self._next)
        if held is not None:
            return self.play_time(held.timestamp)
        return self._conceal_deadline()

    # -- internals ----------------------------------------------------------------------------

    def _advance(self, ts: int) -> None:
        assert self._next is not None
        self._next += 1
        self._next_ts = ts + self._samples

    def _conceal_deadline(self) -> float | None:
        assert self._next is not None
        later = any(s > self._next for s in self._held)
        if not later and self._concealed_run >= self.config.max_conceal:
            return None
        wait = self.config.conceal_margin
        if self.config.fec:
            wait += self._samples / self.config.clock_rate
        return self.play_time(self._next_ts) + wait

    def _unwrap_seq(self, seq: int) -> int:
        return unwrap_seq(seq, self._highest)

    def _unwrap_ts(self, timestamp: int) -> int:
        if self._ts_last is None:
            self._ts_last, self._ts_ext, self._ts0 = timestamp, timestamp, timestamp
            return timestamp
        delta = (timestamp - self._ts_last) % TS_MOD
        if delta >= TS_MOD // 2:
            delta -= TS_MOD
        return self._ts_ext + delta if delta < 0 else self._bump_ts(timestamp, delta)

    def _bump_ts(self, timestamp: int, delta: int) -> int:
        self._ts_last = timestamp
        self._ts_ext += delta
        return self._ts_ext

    def _measure(self, ts: int, now: float) -> None:
        c = self.config
        transit = now - ts / c.clock_rate
        window = self._base_window
        while window and window[-1][1] >= transit:
            window.pop()
        window.append((now, transit))
        while window[0][0] < now - c.base_window:
            window.popleft()
        self._delays.append(transit - self.base)
        if len(self._delays) > c.history:
            self._delays.popleft()
        measured = min(c.max_target, max(c.min_target, self.jitter()))
        if self._target_at is not None:
            if measured >= self.target:
                self.target = measured
            else:
                self.target = max(measured, self.target - c.decay * (now - self._target_at))
        self._target_at = now
