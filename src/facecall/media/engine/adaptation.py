"""Adaptation controller: bitrate, resolution and frame rate from what the network reports.

Pure (events in, decisions out, the caller's clock), in the shape of the rate control of
draft-ietf-rmcat-gcc §5-6, with the receiver's delay-based estimate arriving as REMB
(draft-alvestrand-rmcat-remb):

* **available rate** = min(REMB, loss-based estimate, ``max_bitrate``). aiortc's REMB is bounded
  by 1.5 times the rate it receives, so a source that sends less than its target (a still
  picture) would drag the estimate down with it; REMB therefore caps the rate only when it is
  clearly below what the sender actually sends (``remb_limit_factor`` of it with loss,
  ``remb_alone_factor`` without, and then only while REMB falls — a REMB still climbing behind a
  rising send rate is lag; :meth:`AdaptationController.on_send_rate`), i.e. when the
  receiver sees queues building. The loss-based estimate (GCC §6) falls to
  ``rate * (1 - 0.5 * loss)`` on a loss report above 10 % — or to the rate that got through,
  ``sent * (1 - loss)``, if lower, but at most by half at a time — holds between
  2 % and 10 % (random loss is not congestion: NACKs repair it), and *probes upward*
  (times ``probe_factor`` every ``probe_interval``, never above ``probe_send_factor`` times the
  video actually sent — but always as far as the next rung's rate — and only ``careful_factor``
  near the rate where congestion last struck)
  once loss has stayed under 2 % for ``probe_hold``;
* **audio first**: ``audio_reserve`` is taken out of the available rate before video gets any;
  video gets at least its lowest rung's rate, whatever is left;
* **ladder**: the highest rung of :data:`LADDER` (1080p → 720p → 540p → 360p → 180p, each at
  30 → 24 → 15 fps where it makes sense) whose minimum rate fits the video budget, no higher than
  the source. Down at once; up only when the budget has cleared the higher rung's rate by
  ``up_margin`` for ``up_hold`` seconds — so the ladder does not flap;
* **encoder rate** within the rung, re-applied only when it moves by more than
  ``bitrate_deadband`` (a VP8 rate change rebuilds the encoder: a key frame);
* **no burst of size changes**: within ``resolution_hold`` of a change of picture size, further
  decreases lower only frame rate and encoder rate (each size change costs a key frame).

:meth:`AdaptationController.update` returns a :class:`QualityChange` when the rung or the target
rate changes; :attr:`AdaptationController.state` is the current :class:`QualityState`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace


@dataclass(frozen=True, slots=True)
class Rung:
    """One step of the ladder."""

    width: int
    height: int
    fps: int
    min_bps: int
    """Below this video rate the rung looks worse than the one under it."""

    @property
    def name(self) -> str:
        return f"{self.height}p{self.fps}"


LADDER: tuple[Rung, ...] = (
    Rung(1920, 1080, 30, 2_500_000),
    Rung(1920, 1080, 24, 2_000_000),
    Rung(1280, 720, 30, 1_200_000),
    Rung(1280, 720, 24, 950_000),
    Rung(960, 540, 30, 700_000),
    Rung(960, 540, 24, 560_000),
    Rung(640, 360, 30, 420_000),
    Rung(640, 360, 24, 320_000),
    Rung(640, 360, 15, 220_000),
    Rung(320, 180, 15, 100_000),
)
"""Highest first. Each rung's ``min_bps`` is where it starts to beat the rung below (VP8/H.264)."""


class Reason(enum.StrEnum):
    START = "start"
    CONGESTION = "congestion"
    """The available rate fell (loss or the receiver's estimate)."""
    RECOVERY = "recovery"
    """The available rate rose and held."""
    SOURCE = "source"
    """The source's own size or rate changed."""


