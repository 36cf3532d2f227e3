"""The clock offset between two devices (facecall.shareplay.clock, RFC 5905 §8 and §10)."""

from __future__ import annotations

import pytest

from facecall.shareplay.clock import ClockSync


def exchange(sync: ClockSync, offset: float, t0: float, out: float, back: float,
             hold: float = 0.5) -> None:
    """A ping at ``t0`` (this clock) taking ``out`` ms, answered after ``hold`` ms, whose pong
    takes ``back`` ms; the other clock reads ``offset`` ms more than this one."""
    t1 = t0 + out + offset
    t2 = t1 + hold
    t3 = t2 - offset + back
    sync.sample(t0, t1, t2, t3)


def test_equal_paths_give_the_exact_offset() -> None:
    sync = ClockSync()
    exchange(sync, offset=-12_345.0, t0=1000.0, out=20.0, back=20.0)
    assert sync.offset == pytest.approx(-12_345.0)
    assert sync.best is not None and sync.best.delay == pytest.approx(40.0)
    assert sync.to_local(50_000.0) == pytest.approx(62_345.0)


def test_uneven_paths_err_by_at_most_half_the_delay_and_the_quickest_sample_wins() -> None:
    sync = ClockSync()
    exchange(sync, offset=500.0, t0=0.0, out=90.0, back=10.0)  # slow and uneven
    assert abs(sync.offset - 500.0) <= 50.0
    exchange(sync, offset=500.0, t0=100.0, out=3.0, back=2.0)  # quick
    exchange(sync, offset=500.0, t0=200.0, out=60.0, back=5.0)
    assert sync.best is not None and sync.best.delay == pytest.approx(5.0)
    assert abs(sync.offset - 500.0) <= 2.5


def test_impossible_samples_are_dropped() -> None:
    sync = ClockSync()
    assert sync.sample(100.0, 50.0, 40.0, 200.0) is None  # answered before it was asked
    assert sync.sample(100.0, 0.0, 500.0, 150.0) is None  # held longer than the round trip
    assert sync.sample(100.0, 0.0, 0.0, 50.0) is None  # back before it left
    assert sync.best is None and sync.offset == 0.0
