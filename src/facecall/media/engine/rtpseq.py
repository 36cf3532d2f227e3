"""RTP sequence number arithmetic: 16-bit numbers that wrap (RFC 3550 §5.1, §A.1)."""

from __future__ import annotations

SEQ_MOD = 1 << 16


def unwrap_seq(seq: int, reference: int | None) -> int:
    """``seq`` (16 bits, as on the wire) extended to the unwrapped number nearest ``reference``
    (an unwrapped number; ``None``: the first packet, taken as it is). A packet up to half the
    range behind counts as late, not as 65k ahead."""
    if reference is None:
        return seq
    delta = (seq - reference) % SEQ_MOD
    if delta >= SEQ_MOD // 2:
        delta -= SEQ_MOD
    return reference + delta
