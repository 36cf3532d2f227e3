"""Small builders shared by the store tests."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import replace
from typing import Any

from facecall.store import CallWrite, DeviceRecord, LegWrite, ParticipantWrite, Store, UserRecord

T0 = 1_700_000_000.0


def token_hash(token: str) -> str:
    """sha256 hex, as the API hashes bearer tokens."""
    return hashlib.sha256(token.encode()).hexdigest()


async def user_with_device(store: Store, name: str, now: float = T0) -> tuple[UserRecord, DeviceRecord]:
    """A user named ``name`` with one browser device."""
    user = await store.create_user(name, name.title(), f"hash-{name}", now)
    device = await store.create_device(user.id, "browser", f"{name}'s browser", now)
    return user, device


def ringing_call(
    caller: UserRecord,
    caller_device: DeviceRecord,
    callees: list[tuple[UserRecord, DeviceRecord]],
    *,
    created_at: float = T0,
    media: str = "video",
    ring_timeout: float = 30.0,
    snapshot: dict[str, Any] | None = None,
) -> CallWrite:
    """A freshly placed call: the caller joined, every callee device ringing."""
    parts = [
        ParticipantWrite(
            user_id=caller.id,
            role="caller",
            state="joined",
            invited_at=created_at,
            joined_at=created_at,
        )
    ]
    legs = [LegWrite(caller.id, caller_device.id, "connected", created_at)]
    for user, device in callees:
        parts.append(ParticipantWrite(user.id, "callee", "ringing", created_at))
        legs.append(LegWrite(user.id, device.id, "ringing", created_at))
    return CallWrite(
        call_id=uuid.uuid4().hex,
        media=media,
        state="ringing",
        caller_user_id=caller.id,
        caller_device_id=caller_device.id,
        created_at=created_at,
        next_deadline=created_at + ring_timeout,
        snapshot=snapshot if snapshot is not None else {"phase": "ringing", "seq": 1},
        participants=parts,
        legs=legs,
    )


def ended(call: CallWrite, at: float, reason: str, *, answered_at: float | None = None) -> CallWrite:
    """The same call, ended at ``at`` for everyone with ``reason``."""
    parts = [
        replace(
            p,
            state="left" if p.joined_at is not None or answered_at is not None else reason,
            end_reason=reason,
            left_at=at if p.joined_at is not None else None,
        )
        for p in call.participants
    ]
    legs = [replace(leg, state="ended", end_reason=reason, updated_at=at) for leg in call.legs]
    return replace(
        call,
        state="ended",
        answered_at=answered_at,
        ended_at=at,
        end_reason=reason,
        next_deadline=None,
        participants=parts,
        legs=legs,
        snapshot={"phase": "ended", "reason": reason},
    )
