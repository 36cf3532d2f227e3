"""Calls, their participants and device legs, with optimistic concurrency on ``version``.

Each write is one transaction: the ``calls`` row (with the state machine's snapshot) and the
child rows are written together or not at all -- one statement for the call row, one batch for
the participants and one for the legs (PostgreSQL: one statement in all). On SQLite a save
writes only what a transition changes and falls back to the full statement when a column that
transitions keep did change (see :data:`UPDATE_CALL_NARROW`, :data:`UPSERT_LEG_NARROW`).
"""

from __future__ import annotations

import json
from typing import Any

from facecall.store import validate
from facecall.store.driver import (
    ALL,
    COLUMN,
    COUNT,
    MANY,
    ONE,
    Body,
    Database,
    Dialect,
    IntegrityViolation,
    Q,
)
from facecall.store.errors import CallExists, InvalidInput, NotFound, StaleVersion
from facecall.store.models import REASON_LEN, STATE_LEN
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


CALL_COLUMNS = (
    "id, media, state, caller_user_id, caller_device_id, created_at, answered_at, ended_at, "
    "end_reason, next_deadline, snapshot, version"
)
PART_COLUMNS = "call_id, user_id, role, state, end_reason, invited_at, joined_at, left_at, answered_device_id"
LEG_COLUMNS = "call_id, user_id, device_id, state, end_reason, updated_at"

INSERT_CALL = Q.of(
    f"INSERT INTO calls ({CALL_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 1)"
)
UPDATE_CALL = Q.of(
    "UPDATE calls SET media = $2, state = $3, caller_user_id = $4, caller_device_id = $5, created_at = $6, "
    "answered_at = $7, ended_at = $8, end_reason = $9, next_deadline = $10, snapshot = $11, "
    "version = version + 1 WHERE id = $1 AND version = $12"
)
# SQLite: the columns a transition changes, the others only compared. SQLite maintains every
# index holding a SET column (and checks the foreign keys of SET columns) even when the value
# is unchanged; when a "fixed" column did change, UPDATE_CALL runs after this matched nothing.
UPDATE_CALL_NARROW = Q.of(
    "UPDATE calls SET state = $3, answered_at = $7, ended_at = $8, end_reason = $9, next_deadline = $10, "
    "snapshot = $11, version = version + 1 WHERE id = $1 AND version = $12 AND media = $2 "
    "AND caller_user_id = $4 AND caller_device_id IS $5 AND created_at = $6"
)
CALL_VERSION = Q.of("SELECT version FROM calls WHERE id = $1")
UPSERT_PART = Q.of(
    f"INSERT INTO call_participants ({PART_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) "
    "ON CONFLICT (call_id, user_id) DO UPDATE SET role = excluded.role, state = excluded.state, "
    "end_reason = excluded.end_reason, invited_at = excluded.invited_at, joined_at = excluded.joined_at, "
    "left_at = excluded.left_at, answered_device_id = excluded.answered_device_id"
)
UPSERT_LEG = Q.of(
    f"INSERT INTO call_device_legs ({LEG_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) "
    "ON CONFLICT (call_id, device_id) DO UPDATE SET user_id = excluded.user_id, state = excluded.state, "
    "end_reason = excluded.end_reason, updated_at = excluded.updated_at"
)
# SQLite, legs of a save: a leg keeps its user, so its foreign key to the participant row is not
# checked again (twice: old and new values) for every leg; a leg whose user did change matches
# nothing here and the whole batch runs again through UPSERT_LEG.
UPSERT_LEG_NARROW = Q.of(
    f"INSERT INTO call_device_legs ({LEG_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) "
    "ON CONFLICT (call_id, device_id) DO UPDATE SET state = excluded.state, "
    "end_reason = excluded.end_reason, updated_at = excluded.updated_at WHERE user_id = excluded.user_id"
)
CALL_BY_ID = Q.of(f"SELECT {CALL_COLUMNS} FROM calls WHERE id = $1")
PARTS_OF_CALL = Q.of(
    f"SELECT {PART_COLUMNS} FROM call_participants WHERE call_id = $1 ORDER BY invited_at, user_id"
)
LEGS_OF_CALL = Q.of(
    f"SELECT {LEG_COLUMNS} FROM call_device_legs WHERE call_id = $1 ORDER BY user_id, device_id"
)
DUE_CALLS = Q.of(
    "SELECT id FROM calls WHERE next_deadline <= $1 AND state != 'ended' ORDER BY next_deadline, id LIMIT $2"
)
UNENDED_CALLS = Q.of("SELECT id FROM calls WHERE state != 'ended' ORDER BY created_at, id")
LIVE_CALLS_OF_USER = Q.of(
    "SELECT c.id FROM call_participants p JOIN calls c ON c.id = p.call_id "
    "WHERE p.user_id = $1 AND p.end_reason IS NULL AND c.state != 'ended' ORDER BY c.created_at, c.id"
)
JOINED_CALLS_OF_USER = Q.of(
    "SELECT c.id FROM call_participants p JOIN calls c ON c.id = p.call_id "
    "WHERE p.user_id = $1 AND p.end_reason IS NULL AND p.state = 'joined' AND c.state != 'ended' "
    "ORDER BY c.created_at, c.id"
)
RINGING_BETWEEN = Q.of(
    "SELECT c.id FROM calls c WHERE c.state = 'ringing' AND c.caller_user_id = $1 AND EXISTS "
    "(SELECT 1 FROM call_participants p WHERE p.call_id = c.id AND p.user_id = $2 AND p.role = 'callee' "
    "AND p.end_reason IS NULL) ORDER BY c.created_at, c.id"
)
CALL_EXISTS = Q.of("SELECT 1 FROM calls WHERE id = $1")
KNOWN_USERS = Q.of("SELECT id FROM users WHERE id {ids1}")
KNOWN_DEVICES = Q.of("SELECT id FROM user_devices WHERE id {ids1}")
PART_USERS_OF_CALL = Q.of("SELECT user_id FROM call_participants WHERE call_id = $1")

