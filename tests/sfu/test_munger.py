"""RTP munging (facecall.sfu.munger): a subscriber's slot is one steady stream — one SSRC,
sequence numbers up by one, timestamps with the clock — while its source switches, and NACKs
map back to the source's numbers."""

from __future__ import annotations

import itertools

from aiortc.rtp import RtpPacket
from hypothesis import given
from hypothesis import strategies as st

from facecall.sfu.munger import RtpMunger, Vp8Munger
from facecall.sfu.vp8 import picture_numbers

SLOT = 0x5107
A, B = 0xAAAA, 0xBBBB


def packet(ssrc: int, seq: int, ts: int) -> RtpPacket:
    return RtpPacket(payload_type=96, sequence_number=seq % 65536, timestamp=ts % 2**32, ssrc=ssrc)


def test_one_source_keeps_its_spacing_under_the_slots_numbers() -> None:
    munger = RtpMunger(SLOT, 90000, first_seq=1000, first_ts=5000)
    munger.switch_to(A)
    sent = [munger.forward(packet(A, seq, ts), t) for seq, ts, t in
            ((40, 9000, 0.0), (41, 9000, 0.001), (43, 12000, 0.034), (42, 9000, 0.035))]
    assert [(p.ssrc, p.sequence_number, p.timestamp) for p in sent if p] == [
        (SLOT, 1000, 5000), (SLOT, 1001, 5000), (SLOT, 1003, 8000), (SLOT, 1002, 5000)]
    assert munger.forward(packet(A, 39, 6000), 0.04) is None  # from before the first: dropped
    assert munger.forward(packet(B, 44, 15000), 0.05) is None  # not the source
    assert munger.source_of(1003) == (A, 43) and munger.source_of(999) is None
    assert (munger.forwarded, munger.dropped) == (4, 1)


def test_a_switch_continues_the_numbering_and_the_clock() -> None:
    munger = RtpMunger(SLOT, 90000, first_seq=65534, first_ts=2**32 - 100)
    munger.switch_to(A)
    for i in range(3):
        munger.forward(packet(A, 100 + i, 777 + i * 3000), i / 30)
    munger.switch_to(B)
    assert munger.forward(packet(A, 103, 9777), 0.1) is None  # A no longer feeds the slot
    first_b = munger.forward(packet(B, 5000, 123456), 2 / 30 + 0.5)
    assert first_b is not None and first_b.sequence_number == (65534 + 3) % 65536  # wrapped
    last_a_ts = (2**32 - 100 + 2 * 3000) % 2**32
    assert first_b.timestamp == (last_a_ts + 45000) % 2**32  # 0.5 s at 90 kHz later
    nxt = munger.forward(packet(B, 5001, 126456), 2 / 30 + 0.53)
    assert nxt is not None and nxt.sequence_number == 2
    assert nxt.timestamp == (first_b.timestamp + 3000) % 2**32
    munger.switch_to(B)  # the same source: nothing changes
    assert munger.forward(packet(B, 5002, 129456), 0.7).sequence_number == 3  # type: ignore[union-attr]
    munger.switch_to(None)
    assert munger.forward(packet(B, 5003, 132456), 0.8) is None and munger.source is None


@given(st.lists(st.tuples(st.sampled_from([A, B]), st.integers(1, 5)), min_size=1, max_size=20),
       st.integers(0, 65535), st.integers(0, 65535))
def test_in_order_sources_make_one_gapless_stream_across_any_switches(
        runs: list[tuple[int, int]], start_a: int, start_b: int) -> None:
    """Whatever the switches, in-order input from each source gives out sequence numbers that go
    up by exactly one (modulo 2^16) and timestamps that never go back."""
    munger = RtpMunger(SLOT, 48000, first_seq=7)
    next_seq = {A: start_a, B: start_b}
    out: list[RtpPacket] = []
    now = 0.0
    for source, count in runs:
        munger.switch_to(source)
        for _ in range(count):
            now += 0.02
            sent = munger.forward(packet(source, next_seq[source], int(now * 48000) + source), now)
            next_seq[source] += 1
            assert sent is not None
            out.append(sent)
    seqs = [p.sequence_number for p in out]
    assert seqs == [(7 + i) % 65536 for i in range(len(out))]
    stamps = [p.timestamp for p in out]
    assert all((b - a) % 2**32 < 2**31 and b != a for a, b in itertools.pairwise(stamps))


def test_vp8_picture_ids_go_on_across_a_switch() -> None:
    vp8 = Vp8Munger()

    def picture(picture_id: int, tl0: int) -> bytes:
        return bytes([0x90, 0xC0, 0x80 | picture_id >> 8, picture_id & 0xFF, tl0, 0x00, 0x9D])

    assert picture_numbers(vp8.forward(A, picture(32767, 9))) == (0, 0)
    assert picture_numbers(vp8.forward(A, picture(0, 10))) == (1, 1)  # A's own wrap carries on
    assert picture_numbers(vp8.forward(B, picture(500, 200))) == (2, 2)
    assert picture_numbers(vp8.forward(B, picture(501, 200))) == (3, 2)
    assert picture_numbers(vp8.forward(B, picture(499, 199))) == (1, 1)  # late: shifted alike
    assert picture_numbers(vp8.forward(A, picture(3, 11))) == (4, 3)  # back to A: on from 3
    assert vp8.forward(A, b"") == b""  # not VP8: as it is


def test_a_feed_longer_than_the_sequence_space_goes_on() -> None:
    """Three wraps of the 16-bit sequence number (a few minutes of video) and a late packet
    from each lap: none is taken for one from before the feed began (found by
    bench/sfu_forward.py, which forwarded nothing after 32,768 packets)."""
    munger = RtpMunger(SLOT, 90000, first_seq=0)
    munger.switch_to(A)
    for n in range(3 * 65536 + 10):
        sent = munger.forward(packet(A, 500 + n, n * 30), n / 1000)
        assert sent is not None and sent.sequence_number == n % 65536, n
        if n % 65536 == 40000:
            late = munger.forward(packet(A, 500 + n - 5, (n - 5) * 30), n / 1000)
            assert late is not None and late.sequence_number == (n - 5) % 65536
    assert munger.dropped == 0
