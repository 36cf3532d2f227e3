"""History: direction, other parties, missed calls, duration, paging."""

from __future__ import annotations

from dataclasses import replace

import pytest

from facecall.store import InvalidInput, ParticipantWrite, Store
from tests.store.factories import T0, ended, ringing_call, user_with_device


async def test_history_entries(store: Store) -> None:
    alice, a_dev = await user_with_device(store, "alice")
    bob, b_dev = await user_with_device(store, "bob")
    carol, c_dev = await user_with_device(store, "carol")

    # 1. alice -> bob, answered at +2, hung up at +62
    talk = ringing_call(alice, a_dev, [(bob, b_dev)], created_at=T0, media="audio")
    await store.create_call(talk)
    done = ended(talk, T0 + 62, "hung_up", answered_at=T0 + 2)
    done = replace(
        done,
        participants=[
            done.participants[0],
            replace(done.participants[1], joined_at=T0 + 2, left_at=T0 + 62, state="left"),
        ],
    )
    await store.save_call(done, 1)
    # 2. bob -> alice, ring timeout: missed for alice
    timeout = ringing_call(bob, b_dev, [(alice, a_dev)], created_at=T0 + 100)
    await store.create_call(timeout)
    await store.save_call(ended(timeout, T0 + 130, "ring_timeout"), 1)
    # 3. carol -> alice, alice declined: not missed
    declined = ringing_call(carol, c_dev, [(alice, a_dev)], created_at=T0 + 200)
    await store.create_call(declined)
    await store.save_call(ended(declined, T0 + 205, "declined"), 1)
    # 4. carol -> alice, cancelled by carol: missed (the participant row has no own reason)
    cancelled = ringing_call(carol, c_dev, [(alice, a_dev)], created_at=T0 + 300)
    await store.create_call(cancelled)
    cancelled_end = ended(cancelled, T0 + 303, "cancelled")
    unreasoned = [replace(p, end_reason=None) for p in cancelled_end.participants]
    await store.save_call(replace(cancelled_end, participants=unreasoned), 1)
    # 5. bob -> alice, still ringing
    ringing = ringing_call(bob, b_dev, [(alice, a_dev)], created_at=T0 + 400)
    await store.create_call(ringing)

    history = await store.call_history(alice.id)
    assert [e.call_id for e in history] == [
        ringing.call_id,
        cancelled.call_id,
        declined.call_id,
        timeout.call_id,
        talk.call_id,
    ]
    by_id = {e.call_id: e for e in history}

    first = by_id[talk.call_id]
    assert (first.direction, first.media, first.missed) == ("outgoing", "audio", False)
    assert first.caller_user_id == alice.id
    assert [(o.user_id, o.username, o.role) for o in first.others] == [(bob.id, "bob", "callee")]
    assert first.participants == ((bob.id, "bob"),)
    assert first.my_state == "left" and first.my_end_reason == "hung_up"
    assert first.duration == 60.0 and first.answered_at == T0 + 2 and first.ended_at == T0 + 62
    assert first.end_reason == "hung_up" and first.call_state == "ended"

    missed = by_id[timeout.call_id]
    assert (missed.direction, missed.missed, missed.duration) == ("incoming", True, None)
    assert missed.my_end_reason == "ring_timeout" and missed.joined_at is None
    assert [(o.username, o.role) for o in missed.others] == [("bob", "caller")]

    assert by_id[declined.call_id].missed is False
    assert by_id[declined.call_id].my_end_reason == "declined"
    assert by_id[cancelled.call_id].missed is True
    assert by_id[cancelled.call_id].my_end_reason is None
    assert by_id[cancelled.call_id].end_reason == "cancelled"
    live = by_id[ringing.call_id]
    assert (live.call_state, live.missed, live.duration, live.ended_at) == (
        "ringing",
        False,
        None,
        None,
    )

    # the caller's view of the timed-out call is not a missed call
    bobs = {e.call_id: e for e in await store.call_history(bob.id)}
    assert bobs[timeout.call_id].direction == "outgoing" and bobs[timeout.call_id].missed is False
    assert set(bobs) == {talk.call_id, timeout.call_id, ringing.call_id}