# PostgreSQL: a whole call write is ONE statement (data-modifying CTEs, child rows as arrays
# through unnest), atomic on its own, so it needs no BEGIN/COMMIT round trips. Foreign keys are
# checked at the end of the statement, when the call and participant rows exist.
_PG_PARTS = (
    f"INSERT INTO call_participants ({PART_COLUMNS}) SELECT $1::varchar, u.* FROM unnest($13::varchar[], "
    "$14::varchar[], $15::varchar[], $16::varchar[], $17::timestamptz[], $18::timestamptz[], "
    "$19::timestamptz[], $20::varchar[]) AS u {guard} ON CONFLICT (call_id, user_id) DO UPDATE SET "
    "role = excluded.role, state = excluded.state, end_reason = excluded.end_reason, "
    "invited_at = excluded.invited_at, joined_at = excluded.joined_at, left_at = excluded.left_at, "
    "answered_device_id = excluded.answered_device_id"
)
_PG_LEGS = (
    f"INSERT INTO call_device_legs ({LEG_COLUMNS}) SELECT $1::varchar, u.* FROM unnest($21::varchar[], "
    "$22::varchar[], $23::varchar[], $24::varchar[], $25::timestamptz[]) AS u {guard} "
    "ON CONFLICT (call_id, device_id) DO UPDATE SET user_id = excluded.user_id, state = excluded.state, "
    "end_reason = excluded.end_reason, updated_at = excluded.updated_at"
)
PG_CREATE = Q.of(
    f"WITH c AS (INSERT INTO calls ({CALL_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, "
    f"$12)), p AS ({_PG_PARTS.format(guard='')}), l AS ({_PG_LEGS.format(guard='')}) SELECT 1"
)
PG_SAVE = Q.of(
    "WITH c AS (UPDATE calls SET media = $2, state = $3, caller_user_id = $4, caller_device_id = $5, "
    "created_at = $6, answered_at = $7, ended_at = $8, end_reason = $9, next_deadline = $10, snapshot = $11, "
    "version = version + 1 WHERE id = $1 AND version = $12 RETURNING 1), "
    f"p AS ({_PG_PARTS.format(guard='WHERE EXISTS (SELECT 1 FROM c)')}), "
    f"l AS ({_PG_LEGS.format(guard='WHERE EXISTS (SELECT 1 FROM c)')}) SELECT count(*) FROM c"
)

