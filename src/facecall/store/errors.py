"""Errors raised by the store.

Every error the store raises on purpose derives from :class:`StoreError`; when one is raised the
transaction it happened in was rolled back, so nothing stored changed.
"""

from __future__ import annotations


class StoreError(Exception):
    """Base class of the store's own errors."""


class InvalidInput(StoreError, ValueError):
    """A value does not fit the schema (too long, empty, not one of the allowed values...)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class NotFound(StoreError, LookupError):
    """A referenced row (user, device, call...) does not exist."""

    def __init__(self, kind: str, ids: str | list[str]) -> None:
        id_list = [ids] if isinstance(ids, str) else sorted(ids)
        super().__init__(f"unknown {kind}: {', '.join(id_list)}")
        self.kind = kind
        self.ids = id_list


class Conflict(StoreError):
    """A row with the same key already exists."""


class UsernameTaken(Conflict):
    """The username (compared case-insensitively) belongs to another user."""

    def __init__(self, username: str) -> None:
        super().__init__(f"username already taken: {username}")
        self.username = username


class TokenExists(Conflict):
    """A token with the same hash is already stored."""

    def __init__(self) -> None:
        super().__init__("a token with this hash already exists")


class CallExists(Conflict):
    """A call with the same id is already stored."""

    def __init__(self, call_id: str) -> None:
        super().__init__(f"call already exists: {call_id}")
        self.call_id = call_id


class StaleVersion(StoreError):
    """Optimistic concurrency: the call row moved on since the caller loaded it."""

    def __init__(self, call_id: str, expected: int, actual: int) -> None:
        super().__init__(f"call {call_id} is at version {actual}, the write expected version {expected}")
        self.call_id = call_id
        self.expected = expected
        self.actual = actual


class InviteNotUsable(StoreError):
    """The invitation code is unknown, or the invitation was used, withdrawn or expired
    (``reason``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"the invitation cannot be used: {reason}")
        self.reason = reason
