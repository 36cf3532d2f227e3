"""The admin API: accounts on a server whose sign-up is closed (``FACECALL_SIGN_UP=closed``).

Every route wants ``Authorization: Bearer <FACECALL_ADMIN_TOKEN>`` (RFC 6750 §2.1); with no
admin token set the API is off and answers 403 saying so. ``facecall admin users ...`` is its
command line. Removing a user's devices goes through the node's signaling service, so that
their open connections close at once (4009) and their calls end, as when the user does it.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from facecall.api.auth import bearer_is, get_store, hash_password
from facecall.api.routes_accounts import create_account, delete_account, devices_removed, user_out
from facecall.api.schemas import AccountIn, AdminPasswordReset, AdminUser, AdminUsers, Username, UserOut
from facecall.logs import get_logger
from facecall.store import NotFound, Store
from facecall.store.accounts import MAX_USERS_PAGE
from facecall.store.records import UserRecord

_bearer = HTTPBearer(auto_error=False)
log = get_logger(__name__)


async def admin(request: Request,
                credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),  # noqa: B008
                ) -> None:
    """The admin token, compared in constant time; 403 when the admin API is off."""
    token: str = request.app.state.settings.admin_token
    if not token:
        raise HTTPException(status.HTTP_403_FORBIDDEN,
                            detail="the admin API is off on this node: set FACECALL_ADMIN_TOKEN")
    if not bearer_is(credentials, token):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail="the admin API wants the admin token",
                            headers={"WWW-Authenticate": 'Bearer realm="admin"'})


router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[Depends(admin)])


async def _user(store: Store, username: str) -> UserRecord:
    user = await store.get_user_by_username(username)
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no user named {username}")
    return user


@router.get("/users", response_model=AdminUsers)
async def list_users(
    store: Store = Depends(get_store),  # noqa: B008
    limit: Annotated[int, Query(ge=1, le=MAX_USERS_PAGE)] = 100,
    after: Annotated[str, Query(max_length=64, description="the last username of the page before")] = "",
) -> AdminUsers:
    """Accounts by username, with their device counts (deleted accounts are not listed)."""
    page = await store.list_users(limit=limit, after=after)
    users = [AdminUser(id=u.id, username=u.username, display_name=u.display_name,
                       created_at=u.created_at, devices=devices) for u, devices in page]
    return AdminUsers(users=users, next_after=users[-1].username if len(users) == limit else None)


@router.post("/users", status_code=status.HTTP_201_CREATED, response_model=UserOut)
async def create_user(body: AccountIn, store: Store = Depends(get_store)) -> UserOut:  # noqa: B008
    """Create an account (whether sign-up is open or not)."""
    user = await create_account(store, body)
    log.info("admin.user_created", user_id=user.id, username=user.username)
    return user_out(user)


@router.put("/users/{username}/password", status_code=status.HTTP_204_NO_CONTENT)
async def reset_password(username: Username, body: AdminPasswordReset, request: Request,
                         store: Store = Depends(get_store)) -> None:  # noqa: B008
    """Set a user's password: every account token of theirs stops working; with
    ``sign_out_devices`` every device of theirs is removed too."""
    user = await _user(store, username)
    new_hash = await hash_password(body.new_password)
    try:
        removed = await store.change_password(user.id, new_hash, time.time(), keep_token_hash=None,
                                              remove_devices=body.sign_out_devices)
    except NotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no user named {username}") from None
    await devices_removed(request, user.id, removed)
    log.info("admin.password_reset", user_id=user.id, username=user.username, devices_removed=len(removed))


@router.delete("/users/{username}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_user(username: Username, request: Request,
                      store: Store = Depends(get_store)) -> None:  # noqa: B008
    """Delete an account, as ``DELETE /v1/me`` does."""
    user = await _user(store, username)
    await delete_account(request, store, user.id)
    log.info("admin.user_deleted", user_id=user.id, username=user.username)