# PostgreSQL: a call with its rows in one statement (one snapshot, one round trip).
PG_LOAD = Q.of(
    f"SELECT {CALL_COLUMNS}, "
    f"ARRAY(SELECT ROW({PART_COLUMNS}) FROM call_participants p WHERE p.call_id = c.id "
    "ORDER BY p.invited_at, p.user_id), "
    f"ARRAY(SELECT ROW({LEG_COLUMNS}) FROM call_device_legs g WHERE g.call_id = c.id "
    "ORDER BY g.user_id, g.device_id) "
    "FROM calls c WHERE c.id = $1"
)

CallRow = tuple[Any, ...]


def _call_values(call: CallWrite) -> CallRow:
    """Validated ``calls`` columns (without ``version``), times as epoch seconds."""
    return (
        validate.ident(call.call_id, "call_id"),
        validate.choice(call.media, "media", MEDIA_KINDS),
        validate.choice(call.state, "state", CALL_STATES),
        validate.ident(call.caller_user_id, "caller_user_id"),
        validate.optional_ident(call.caller_device_id, "caller_device_id"),
        validate.instant(call.created_at, "created_at"),
        validate.optional_instant(call.answered_at, "answered_at"),
        validate.optional_instant(call.ended_at, "ended_at"),
        validate.optional_text(call.end_reason, "end_reason", REASON_LEN),
        validate.optional_instant(call.next_deadline, "next_deadline"),
        validate.snapshot(call.snapshot),
    )


def _participant_values(call: CallWrite) -> list[CallRow]:
    rows: list[CallRow] = []
    seen: set[str] = set()
    for p in call.participants:
        user_id = validate.ident(p.user_id, "participants.user_id")
        if user_id in seen:
            raise InvalidInput("participants", f"user {user_id} is listed twice")
        seen.add(user_id)
        rows.append(
            (
                call.call_id,
                user_id,
                validate.choice(p.role, "participants.role", ROLES),
                validate.text(p.state, "participants.state", STATE_LEN),
                validate.optional_text(p.end_reason, "participants.end_reason", REASON_LEN),
                validate.instant(p.invited_at, "participants.invited_at"),
                validate.optional_instant(p.joined_at, "participants.joined_at"),
                validate.optional_instant(p.left_at, "participants.left_at"),
                validate.optional_ident(p.answered_device_id, "participants.answered_device_id"),
            )
        )
    return rows


def _leg_values(call: CallWrite) -> list[CallRow]:
    rows: list[CallRow] = []
    seen: set[str] = set()
    for leg in call.legs:
        device_id = validate.ident(leg.device_id, "legs.device_id")
        if device_id in seen:
            raise InvalidInput("legs", f"device {device_id} is listed twice")
        seen.add(device_id)
        rows.append(
            (
                call.call_id,
                validate.ident(leg.user_id, "legs.user_id"),
                device_id,
                validate.text(leg.state, "legs.state", STATE_LEN),
                validate.optional_text(leg.end_reason, "legs.end_reason", REASON_LEN),
                validate.instant(leg.updated_at, "legs.updated_at"),
            )
        )
    return rows


def _participant(d: Dialect, r: Any) -> ParticipantRecord:
    return ParticipantRecord(
        call_id=r[0], user_id=r[1], role=r[2], state=r[3], end_reason=r[4], invited_at=d.epoch(r[5]),
        joined_at=d.epoch(r[6]), left_at=d.epoch(r[7]), answered_device_id=r[8],
    )  # fmt: skip


def _leg(d: Dialect, r: Any) -> LegRecord:
    return LegRecord(
        call_id=r[0], user_id=r[1], device_id=r[2], state=r[3], end_reason=r[4], updated_at=d.epoch(r[5])
    )


# -- transaction bodies (see facecall.store.driver) -----------------------------------------------


def _bound_call(d: Dialect, r: CallRow) -> CallRow:
    t = d.time
    return (r[0], r[1], r[2], r[3], r[4], t(r[5]), t(r[6]), t(r[7]), r[8], t(r[9]), r[10])


