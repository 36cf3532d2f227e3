"""Invitations: the admin API's way to let someone make their own account on a server whose
sign-up is closed.

The administrator makes an invitation (``POST /v1/admin/invites``, ``facecall admin invites
add``) and sends its link, the node's public URL with ``#invite=<code>``: the code rides in the
URL's fragment, which browsers never send to a server, so it stays out of proxies' access logs.
The web client opens on "Create account" with it; ``POST /v1/accounts`` with ``invite`` makes
the account and uses the invitation up in one transaction. The node keeps only the code's
sha256, as for tokens; the code is shown once.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, HTTPException, Request, status

from facecall.api.auth import get_store, new_token, token_hash
from facecall.api.routes_admin import admin
from facecall.api.schemas import InviteIn, InviteMade, InviteOut, Invites
from facecall.logs import get_logger
from facecall.store import InviteRecord, Store

router = APIRouter(prefix="/v1/admin/invites", tags=["admin"], dependencies=[Depends(admin)])
log = get_logger(__name__)
DAY = 86400.0


def invite_link(request: Request, code: str) -> str:
    """The link to send: the node's public URL with the code in the fragment."""
    return f"{request.app.state.settings.base_url.rstrip('/')}/#invite={code}"


async def _out(store: Store, invites: list[InviteRecord], now: float) -> list[InviteOut]:
    users = await store.get_users(sorted({i.used_by for i in invites if i.used_by is not None}))
    out = []
    for invite in invites:
        user = users.get(invite.used_by) if invite.used_by is not None else None
        out.append(InviteOut(
            id=invite.id, note=invite.note, state=invite.state(now), created_at=invite.created_at,
            expires_at=invite.expires_at, used_at=invite.used_at,
            used_by=user.username if user is not None and user.deleted_at is None else None))
    return out


@router.post("", status_code=status.HTTP_201_CREATED, response_model=InviteMade)
async def make_invite(body: InviteIn, request: Request,
                      store: Store = Depends(get_store)) -> InviteMade:  # noqa: B008
    """Make an invitation to create one account (sign-up open or closed); its code and link
    are shown once."""
    code = new_token()
    now = time.time()
    invite = await store.create_invite(token_hash(code), body.note, now, now + body.valid_for_days * DAY)
    log.info("admin.invite_made", invite_id=invite.id, expires_at=invite.expires_at)
    [out] = await _out(store, [invite], now)
    return InviteMade(invite=out, code=code, link=invite_link(request, code))


@router.get("", response_model=Invites)
async def list_invites(store: Store = Depends(get_store)) -> Invites:  # noqa: B008
    """Invitations, newest first: open, used (and by whom), withdrawn, expired."""
    return Invites(invites=await _out(store, await store.list_invites(), time.time()))


@router.delete("/{invite_id}", status_code=status.HTTP_204_NO_CONTENT)
async def withdraw_invite(invite_id: str, store: Store = Depends(get_store)) -> None:  # noqa: B008
    """Withdraw an invitation: its link stops working. 404 when there is none with this id,
    409 when it was already used (the account stays; delete it with ``/v1/admin/users``)."""
    if len(invite_id) > 64:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such invitation")
    invite = await store.withdraw_invite(invite_id, time.time())
    if invite is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such invitation")
    if invite.used_at is not None:
        raise HTTPException(status.HTTP_409_CONFLICT, detail="this invitation was already used")
    log.info("admin.invite_withdrawn", invite_id=invite.id)
