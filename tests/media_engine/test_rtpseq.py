"""RTP sequence number unwrapping (rtpseq.py), shared by the receive buffers and the queue report."""

from __future__ import annotations

from facecall.media.engine.rtpseq import SEQ_MOD, unwrap_seq


def test_first_packet_is_taken_as_it_is() -> None:
    assert unwrap_seq(65535, None) == 65535


def test_forward_across_the_wrap() -> None:
    assert unwrap_seq(2, 65534) == SEQ_MOD + 2
    assert unwrap_seq(5, 3 * SEQ_MOD + 65530) == 4 * SEQ_MOD + 5


def test_late_packet_across_the_wrap_is_behind() -> None:
    assert unwrap_seq(65534, SEQ_MOD + 2) == 65534
    assert unwrap_seq(100, 200) == 100


def test_half_the_range_is_the_turning_point() -> None:
    assert unwrap_seq(SEQ_MOD // 2 - 1, 0) == SEQ_MOD // 2 - 1     # ahead
    assert unwrap_seq(SEQ_MOD // 2, 0) == -(SEQ_MOD // 2)         # behind
