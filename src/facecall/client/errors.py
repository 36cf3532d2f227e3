"""Exceptions raised by the SDK: one class per thing a program may want to handle.

Every error a server answers with keeps its stable code (docs/protocol.md, "Errors") in ``code``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar


class FacecallError(Exception):
    """Base class of every SDK error."""


class ApiError(FacecallError):
    """The HTTP API refused a request (``status`` and the server's ``detail``; status 0: unreachable)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail if status == 0 else f"HTTP {status}: {detail}")
        self.status, self.detail = status, detail


class AuthenticationError(ApiError):
    """Wrong username or password, or a token the server no longer accepts."""


class UnknownUserError(FacecallError, LookupError):
    """The user to call does not exist on this server."""

    def __init__(self, username: str) -> None:
        super().__init__(f"no such user: {username!r}")
        self.username = username


class NotConnectedError(FacecallError):
    """The device has no signaling connection now (never connected, closed, or reconnecting)."""


class CallError(FacecallError):
    """The server refused a call operation; ``code`` is the protocol's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


class CallStateError(FacecallError):
    """The operation does not fit the call's state (answering an outgoing call, a call that ended)."""


class MediaError(FacecallError):
    """Media could not be set up (no common codec, no ICE path after every restart)."""


class WaitTimeoutError(FacecallError, TimeoutError):
    """A wait (``next_call``, ``Call.wait_*``) gave up after its ``timeout``; also a built-in
    :class:`TimeoutError`, so ``except TimeoutError`` catches it too."""


T = TypeVar("T")


async def wait_within(awaitable: Awaitable[T], timeout: float | None, what: str) -> T:
    """``await awaitable`` for at most ``timeout`` seconds (None: no limit).

    :raises WaitTimeoutError: ``what`` did not happen in time.
    """
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except TimeoutError:
        raise WaitTimeoutError(f"{what} within {timeout:g} s") from None
