"""AdaptationController on a fake clock: steps down on congestion, back up on recovery, no flapping."""

from __future__ import annotations

import random

from facecall.media.engine.adaptation import AdaptationConfig, AdaptationController, Reason


def run(ctl: AdaptationController, seconds: float, loss: float, start: float, remb: int | None = None,
        report_every: float = 0.25) -> list:
    changes = []
    t = start
    while t < start + seconds:
        t = round(t + 0.05, 4)
        if abs(t / report_every - round(t / report_every)) < 1e-6:
            ctl.on_loss(loss, t)
            if remb is not None:
                ctl.on_remb(remb, t)
        change = ctl.update(t)
        if change:
            changes.append((t, change))
    return changes


def make(source=(1280, 720, 30)) -> AdaptationController:
    ctl = AdaptationController()
    ctl.set_source(*source)
    return ctl


def test_starts_at_the_source_rung_on_a_clean_path() -> None:
    ctl = make()
    change = ctl.update(0.0)
    assert change is not None and change.after.rung.name == "720p30" and change.after.reason == Reason.START
    assert ctl.update(0.05) is None


def test_never_above_the_source() -> None:
    ctl = make((640, 360, 15))
    run(ctl, 20, 0.0, 0.0)
    assert ctl.state is not None and ctl.state.rung.name == "360p15"


def test_bandwidth_drop_steps_down_within_two_seconds_then_recovers() -> None:
    ctl = make()
    ctl.update(0.0)
    run(ctl, 5, 0.0, 0.0)
    assert ctl.state.rung.name == "720p30"
    down = run(ctl, 2.0, 0.6, 5.0)                       # a 500 kbit/s bottleneck drops most packets
    assert down and down[0][0] <= 5.5
    assert ctl.state.rung.height <= 360 and ctl.state.reason == Reason.CONGESTION
    run(ctl, 5, 0.01, 7.0)                               # settled at the new rate
    low = ctl.state.rung
    up = run(ctl, 10.0, 0.0, 12.0)                       # the limit lifts
    heights = [c.after.rung.height for _, c in up if c.rung_changed]
    assert heights == sorted(heights) and ctl.state.rung.name == "720p30"
    assert low.height < 720 and all(c.after.reason == Reason.RECOVERY for _, c in up)


def test_random_loss_below_ten_percent_is_not_congestion() -> None:
    ctl = make()
    ctl.update(0.0)
    assert run(ctl, 20, 0.03, 0.0) == []
    assert ctl.state.rung.name == "720p30"


def test_estimate_wobbling_around_a_threshold_does_not_flap() -> None:
    ctl = make()
    ctl.update(0.0)
    rng = random.Random(3)
    rung_changes = 0
    t = 0.0
    for _ in range(400):                                 # 20 s of REMB at 1.0-1.3 Mbit/s
        t = round(t + 0.05, 4)
        ctl.on_remb(rng.randint(1_000_000, 1_300_000), t)
        ctl.on_loss(0.0, t)
        change = ctl.update(t)
        rung_changes += bool(change and change.rung_changed)
    assert rung_changes <= 2


def test_audio_is_served_before_video() -> None:
    ctl = AdaptationController(AdaptationConfig(audio_reserve=110_000))
    ctl.set_source(1280, 720, 30)
    ctl.on_remb(150_000, 0.0)
    change = ctl.update(0.0)
    assert change is not None and change.after.rung.name == "180p15"
    assert ctl.video_budget() == ctl.config.ladder[-1].min_bps   # video gets only its floor
    other = AdaptationController(AdaptationConfig(audio_reserve=110_000))
    other.on_remb(300_000, 0.0)
    assert other.video_budget() == int(300_000 * other.config.headroom) - 110_000


def test_probing_stays_within_reach_of_what_is_sent() -> None:
    ctl = make()
    ctl.update(0.0)
    ctl.on_send_rate(1_000_000, 0.0)
    ctl.on_remb(1_000_000, 0.05)
    ctl.on_remb(300_000, 0.1)                           # falling, clearly below what is sent: a limit
    assert ctl.loss_estimate == 300_000
    ctl.on_send_rate(100_000, 0.2)
    ctl.send_rate = 100_000
    run(ctl, 10, 0.0, 0.2)                               # loss-free, but the sender sends little
    c = ctl.config
    assert ctl.loss_estimate <= max(c.probe_send_factor * 100_000 + c.audio_reserve / c.headroom,
                                    ctl._next_rung_rate()) + 1


