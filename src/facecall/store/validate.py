"""Checks that values fit the schema, so bad input fails with a clear :class:`InvalidInput`
before anything is written (and identically on SQLite, which does not enforce lengths)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import orjson

from facecall.store.errors import InvalidInput
from facecall.store.models import ID_LEN, TOKEN_HASH_LEN

#: the range of instants the store accepts (1970 .. 9999), in epoch seconds
MAX_EPOCH = 253_402_300_799.0
#: the largest call snapshot (JSON text) the store accepts
MAX_SNAPSHOT_CHARS = 1024 * 1024
_HEX = frozenset("0123456789abcdef")


def text(value: object, field: str, max_len: int) -> str:
    """A non-empty string of at most ``max_len`` characters."""
    if value.__class__ is str and 0 < len(value) <= max_len and "\x00" not in value:  # type: ignore[arg-type]
        return value  # type: ignore[return-value]
    if not isinstance(value, str):
        raise InvalidInput(field, f"must be a string, not {type(value).__name__}")
    if not value:
        raise InvalidInput(field, "must not be empty")
    if len(value) > max_len:
        raise InvalidInput(field, f"is {len(value)} characters long, at most {max_len} allowed")
    if "\x00" in value:
        raise InvalidInput(field, "must not contain NUL characters")
    return value


def optional_text(value: object, field: str, max_len: int) -> str | None:
    """Like :func:`text`, or None."""
    return None if value is None else text(value, field, max_len)


def ident(value: object, field: str) -> str:
    """An id: a non-empty string of at most ``ID_LEN`` characters."""
    if value.__class__ is str and 0 < len(value) <= ID_LEN and "\x00" not in value:  # type: ignore[arg-type]
        return value  # type: ignore[return-value]
    return text(value, field, ID_LEN)


def optional_ident(value: object, field: str) -> str | None:
    """An id or None."""
    return None if value is None else ident(value, field)


def ids(values: Iterable[object], field: str) -> list[str]:
    """A list of ids, duplicates removed, order kept."""
    return list(dict.fromkeys(ident(v, field) for v in values))


def choice(value: object, field: str, allowed: tuple[str, ...]) -> str:
    """One of ``allowed``."""
    if value not in allowed:
        raise InvalidInput(field, f"must be one of {', '.join(allowed)}, not {value!r}")
    return str(value)


def instant(value: object, field: str) -> float:
    """Finite epoch seconds between 1970 and 9999."""
    if value.__class__ is float and 0.0 <= value <= MAX_EPOCH:  # type: ignore[operator]  # NaN fails
        return value  # type: ignore[return-value]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(field, f"must be epoch seconds, not {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number) or not 0.0 <= number <= MAX_EPOCH:
        raise InvalidInput(field, f"{value!r} is not an instant between 1970 and 9999")
    return number


def optional_instant(value: object, field: str) -> float | None:
    """Epoch seconds or None."""
    return None if value is None else instant(value, field)


def token_hash(value: object) -> str:
    """A sha256 hex digest in lower case."""
    digest = text(value, "token_hash", TOKEN_HASH_LEN)
    if len(digest) != TOKEN_HASH_LEN or not set(digest) <= _HEX:
        raise InvalidInput("token_hash", "must be a lower-case sha256 hex digest")
    return digest


def snapshot(value: object) -> str:
    """The JSON text of a snapshot dict."""
    if not isinstance(value, dict):
        raise InvalidInput("snapshot", f"must be a dict, not {type(value).__name__}")
    try:
        encoded = orjson.dumps(value).decode()  # ~15x json.dumps on a call's snapshot
    except TypeError as exc:  # orjson.JSONEncodeError: a type, a key, a cycle JSON lacks
        raise InvalidInput("snapshot", f"is not JSON-serialisable: {exc}") from exc
    # orjson writes NaN and the infinities as null; a snapshot that reads back equal has none
    # (reading back is a few µs; walking every value in Python costs as much as json.dumps)
    if orjson.loads(encoded) != value and _has_non_finite(value):
        raise InvalidInput("snapshot", "is not JSON-serialisable: NaN or infinity")
    if len(encoded) > MAX_SNAPSHOT_CHARS:
        raise InvalidInput("snapshot", f"is {len(encoded)} characters, at most {MAX_SNAPSHOT_CHARS}")
    return encoded


def _has_non_finite(value: object) -> bool:
    """Whether a float anywhere in ``value`` (dicts, lists, tuples) is NaN or infinite.
    Call it only on what orjson encoded: that has no cycles."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                return True
        elif isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            pending.extend(item)
    return False


def positive_int(value: Any, field: str, maximum: int) -> int:
    """An int in ``1..maximum``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise InvalidInput(field, f"must be an integer between 1 and {maximum}")
    return value
