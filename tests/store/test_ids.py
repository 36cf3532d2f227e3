"""Row ids: random UUIDv4 and time-ordered UUIDv7 (RFC 9562), both 32 lower-case hex digits."""

from __future__ import annotations

import uuid

import pytest

from facecall.store.ids import new_id, time_ordered_id

T = 1_764_000_000.123


def test_a_time_ordered_id_is_an_rfc_9562_version_7_uuid_holding_its_millisecond() -> None:
    ident = time_ordered_id(T)
    parsed = uuid.UUID(hex=ident)
    assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122)
    assert len(ident) == 32 and ident == ident.lower()
    assert int(ident[:12], 16) == int(T * 1000)


def test_time_ordered_ids_sort_by_time_and_differ_within_a_millisecond() -> None:
    ids = [time_ordered_id(T + step / 500) for step in range(50)]  # 2 ms apart: float-proof
    assert ids == sorted(ids)
    same_ms = {time_ordered_id(T) for _ in range(1000)}
    assert len(same_ms) == 1000  # 74 random bits


@pytest.mark.parametrize("moment", [-0.001, 2.0**48 / 1000, float("nan"), float("inf")])
def test_a_moment_outside_the_48_bit_millisecond_range_is_refused(moment: float) -> None:
    with pytest.raises((ValueError, OverflowError)):
        time_ordered_id(moment)


def test_a_random_id_is_a_version_4_uuid() -> None:
    assert uuid.UUID(hex=new_id()).version == 4
    assert new_id() != new_id()
