"""A user's call history, including missed calls."""

from __future__ import annotations

from typing import Any

from facecall.store import validate
from facecall.store.driver import ALL, Body, Database, Dialect, Q
from facecall.store.records import MISSED_REASONS, HistoryEntry, HistoryParty

MAX_HISTORY_LIMIT = 500
#: end reasons of someone who was in a call and left it: a call with one of them did last
LEFT_A_CALL = frozenset({"hung_up", "connection_lost", "device_removed", "handed_off"})


def is_missed(
    incoming: bool, joined_at: float | None, own_reason: str | None, call_reason: str | None
) -> bool:
    """The missed-call rule: an incoming call the user never joined, that ended for them (or,
    without an own reason, for everyone) by ring timeout, cancellation or the caller's lost
    connection (:data:`MISSED_REASONS`)."""
    reason = own_reason if own_reason is not None else call_reason
    return incoming and joined_at is None and reason in MISSED_REASONS


_MINE = (
    "SELECT c.id, c.media, c.state, c.caller_user_id, c.created_at, c.answered_at, c.ended_at, c.end_reason, "
    "me.state, me.end_reason, me.joined_at "
    "FROM call_participants me JOIN calls c ON c.id = me.call_id WHERE me.user_id = $1"
)
MY_CALLS = Q.of(f"{_MINE} ORDER BY c.created_at DESC, c.id DESC LIMIT $2")
MY_CALLS_BEFORE = Q.of(f"{_MINE} AND c.created_at < $3 ORDER BY c.created_at DESC, c.id DESC LIMIT $2")
OTHERS = Q.of(
    "SELECT p.call_id, p.user_id, u.username, u.display_name, p.role, p.state, p.end_reason, u.deleted_at "
    "FROM call_participants p JOIN users u ON u.id = p.user_id "
    "WHERE p.user_id != $1 AND p.call_id {ids2} ORDER BY p.invited_at, p.user_id"
)


def _entry(d: Dialect, user_id: str, m: Any, others: tuple[HistoryParty, ...]) -> HistoryEntry:
    answered, ended = d.epoch(m[5]), d.epoch(m[6])
    own_reason, joined = m[9], d.epoch(m[10])
    # the user placed the call, whatever their role is now (a caller who left and was invited
    # back is a callee of that invitation)
    incoming = m[3] != user_id
    return HistoryEntry(
        call_id=m[0],
        media=m[1],
        direction="incoming" if incoming else "outgoing",
        caller_user_id=m[3],
        others=others,
        my_state=m[8],
        my_end_reason=own_reason,
        call_state=m[2],
        end_reason=m[7],
        missed=is_missed(incoming, joined, own_reason, m[7]),
        created_at=d.epoch(m[4]),
        answered_at=answered,
        ended_at=ended,
        joined_at=joined,
        duration=None if answered is None or ended is None or _never_lasted(m[7], own_reason, others)
        else max(0.0, ended - answered),
    )


def _never_lasted(call_reason: str | None, own_reason: str | None,
                  others: tuple[HistoryParty, ...]) -> bool:
    """A call whose media never connected (it ended ``no_media``) and that nobody left in
    another way: it has no duration. One that somebody hung up first did last (say, two people
    talked, and a third they invited never got media)."""
    return call_reason == "no_media" and own_reason not in LEFT_A_CALL and not any(
        other.end_reason in LEFT_A_CALL for other in others)


def _history(d: Dialect, user_id: str, limit: int, cutoff: float | None) -> Body[list[HistoryEntry]]:
    if cutoff is None:
        rows = yield ALL, MY_CALLS, (user_id, limit)
    else:
        rows = yield ALL, MY_CALLS_BEFORE, (user_id, limit, d.time(cutoff))
    others: dict[str, list[HistoryParty]] = {row[0]: [] for row in rows}
    if others:
        for o in (yield ALL, OTHERS, (user_id, d.ids(list(others)))):
            others[o[0]].append(
                HistoryParty(
                    user_id=o[1], username=o[2], display_name=o[3], role=o[4], state=o[5], end_reason=o[6],
                    deleted=o[7] is not None,
                )
            )
    return [_entry(d, user_id, row, tuple(others[row[0]])) for row in rows]


class HistoryRepository:
    """Repository method for the history view."""

    _db: Database

    async def call_history(
        self, user_id: str, *, limit: int = 50, before: float | None = None
    ) -> list[HistoryEntry]:
        """The user's calls, newest first: at most ``limit``, created strictly before ``before``
        when given (pass the last entry's ``created_at`` to page on)."""
        validate.positive_int(limit, "limit", MAX_HISTORY_LIMIT)
        cutoff = validate.optional_instant(before, "before")
        return await self._db.read(_history, user_id, limit, cutoff, atomic=True, offload=True)
