"""Token buckets: one per device (its signaling messages, over all its connections), or one per key (sign-in
attempts by address and by account, :mod:`facecall.api.throttle`)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

MAX_KEYS = 100_000  # buckets a KeyedRateLimit keeps; the least recently used go first


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` held; starts full."""

    __slots__ = ("at", "burst", "rate", "tokens")

    def __init__(self, rate: float, burst: float, now: float | None = None) -> None:
        self.rate, self.burst, self.tokens = rate, burst, burst
        self.at = time.monotonic() if now is None else now

    def _refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now

    def take(self, now: float | None = None) -> bool:
        """Spend a token if there is one."""
        self._refill(time.monotonic() if now is None else now)
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True

    def give_back(self) -> None:
        """Return a token taken for something that turned out not to count."""
        self.tokens = min(self.burst, self.tokens + 1.0)

    def wait(self, now: float | None = None) -> float:
        """Seconds until a token is there (0: there is one now)."""
        self._refill(time.monotonic() if now is None else now)
        if self.tokens >= 1.0:
            return 0.0
        return (1.0 - self.tokens) / self.rate if self.rate > 0 else float("inf")


class KeyedRateLimit:
    """A :class:`TokenBucket` per key, at most ``max_keys`` of them (a forgotten key starts
    full again, which only ever errs towards letting in). A rate of 0 is no limit."""

    def __init__(self, rate: float, burst: float, *, max_keys: int = MAX_KEYS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def _bucket(self, key: str, now: float) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, now)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket

    def wait(self, key: str) -> float:
        """Seconds until ``key`` may act (0: now)."""
        if self.rate <= 0:
            return 0.0
        bucket = self._buckets.get(key)
        return 0.0 if bucket is None else bucket.wait(self.clock())

    def take(self, key: str) -> float:
        """Spend a token of ``key``: 0 when done, else the seconds to wait (nothing spent)."""
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        bucket = self._bucket(key, now)
        return 0.0 if bucket.take(now) else bucket.wait(now)

    def give_back(self, key: str) -> None:
        """Return the token ``take`` spent for ``key``."""
        if self.rate > 0 and (bucket := self._buckets.get(key)) is not None:
            bucket.give_back()