@dataclass(frozen=True, slots=True)
class AdaptationConfig:
    start_bitrate: int = 1_800_000
    min_bitrate: int = 100_000
    max_bitrate: int = 2_500_000
    """Audio and video together."""
    audio_reserve: int = 130_000
    """Audio's share (Opus plus RTP/UDP overhead), taken before video's."""
    headroom: float = 0.85
    """Video and audio together use at most this share of the available rate."""
    loss_high: float = 0.10
    loss_low: float = 0.02
    probe_factor: float = 1.2
    probe_interval: float = 0.5
    probe_hold: float = 1.0
    decrease_interval: float = 0.2
    """At most one loss-driven decrease per this interval (one report's worth of evidence)."""
    up_margin: float = 1.15
    up_hold: float = 1.5
    bitrate_deadband: float = 0.15
    rung_max_factor: float = 1.3
    send_rate_alpha: float = 0.25
    probe_send_factor: float = 3.0
    """Probing never takes the estimate above this times the video actually sent (plus audio)."""
    remb_limit_factor: float = 0.75
    """REMB limits the rate below this share of the (smoothed) send rate when loss is over
    ``loss_high`` too (REMB then says how far down):
    aiortc's estimate hovers around the incoming rate and lags a rising one, so smaller
    differences are noise, not queues."""
    remb_alone_factor: float = 0.5
    """REMB limits without loss only below this share of the send rate (a deep queue, no drops)."""
    careful_band: tuple[float, float] = (0.85, 1.2)
    """Around the rate where congestion last struck, probe slowly (``careful_factor``)."""
    careful_factor: float = 1.05
    careful_memory: float = 20.0
    """Seconds the rate of the last congestion is remembered."""
    """A rung's encoder rate goes up to this times its ``min_bps``."""
    resolution_hold: float = 1.0
    """After a change of picture size (a key frame), further decreases within this many seconds
    lower the frame rate and the encoder rate only: a burst of resolution steps, each with its key
    frame, is what froze the picture at a bandwidth drop."""
    remb_fall: float = 0.95
    """REMB without loss limits only while it falls (below this times the previous report): a
    REMB still climbing behind a rising send rate is lag, not a queue."""
    ladder: tuple[Rung, ...] = LADDER


@dataclass(frozen=True, slots=True)
class QualityState:
    """What the sender does now, and why (for ``call.stats``)."""

    rung: Rung
    video_bitrate: int
    available: int
    """The available rate the decision was made from (bit/s)."""
    remb: int | None
    loss: float
    rtt: float | None
    reason: Reason
    changed_at: float

    @property
    def width(self) -> int:
        return self.rung.width

    @property
    def height(self) -> int:
        return self.rung.height

    @property
    def fps(self) -> int:
        return self.rung.fps

    def as_dict(self) -> dict[str, object]:
        return {"resolution": f"{self.width}x{self.height}", "fps": self.fps, "rung": self.rung.name,
                "video_bitrate": self.video_bitrate, "available_bitrate": self.available,
                "remb": self.remb, "loss": round(self.loss, 4), "rtt": self.rtt, "reason": self.reason.value}


@dataclass(frozen=True, slots=True)
class QualityChange:
    """Emitted by :meth:`AdaptationController.update` when the rung or the rate changes."""

    before: QualityState | None
    after: QualityState

    @property
    def rung_changed(self) -> bool:
        return self.before is None or self.before.rung != self.after.rung


