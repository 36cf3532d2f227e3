"""The offset between this device's clock and the other device's, from ping/pong exchanges
over the call's data channel, so that both play a shared video at the same position.

The exchange is NTP's on-wire one (RFC 5905 §8): this side sends its time ``t0``; the other
side notes when the ping arrived (``t1``) and when it sends the pong (``t2``), both on its
clock; this side notes when the pong arrived (``t3``). Then

* the round-trip delay is ``δ = (t3 - t0) - (t2 - t1)``, and
* the other clock's offset from this one is ``θ = ((t1 - t0) + (t2 - t3)) / 2``,

exact when the two paths take equally long, and wrong by at most ``δ / 2`` otherwise. Of the
last samples the one with the smallest delay is kept, as NTP's clock filter does (RFC 5905
§10): queueing only ever adds delay, so the quickest exchange is the truest. All times are
milliseconds.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

#: samples the filter keeps (RFC 5905 §10 keeps eight)
SAMPLES = 8


@dataclass(frozen=True, slots=True)
class ClockSample:
    """One exchange: the other clock's ``offset`` from this one and the ``delay``, in ms."""

    offset: float
    delay: float


class ClockSync:
    """The other device's clock as seen from this one."""

    def __init__(self) -> None:
        self._samples: deque[ClockSample] = deque(maxlen=SAMPLES)

    def sample(self, t0: float, t1: float, t2: float, t3: float) -> ClockSample | None:
        """Take one exchange (RFC 5905 §8); None for one that cannot be right (a pong that
        answers before its ping, or a negative delay)."""
        delay = (t3 - t0) - (t2 - t1)
        if t3 < t0 or t2 < t1 or delay < 0:
            return None
        taken = ClockSample(((t1 - t0) + (t2 - t3)) / 2, delay)
        self._samples.append(taken)
        return taken

    @property
    def best(self) -> ClockSample | None:
        """The sample with the smallest delay, or None before the first."""
        return min(self._samples, key=lambda s: s.delay, default=None)

    @property
    def offset(self) -> float:
        """Milliseconds to add to this clock to read the other one (0 before any sample)."""
        best = self.best
        return 0.0 if best is None else best.offset

    def to_local(self, remote_ms: float) -> float:
        """A time on the other device's clock, on this one."""
        return remote_ms - self.offset