def _write_children(parts: list[CallRow], leg_rows: list[CallRow]) -> Body[None]:
    """SQLite: upsert the child rows. Rows are bound as validated: SQLite keeps timestamps as
    epoch seconds (:class:`~facecall.store.driver.SqliteDialect` binds them as they are)."""
    if parts:
        yield MANY, UPSERT_PART, parts
    if leg_rows and (yield MANY, UPSERT_LEG_NARROW, leg_rows) != len(leg_rows):
        yield MANY, UPSERT_LEG, leg_rows


def _pg_args(
    d: Dialect, row: CallRow, parts: list[CallRow], leg_rows: list[CallRow], version: int
) -> tuple[Any, ...]:
    """Parameters of :data:`PG_CREATE` / :data:`PG_SAVE`: the call row, the version, then the
    participant and leg columns as arrays."""
    t = d.time
    part_columns = [[p[i] for p in parts] for i in range(1, 9)]
    for i in (4, 5, 6):
        part_columns[i] = [t(v) for v in part_columns[i]]
    leg_columns = [[g[i] for g in leg_rows] for i in range(1, 6)]
    leg_columns[4] = [t(v) for v in leg_columns[4]]
    return (*_bound_call(d, row), version, *part_columns, *leg_columns)


def _create(d: Dialect, row: CallRow, parts: list[CallRow], leg_rows: list[CallRow]) -> Body[None]:
    if d.name == "postgresql":
        yield ONE, PG_CREATE, _pg_args(d, row, parts, leg_rows, 1)
        return
    yield COUNT, INSERT_CALL, row
    yield from _write_children(parts, leg_rows)


def _save(
    d: Dialect, row: CallRow, parts: list[CallRow], leg_rows: list[CallRow], expected: int
) -> Body[None]:
    if d.name == "postgresql":
        saved = (yield ONE, PG_SAVE, _pg_args(d, row, parts, leg_rows, expected))[0] == 1
    else:
        args = (*row, expected)  # SQLite: times bound as epoch seconds, as validated
        saved = (yield COUNT, UPDATE_CALL_NARROW, args) == 1 or (yield COUNT, UPDATE_CALL, args) == 1
    if not saved:  # a fresh statement: the newest committed version, as the error reports it
        actual = yield ONE, CALL_VERSION, (row[0],)
        if actual is None:
            raise NotFound("call", row[0])
        raise StaleVersion(row[0], expected, actual[0])
    if d.name != "postgresql":
        yield from _write_children(parts, leg_rows)


def _explain(d: Dialect, call: CallWrite, creating: bool) -> Body[Exception]:
    """After an integrity error, find out what was wrong."""
    user_ids = {call.caller_user_id, *(p.user_id for p in call.participants)}
    user_ids |= {leg.user_id for leg in call.legs}
    device_ids = {leg.device_id for leg in call.legs}
    device_ids |= {p.answered_device_id for p in call.participants if p.answered_device_id}
    if call.caller_device_id is not None:
        device_ids.add(call.caller_device_id)
    if creating and (yield ONE, CALL_EXISTS, (call.call_id,)) is not None:
        return CallExists(call.call_id)
    known_users = set((yield COLUMN, KNOWN_USERS, (d.ids(sorted(user_ids)),)))
    if missing := user_ids - known_users:
        return NotFound("user", sorted(missing))
    known_devices = set((yield COLUMN, KNOWN_DEVICES, (d.ids(sorted(device_ids)),)))
    if missing := device_ids - known_devices:
        return NotFound("device", sorted(missing))
    stored = set((yield COLUMN, PART_USERS_OF_CALL, (call.call_id,)))
    orphans = {leg.user_id for leg in call.legs} - stored - {p.user_id for p in call.participants}
    if orphans:
        return InvalidInput("legs", f"no participant row for user(s) {', '.join(sorted(orphans))}")
    return InvalidInput("call", "the write violates an integrity constraint")


