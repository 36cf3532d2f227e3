"""Accounts: sign up, sign in, sign out, look up users; change my name and password, delete me."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from facecall.api.auth import (
    DUMMY_PASSWORD_HASH,
    Principal,
    current_account,
    current_principal,
    device_of,
    get_store,
    hash_password,
    new_token,
    token_hash,
    verify_password,
)
from facecall.api.schemas import (
    AccountDeletion,
    AccountIn,
    PasswordChange,
    ProfileIn,
    Session,
    SignIn,
    SignUp,
    Username,
    UserOut,
)
from facecall.api.throttle import AuthThrottle
from facecall.logs import get_logger
from facecall.store import InviteNotUsable, NotFound, Store, UsernameTaken
from facecall.store.records import UserRecord

router = APIRouter(prefix="/v1", tags=["accounts"])
log = get_logger(__name__)
_device_shown = HTTPBearer(auto_error=False, description="optional: a device token of the account")
#: why an invitation cannot be used (``InviteNotUsable.reason``), as the person reads it
INVITE_NOT_USABLE = {
    "unknown": "this invitation link is not valid: it may have been cut short. Open the whole "
               "link you were sent, or ask for a new one",
    "used": "this invitation was already used. Ask for a new one",
    "withdrawn": "this invitation was withdrawn. Ask for a new one",
    "expired": "this invitation has expired. Ask for a new one",
}

def get_throttle(request: Request) -> AuthThrottle:
    throttle: AuthThrottle = request.app.state.auth_throttle
    return throttle


def user_out(user: UserRecord) -> UserOut:
    return UserOut(id=user.id, username=user.username, display_name=user.display_name)


async def create_account(store: Store, body: AccountIn, invite: str | None = None) -> UserRecord:
    """Hash the password and store the account (sign-up, and the admin API's create), using up
    the invitation with the code ``invite`` if given; 409 when the username is taken (the
    invitation stays open), 403 when the invitation cannot be used."""
    password_hash = await hash_password(body.password)
    try:
        return await store.create_user(body.username, body.display_name or body.username,
                                       password_hash, time.time(),
                                       invite_code_hash=None if invite is None else token_hash(invite))
    except UsernameTaken:
        raise HTTPException(status.HTTP_409_CONFLICT, detail="username is taken") from None
    except InviteNotUsable as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=INVITE_NOT_USABLE[exc.reason]) from None


async def _open_session(request: Request, store: Store, user: UserRecord) -> Session:
    """An account token for ``user``, whose password was just checked against
    ``user.password_hash``: 401 when that is no longer their password (changed or reset
    meanwhile) or the account was deleted meanwhile."""
    now = time.time()
    ttl: float = request.app.state.settings.user_token_ttl
    token = new_token()
    try:
        await store.create_token(token_hash(token), user.id, None, now, now + ttl,
                                 password_hash=user.password_hash)
    except NotFound:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail="wrong username or password") from None
    return Session(token=token, user=user_out(user), expires_at=now + ttl)


@router.post("/accounts", status_code=status.HTTP_201_CREATED, response_model=Session)
async def sign_up(
    body: SignUp, request: Request,
    store: Store = Depends(get_store),  # noqa: B008
    throttle: AuthThrottle = Depends(get_throttle),  # noqa: B008
) -> Session:
    """Create an account and return an account token. Where sign-up is closed
    (``FACECALL_SIGN_UP=closed``) only with an invitation's code (``invite``): 403 without one.
    An invitation given is used up, whether sign-up is open or not; 403 when it was already
    used, has expired or was withdrawn."""
    if request.app.state.settings.sign_up == "closed" and body.invite is None:
        raise HTTPException(status.HTTP_403_FORBIDDEN,
                            detail="sign-up is closed on this server: ask its administrator for "
                                   "an account or an invitation")
    throttle.attempt(request)
    user = await create_account(store, body, body.invite)
    if body.invite is not None:
        log.info("account.created_by_invitation", user_id=user.id)
    return await _open_session(request, store, user)


@router.post("/sessions", response_model=Session)
async def sign_in(
    body: SignIn, request: Request,
    store: Store = Depends(get_store),  # noqa: B008
    throttle: AuthThrottle = Depends(get_throttle),  # noqa: B008
    credentials: HTTPAuthorizationCredentials | None = Depends(_device_shown),  # noqa: B008
) -> Session:
    """Exchange username and password for an account token.

    A client signing in again on a device of that account it runs (its account token expired,
    or the password changed) may show that device's token as ``Authorization: Bearer``: the
    account-wide limit of failed sign-ins, which guessers elsewhere can spend, does not hold
    it back (the limits per address still do, and one per device). Any other token there is
    ignored."""
    throttle.attempt(request)
    device_id = await device_of(store, credentials, body.username)
    throttle.sign_in_attempt(request, body.username, device_id=device_id)
    try:
        user = await store.get_user_by_username(body.username)
        right = await verify_password(user.password_hash if user else DUMMY_PASSWORD_HASH, body.password)
    except BaseException:
        # not checked (busy, or the client left)
        throttle.give_back(request, body.username, device_id=device_id)
        raise
    if not right or not user:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail="wrong username or password")
    throttle.give_back(request, body.username, device_id=device_id)
    return await _open_session(request, store, user)


@router.delete("/sessions/current", status_code=status.HTTP_204_NO_CONTENT)
async def sign_out(
    request: Request,
    principal: Principal = Depends(current_principal),  # noqa: B008
    store: Store = Depends(get_store),  # noqa: B008
) -> None:
    """Revoke the token used for this request. A device token is its device's only
    credential: signing it out removes the device (as ``DELETE /v1/devices/{id}`` does), so
    that it stops ringing and its open signaling connection is closed."""
    now = time.time()
    await store.revoke_token(principal.token_hash, now)
    if principal.device_id is not None:
        await store.remove_device(principal.user_id, principal.device_id, now)
        await request.app.state.signaling.device_removed(principal.user_id, principal.device_id)


@router.get("/me", response_model=UserOut)
async def me(
    principal: Principal = Depends(current_principal),  # noqa: B008
    store: Store = Depends(get_store),  # noqa: B008
) -> UserOut:
    user = await store.get_user(principal.user_id)
    if user is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail="account no longer exists")
    return user_out(user)


@router.patch("/me", response_model=UserOut)
async def update_me(
    body: ProfileIn, request: Request,
    principal: Principal = Depends(current_principal),  # noqa: B008
    store: Store = Depends(get_store),  # noqa: B008
) -> UserOut:
    """Change my display name (what my calls ring with and my recents show). Any of my tokens."""
    try:
        user = await store.rename_user(principal.user_id, body.display_name)
    except NotFound:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail="account no longer exists") from None
    await request.app.state.signaling.user_renamed(user.id)
    return user_out(user)


async def devices_removed(request: Request, user_id: str, device_ids: list[str],
                          why: str = "device removed") -> None:
    """Tell the signaling service: each device's connection closes (4009, ``why`` its reason),
    it leaves its calls."""
    for device_id in device_ids:
        await request.app.state.signaling.device_removed(user_id, device_id, why)


async def delete_account(request: Request, store: Store, user_id: str) -> None:
    """Delete the account (:meth:`Store.delete_user`) and end what its devices were doing;
    401 when it is gone already."""
    try:
        removed = await store.delete_user(user_id, time.time())
    except NotFound:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail="account no longer exists") from None
    await request.app.state.signaling.user_renamed(user_id)
    await devices_removed(request, user_id, removed, "account deleted")
    log.info("account.deleted", user_id=user_id, devices_removed=len(removed))


async def _check_own_password(request: Request, store: Store, principal: Principal, password: str,
                              throttle: AuthThrottle) -> UserRecord:
    """The user of ``principal`` if ``password`` is theirs; a wrong one is a failed sign-in
    (the same limits: 429 once spent) and answers 403."""
    user = await store.get_user(principal.user_id)
    if user is None or user.deleted_at is not None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail="account no longer exists")
    throttle.attempt(request)
    throttle.sign_in_attempt(request, user.username)
    try:
        right = await verify_password(user.password_hash, password)
    except BaseException:
        throttle.give_back(request, user.username)
        raise
    if not right:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="the current password is wrong")
    throttle.give_back(request, user.username)
    return user


@router.put("/me/password", status_code=status.HTTP_204_NO_CONTENT)
async def change_password(
    body: PasswordChange, request: Request,
    principal: Principal = Depends(current_account),  # noqa: B008
    store: Store = Depends(get_store),  # noqa: B008
    throttle: AuthThrottle = Depends(get_throttle),  # noqa: B008
) -> None:
    """Change my password (an account token, and the current password).

    Every other account token of mine stops working: a browser or app signed in with the old
    password must sign in again to manage devices or read history. Devices stay signed in and
    keep ringing, unless ``sign_out_other_devices`` removes all of them but ``this_device_id``.
    A wrong current password counts as a failed sign-in (the same limits, 429 when spent).
    """
    user = await _check_own_password(request, store, principal, body.current_password, throttle)
    new_hash = await hash_password(body.new_password)
    try:
        removed = await store.change_password(
            user.id, new_hash, time.time(), keep_token_hash=principal.token_hash,
            remove_devices=body.sign_out_other_devices, keep_device_id=body.this_device_id)
    except NotFound as exc:
        if exc.kind == "device":
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such device") from None
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail="account no longer exists") from None
    await devices_removed(request, user.id, removed)
    log.info("account.password_changed", user_id=user.id, devices_removed=len(removed))


@router.delete("/me", status_code=status.HTTP_204_NO_CONTENT)
async def delete_me(
    body: AccountDeletion, request: Request,
    principal: Principal = Depends(current_account),  # noqa: B008
    store: Store = Depends(get_store),  # noqa: B008
    throttle: AuthThrottle = Depends(get_throttle),  # noqa: B008
) -> None:
    """Delete my account (an account token, and my password). Every device of mine is removed
    (each leaves its calls, its connection closes with 4009) and every token revoked; my
    username is free to sign up with again; my name and password hash are erased. The calls I
    took part in stay in the other people's history, shown as a deleted account."""
    user = await _check_own_password(request, store, principal, body.password, throttle)
    await delete_account(request, store, user.id)


@router.get("/users/{username}", response_model=UserOut)
async def find_user(
    username: Username,
    _: Principal = Depends(current_principal),  # noqa: B008
    store: Store = Depends(get_store),  # noqa: B008
) -> UserOut:
    """Look a user up by username (to call them)."""
    user = await store.get_user_by_username(username)
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such user")
    return user_out(user)
