"""Column types: epoch-second floats stored as timezone-aware timestamps."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


def to_datetime(value: float) -> datetime:
    """Epoch seconds to an aware UTC datetime (microsecond precision)."""
    return datetime.fromtimestamp(value, tz=UTC)


def to_epoch(value: datetime) -> float:
    """An aware (or naive, taken as UTC) datetime to epoch seconds."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


class EpochTime(TypeDecorator[float]):
    """Python side: float epoch seconds (UTC). Database side: ``TIMESTAMP WITH TIME ZONE``.

    SQLite has no time zones: values are written there as naive UTC and read back as UTC.
    """

    impl = DateTime
    cache_ok = True

    def __init__(self) -> None:
        super().__init__(timezone=True)

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        moment = value.astimezone(UTC) if isinstance(value, datetime) else to_datetime(value)
        if dialect.name == "sqlite":
            return moment.replace(tzinfo=None)
        return moment

    def process_result_value(self, value: Any, dialect: Dialect) -> float | None:
        if value is None:
            return None
        return to_epoch(value)
