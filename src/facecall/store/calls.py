"""Calls, their participants and device legs, with optimistic concurrency on ``version``.

Each write is one transaction: the ``calls`` row (with the state machine's snapshot) and the
child rows are written together or not at all.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Insert, Table, and_, exists, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from facecall.store import validate
from facecall.store.db import Database
from facecall.store.errors import CallExists, InvalidInput, NotFound, StaleVersion
from facecall.store.models import (
    REASON_LEN,
    STATE_LEN,
    calls,
    devices,
    legs,
    participants,
    users,
)
from facecall.store.records import (
    CALL_STATES,
    MEDIA_KINDS,
    ROLES,
    CallWrite,
    LegRecord,
    ParticipantRecord,
    StoredCall,
)

MAX_QUERY_LIMIT = 10_000


def _call_values(call: CallWrite) -> dict[str, Any]:
    """Validated column values of the ``calls`` row (without ``version``)."""
    return {
        "id": validate.ident(call.call_id, "call_id"),
        "media": validate.choice(call.media, "media", MEDIA_KINDS),
        "state": validate.choice(call.state, "state", CALL_STATES),
        "caller_user_id": validate.ident(call.caller_user_id, "caller_user_id"),
        "caller_device_id": validate.optional_ident(call.caller_device_id, "caller_device_id"),
        "created_at": validate.instant(call.created_at, "created_at"),
        "answered_at": validate.optional_instant(call.answered_at, "answered_at"),
        "ended_at": validate.optional_instant(call.ended_at, "ended_at"),
        "end_reason": validate.optional_text(call.end_reason, "end_reason", REASON_LEN),
        "next_deadline": validate.optional_instant(call.next_deadline, "next_deadline"),
        "snapshot": validate.snapshot(call.snapshot),
    }


def _participant_values(call: CallWrite) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for p in call.participants:
        user_id = validate.ident(p.user_id, "participants.user_id")
        if user_id in seen:
            raise InvalidInput("participants", f"user {user_id} is listed twice")
        seen.add(user_id)
        rows.append(
            {
                "call_id": call.call_id,
                "user_id": user_id,
                "role": validate.choice(p.role, "participants.role", ROLES),
                "state": validate.text(p.state, "participants.state", STATE_LEN),
                "end_reason": validate.optional_text(p.end_reason, "participants.end_reason", REASON_LEN),
                "invited_at": validate.instant(p.invited_at, "participants.invited_at"),
                "joined_at": validate.optional_instant(p.joined_at, "participants.joined_at"),
                "left_at": validate.optional_instant(p.left_at, "participants.left_at"),
                "answered_device_id": validate.optional_ident(
                    p.answered_device_id, "participants.answered_device_id"
                ),
            }
        )
    return rows


def _leg_values(call: CallWrite) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for leg in call.legs:
        device_id = validate.ident(leg.device_id, "legs.device_id")
        if device_id in seen:
            raise InvalidInput("legs", f"device {device_id} is listed twice")
        seen.add(device_id)
        rows.append(
            {
                "call_id": call.call_id,
                "user_id": validate.ident(leg.user_id, "legs.user_id"),
                "device_id": device_id,
                "state": validate.text(leg.state, "legs.state", STATE_LEN),
                "end_reason": validate.optional_text(leg.end_reason, "legs.end_reason", REASON_LEN),
                "updated_at": validate.instant(leg.updated_at, "legs.updated_at"),
            }
        )
    return rows


def _upsert(dialect: str, table: Table, keys: Sequence[str]) -> Insert:
    """``INSERT ... ON CONFLICT (keys) DO UPDATE SET <every other column>`` for the dialect."""
    stmt: Any = (postgresql if dialect == "postgresql" else sqlite).insert(table)
    others = {c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys}
    result: Insert = stmt.on_conflict_do_update(index_elements=list(keys), set_=others)
    return result


def _participant(row: Any) -> ParticipantRecord:
    m = row._mapping
    return ParticipantRecord(**{k: m[k] for k in ParticipantRecord.__dataclass_fields__})


def _leg(row: Any) -> LegRecord:
    m = row._mapping
    return LegRecord(**{k: m[k] for k in LegRecord.__dataclass_fields__})


class CallsRepository:
    """Repository methods for ``calls``, ``call_participants`` and ``call_device_legs``."""

    _db: Database

    async def _write_children(
        self, conn: AsyncConnection, parts: list[dict[str, Any]], leg_rows: list[dict[str, Any]]
    ) -> None:
        dialect = self._db.dialect
        if parts:
            await conn.execute(_upsert(dialect, participants, ("call_id", "user_id")), parts)
        if leg_rows:
            await conn.execute(_upsert(dialect, legs, ("call_id", "device_id")), leg_rows)

    async def _explain_failure(self, call: CallWrite, creating: bool) -> Exception:
        """After an integrity error, find out what was wrong (in a fresh transaction)."""
        user_ids = {call.caller_user_id, *(p.user_id for p in call.participants)}
        user_ids |= {leg.user_id for leg in call.legs}
        device_ids = {leg.device_id for leg in call.legs}
        device_ids |= {p.answered_device_id for p in call.participants if p.answered_device_id}
        if call.caller_device_id is not None:
            device_ids.add(call.caller_device_id)
        async with self._db.read() as conn:
            if creating:
                found = await conn.execute(select(calls.c.id).where(calls.c.id == call.call_id))
                if found.first() is not None:
                    return CallExists(call.call_id)
            known_users = set(
                (await conn.execute(select(users.c.id).where(users.c.id.in_(user_ids)))).scalars()
            )
            if missing := user_ids - known_users:
                return NotFound("user", sorted(missing))
            known_devices = set(
                (await conn.execute(select(devices.c.id).where(devices.c.id.in_(device_ids)))).scalars()
            )
            if missing := device_ids - known_devices:
                return NotFound("device", sorted(missing))
            stored = set(
                (
                    await conn.execute(
                        select(participants.c.user_id).where(participants.c.call_id == call.call_id)
                    )
                ).scalars()
            )
        orphans = {leg.user_id for leg in call.legs} - stored - {p.user_id for p in call.participants}
        if orphans:
            return InvalidInput("legs", f"no participant row for user(s) {', '.join(sorted(orphans))}")
        return InvalidInput("call", "the write violates an integrity constraint")

    async def create_call(self, call: CallWrite) -> int:
        """Insert a call with its participants and legs; returns its version (1).

        Raises :class:`CallExists` for a known call id, :class:`NotFound` for unknown users or
        devices, :class:`InvalidInput` for values that do not fit.
        """
        row = _call_values(call)
        parts = _participant_values(call)
        leg_rows = _leg_values(call)
        try:
            async with self._db.write() as conn:
                await conn.execute(insert(calls).values(**row, version=1))
                await self._write_children(conn, parts, leg_rows)
        except IntegrityError as exc:
            raise await self._explain_failure(call, creating=True) from exc
        return 1

    async def save_call(self, call: CallWrite, expected_version: int) -> int:
        """Overwrite a call if it is still at ``expected_version``; returns the new version.

        Participants and legs in ``call`` are upserted; others are kept. Raises
        :class:`StaleVersion` if another write got there first, :class:`NotFound` for an unknown
        call (or unknown users/devices in the rows).
        """
        row = _call_values(call)
        parts = _participant_values(call)
        leg_rows = _leg_values(call)
        if isinstance(expected_version, bool) or not isinstance(expected_version, int):
            raise InvalidInput("expected_version", "must be an integer")
        try:
            async with self._db.write() as conn:
                result = await conn.execute(
                    update(calls)
                    .where(calls.c.id == call.call_id, calls.c.version == expected_version)
                    .values(**{k: v for k, v in row.items() if k != "id"}, version=calls.c.version + 1)
                )
                if result.rowcount != 1:
                    query = select(calls.c.version).where(calls.c.id == call.call_id)
                    actual = (await conn.execute(query)).scalar()
                    if actual is None:
                        raise NotFound("call", call.call_id)
                    raise StaleVersion(call.call_id, expected_version, actual)
                await self._write_children(conn, parts, leg_rows)
        except IntegrityError as exc:
            raise await self._explain_failure(call, creating=False) from exc
        return expected_version + 1

    async def load_call(self, call_id: str, *, with_rows: bool = True) -> StoredCall | None:
        """The stored call, or None. ``with_rows=False`` skips participants and legs."""
        async with self._db.read() as conn:
            found = (await conn.execute(select(calls).where(calls.c.id == call_id))).first()
            if found is None:
                return None
            part_rows: list[Any] = []
            leg_rows: list[Any] = []
            if with_rows:
                part_rows = list(
                    (
                        await conn.execute(
                            select(participants)
                            .where(participants.c.call_id == call_id)
                            .order_by(participants.c.invited_at, participants.c.user_id)
                        )
                    ).all()
                )
                leg_rows = list(
                    (
                        await conn.execute(
                            select(legs)
                            .where(legs.c.call_id == call_id)
                            .order_by(legs.c.user_id, legs.c.device_id)
                        )
                    ).all()
                )
        m = found._mapping
        return StoredCall(
            call_id=m["id"],
            version=m["version"],
            snapshot=json.loads(m["snapshot"]),
            state=m["state"],
            media=m["media"],
            caller_user_id=m["caller_user_id"],
            caller_device_id=m["caller_device_id"],
            created_at=m["created_at"],
            answered_at=m["answered_at"],
            ended_at=m["ended_at"],
            end_reason=m["end_reason"],
            next_deadline=m["next_deadline"],
            participants=tuple(map(_participant, part_rows)),
            legs=tuple(map(_leg, leg_rows)),
        )

    async def due_calls(self, now: float, limit: int = 100) -> list[str]:
        """Ids of calls not ended whose ``next_deadline <= now``, earliest deadline first."""
        moment = validate.instant(now, "now")
        validate.positive_int(limit, "limit", MAX_QUERY_LIMIT)
        query = (
            select(calls.c.id)
            .where(calls.c.next_deadline <= moment, calls.c.state != "ended")
            .order_by(calls.c.next_deadline, calls.c.id)
            .limit(limit)
        )
        async with self._db.read() as conn:
            return list((await conn.execute(query)).scalars())

    async def unended_calls(self) -> list[str]:
        """Ids of every call that has not ended, oldest first (for recovery after a restart)."""
        query = select(calls.c.id).where(calls.c.state != "ended").order_by(calls.c.created_at, calls.c.id)
        async with self._db.read() as conn:
            return list((await conn.execute(query)).scalars())

    async def live_calls_of_user(self, user_id: str) -> list[str]:
        """Ids of calls not ended in which the user's participant row is live (its
        ``end_reason`` is NULL), oldest first."""
        query = (
            select(calls.c.id)
            .join(participants, participants.c.call_id == calls.c.id)
            .where(
                participants.c.user_id == user_id,
                participants.c.end_reason.is_(None),
                calls.c.state != "ended",
            )
            .order_by(calls.c.created_at, calls.c.id)
        )
        async with self._db.read() as conn:
            return list((await conn.execute(query)).scalars())

    async def ringing_calls_between(self, caller_user_id: str, callee_user_id: str) -> list[str]:
        """Ids of ringing calls placed by ``caller_user_id`` in which ``callee_user_id`` is a
        callee still live (``end_reason`` NULL) -- what glare detection needs."""
        callee = and_(
            participants.c.call_id == calls.c.id,
            participants.c.user_id == callee_user_id,
            participants.c.role == "callee",
            participants.c.end_reason.is_(None),
        )
        query = (
            select(calls.c.id)
            .where(
                calls.c.state == "ringing",
                calls.c.caller_user_id == caller_user_id,
                exists().where(callee),
            )
            .order_by(calls.c.created_at, calls.c.id)
        )
        async with self._db.read() as conn:
            return list((await conn.execute(query)).scalars())