def _load(d: Dialect, call_id: str, with_rows: bool) -> Body[StoredCall | None]:
    pg_rows = with_rows and d.name == "postgresql"
    m = yield ONE, PG_LOAD if pg_rows else CALL_BY_ID, (call_id,)
    if m is None:
        return None
    part_rows: list[Any] = []
    leg_rows: list[Any] = []
    if pg_rows:
        part_rows, leg_rows = m[12], m[13]
    elif with_rows:
        part_rows = yield ALL, PARTS_OF_CALL, (call_id,)
        leg_rows = yield ALL, LEGS_OF_CALL, (call_id,)
    e = d.epoch
    return StoredCall(
        call_id=m[0], version=m[11], snapshot=json.loads(m[10]), state=m[2], media=m[1],
        caller_user_id=m[3], caller_device_id=m[4], created_at=e(m[5]), answered_at=e(m[6]),
        ended_at=e(m[7]), end_reason=m[8], next_deadline=e(m[9]),
        participants=tuple(_participant(d, r) for r in part_rows),
        legs=tuple(_leg(d, r) for r in leg_rows),
    )  # fmt: skip


def _ids(_d: Dialect, q: Q, *args: Any) -> Body[list[str]]:
    ids: list[str] = yield COLUMN, q, args
    return ids


def _due(d: Dialect, moment: float, limit: int) -> Body[list[str]]:
    ids: list[str] = yield COLUMN, DUE_CALLS, (d.time(moment), limit)
    return ids


class CallsRepository:
    """Repository methods for ``calls``, ``call_participants`` and ``call_device_legs``."""

    _db: Database

    async def _explain_failure(self, call: CallWrite, creating: bool) -> Exception:
        """After an integrity error, find out what was wrong (in a fresh transaction)."""
        return await self._db.read(_explain, call, creating, atomic=True)

    async def create_call(self, call: CallWrite) -> int:
        """Insert a call with its participants and legs; returns its version (1).

        Raises :class:`CallExists` for a known call id, :class:`NotFound` for unknown users or
        devices, :class:`InvalidInput` for values that do not fit.
        """
        row = _call_values(call)
        parts = _participant_values(call)
        leg_rows = _leg_values(call)
        try:
            await self._db.write(_create, row, parts, leg_rows, autocommit=True)
        except IntegrityViolation as exc:
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
            await self._db.write(_save, row, parts, leg_rows, expected_version, autocommit=True)
        except IntegrityViolation as exc:
            raise await self._explain_failure(call, creating=False) from exc
        return expected_version + 1

    async def load_call(self, call_id: str, *, with_rows: bool = True) -> StoredCall | None:
        """The stored call, or None. ``with_rows=False`` skips participants and legs."""
        atomic = with_rows and self._db.dialect == "sqlite"  # PostgreSQL: one statement
        return await self._db.read(_load, call_id, with_rows, atomic=atomic)

    async def due_calls(self, now: float, limit: int = 100) -> list[str]:
        """Ids of calls not ended whose ``next_deadline <= now``, earliest deadline first."""
        moment = validate.instant(now, "now")
        validate.positive_int(limit, "limit", MAX_QUERY_LIMIT)
        return await self._db.read(_due, moment, limit)

    async def unended_calls(self) -> list[str]:
        """Ids of every call that has not ended, oldest first (for recovery after a restart)."""
        return await self._db.read(_ids, UNENDED_CALLS)

    async def live_calls_of_user(self, user_id: str) -> list[str]:
        """Ids of calls not ended in which the user's participant row is live (its
        ``end_reason`` is NULL), oldest first."""
        return await self._db.read(_ids, LIVE_CALLS_OF_USER, user_id)

    async def joined_calls_of_user(self, user_id: str) -> list[str]:
        """Ids of calls not ended that the user is in (answered, or placed): what makes the
        user busy for another call. A call that only rings the user does not count."""
        return await self._db.read(_ids, JOINED_CALLS_OF_USER, user_id)

    async def ringing_calls_between(self, caller_user_id: str, callee_user_id: str) -> list[str]:
        """Ids of ringing calls placed by ``caller_user_id`` in which ``callee_user_id`` is a
        callee still live (``end_reason`` NULL) -- what glare detection needs."""
        return await self._db.read(_ids, RINGING_BETWEEN, caller_user_id, callee_user_id)
