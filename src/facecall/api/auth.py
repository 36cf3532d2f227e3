"""Passwords, bearer tokens and the FastAPI dependencies that authenticate requests.

Passwords are stored as argon2id hashes. Bearer tokens are random 256-bit strings given to the
client once; the store keeps only their SHA-256, so a leaked database grants nothing.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from facecall.store import Store

_hasher = PasswordHasher()
_bearer = HTTPBearer(auto_error=False)

MAX_TOKEN_CHARS = 128


def hash_password(password: str) -> str:
    """An argon2id hash (with its salt and parameters) of ``password``."""
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """True when ``password`` matches; never raises for a wrong password or a bad hash."""
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


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
