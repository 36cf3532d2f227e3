"""Invitations to create an account (table ``invites``, migration 0006).

An invitation is made by the server's administrator and used once: :meth:`AccountsRepository.
create_user` takes its code's hash and marks it used in the transaction that creates the
account (:func:`use_invite`), so two people opening one link make one account between them.
"""

from __future__ import annotations

from typing import Any

from facecall.store import validate
from facecall.store.driver import ALL, COUNT, ONE, Body, Database, Dialect, IntegrityViolation, Q
from facecall.store.errors import InvalidInput, InviteNotUsable, TokenExists
from facecall.store.ids import new_id
from facecall.store.models import INVITE_NOTE_LEN, TOKEN_HASH_LEN
from facecall.store.records import InviteRecord

#: the most invitations :meth:`InvitesRepository.list_invites` returns
MAX_INVITES_LISTED = 1000
INVITE_COLUMNS = "id, note, created_at, expires_at, used_at, used_by, withdrawn_at"

INSERT_INVITE = Q.of(
    f"INSERT INTO invites (code_hash, {INVITE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, NULL, NULL, NULL)"
)
INVITES = Q.of(f"SELECT {INVITE_COLUMNS} FROM invites ORDER BY created_at DESC, id LIMIT $1")
INVITE_BY_ID = Q.of(f"SELECT {INVITE_COLUMNS} FROM invites WHERE id = $1")
INVITE_BY_CODE = Q.of(f"SELECT {INVITE_COLUMNS} FROM invites WHERE code_hash = $1")
USE_INVITE = Q.of(
    "UPDATE invites SET used_at = $2, used_by = $3 WHERE code_hash = $1 AND used_at IS NULL "
    "AND withdrawn_at IS NULL AND expires_at > $2"
)
WITHDRAW_INVITE = Q.of(  # an expired invitation stays expired: nothing is left to withdraw
    "UPDATE invites SET withdrawn_at = $2 WHERE id = $1 AND used_at IS NULL AND withdrawn_at IS NULL "
    "AND expires_at > $2"
)


def _invite(d: Dialect, r: Any) -> InviteRecord:
    return InviteRecord(id=r[0], note=r[1], created_at=d.epoch(r[2]), expires_at=d.epoch(r[3]),
                        used_at=d.epoch(r[4]), used_by=r[5], withdrawn_at=d.epoch(r[6]))


def use_invite(d: Dialect, code_hash: str, user_id: str, moment: float) -> Body[None]:
    """Mark the open invitation with this code hash used by ``user_id`` (a statement of the
    transaction that creates that user); :class:`InviteNotUsable` rolls it back otherwise,
    saying why: ``unknown`` (no such code: a link cut short), ``used``, ``withdrawn`` or
    ``expired``."""
    if (yield COUNT, USE_INVITE, (code_hash, d.time(moment), user_id)) != 1:
        row = yield ONE, INVITE_BY_CODE, (code_hash,)
        raise InviteNotUsable("unknown" if row is None else _invite(d, row).state(moment))


def _insert_invite(d: Dialect, code_hash: str, invite: InviteRecord) -> Body[None]:
    yield COUNT, INSERT_INVITE, (code_hash, invite.id, invite.note, d.time(invite.created_at),
                                 d.time(invite.expires_at))


def _invites(d: Dialect, limit: int) -> Body[list[InviteRecord]]:
    return [_invite(d, r) for r in (yield ALL, INVITES, (limit,))]


def _withdraw_invite(d: Dialect, invite_id: str, moment: float) -> Body[InviteRecord | None]:
    yield COUNT, WITHDRAW_INVITE, (invite_id, d.time(moment))
    row = yield ONE, INVITE_BY_ID, (invite_id,)
    return None if row is None else _invite(d, row)


class InvitesRepository:
    """Repository methods for ``invites`` (using one is part of creating a user)."""

    _db: Database

    async def create_invite(self, code_hash: str, note: str, now: float, expires_at: float) -> InviteRecord:
        """Store an invitation by the sha256 hex of its code; ``note`` says whom it is for.

        Raises :class:`InvalidInput` for a malformed hash, an overlong note or an expiry not
        after ``now``, and :class:`TokenExists` if the code hash is already stored."""
        digest = validate.text(code_hash, "code_hash", TOKEN_HASH_LEN)
        created = validate.instant(now, "now")
        expires = validate.instant(expires_at, "expires_at")
        if expires <= created:
            raise InvalidInput("expires_at", "must be after now")
        if note != "":
            note = validate.text(note, "note", INVITE_NOTE_LEN)
        record = InviteRecord(id=new_id(), note=note, created_at=created, expires_at=expires)
        try:
            await self._db.write(_insert_invite, digest, record)
        except IntegrityViolation as exc:
            raise TokenExists() from exc
        return record

    async def list_invites(self, *, limit: int = MAX_INVITES_LISTED) -> list[InviteRecord]:
        """Invitations, newest first (used, withdrawn and expired ones too)."""
        return await self._db.read(_invites, max(1, min(int(limit), MAX_INVITES_LISTED)))

    async def withdraw_invite(self, invite_id: str, now: float) -> InviteRecord | None:
        """Withdraw an open invitation so that its link stops working; returns the invitation as
        it now stands (a used one stays used, an expired one expired), or None if there is
        none with this id."""
        return await self._db.write(_withdraw_invite, invite_id, validate.instant(now, "now"))