def test_a_remb_climbing_behind_the_send_rate_is_lag_not_a_limit() -> None:
    ctl = make()
    ctl.update(0.0)
    ctl.on_send_rate(1_400_000, 0.0)
    for i, remb in enumerate((300_000, 400_000, 500_000, 600_000)):   # a rising estimate
        ctl.on_remb(remb, 0.1 * (i + 1))
        assert not ctl.remb_limits() and ctl.available() > remb
    ctl.on_remb(400_000, 0.6)                                         # now it falls: a queue
    assert ctl.remb_limits() and ctl.available() == 400_000


def test_a_sender_below_its_rung_rate_still_climbs() -> None:
    ctl = make()
    ctl.update(0.0)
    ctl.on_send_rate(1_400_000, 0.0)
    ctl.on_loss(0.6, 0.25)
    ctl.on_loss(0.6, 0.5)
    run(ctl, 3, 0.6, 0.5)
    assert ctl.state.rung.name == "180p15"
    ctl.send_rate = 40_000                 # simple pictures: x264 sends a fraction of the target
    up = run(ctl, 20, 0.0, 3.5)
    assert any(c.after.rung.height > 180 for _, c in up)


def test_no_burst_of_resolution_changes_right_after_one() -> None:
    ctl = make()
    ctl.update(0.0)
    ctl.on_send_rate(1_400_000, 0.0)
    changes = run(ctl, 1.0, 0.3, 5.0)      # congestion: several decreases within a second
    sizes = [(t, c.after.rung.height) for t, c in changes if c.rung_changed
             and c.after.rung.height != c.before.rung.height]
    assert len(changes) >= 3 and len(sizes) == 1        # one key frame; the rest are rate steps
    assert changes[-1][1].after.video_bitrate < changes[0][1].after.video_bitrate
    later = run(ctl, 2.0, 0.3, 6.0)                      # after the hold, the size may step again
    assert any(c.after.rung.height < sizes[0][1] for _, c in later)


def test_a_cut_far_below_the_rung_resizes_at_once() -> None:
    ctl = make()
    ctl.update(0.0)
    ctl.on_send_rate(1_400_000, 0.0)
    ctl.on_loss(0.3, 0.25)
    first = ctl.update(0.25)
    assert first is not None and first.rung_changed
    ctl.on_send_rate(1_400_000, 0.3)
    ctl.remb = 1_400_000
    ctl.on_remb(250_000, 0.3)                            # a standing queue: far below the rung
    change = ctl.update(0.3)                             # still within the resolution hold
    assert change is not None and change.after.rung.height < first.after.rung.height


def test_deep_drop_lands_near_what_got_through_in_few_steps() -> None:
    ctl = make()
    ctl.update(0.0)
    ctl.on_send_rate(1_500_000, 0.0)
    before = ctl.loss_estimate
    ctl.on_loss(0.65, 0.25)                              # a 500 kbit/s bottleneck under 1.6 Mbit/s
    assert ctl.loss_estimate == 0.5 * before             # at most halved in one step...
    ctl.on_loss(0.65, 0.5)
    assert ctl.loss_estimate <= (1_500_000 + ctl.config.audio_reserve) * 0.35 + 1   # ...then what got through


def test_a_queue_report_limits_even_below_a_lagging_remb() -> None:
    ctl = make()
    ctl.update(0.0)
    ctl.on_send_rate(1_400_000, 0.0)
    ctl.on_remb(380_000, 0.1)                 # aiortc's estimate, still climbing from a low start
    ctl.on_remb(400_000, 0.2)
    assert not ctl.remb_limits()
    ctl.on_queue_report(430_000, 0.3)         # the receiver saw a standing queue: a limit at once
    assert ctl.available() == 430_000
    change = ctl.update(0.3)
    assert change is not None and change.after.reason == Reason.CONGESTION
    assert change.after.video_bitrate <= 430_000