async def test_missed_in_a_group_call_that_went_on(store: Store) -> None:
    alice, a_dev = await user_with_device(store, "alice")
    bob, b_dev = await user_with_device(store, "bob")
    carol, c_dev = await user_with_device(store, "carol")
    group = ringing_call(alice, a_dev, [(bob, b_dev), (carol, c_dev)])
    await store.create_call(group)
    later = replace(
        group,
        state="active",
        answered_at=T0 + 5,
        participants=[
            ParticipantWrite(bob.id, "callee", "joined", T0, joined_at=T0 + 5),
            ParticipantWrite(carol.id, "callee", "missed", T0, end_reason="ring_timeout"),
        ],
        legs=[],
    )
    await store.save_call(later, 1)
    (entry,) = await store.call_history(carol.id)
    assert entry.missed is True and entry.call_state == "active"
    assert sorted(o.username for o in entry.others) == ["alice", "bob"]
    (bob_entry,) = await store.call_history(bob.id)
    assert bob_entry.missed is False


async def test_a_caller_invited_back_into_their_call_still_placed_it(store: Store) -> None:
    alice, a_dev = await user_with_device(store, "alice")
    bob, b_dev = await user_with_device(store, "bob")
    carol, c_dev = await user_with_device(store, "carol")
    group = ringing_call(alice, a_dev, [(bob, b_dev), (carol, c_dev)])
    await store.create_call(group)
    # alice hung up, then bob invited her back; she has not answered (yet): her participant
    # row is a callee's now, ringing
    reinvited = replace(
        group,
        state="active",
        answered_at=T0 + 5,
        participants=[
            ParticipantWrite(alice.id, "callee", "ringing", T0 + 60),
            ParticipantWrite(bob.id, "callee", "joined", T0, joined_at=T0 + 5),
            ParticipantWrite(carol.id, "callee", "joined", T0, joined_at=T0 + 6),
        ],
        legs=[],
    )
    await store.save_call(reinvited, 1)
    (entry,) = await store.call_history(alice.id)
    assert (entry.direction, entry.missed) == ("outgoing", False)
    # the call ends while she still rings: still her outgoing call, not a missed one
    gone = replace(
        reinvited,
        state="ended",
        ended_at=T0 + 90,
        end_reason="hung_up",
        participants=[ParticipantWrite(alice.id, "callee", "ended", T0 + 60, end_reason="cancelled")],
    )
    await store.save_call(gone, 2)
    (entry,) = await store.call_history(alice.id)
    assert (entry.direction, entry.missed) == ("outgoing", False)
    (bob_entry,) = await store.call_history(bob.id)
    assert bob_entry.direction == "incoming"


async def test_history_paging(store: Store) -> None:
    alice, a_dev = await user_with_device(store, "alice")
    bob, b_dev = await user_with_device(store, "bob")
    ids = []
    for i in range(7):
        call = ringing_call(alice, a_dev, [(bob, b_dev)], created_at=T0 + i)
        await store.create_call(call)
        ids.append(call.call_id)
    ids.reverse()
    page1 = await store.call_history(alice.id, limit=3)
    assert [e.call_id for e in page1] == ids[:3]
    page2 = await store.call_history(alice.id, limit=3, before=page1[-1].created_at)
    assert [e.call_id for e in page2] == ids[3:6]
    page3 = await store.call_history(alice.id, limit=3, before=page2[-1].created_at)
    assert [e.call_id for e in page3] == ids[6:]
    assert await store.call_history("nobody") == []
    with pytest.raises(InvalidInput, match="limit"):
        await store.call_history(alice.id, limit=0)
    with pytest.raises(InvalidInput, match="before"):
        await store.call_history(alice.id, before=float("inf"))
