"""save_call writes only what a transition changes on SQLite (a narrow UPDATE of the call row, leg
upserts that keep the leg's user) and falls back to the full statements when a "fixed" column
did change: the result is the same on both backends."""

from __future__ import annotations

from dataclasses import replace

import pytest

from facecall.store import LegWrite, NotFound, ParticipantWrite, StaleVersion, Store
from tests.store.factories import T0, ringing_call, user_with_device


async def test_save_overwrites_fixed_call_columns_once(store: Store) -> None:
    alice, a_dev = await user_with_device(store, "alice")
    bob, b_dev = await user_with_device(store, "bob")
    a_other = await store.create_device(alice.id, "ios", "alice's phone", T0)
    call = ringing_call(alice, a_dev, [(bob, b_dev)])
    await store.create_call(call)
    moved = replace(
        call, media="audio", caller_device_id=a_other.id, created_at=T0 - 1, snapshot={"moved": True},
        participants=[], legs=[],
    )  # fmt: skip
    assert await store.save_call(moved, 1) == 2
    loaded = await store.load_call(call.call_id)
    assert loaded is not None
    assert (loaded.version, loaded.media, loaded.caller_device_id) == (2, "audio", a_other.id)
    assert loaded.created_at == T0 - 1 and loaded.snapshot == {"moved": True}
    assert len(loaded.participants) == 2 and len(loaded.legs) == 2  # rows not given are kept
    by_caller = replace(moved, caller_user_id=bob.id, caller_device_id=b_dev.id)
    assert await store.save_call(by_caller, 2) == 3
    again = await store.load_call(call.call_id, with_rows=False)
    assert again is not None and (again.version, again.caller_user_id) == (3, bob.id)


async def test_stale_and_unknown_when_fixed_columns_differ(store: Store) -> None:
    alice, a_dev = await user_with_device(store, "alice")
    bob, b_dev = await user_with_device(store, "bob")
    call = ringing_call(alice, a_dev, [(bob, b_dev)])
    await store.create_call(call)
    assert await store.save_call(replace(call, snapshot={"n": 1}), 1) == 2
    with pytest.raises(StaleVersion) as info:
        await store.save_call(replace(call, media="audio"), 1)
    assert (info.value.expected, info.value.actual) == (1, 2)
    with pytest.raises(NotFound):
        await store.save_call(replace(call, call_id="nope", media="audio"), 1)
    loaded = await store.load_call(call.call_id)
    assert loaded is not None and (loaded.version, loaded.media) == (2, "video")


async def test_leg_handed_to_another_participant(store: Store) -> None:
    alice, a_dev = await user_with_device(store, "alice")
    bob, b_dev = await user_with_device(store, "bob")
    b_other = await store.create_device(bob.id, "ios", "bob's phone", T0)
    call = ringing_call(alice, a_dev, [(bob, b_dev)])
    call = replace(call, legs=[*call.legs, LegWrite(bob.id, b_other.id, "ringing", T0)])
    await store.create_call(call)
    # one leg keeps its user, one changes user (to a participant of the call): both are written
    answer = replace(
        call,
        state="active",
        participants=[ParticipantWrite(bob.id, "callee", "joined", T0, joined_at=T0 + 1)],
        legs=[
            LegWrite(bob.id, b_dev.id, "connected", T0 + 1),
            LegWrite(alice.id, b_other.id, "ended", T0 + 1, "answered_elsewhere"),
        ],
    )
    assert await store.save_call(answer, 1) == 2
    loaded = await store.load_call(call.call_id)
    assert loaded is not None
    legs = {leg.device_id: leg for leg in loaded.legs}
    assert (legs[b_dev.id].user_id, legs[b_dev.id].state, legs[b_dev.id].updated_at) == (
        bob.id, "connected", T0 + 1,
    )  # fmt: skip
    assert (legs[b_other.id].user_id, legs[b_other.id].end_reason) == (alice.id, "answered_elsewhere")
    assert legs[a_dev.id].state == "connected"  # not given: kept
