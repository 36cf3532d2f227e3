"""Fresh row ids: 32 lower-case hex digits, the shape every id column holds.

Call ids are time-ordered (RFC 9562 UUID version 7): rows of calls made close together sit
close together in every B-tree keyed by call id (the calls primary key, the clustered
participant and leg tables), so a node writing calls touches a few hot pages at the right edge
of each tree instead of a random page per write -- far fewer page-cache misses once the history
outgrows SQLite's cache. The 74 random bits keep ids unguessable; nothing is authorised by
knowing one.
"""

from __future__ import annotations

import os
import uuid

_UNIX_TS_MS_MAX = (1 << 48) - 1


def new_id() -> str:
    """A fresh random row id (UUID version 4, RFC 9562 section 5.4)."""
    return uuid.uuid4().hex


def time_ordered_id(moment: float) -> str:
    """A fresh id that sorts by ``moment`` (epoch seconds) to the millisecond: a UUID version 7
    (RFC 9562 section 5.7) -- 48 bits of Unix milliseconds, the version, 12 random bits, the
    variant, 62 random bits."""
    millis = int(moment * 1000)
    if not 0 <= millis <= _UNIX_TS_MS_MAX:
        raise ValueError(f"{moment!r} is outside the UUIDv7 time range")
    random = int.from_bytes(os.urandom(10), "big")  # 80 bits; 6 of them become version/variant
    rand_a = random >> 68  # 12 bits
    rand_b = random & ((1 << 62) - 1)  # 62 bits
    value = millis << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    return f"{value:032x}"