@dataclass(slots=True)
class AdaptationController:
    """See the module docstring. Feed reports with ``on_*``, call :meth:`update` often."""

    config: AdaptationConfig = field(default_factory=AdaptationConfig)
    source: tuple[int, int, int] | None = None
    """Source ``(width, height, fps)``; rungs above it are never chosen."""
    remb: int | None = None
    loss: float = 0.0
    rtt: float | None = None
    loss_estimate: float = 0.0
    send_rate: int | None = None
    _state: QualityState | None = None
    _last_decrease: float = float("-inf")
    _last_loss_decrease: float = float("-inf")
    _congested_rate: float | None = None
    _low_loss_since: float | None = None
    _last_probe: float = float("-inf")
    _up_since: float | None = None
    _up_target: Rung | None = None
    _remb_falling: bool = False
    _resized_at: float = float("-inf")
    history: list[QualityChange] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.loss_estimate = float(self.config.start_bitrate)

    @property
    def state(self) -> QualityState | None:
        return self._state

    # -- reports ------------------------------------------------------------------------------

    def set_source(self, width: int, height: int, fps: int) -> None:
        self.source = (width, height, fps)

    def on_remb(self, bitrate: int, now: float) -> None:
        """Receiver Estimated Maximum Bitrate (bit/s).

        When it limits (see :meth:`remb_limits`), the loss-based estimate comes down to it too, so
        the rate climbs back only by probing — not the moment the lower send rate makes REMB look
        generous again."""
        previous, self.remb = self.remb, max(0, int(bitrate))
        self._remb_falling = previous is not None and self.remb < self.config.remb_fall * previous
        if self.remb_limits() and self.remb < self.loss_estimate:
            self._congested_rate = float(self.send_rate or self.loss_estimate)
            self.loss_estimate = max(float(self.config.min_bitrate), float(self.remb))
            self._last_decrease = now
            self._low_loss_since = now

    def on_queue_report(self, bitrate: int, now: float) -> None:
        """A facecall receiver saw a standing queue (:mod:`.queue_delay`) and measured what gets
        through (bit/s, video): unlike aiortc's REMB this is never lag, so it is a limit at once."""
        rate = max(float(self.config.min_bitrate), float(bitrate))
        if rate < self.loss_estimate:
            self._congested_rate = float(self.send_rate or self.loss_estimate)
            self.loss_estimate = rate
            self._last_decrease = now
            self._low_loss_since = now

    def on_send_rate(self, bitrate: int, now: float) -> None:
        """What the video sender actually sent over the last window (bit/s; REMB covers video only).

        Smoothed (EWMA, ``send_rate_alpha``) so that one key frame does not look like congestion."""
        a = self.config.send_rate_alpha
        rate = max(0, int(bitrate))
        self.send_rate = rate if self.send_rate is None else int(a * rate + (1 - a) * self.send_rate)

    def remb_limits(self) -> bool:
        """Whether the receiver's estimate is a limit now (below what is being sent)."""
        if self.remb is None:
            return False
        if self.send_rate is None:
            return True
        c = self.config
        lossy = self.loss > c.loss_high
        return (self._remb_falling and self.remb < c.remb_alone_factor * self.send_rate) or (
            lossy and self.remb < c.remb_limit_factor * self.send_rate)

    def on_rtt(self, rtt: float, now: float) -> None:
        self.rtt = rtt

    def on_loss(self, fraction: float, now: float) -> None:
        """Loss seen over the last report interval (0..1): RTCP RR fraction lost, or NACKed share."""
        c = self.config
        self.loss = min(1.0, max(0.0, fraction))
        if self.loss > c.loss_high:
            self._low_loss_since = None
            # gated by loss-driven decreases only: REMB's smaller, frequent cuts must not hold
            # back the halving a heavy loss report calls for
            if now - self._last_loss_decrease >= c.decrease_interval:
                rate = self.loss_estimate * (1 - 0.5 * self.loss)
                if self.send_rate is not None:
                    # what got through: after a deep drop, one step lands near the new capacity
                    delivered = (self.send_rate + c.audio_reserve) * (1 - self.loss)
                    rate = max(0.5 * self.loss_estimate, min(rate, delivered))
                self.loss_estimate = max(c.min_bitrate, rate)
                self._congested_rate = self.loss_estimate
                self._last_decrease = self._last_loss_decrease = now
        elif self.loss < c.loss_low:
            if self._low_loss_since is None:
                self._low_loss_since = now
        else:
            self._low_loss_since = None

    # -- decisions ----------------------------------------------------------------------------

    def available(self) -> int:
        c = self.config
        rate = min(self.loss_estimate, float(c.max_bitrate))
        if self.remb is not None and self.remb_limits():
            rate = min(rate, float(self.remb))
        return int(max(c.min_bitrate, rate))

    def video_budget(self) -> int:
        c = self.config
        lowest = c.ladder[-1].min_bps
        return max(lowest, int(self.available() * c.headroom) - c.audio_reserve)

    def _allowed(self) -> list[Rung]:
        """Rungs up to the source: the lowest rung at least as tall as the source means "full size"
        (a 320x240 source tops out at 360p, sent at 320x240), rungs above it are never chosen."""
        rungs = list(self.config.ladder)
        if self.source is not None:
            _, height, fps = self.source
            tall = [r.height for r in rungs if r.height >= height]
            cap = min(tall) if tall else rungs[0].height
            fitting = [r for r in rungs if r.height <= cap and r.fps <= max(fps, rungs[-1].fps)]
            rungs = fitting or rungs[-1:]
        return rungs

    def _fitting(self, budget: float) -> Rung:
        rungs = self._allowed()
        for rung in rungs:
            if rung.min_bps <= budget:
                return rung
        return rungs[-1]

    def _probe(self, now: float) -> None:
        c = self.config
        if self._low_loss_since is None or now - self._low_loss_since < c.probe_hold:
            return
        if now - self._last_probe >= c.probe_interval and now - self._last_decrease >= c.probe_hold:
            factor = c.probe_factor
            if self._congested_rate is not None and now - self._last_decrease < c.careful_memory:
                low, high = c.careful_band
                if low * self._congested_rate <= self.loss_estimate <= high * self._congested_rate:
                    factor = c.careful_factor
            probed = min(self.loss_estimate * factor, float(c.max_bitrate))
            if self.send_rate is not None:
                # like GCC's bound of 1.5x the received rate: probe from what is really sent
                cap = max(c.probe_send_factor * self.send_rate + c.audio_reserve / c.headroom,
                          self._next_rung_rate())
                probed = min(probed, max(cap, self.loss_estimate))
            self.loss_estimate = probed
            self._last_probe = now

    def _next_rung_rate(self) -> float:
        """The available rate at which the rung above the current one is cleared (0 at the top):
        probing may always reach it, or a sender whose pictures compress well below its rung's
        rate could never leave that rung."""
        c, state = self.config, self._state
        rungs = self._allowed()
        if state is None or state.rung not in rungs or rungs.index(state.rung) == 0:
            return 0.0
        above = rungs[rungs.index(state.rung) - 1]
        return (above.min_bps * c.up_margin + c.audio_reserve) / c.headroom * 1.02

    def update(self, now: float) -> QualityChange | None:
        """Decide at ``now``; returns the change, if any."""
        c = self.config
        self._probe(now)
        budget = self.video_budget()
        current = self._state
        wanted = self._fitting(budget)
        rung, reason = wanted, Reason.START
        if current is not None:
            rungs = self._allowed()
            rung, reason = current.rung, current.reason
            if current.rung not in rungs:
                rung, reason = self._fitting(budget), Reason.SOURCE
            elif rungs.index(wanted) > rungs.index(current.rung):
                rung, reason = wanted, Reason.CONGESTION
                deep = budget < 0.5 * current.rung.min_bps  # far below: resize now, one key frame
                if (wanted.height != current.rung.height and now - self._resized_at < c.resolution_hold
                        and not deep):
                    same_size = [r for r in rungs if r.height == current.rung.height]
                    rung = same_size[-1]  # its lowest frame rate; the rate goes below its minimum
                self._up_since = None
            elif rungs.index(wanted) < rungs.index(current.rung):
                cleared = self._fitting(budget / c.up_margin)
                if rungs.index(cleared) < rungs.index(current.rung):
                    if self._up_since is None:
                        self._up_since = now
                    if now - self._up_since >= c.up_hold:
                        rung, reason = cleared, Reason.RECOVERY
                        self._up_since = None
                else:
                    self._up_since = None
            else:
                self._up_since = None
        floor = rung.min_bps if reason != Reason.CONGESTION else min(rung.min_bps, max(budget, c.min_bitrate))
        bitrate = int(min(max(budget, floor), rung.min_bps * c.rung_max_factor, c.max_bitrate))
        if current is not None and rung == current.rung:
            moved = abs(bitrate - current.video_bitrate) / max(1, current.video_bitrate)
            if moved <= c.bitrate_deadband:
                return None
            if bitrate > current.video_bitrate and now - current.changed_at < c.up_hold:
                return None  # up in rate, like up the ladder, only after a quiet while
            reason = Reason.CONGESTION if bitrate < current.video_bitrate else Reason.RECOVERY
        if current is None or rung.height != current.rung.height:
            self._resized_at = now
        state = QualityState(rung, bitrate, self.available(), self.remb, self.loss, self.rtt, reason, now)
        change = QualityChange(current, state)
        self._state = state
        self.history.append(change)
        del self.history[:-100]
        return change

    def force(self, rung: Rung, now: float) -> QualityChange:
        """Pin a rung (tests, a user's choice); the next :meth:`update` may move it again."""
        before = self._state
        base = before or QualityState(rung, rung.min_bps, self.available(), self.remb, self.loss, self.rtt,
                                      Reason.START, now)
        self._state = replace(base, rung=rung, changed_at=now)
        return QualityChange(before, self._state)
