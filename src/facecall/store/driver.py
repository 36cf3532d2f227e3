"""The runtime database layer: one transaction = one generator of statements, run by a driver.

A repository method is written once, as a *transaction body*: a generator that yields
:class:`Stmt` values and receives each statement's result. Two drivers run bodies:

* :class:`SqliteDatabase` runs the whole body on a dedicated thread that owns a stdlib
  ``sqlite3`` connection, so one transaction costs one hop between the event loop and that
  thread (aiosqlite costs a hop per cursor operation). File databases get a writer thread
  (``BEGIN IMMEDIATE`` ... ``COMMIT``; in-process writers simply queue on it) and a reader
  thread (WAL readers never wait for the writer); ``:memory:`` gets one thread for both.
  Other processes are handled by SQLite's busy timeout, as before.
* :class:`PgDatabase` runs the body on the event loop over an ``asyncpg`` pool; asyncpg keeps
  each connection's prepared statements.

SQL is written once with ``$1``-style parameters (:class:`Q` derives SQLite's ``?1`` form) and
``{ids1}`` for "is one of the list given as parameter 1". Timestamps go through the
:class:`Dialect`: naive UTC text on SQLite (the format SQLAlchemy used, so existing files keep
working), ``timestamptz`` on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import queue
import re
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Generator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

T = TypeVar("T")

#: milliseconds SQLite waits for another process's write lock before giving up
SQLITE_BUSY_TIMEOUT_MS = 10_000
SQLITE_PRAGMAS = (
    "PRAGMA foreign_keys=ON",
    f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
)
_NAIVE_EPOCH = datetime(1970, 1, 1)
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
MANY = 4  # executemany; None

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
    name = "sqlite"

    def time(self, value: float | None) -> str | None:
        if value is None:
            return None
        return datetime.fromtimestamp(value, tz=UTC).isoformat(" ", "microseconds")[:26]

    def epoch(self, value: Any) -> float | None:
        if value is None:
            return None
        # same arithmetic as datetime.timestamp() of the aware value, without building it
        return (datetime.fromisoformat(value) - _NAIVE_EPOCH).total_seconds()

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


# -- SQLite ------------------------------------------------------------------------------------------


def sqlite_connect(path: str, *, wait: bool = True) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit) with the store's pragmas;
    ``wait=False`` makes it fail at once with SQLITE_BUSY instead of waiting for a lock."""
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, cached_statements=512, timeout=0
    )
    for pragma in SQLITE_PRAGMAS:
        conn.execute(pragma)
    if not wait:
        conn.execute("PRAGMA busy_timeout=0")
    return conn


