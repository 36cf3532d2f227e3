"""Simulcast layer choice: which of a publisher's layers (RFC 8853) each subscriber's video
slot gets, so that what the SFU sends a subscriber fits the bandwidth its path has.

A publisher that sends simulcast sends the same video at up to three sizes, each an RTP stream
of its own (its ``rid``, RFC 8851/8852). The SFU forwards one of them per slot and moves a slot
to another layer at that layer's key frame, as it moves a slot to another publisher
(:mod:`facecall.sfu.munger`). What decides the layer is the subscriber's **downlink**
(:class:`Downlink`), which the SFU learns from the subscriber's own feedback:

* **REMB** (draft-alvestrand-rmcat-remb §2): the receiver's delay-based estimate for the
  streams it names. The SFU stamps abs-send-time itself on what it forwards, so the estimate is
  of the SFU → subscriber path. An estimate below :data:`CONGESTED_SHARE` of what the SFU sends
  on those streams means the path is full (a delay-based estimator that sees queues building
  answers some 85 % of what it receives);
* **receiver reports** (RFC 3550 §6.4.2): a fraction lost above :data:`CONGESTED_LOSS` on a
  video slot means the same.

Either sets a cap on what the subscriber gets; the cap is raised by :data:`PROBE_STEP` after
:attr:`Downlink.probe_wait` seconds without congestion (doubled each time a raise is followed
by congestion, up to :data:`PROBE_WAIT_MAX`): the SFU probes by trying the next layer, since
a receiver's estimate cannot grow far past what it is sent. Without a cap every slot gets its
publisher's best layer.

:func:`allocate` shares the cap between the slots: each gets its publisher's lowest live layer
(every slot stays watchable), then the slots in order of preference (dominant speakers first)
take the best layer the rest of the cap pays for; a slot goes above the layer it has only with
:data:`UPGRADE_MARGIN` to spare, so measured rates that jitter do not make it flap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

#: seconds of traffic a :class:`RateMeter` averages over, in :data:`BUCKETS` steps
WINDOW = 1.0
BUCKETS = 10
#: a REMB estimate below this share of what the SFU sends on its streams is congestion
CONGESTED_SHARE = 0.9
#: a receiver report's fraction lost (0..1) above this on a video slot is congestion
CONGESTED_LOSS = 0.1
#: on loss, the cap is this share of what the subscriber was being sent (libwebrtc's
#: loss-based controller backs off by a similar step: 1 - 0.5 x loss at 30 %)
LOSS_BACKOFF = 0.85
#: the cap grows by this factor per probe
PROBE_STEP = 1.5
#: seconds without congestion before a probe; doubled after a probe that failed
PROBE_WAIT_MIN = 2.0
PROBE_WAIT_MAX = 30.0
#: a cap above this (bit/s) is no cap: more than any three 1080p layers together
UNCAPPED = 20_000_000
#: an upgrade beyond a slot's current layer needs its extra rate x this to fit
UPGRADE_MARGIN = 1.2


@dataclass(slots=True)
class RateMeter:
    """Bits per second over the last :data:`WINDOW` seconds, in buckets (no per-packet list)."""

    buckets: list[int] = field(default_factory=lambda: [0] * BUCKETS)
    bucket_at: int = 0
    """The number of the newest bucket (seconds / bucket width, floored)."""

    def add(self, size: int, now: float) -> None:
        """Count ``size`` bytes at ``now`` (monotonic seconds)."""
        self._advance(now)
        self.buckets[self.bucket_at % BUCKETS] += size

    def bps(self, now: float) -> float:
        """Bits per second over the window ending at ``now``."""
        self._advance(now)
        return sum(self.buckets) * 8 / WINDOW

    def _advance(self, now: float) -> None:
        at = int(now * BUCKETS / WINDOW)
        if at <= self.bucket_at:
            return
        for n in range(self.bucket_at + 1, min(at, self.bucket_at + BUCKETS) + 1):
            self.buckets[n % BUCKETS] = 0
        self.bucket_at = at


@dataclass(slots=True)
class Downlink:
    """What a subscriber's path can take, as its feedback tells: a cap in bit/s, or None."""

    cap: float | None = None
    probe_wait: float = PROBE_WAIT_MIN
    next_probe: float = 0.0
    last_probe: float | None = None
    """When the cap was last raised (a congestion soon after it means the probe failed)."""
    congestions: int = 0

    def congested(self, cap: float, now: float) -> None:
        """The path is full at ``cap`` bit/s (from REMB or loss): take it as the cap."""
        if self.last_probe is not None and now - self.last_probe < self.probe_wait:
            self.probe_wait = min(PROBE_WAIT_MAX, self.probe_wait * 2)  # that raise failed
        self.last_probe = None
        self.cap = max(0.0, cap) if self.cap is None else min(self.cap, max(0.0, cap))
        self.next_probe = now + self.probe_wait
        self.congestions += 1

    def on_remb(self, estimate: float, sent: float, total: float, now: float) -> bool:
        """A REMB ``estimate`` for streams on which ``sent`` bit/s went out of ``total``
        sent to this subscriber: congestion when the estimate is under
        :data:`CONGESTED_SHARE` of ``sent``. The cap scales ``total`` by the estimate's share
        (a receiver with one estimator per stream, as aiortc's, names one slot at a time)."""
        if sent <= 0 or estimate >= CONGESTED_SHARE * sent:
            return False
        self.congested(total * estimate / sent, now)
        return True

    def on_loss(self, fraction: float, total: float, now: float) -> bool:
        """A receiver report's fraction lost (0..1) on a video slot, with ``total`` bit/s
        going to this subscriber: congestion above :data:`CONGESTED_LOSS`."""
        if fraction <= CONGESTED_LOSS or total <= 0:
            return False
        self.congested(total * LOSS_BACKOFF, now)
        return True

    def budget(self, now: float) -> float | None:
        """The cap to share now (None: none), after a probe if one is due."""
        if self.cap is not None and now >= self.next_probe:
            if self.last_probe is not None:  # the last raise held: probe sooner again
                self.probe_wait = max(PROBE_WAIT_MIN, self.probe_wait / 2)
            self.cap *= PROBE_STEP
            self.last_probe = now
            self.next_probe = now + self.probe_wait
            if self.cap > UNCAPPED:
                self.cap = self.last_probe = None
        return self.cap


def allocate(rates: Sequence[Sequence[float]], budget: float | None,
             current: Sequence[int | None] = ()) -> list[int]:
    """The layer index (into each slot's ``rates``, low → high, at least one) per slot, for
    slots given in order of preference; ``current``: each slot's layer now (None: none).

    No budget: every slot its best layer. Else every slot its lowest, then each in turn the
    best the rest pays for (an upgrade past its current layer with :data:`UPGRADE_MARGIN`)."""
    if budget is None:
        return [len(layers) - 1 for layers in rates]
    chosen = [0] * len(rates)
    left = budget - sum(layers[0] for layers in rates)
    for i, layers in enumerate(rates):
        now_at = current[i] if i < len(current) else None
        for j in range(len(layers) - 1, 0, -1):
            extra = layers[j] - layers[0]
            margin = 1.0 if now_at is not None and j <= now_at else UPGRADE_MARGIN
            if extra * margin <= left:
                chosen[i] = j
                left -= extra
                break
    return chosen
