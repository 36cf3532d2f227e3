"""Which lost packets to ask for again, and when (RFC 4585 §6.2.1 Generic NACK).

Stock aiortc NACKs every missing sequence number on every new loss, for as long as the number is
within its history, and never gives up: after a bandwidth drop the NACKs and their
retransmissions take the bandwidth the new pictures need (a NACK storm). :class:`NackTracker`
asks only for what can still arrive in time:

* a packet is requested at most ``max_retries`` times, the next time only after about one
  round trip (``retry_interval``);
* a packet is not requested any more once ``now + rtt`` is past its deadline (the time by which
  its frame must be complete, see :mod:`.video_buffer`);
* at most ``max_missing`` packets are tracked and at most ``max_per_message`` go in one NACK;
  a larger gap is left to a key frame request instead.

Pure: sequence numbers are already unwrapped (Python ints), times are seconds on any clock.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class NackConfig:
    """Bounds of the NACK policy."""

    max_retries: int = 3
    """How many times one packet is asked for."""
    max_missing: int = 150
    """Packets tracked at once; a gap beyond this is not NACKed (a key frame is cheaper)."""
    max_per_message: int = 60
    """Sequence numbers per NACK message."""
    min_retry_interval: float = 0.010
    """Wait at least this long before asking for the same packet again (s)."""
    reorder_wait: float = 0.0
    """Wait this long after a gap is seen before the first NACK (s), in case of reordering."""


@dataclass(slots=True)
class _Missing:
    detected: float
    deadline: float
    retries: int = 0
    sent_at: float | None = None


class NackTracker:
    """Missing packets of one stream and when to ask for each again."""

    def __init__(self, config: NackConfig | None = None) -> None:
        self.config = config or NackConfig()
        self._missing: dict[int, _Missing] = {}
        self.requested = 0
        """Sequence numbers put in NACKs so far (retries count again)."""
        self.given_up = 0
        """Packets dropped from tracking unrecovered (deadline, retries, or too many)."""

    def __len__(self) -> int:
        return len(self._missing)

    def __contains__(self, seq: int) -> bool:
        return seq in self._missing

    def missing(self) -> list[int]:
        """Tracked missing sequence numbers, in order."""
        return sorted(self._missing)

    def add_missing(self, seqs: range, now: float, deadline: float) -> bool:
        """Track a new gap; returns ``False`` (and tracks nothing) when the gap is too large."""
        if len(seqs) == 0:
            return True
        if len(self._missing) + len(seqs) > self.config.max_missing:
            self.given_up += len(seqs)
            return False
        for seq in seqs:
            self._missing[seq] = _Missing(detected=now, deadline=deadline)
        return True

    def received(self, seq: int, now: float | None = None) -> float | None:
        """A missing packet arrived. Returns a round-trip sample (s) when it answers our only NACK
        for it (the time from that NACK to the retransmission), else ``None``."""
        m = self._missing.pop(seq, None)
        if m is None or now is None or m.retries != 1 or m.sent_at is None:
            return None
        return max(0.0, now - m.sent_at)

    def forget_before(self, seq: int) -> None:
        """Stop tracking everything below ``seq`` (its frames were released or dropped)."""
        for old in [s for s in self._missing if s < seq]:
            del self._missing[old]
            self.given_up += 1

    def clear(self) -> None:
        self.given_up += len(self._missing)
        self._missing.clear()

    def _retry_interval(self, rtt: float) -> float:
        return max(self.config.min_retry_interval, 1.5 * rtt)

    def due(self, now: float, rtt: float) -> list[int]:
        """Sequence numbers to put in a NACK now (marks them as sent)."""
        config = self.config
        out: list[int] = []
        for seq in sorted(self._missing):
            m = self._missing[seq]
            if m.retries >= config.max_retries or now + rtt > m.deadline:
                if m.sent_at is None or now - m.sent_at >= self._retry_interval(rtt):
                    # no answer to the last request and no further one worth making
                    del self._missing[seq]
                    self.given_up += 1
                continue
            if m.sent_at is None:
                if now - m.detected < config.reorder_wait:
                    continue
            elif now - m.sent_at < self._retry_interval(rtt):
                continue
            if len(out) >= config.max_per_message:
                break
            m.sent_at, m.retries = now, m.retries + 1
            out.append(seq)
        self.requested += len(out)
        return out

    def next_due(self, rtt: float) -> float | None:
        """When :meth:`due` may next return something (``None``: nothing tracked)."""
        times = []
        for m in self._missing.values():
            if m.sent_at is None:
                times.append(m.detected + self.config.reorder_wait)
            else:
                times.append(m.sent_at + self._retry_interval(rtt))
        return min(times) if times else None
