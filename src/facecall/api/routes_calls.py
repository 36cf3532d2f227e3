"""Call history (with missed calls) and TURN credentials."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status

from facecall.api.auth import Principal, current_device, current_principal, get_store
from facecall.api.schemas import (
    History,
    HistoryItem,
    HistoryParticipant,
    IceServer,
    TurnCredentials,
)
from facecall.store import Store
from facecall.turn.rest import ephemeral_credentials

router = APIRouter(prefix="/v1", tags=["calls"])


@router.get("/calls/history", response_model=History)
async def call_history(
    principal: Principal = Depends(current_principal),  # noqa: B008
    store: Store = Depends(get_store),  # noqa: B008
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[float | None, Query(ge=0)] = None,
) -> History:
    """The user's calls, newest first; ``missed`` marks incoming calls nobody answered."""
    entries = await store.call_history(principal.user_id, limit=limit, before=before)
    items = [
        HistoryItem(
            call_id=e.call_id, media=e.media, direction=e.direction,
            caller_user_id=e.caller_user_id,
            participants=[HistoryParticipant(user_id=o.user_id,
                                             username=None if o.deleted else o.username,
                                             deleted=o.deleted)
                          for o in e.others],
            my_state=e.my_state, my_end_reason=e.my_end_reason, end_reason=e.end_reason,
            missed=e.missed, created_at=e.created_at, answered_at=e.answered_at,
            ended_at=e.ended_at, duration=e.duration,
        )
        for e in entries
    ]
    next_before = items[-1].created_at if len(items) == limit else None
    return History(items=items, next_before=next_before)


@router.get("/turn/credentials", response_model=TurnCredentials)
async def turn_credentials(
    request: Request, principal: Principal = Depends(current_device)  # noqa: B008
) -> TurnCredentials:
    """Short-lived TURN REST credentials for this device's user, signed with the newest secret."""
    settings = request.app.state.settings
    if not settings.turn_secrets:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            detail="no TURN secret configured (FACECALL_TURN_SECRETS)")
    username, password = ephemeral_credentials(
        settings.turn_secrets[0], principal.user_id, settings.turn_ttl, time.time()
    )
    uris: list[str] = request.app.state.turn_uris
    stun = [u for u in uris if u.startswith("stun")]
    turn = [u for u in uris if u.startswith("turn")]
    servers = ([IceServer(urls=stun)] if stun else []) + (
        [IceServer(urls=turn, username=username, credential=password)] if turn else []
    )
    return TurnCredentials(
        username=username, password=password, ttl=settings.turn_ttl, uris=uris, ice_servers=servers
    )
