"""Passwords, bearer tokens and the FastAPI dependencies that authenticate requests.

Passwords are stored as argon2id hashes. Bearer tokens are random 256-bit strings given to the
client once; the store keeps only their SHA-256, so a leaked database grants nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from facecall.store import Store

T = TypeVar("T")

_hasher = PasswordHasher()
_bearer = HTTPBearer(auto_error=False)
#: a real hash to verify against when the user does not exist, so that timing does not tell
DUMMY_PASSWORD_HASH = _hasher.hash("facecall-timing-equaliser")

MAX_TOKEN_CHARS = 128
#: threads hashing passwords: half the cores, so the event loop keeps a core while sign-ins run
PASSWORD_THREADS = max(1, (os.cpu_count() or 2) // 2)
#: hashes running or waiting at once; more is answered 503 (each is ~0.1 s of a core)
PASSWORD_QUEUE_LIMIT = 64
_password_pool = ThreadPoolExecutor(PASSWORD_THREADS, thread_name_prefix="facecall-argon2")
_password_jobs = 0


async def _off_loop(fn: Callable[..., T], *args: Any) -> T:
    """Run an argon2 computation on the password threads (argon2-cffi releases the GIL), not
    on the event loop, which every other request and signaling connection shares."""
    global _password_jobs
    if _password_jobs >= PASSWORD_QUEUE_LIMIT:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            detail="too many sign-ins at once; retry", headers={"Retry-After": "1"})
    _password_jobs += 1
    try:
        return await asyncio.get_running_loop().run_in_executor(_password_pool, fn, *args)
    finally:
        _password_jobs -= 1


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


async def hash_password(password: str) -> str:
    """An argon2id hash (with its salt and parameters) of ``password``."""
    return await _off_loop(_hasher.hash, password)


async def verify_password(password_hash: str, password: str) -> bool:
    """True when ``password`` matches; never raises for a wrong password or a bad hash."""
    return await _off_loop(_verify, password_hash, password)


def new_token() -> str:
    """A fresh bearer token (43 URL-safe characters, 256 bits)."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """What the store keeps of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who is calling: an account, and the device when a device token was used."""

    user_id: str
    device_id: str | None
    token_hash: str


def unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"}
    )


async def resolve_bearer(store: Store, token: str | None) -> Principal:
    """The principal for ``token`` or a 401 naming what is wrong."""
    if not token:
        raise unauthorized("missing bearer token")
    if len(token) > MAX_TOKEN_CHARS:
        raise unauthorized("malformed bearer token")
    digest = token_hash(token)
    record = await store.resolve_token(digest, time.time())
    if record is None:
        raise unauthorized("invalid, expired or revoked token")
    return Principal(user_id=record.user_id, device_id=record.device_id, token_hash=digest)


async def device_of(store: Store, credentials: HTTPAuthorizationCredentials | None,
                    username: str) -> str | None:
    """The device whose valid token ``credentials`` hold, if it is one of the user named
    ``username`` (a client signing in on a device it already runs); else None."""
    try:
        principal = await resolve_bearer(store, credentials.credentials if credentials else None)
    except HTTPException:  # none, or not a token that works
        return None
    if principal.device_id is None:
        return None
    user = await store.get_user(principal.user_id)
    if user is None or user.deleted_at is not None or user.username != username.lower():
        return None
    return principal.device_id


def get_store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


async def current_principal(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),  # noqa: B008
) -> Principal:
    """Any valid token: an account token (from sign-in) or a device token."""
    return await resolve_bearer(get_store(request), credentials.credentials if credentials else None)


async def current_device(principal: Principal = Depends(current_principal)) -> Principal:  # noqa: B008
    """A device token is required (e.g. for TURN credentials and signaling)."""
    if principal.device_id is None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="a device token is required")
    return principal


def account_token_required() -> HTTPException:
    """The 403 of a device token where an account token (from signing in) is needed."""
    return HTTPException(status.HTTP_403_FORBIDDEN, detail="an account token is required (sign in)")


async def current_account(principal: Principal = Depends(current_principal)) -> Principal:  # noqa: B008
    """An account token is required: registering and removing devices mint and revoke
    credentials, which a device's own token (stored on the device, never expiring) must not."""
    if principal.device_id is not None:
        raise account_token_required()
    return principal


async def account_or_device_itself(
    device_id: str, principal: Principal = Depends(current_principal),  # noqa: B008
) -> Principal:
    """An account token, or the token of the device ``device_id`` (the path's) itself: a device
    may change its own name, which mints and revokes nothing, but not another device."""
    if principal.device_id is not None and principal.device_id != device_id:
        raise account_token_required()
    return principal


def bearer_is(credentials: HTTPAuthorizationCredentials | None, secret: str) -> bool:
    """Whether the bearer token sent is ``secret`` (metrics and admin tokens), compared in
    constant time: the header as sent (ASGI hands it over decoded as Latin-1) against the
    secret's UTF-8."""
    given = credentials.credentials.encode("latin-1") if credentials else b""
    return hmac.compare_digest(given, secret.encode())


async def metrics_reader(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),  # noqa: B008
) -> None:
    """With ``Settings.metrics_token`` set, ``/metrics`` wants it as a bearer token (RFC 6750
    §2.1; Prometheus sends it from the scrape config's ``authorization``); unset: open."""
    token: str = request.app.state.settings.metrics_token
    if token and not bearer_is(credentials, token):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail="metrics need the metrics token",
                            headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
