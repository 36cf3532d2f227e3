"""What the store keeps of a call machine: its row, snapshot, participant rows and ended device
legs (:class:`~facecall.store.CallWrite`), built for each save of the signaling service."""

from __future__ import annotations

from typing import Any

from facecall.signaling.machine import CallMachine
from facecall.signaling.records import LegState
from facecall.store import CallWrite, LegWrite, ParticipantWrite

#: the stored participant and leg rows of a call: user id -> participant columns, device id ->
#: leg columns (plain tuples: cheap to build, hash and compare on every save)
Rows = tuple[dict[str, tuple[Any, ...]], dict[str, tuple[Any, ...]]]


def call_rows(machine: CallMachine) -> Rows:
    """The participant rows (by user) and the ended device-leg rows (latest leg per device, by
    device) of ``machine``, in :class:`ParticipantWrite` / :class:`LegWrite` field order.

    A leg's row is written when the leg ends, with its end reason: that is the device's
    history. Ringing and joined legs live in the snapshot (written with every change, so a
    restarted node has them), not in ``call_device_legs``, which nothing reads while a call
    is up; writing each of their steps cost five row writes per 1:1 call set-up.
    """
    latest = {leg.device_id: leg for leg in machine.legs}  # a re-rung device: its newest leg
    created_at = machine.created_at
    legs = {
        device_id: (
            leg.user_id, device_id, leg.state._value_,
            leg.ended_at or leg.joined_at or leg.rung_at or created_at,
            None if leg.reason is None else leg.reason._value_,
        )
        for device_id, leg in latest.items()
        if leg.state is LegState.ENDED  # a re-rung device keeps its older row till then
    }
    participants = {
        p.user_id: (
            p.user_id, p.role._value_, p.state._value_, p.invited_at,
            None if p.reason is None else p.reason._value_, p.joined_at, p.ended_at, p.device_id,
        )
        for p in machine.participants
    }
    return participants, legs


def write_and_rows(machine: CallMachine, stored: Rows | None) -> tuple[CallWrite, Rows]:
    """The write the store keeps for ``machine`` (its row, snapshot and child rows), and every
    row of ``machine`` (what the store holds once it is saved). With ``stored`` (the rows the
    store already holds for this version), only participant and leg rows that changed are
    written: the store upserts the rows it is given and keeps the others."""
    rows = call_rows(machine)
    participants, legs = rows
    if stored is not None:
        held_participants, held_legs = stored
        changed_participants = [r for k, r in participants.items() if held_participants.get(k) != r]
        changed_legs = [r for k, r in legs.items() if held_legs.get(k) != r]
    else:
        changed_participants, changed_legs = list(participants.values()), list(legs.values())
    return CallWrite(
        call_id=machine.call_id, media=machine.media, state=machine.state._value_,
        caller_user_id=machine.caller_user, caller_device_id=machine.caller_device,
        created_at=machine.created_at, answered_at=machine.answered_at,
        ended_at=machine.ended_at,
        end_reason=None if machine.end_reason is None else machine.end_reason._value_,
        next_deadline=machine.get_timer(), snapshot=machine.to_dict(),
        participants=[ParticipantWrite(*r) for r in changed_participants],
        legs=[LegWrite(*r) for r in changed_legs],
    ), rows