def is_busy(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` is SQLITE_BUSY or SQLITE_LOCKED (any extended code)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _sqlite_step(conn: sqlite3.Connection, stmt: Stmt) -> Any:
    mode, q, params = stmt
    if mode == MANY:
        conn.executemany(q.sqlite, params)
        return None
    if q.list_param:
        values = params[-1]
        cursor = conn.execute(q.sqlite_for(len(values)), (*params[:-1], *values))
    else:
        cursor = conn.execute(q.sqlite, params)
    if mode == ALL:
        return cursor.fetchall()
    if mode == ONE:
        return cursor.fetchone()
    if mode == COLUMN:
        return [row[0] for row in cursor.fetchall()]
    return cursor.rowcount


def run_sqlite_body(conn: sqlite3.Connection, begin: str | None, body: Body[T]) -> T:
    """Drive ``body`` to completion on ``conn`` (on the DB thread), inside ``begin`` if given."""
    if begin is not None:
        conn.execute(begin)
    try:
        try:
            stmt = next(body)
            while True:
                stmt = body.send(_sqlite_step(conn, stmt))
        except StopIteration as done:
            result: T = done.value
        if begin is not None:
            conn.execute("COMMIT")
        return result
    except BaseException as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        if isinstance(exc, sqlite3.IntegrityError):
            raise IntegrityViolation(str(exc)) from exc
        raise
    finally:
        body.close()


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class SqliteWorker:
    """A thread owning one SQLite connection; runs submitted functions one at a time."""

    def __init__(self, path: str, name: str) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.conn = sqlite_connect(path)
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Run ``fn(conn, *args)`` on the thread; the future resolves on the calling loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put((loop, future, fn, args))
        return future

    def _loop(self) -> None:
        while (item := self._queue.get()) is not None:
            loop, future, fn, args = item
            try:
                outcome = (fn(self.conn, *args), None)
            except BaseException as exc:  # handed to the awaiting task
                outcome = (None, exc)
            with contextlib.suppress(RuntimeError):  # the loop was closed meanwhile
                loop.call_soon_threadsafe(_settle, future, *outcome)
        self.conn.close()

    def stop(self) -> None:
        """Finish queued work, close the connection and end the thread."""
        self._queue.put(None)
        self._thread.join()


class SqliteDatabase(Database):
    """Bodies run on DB threads, one hop per transaction -- except bounded reads, see below.

    A bounded read (an indexed lookup returning a handful of rows) costs SQLite a few tens of
    microseconds, less than the two thread wake-ups of a hop. With ``inline_reads`` (the
    default for file databases) such reads run on the calling thread, on a connection that
    never waits for a lock: in WAL mode readers do not take locks, and in the rare case SQLite
    still answers SQLITE_BUSY (WAL recovery, a truncating checkpoint) the read is retried on
    the reader thread, whose connection waits the busy timeout. Reads marked ``offload``
    always go to the reader thread.

    A write whose awaiting task is cancelled still runs to its end on the writer thread
    (committed or rolled back as a whole), like a PostgreSQL commit whose reply was lost.
    """

    dialect = "sqlite"

    def __init__(self, path: str, *, memory: bool, inline_reads: bool = True) -> None:
        self.sql = SqliteDialect()
        self.writer = SqliteWorker(path, "facecall-sqlite-writer")
        self.reader = self.writer if memory else SqliteWorker(path, "facecall-sqlite-reader")
        # An in-memory database is one connection, owned by the writer thread.
        self.inline = sqlite_connect(path, wait=False) if inline_reads and not memory else None

    async def read(
        self, body: Callable[..., Body[T]], *args: Any, atomic: bool = False, offload: bool = False
    ) -> T:
        begin = "BEGIN" if atomic else None
        if self.inline is not None and not offload:
            try:
                return run_sqlite_body(self.inline, begin, body(self.sql, *args))
            except sqlite3.OperationalError as exc:
                if not is_busy(exc):
                    raise
        return await self.reader.submit(run_sqlite_body, begin, body(self.sql, *args))

    async def write(self, body: Callable[..., Body[T]], *args: Any, autocommit: bool = False) -> T:
        gen = body(self.sql, *args)
        return await self.writer.submit(run_sqlite_body, "BEGIN IMMEDIATE", gen)

    async def close(self) -> None:
        for worker in {id(self.writer): self.writer, id(self.reader): self.reader}.values():
            await asyncio.to_thread(worker.stop)
        if self.inline is not None:
            self.inline.close()


# -- PostgreSQL ----------------------------------------------------------------------------------


async def _pg_step(con: Any, stmt: Stmt) -> Any:
    mode, q, params = stmt
    if mode == ALL:
        return await con.fetch(q.pg, *params)
    if mode == ONE:
        return await con.fetchrow(q.pg, *params)
    if mode == COLUMN:
        return [row[0] for row in await con.fetch(q.pg, *params)]
    if mode == MANY:
        await con.executemany(q.pg, params)
        return None
    status: str = await con.execute(q.pg, *params)
    return int(status.rsplit(" ", 1)[1])


async def _pg_drive(con: Any, body: Body[T]) -> T:
    try:
        stmt = next(body)
        while True:
            stmt = body.send(await _pg_step(con, stmt))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    finally:
        body.close()


class PgPool:
    """A minimal LIFO pool of asyncpg connections.

    asyncpg's own pool costs tens of microseconds per acquire/release (and by default a reset
    query, one more round trip, on every release). The store only ever uses a connection inside
    :meth:`PgDatabase.read`/:meth:`PgDatabase.write`, ends every transaction it opens and never
    changes session state, so handing connections out from a list is enough. A connection that
    is closed or left inside a transaction (after a cancellation) is dropped, not reused.
    """

    def __init__(self, dsn: str, max_size: int) -> None:
        import asyncpg

        self._interface_error = asyncpg.InterfaceError
        self.dsn = dsn
        self.max_size = max_size
        self._idle: list[Any] = []
        self._size = 0
        self._waiters: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._closed = False

    async def acquire(self) -> Any:
        """An idle connection, a new one if below ``max_size``, else the next one released."""
        if self._closed:
            raise RuntimeError("the store is closed")
        if self._idle:
            return self._idle.pop()
        if self._size < self.max_size:
            import asyncpg

            self._size += 1
            try:
                return await asyncpg.connect(self.dsn)
            except BaseException:
                self._size -= 1
                raise
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release(waiter.result())
            raise

    def release(self, con: Any) -> None:
        """Give ``con`` back (or drop it if it is unusable)."""
        if self._closed or con.is_closed() or con.is_in_transaction():
            self._size -= 1
            if not con.is_closed():
                con.terminate()
            self._wake_for_new()
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(con)
                return
        self._idle.append(con)

    def _wake_for_new(self) -> None:
        # a slot was freed: let the first waiter open a connection of its own
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(_Retry())
                return

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        """A connection for the block."""
        while True:
            try:
                con = await self.acquire()
                break
            except _Retry:
                continue
        try:
            yield con
        except (asyncio.CancelledError, OSError, self._interface_error):
            con.terminate()  # interrupted mid-protocol: never reuse it
            raise
        finally:
            self.release(con)

    async def close(self) -> None:
        """Close every idle connection; connections in use are closed when released."""
        self._closed = True
        idle, self._idle = self._idle, []
        for con in idle:
            self._size -= 1
            await con.close()


class _Retry(Exception):
    """Internal: a pool slot was freed; acquire again."""


class PgDatabase(Database):
    """Bodies run on the event loop over a :class:`PgPool`."""

    dialect = "postgresql"

    def __init__(self, pool: PgPool) -> None:
        import asyncpg

        self.sql = PgDialect()
        self.pool = pool
        self._integrity = asyncpg.IntegrityConstraintViolationError

    @classmethod
    async def connect(cls, dsn: str, max_size: int = 15) -> PgDatabase:
        """A pool for ``dsn`` (``postgresql://...``), with one connection opened to check it."""
        pool = PgPool(dsn, max_size)
        pool.release(await pool.acquire())
        return cls(pool)

    async def read(
        self, body: Callable[..., Body[T]], *args: Any, atomic: bool = False, offload: bool = False
    ) -> T:
        async with self.pool.connection() as con:
            if not atomic:
                return await _pg_drive(con, body(self.sql, *args))
            async with con.transaction(isolation="repeatable_read", readonly=True):
                return await _pg_drive(con, body(self.sql, *args))

    async def write(self, body: Callable[..., Body[T]], *args: Any, autocommit: bool = False) -> T:
        try:
            async with self.pool.connection() as con:
                if autocommit:
                    return await _pg_drive(con, body(self.sql, *args))
                async with con.transaction():
                    return await _pg_drive(con, body(self.sql, *args))
        except self._integrity as exc:
            raise IntegrityViolation(str(exc)) from exc

    async def close(self) -> None:
        await self.pool.close()
