"""The runtime database layer: one transaction = one generator of statements, run by a driver.

A repository method is written once, as a *transaction body*: a generator that yields
:class:`Stmt` values and receives each statement's result. Two drivers run bodies:

* :class:`~facecall.store.sqlite_driver.SqliteDatabase` runs a body with a stdlib ``sqlite3``
  connection, whole, either on the event loop's thread or on a dedicated thread (one hop per
  transaction; aiosqlite costs a hop per cursor operation). File databases run bounded reads
  and group-committed writes on the loop (writes of one loop iteration: one ``BEGIN IMMEDIATE``
  ... ``COMMIT``, a savepoint per caller), and have a writer thread (used when another process
  holds the lock, for WAL checkpoints and for migrations; it group-commits what queues on it
  too) and a reader thread (offloaded reads; WAL readers never wait for the writer).
  ``:memory:`` gets one thread for everything. Other processes are handled by SQLite's busy
  timeout, as before.
* :class:`~facecall.store.pg_driver.PgDatabase` runs the body on the event loop over an
  ``asyncpg`` pool; asyncpg keeps each connection's prepared statements.

SQL is written once with ``$1``-style parameters (:class:`Q` derives SQLite's ``?1`` form) and
``{ids1}`` for "is one of the list given as parameter 1". Timestamps go through the
:class:`Dialect`: REAL epoch seconds on SQLite (no formatting or parsing on the hot path;
migration 0003 converted the naive UTC text SQLAlchemy used to write), ``timestamptz`` on
PostgreSQL.

This module holds what both drivers share (statements, dialects, the :class:`Database`
interface); the drivers are :mod:`facecall.store.sqlite_driver` and
:mod:`facecall.store.pg_driver`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

T = TypeVar("T")

_PARAM = re.compile(r"\$(\d+)")
_IDS = re.compile(r"\{ids(\d+)\}")


class IntegrityViolation(Exception):
    """A constraint (unique, foreign key, check) refused the write; the transaction was rolled back."""


@dataclass(frozen=True, slots=True)
class Q:
    """One SQL text in both dialects, derived from the PostgreSQL form.

    An id list (``{idsN}``) must be the last parameter: PostgreSQL binds it as one array, SQLite
    as ``IN (?N, ?N+1, ...)`` with one placeholder per element (texts cached per length; faster
    than ``json_each``, and each length is one statement in sqlite3's cache).
    """

    pg: str
    sqlite: str
    list_param: int = 0  # N of {idsN}, 0 if none
    _sqlite_by_length: dict[int, str] = field(default_factory=dict, compare=False)

    @classmethod
    def of(cls, text: str) -> Q:
        """``$n`` parameters; ``{idsN}`` means ``IN`` the id list passed as parameter N."""
        text = " ".join(text.split())
        found = [int(n) for n in _IDS.findall(text)]
        if len(found) > 1 or (found and found[0] != max(int(n) for n in _PARAM.findall(text) + found)):
            raise ValueError(f"an id list must be the one and last parameter: {text}")
        pg = _IDS.sub(lambda m: f"= ANY(${m.group(1)}::varchar[])", text)
        return cls(pg=pg, sqlite=_PARAM.sub(r"?\1", text), list_param=found[0] if found else 0)

    def sqlite_for(self, length: int) -> str:
        """The SQLite text for an id list of ``length`` elements."""
        text = self._sqlite_by_length.get(length)
        if text is None:
            first = self.list_param
            marks = ", ".join(f"?{i}" for i in range(first, first + length))
            text = self.sqlite.replace(f"{{ids{first}}}", f"IN ({marks})")
            if len(self._sqlite_by_length) < 256:
                self._sqlite_by_length[length] = text
        return text


# Statement modes: what the body receives back.
ALL = 0  # list of rows
ONE = 1  # first row or None
COLUMN = 2  # list of the first column
COUNT = 3  # rows changed
MANY = 4  # executemany; rows changed on SQLite, None on PostgreSQL

Stmt = tuple[int, Q, Sequence[Any]]
Body = Generator[Stmt, Any, T]


class Dialect:
    """Value conversions a body needs; rows are indexed by position on both backends."""

    name: str

    def time(self, value: float | None) -> Any:
        """Epoch seconds to the bound form of a timestamp column."""
        raise NotImplementedError

    def epoch(self, value: Any) -> Any:
        """A timestamp column's value as epoch seconds (None stays None)."""
        raise NotImplementedError

    def ids(self, values: list[str]) -> Any:
        """The bound form of an id list used with ``{idsN}``."""
        raise NotImplementedError


class SqliteDialect(Dialect):
    """Timestamps are REAL epoch seconds on SQLite (migration 0003): bound and read as they are.

    The columns are declared ``DATETIME`` (NUMERIC affinity), which stores a whole-second
    float as an INTEGER: :meth:`epoch` turns it back into a float.
    """

    name = "sqlite"

    def time(self, value: float | None) -> float | None:
        return value

    def epoch(self, value: Any) -> float | None:
        return None if value is None else float(value)

    def ids(self, values: list[str]) -> list[str]:
        return values


class PgDialect(Dialect):
    name = "postgresql"

    def time(self, value: float | None) -> datetime | None:
        return None if value is None else datetime.fromtimestamp(value, tz=UTC)

    def epoch(self, value: Any) -> float | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return float(value.timestamp())

    def ids(self, values: list[str]) -> list[str]:
        return values


BodyFn = Callable[..., Body[Any]]


class Database:
    """What the repositories use: ``await db.read(body, *args)`` / ``await db.write(body, *args)``."""

    dialect: str
    sql: Dialect

    async def read(
        self, body: Callable[..., Body[T]], *args: Any, atomic: bool = False, offload: bool = False
    ) -> T:
        """Run a read-only body; ``atomic`` gives its statements one snapshot. ``offload`` marks a
        read whose cost grows with the data (SQLite then never runs it on the event loop)."""
        raise NotImplementedError

    async def write(self, body: Callable[..., Body[T]], *args: Any, autocommit: bool = False) -> T:
        """Run a body in a write transaction: committed if it returns, rolled back if it raises.

        ``autocommit``: on PostgreSQL the body yields statements that are each atomic on their
        own (one statement does the whole write), so no explicit transaction is opened."""
        raise NotImplementedError

    async def close(self) -> None:
        """Release every connection."""
        raise NotImplementedError
