"""A user's call history, including missed calls."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from facecall.store import validate
from facecall.store.db import Database
from facecall.store.models import calls, participants, users
from facecall.store.records import MISSED_REASONS, HistoryEntry, HistoryParty

MAX_HISTORY_LIMIT = 500


def is_missed(role: str, joined_at: float | None, own_reason: str | None, call_reason: str | None) -> bool:
    """The missed-call rule: an incoming call the user never joined, that ended for them (or,
    without an own reason, for everyone) by ring timeout or cancellation."""
    reason = own_reason if own_reason is not None else call_reason
    return role == "callee" and joined_at is None and reason in MISSED_REASONS


def _entry(m: Any, others: tuple[HistoryParty, ...]) -> HistoryEntry:
    answered, ended = m["answered_at"], m["ended_at"]
    return HistoryEntry(
        call_id=m["id"],
        media=m["media"],
        direction="outgoing" if m["role"] == "caller" else "incoming",
        caller_user_id=m["caller_user_id"],
        others=others,
        my_state=m["own_state"],
        my_end_reason=m["own_end_reason"],
        call_state=m["state"],
        end_reason=m["end_reason"],
        missed=is_missed(m["role"], m["joined_at"], m["own_end_reason"], m["end_reason"]),
        created_at=m["created_at"],
        answered_at=answered,
        ended_at=ended,
        joined_at=m["joined_at"],
        duration=None if answered is None or ended is None else max(0.0, ended - answered),
    )


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
        me = participants.alias("me")
        query = (
            select(
                calls,
                me.c.role,
                me.c.state.label("own_state"),
                me.c.end_reason.label("own_end_reason"),
                me.c.joined_at,
            )
            .join(me, me.c.call_id == calls.c.id)
            .where(me.c.user_id == user_id)
            .order_by(calls.c.created_at.desc(), calls.c.id.desc())
            .limit(limit)
        )
        if cutoff is not None:
            query = query.where(calls.c.created_at < cutoff)
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
            call_ids = [row.id for row in rows]
            others: dict[str, list[HistoryParty]] = {cid: [] for cid in call_ids}
            if call_ids:
                other_rows = await conn.execute(
                    select(participants, users.c.username, users.c.display_name)
                    .join(users, users.c.id == participants.c.user_id)
                    .where(participants.c.call_id.in_(call_ids), participants.c.user_id != user_id)
                    .order_by(participants.c.invited_at, participants.c.user_id)
                )
                for o in other_rows:
                    others[o.call_id].append(
                        HistoryParty(
                            user_id=o.user_id,
                            username=o.username,
                            display_name=o.display_name,
                            role=o.role,
                            state=o.state,
                            end_reason=o.end_reason,
                        )
                    )
        return [_entry(row._mapping, tuple(others[row.id])) for row in rows]
