"""QueueDelayDetector on synthetic send/arrival times, and the pacer's abs-send-time restamp."""

from __future__ import annotations

import itertools
import random

import pytest

from facecall.media.engine.queue_delay import (
    ABS_SEND_TIME_UNITS,
    ABS_SEND_TIME_WRAP,
    QueueDelayConfig,
    QueueDelayDetector,
)
from facecall.media.engine.sender import restamp_abs_send_time

PACKET = 1200  # bytes
RATE = 150  # packets per second (1.44 Mbit/s)


def abs_time(seconds: float) -> int:
    return int(seconds * ABS_SEND_TIME_UNITS) % ABS_SEND_TIME_WRAP


def feed(detector: QueueDelayDetector, start: float, seconds: float, delay_of: object,
         offset: float = 7.0) -> list[tuple[float, int]]:
    """Send RATE packets/s from ``start``; each arrives ``delay_of(t)`` later (plus a clock offset).
    Returns (arrival without the offset, estimate) for every estimate."""
    out = []
    for i in range(int(seconds * RATE)):
        sent = start + i / RATE
        arrival = sent + offset + delay_of(sent)  # type: ignore[operator]
        estimate = detector.add(abs_time(sent), arrival, PACKET)
        if estimate is not None:
            out.append((arrival - offset, estimate))
    return out


def test_a_steady_path_gives_no_estimate() -> None:
    detector = QueueDelayDetector()
    assert feed(detector, 0.0, 5.0, lambda t: 0.002) == []
    assert detector.queue_delay() == pytest.approx(0.0, abs=1e-6)


def test_random_jitter_is_not_a_queue() -> None:
    rng = random.Random(1)
    detector = QueueDelayDetector()
    assert feed(detector, 0.0, 10.0, lambda t: 0.075 + rng.uniform(-0.030, 0.030)) == []


def test_a_filling_bottleneck_is_reported_with_what_arrives() -> None:
    detector = QueueDelayDetector()
    feed(detector, 0.0, 2.0, lambda t: 0.001)
    # from t=2 the path carries 500 kbit/s: the queue grows by (sent - carried) / carried
    link = 500_000 / (PACKET * 8)  # packets per second the bottleneck passes
    arrivals: list[float] = []

    def bottleneck(t: float) -> float:
        if t < 2.0:
            return 0.001
        at = max(t, arrivals[-1] + 1 / link) if arrivals else t
        arrivals.append(at)
        return at - t

    estimates = feed(detector, 2.0, 1.0, bottleneck)
    assert estimates, "a standing queue must be reported"
    first_time, first = estimates[0]
    config = detector.config
    assert first_time - 2.0 < config.sustain + 0.2            # soon after the queue stands
    assert 0.7 * 500_000 * config.backoff < first < 1.3 * 500_000 * config.backoff  # what arrives
    times = [t for t, _ in estimates]
    assert all(b - a >= config.interval - 1e-9 for a, b in itertools.pairwise(times))


def frames(seconds: float, fps: int = 30, per_frame: int = 5) -> list[float]:
    """Send times of a paced video sender: ``per_frame`` packets 1 ms apart per frame."""
    return [f / fps + k * 0.001 for f in range(int(seconds * fps)) for k in range(per_frame)]


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_jitter_on_a_path_that_keeps_order_is_not_a_queue(seed: int) -> None:
    """150 ms RTT ± 30 ms as the impairment relay makes it: each packet's delay is drawn, but it
    never leaves before the one ahead of it, so whole windows can sit high — all of it arrives."""
    rng = random.Random(seed)
    detector = QueueDelayDetector()
    last = float("-inf")
    for seq, sent in enumerate(frames(20.0)):
        arrival = max(sent + 0.075 + rng.uniform(-0.030, 0.030), last)
        last = arrival
        assert detector.add(abs_time(sent), 7.0 + arrival, PACKET, seq % 65536) is None


def test_a_full_drop_tail_queue_is_reported() -> None:
    """Delay flat at the queue's depth and most packets missing: overrun, though not growing."""
    detector = QueueDelayDetector()
    sends = frames(4.0)
    estimates = []
    for seq, sent in enumerate(sends):
        if sent < 2.0:
            arrival = sent + 0.001
        elif seq % 3:                      # two of three packets dropped at the full queue
            continue
        else:
            arrival = sent + 0.101
        estimate = detector.add(abs_time(sent), 7.0 + arrival, PACKET, (seq + 65000) % 65536)
        if estimate is not None:
            estimates.append(estimate)
    assert estimates


def test_a_standing_queue_that_delivers_everything_is_not_reported() -> None:
    """Delay steps up once and stays, every packet arrives at the rate it was sent: the sender
    is not above the bottleneck's rate (nothing to cut); aiortc's REMB still follows the rate."""
    detector = QueueDelayDetector()
    assert feed(detector, 0.0, 4.0, lambda t: 0.001 if t < 2.0 else 0.080) == []


def test_abs_send_time_wraps_every_64_seconds() -> None:
    detector = QueueDelayDetector(QueueDelayConfig(baseline_window=200.0))
    # 3 s around the 64 s wrap of the 24-bit field: the delay is constant, so no queue appears
    assert feed(detector, 62.5, 3.0, lambda t: 0.003) == []
    # a packet from before the wrap arriving late is not mistaken for one 64 s in the future
    assert detector.add(abs_time(63.99), 7.0 + 65.6, PACKET) is None
    assert detector.queue_delay() < 0.01


def test_values_beyond_24_bits_are_reduced() -> None:
    detector = QueueDelayDetector()
    assert detector.add(ABS_SEND_TIME_WRAP * 5 + 10, 1.0, 100) is None


def rtp_with_extensions(elements: bytes, payload: bytes = b"\x11" * 20) -> bytes:
    words = (len(elements) + 3) // 4
    body = elements + b"\x00" * (words * 4 - len(elements))
    header = bytes([0x90, 96]) + (1234).to_bytes(2, "big") + (5678).to_bytes(4, "big")
    header += (42).to_bytes(4, "big")
    return header + b"\xbe\xde" + words.to_bytes(2, "big") + body + payload


def test_restamp_rewrites_only_the_abs_send_time_element() -> None:
    mid = bytes([0x10, 0x31])                       # id 1 (mid), 1 byte
    ast = bytes([0x32, 0x00, 0x00, 0x01])           # id 3, 3 bytes
    packet = rtp_with_extensions(mid + ast)
    out = restamp_abs_send_time(packet, 3, 1.5)
    assert len(out) == len(packet)
    start = packet.index(b"\x32")
    assert int.from_bytes(out[start + 1:start + 4], "big") == int(1.5 * ABS_SEND_TIME_UNITS)
    assert out[:start + 1] == packet[:start + 1] and out[start + 4:] == packet[start + 4:]


@pytest.mark.parametrize("packet", [
    b"",
    b"\x80\x60" + b"\x00" * 10,                                     # no extension bit
    rtp_with_extensions(bytes([0x10, 0x31]))[:15],                 # truncated extension header
    rtp_with_extensions(bytes([0x10, 0x31])),                      # no abs-send-time element
    rtp_with_extensions(bytes([0x31, 0x00])),                      # id 3 but 2 bytes long
    rtp_with_extensions(bytes([0xF0])),                            # id 15: stop
    bytes([0x90, 96]) + b"\x00" * 10 + b"\x10\x00\x00\x01",        # two-byte form: not ours
])
def test_restamp_leaves_other_packets_alone(packet: bytes) -> None:
    assert restamp_abs_send_time(packet, 3, 1.0) == packet
