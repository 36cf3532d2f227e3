"""Column types: epoch-second floats, as ``timestamptz`` on PostgreSQL and REAL on SQLite."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

from facecall.store.driver import SqliteDialect


def to_datetime(value: float) -> datetime:
    """Epoch seconds to an aware UTC datetime (microsecond precision)."""
    return datetime.fromtimestamp(value, tz=UTC)


def to_epoch(value: datetime) -> float:
    """An aware (or naive, taken as UTC) datetime to epoch seconds."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def _sqlite_bind(value: Any) -> float | None:
    if value is None:
        return None
    return to_epoch(value) if isinstance(value, datetime) else float(value)


class EpochTime(TypeDecorator[float]):
    """Python side: float epoch seconds (UTC).

    PostgreSQL: ``TIMESTAMP WITH TIME ZONE``. SQLite: the column is declared ``DATETIME`` (as
    migration 0001 created it; NUMERIC affinity) and holds REAL epoch seconds since migration
    0003, bound and read without SQLAlchemy's text format -- the same values the store's
    driver writes (:class:`facecall.store.driver.SqliteDialect`).
    """

    impl = DateTime
    cache_ok = True

    def __init__(self) -> None:
        super().__init__(timezone=True)

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        if dialect.name == "sqlite":
            return _sqlite_bind
        return super().bind_processor(dialect)

    def result_processor(self, dialect: Dialect, coltype: Any) -> Callable[[Any], Any] | None:
        if dialect.name == "sqlite":
            return SqliteDialect().epoch  # the driver's reading of the same column
        return super().result_processor(dialect, coltype)

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.astimezone(UTC) if isinstance(value, datetime) else to_datetime(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> float | None:
        if value is None:
            return None
        return to_epoch(value)
