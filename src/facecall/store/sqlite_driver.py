"""The SQLite driver of :mod:`facecall.store.driver`: bodies run whole on a stdlib ``sqlite3``
connection — bounded reads and group-committed writes on the event loop's thread, a writer
thread (another process holds the lock; WAL checkpoints; migrations) and a reader thread
(offloaded reads). See the driver module's docstring."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

from facecall.store.driver import (
    ALL,
    COLUMN,
    MANY,
    ONE,
    Body,
    Database,
    IntegrityViolation,
    SqliteDialect,
    Stmt,
    T,
)

#: milliseconds SQLite waits for another process's write lock before giving up
SQLITE_BUSY_TIMEOUT_MS = 10_000
SQLITE_PRAGMAS = (
    "PRAGMA foreign_keys=ON",
    f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    # statement and savepoint journals (a group commit holds a SAVEPOINT per write) and temp
    # b-trees in memory, not in files opened, written and unlinked in /var/tmp ("Temporary
    # Files Used By SQLite", sqlite.org/tempfiles.html)
    "PRAGMA temp_store=MEMORY",
)
#: most write transactions of different callers committed as one (see SqliteWorker)
GROUP_COMMIT_MAX = 64
#: inline write transactions between two WAL checkpoints (see SqliteDatabase)
CHECKPOINT_EVERY = 200


# -- SQLite ------------------------------------------------------------------------------------------


def _bind_null(value: None) -> None:
    """The adapter of ``None``: itself (bound as NULL)."""
    return value


# The sqlite3 module looks every parameter that is not an exact int, float, str or bytearray up
# in its adapter registry; for None that lookup fails through two attribute lookups, one
# raising and clearing an AttributeError (~0.25 µs per None; a call set-up binds ~22). With an
# adapter registered for NoneType the lookup hits at once. Process-wide, and changes nothing:
# None is still bound as NULL.
sqlite3.register_adapter(type(None), _bind_null)


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


def create_private(path: str) -> None:
    """Create the database file readable by its owner only (it holds password hashes and
    tokens' hashes), if it does not exist yet; SQLite gives its ``-wal`` and ``-shm`` files the
    same mode. An existing file keeps the mode its owner chose."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def is_busy(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` is SQLITE_BUSY or SQLITE_LOCKED (any extended code)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _sqlite_step(conn: sqlite3.Connection, stmt: Stmt) -> Any:
    mode, q, params = stmt
    if mode == MANY:
        return conn.executemany(q.sqlite, params).rowcount
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


def _drive_sqlite(conn: sqlite3.Connection, body: Body[T]) -> T:
    """Run ``body``'s statements on ``conn`` (no transaction control of its own)."""
    try:
        stmt = next(body)
        while True:
            stmt = body.send(_sqlite_step(conn, stmt))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    except sqlite3.IntegrityError as exc:
        raise IntegrityViolation(str(exc)) from exc
    finally:
        body.close()


Outcome = tuple[Any, BaseException | None]


def run_sqlite_group(conn: sqlite3.Connection, bodies: list[Body[Any]]) -> list[Outcome]:
    """Run write bodies in one transaction (on the DB thread); one ``(result, error)`` each.

    One body runs as :func:`run_sqlite_body` does. Several run inside ``BEGIN IMMEDIATE`` ...
    ``COMMIT``, each in a ``SAVEPOINT`` (SQLite "SAVEPOINT"): a body that raises is rolled back
    to its savepoint and gets its error; the others are committed together. If SQLite ends the
    whole transaction itself (SQLITE_FULL, SQLITE_IOERR, ... roll back automatically) or the
    ``COMMIT`` fails, nothing of the group was written: the bodies that had succeeded get that
    error and the ones not run yet are run in a new transaction.
    """
    if len(bodies) == 1:
        try:
            return [(run_sqlite_body(conn, "BEGIN IMMEDIATE", bodies[0]), None)]
        except BaseException as exc:
            return [(None, exc)]
    outcomes: list[Outcome] = []
    try:
        conn.execute("BEGIN IMMEDIATE")
    except BaseException as exc:
        for body in bodies:
            body.close()
        return [(None, exc)] * len(bodies)
    for i, body in enumerate(bodies):
        try:
            conn.execute("SAVEPOINT group_item")
            result = _drive_sqlite(conn, body)
            conn.execute("RELEASE group_item")
            outcomes.append((result, None))
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK TO group_item")
                conn.execute("RELEASE group_item")
                outcomes.append((None, exc))
                continue
            # SQLite rolled back everything: nothing of this group is written
            lost: list[Outcome] = [(None, exc)] * (len(outcomes) + 1)
            rest = bodies[i + 1:]
            return lost + (run_sqlite_group(conn, rest) if rest else [])
    try:
        conn.execute("COMMIT")
    except BaseException as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        return [(None, exc)] * len(bodies)
    return outcomes


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class SqliteWorker:
    """A thread owning one SQLite connection; runs submitted work one item at a time.

    Writes submitted with :meth:`submit_write` are *group-committed*: the writes waiting in the
    queue when the thread gets to them (at most :data:`GROUP_COMMIT_MAX`) run in one ``BEGIN
    IMMEDIATE`` ... ``COMMIT``, each body inside its own ``SAVEPOINT``, so one body that fails
    is rolled back to its savepoint alone and the others still commit. No caller hears of its
    result before the ``COMMIT`` has returned (see :func:`run_sqlite_group`).
    """

    def __init__(self, path: str, name: str) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.conn = sqlite_connect(path)
        self.groups = 0  # transactions committed by group commit (for tests and metrics)
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Run ``fn(conn, *args)`` on the thread; the future resolves on the calling loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put((loop, future, fn, args))
        return future

    def submit_write(self, body: Body[T]) -> asyncio.Future[T]:
        """Run the transaction body ``body`` in a write transaction, possibly grouped with other
        writes queued at the same time; the future resolves once that transaction committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put((loop, future, None, body))
        return future

    def _loop(self) -> None:
        item = self._queue.get()
        while item is not None:
            loop, future, fn, args = item
            if fn is not None:
                try:
                    outcome = (fn(self.conn, *args), None)
                except BaseException as exc:  # handed to the awaiting task
                    outcome = (None, exc)
                _hand_over({loop: [(future, *outcome)]})
                item = self._queue.get()
                continue
            group = [item]
            item = None
            while len(group) < GROUP_COMMIT_MAX:  # the writes queued behind this one
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    item = None
                    break
                if item is None or item[2] is not None:
                    break  # stop (or a plain function): run the group first, keep the order
                group.append(item)
                item = None
            outcomes = run_sqlite_group(self.conn, [g[3] for g in group])
            self.groups += 1
            settled: dict[asyncio.AbstractEventLoop, list[Any]] = {}
            for (g_loop, g_future, _, _), outcome in zip(group, outcomes, strict=True):
                settled.setdefault(g_loop, []).append((g_future, *outcome))
            _hand_over(settled)
            if item is None:
                item = self._queue.get()
        self.conn.close()

    def stop(self) -> None:
        """Finish queued work, close the connection and end the thread."""
        self._queue.put(None)
        self._thread.join()


def _settle_all(outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, error in outcomes:
        _settle(future, result, error)


def _hand_over(settled: dict[asyncio.AbstractEventLoop, list[Any]]) -> None:
    """Resolve futures on their loops: one wake-up per loop, not one per future."""
    for loop, outcomes in settled.items():
        with contextlib.suppress(RuntimeError):  # the loop was closed meanwhile
            loop.call_soon_threadsafe(_settle_all, outcomes)


class SqliteDatabase(Database):
    """Bodies run on the event loop's thread where that is cheaper than a hop to a DB thread.

    A bounded read (an indexed lookup returning a handful of rows) costs SQLite a few tens of
    microseconds, less than the two thread wake-ups of a hop. With ``inline_reads`` (the
    default for file databases) such reads run on the calling thread, on a connection that
    never waits for a lock: in WAL mode readers do not take locks, and in the rare case SQLite
    still answers SQLITE_BUSY (WAL recovery, a truncating checkpoint) the read is retried on
    the reader thread, whose connection waits the busy timeout. Reads marked ``offload``
    always go to the reader thread.

    Writes, with ``inline_writes`` (the default for file databases), are group-committed on the
    same connection: the writes requested during one event-loop iteration run in one
    transaction (:func:`run_sqlite_group`, a savepoint each) in a callback right after it, and
    each caller is answered after the ``COMMIT``. A hop per write costs more than the write:
    the writer thread and the loop hand the GIL back and forth for every statement. If the
    database is locked (another process writes; SQLITE_BUSY, never waited for on the loop),
    the writes go to the writer thread, which waits the busy timeout and group-commits too.
    WAL checkpoints (the sqlite3 default runs one inside the COMMIT that fills the WAL) are the
    writer thread's: one is requested every :data:`CHECKPOINT_EVERY` inline transactions.

    A write whose awaiting task is cancelled still runs to its end (committed or rolled back
    as a whole), like a PostgreSQL commit whose reply was lost.
    """

    dialect = "sqlite"

    def __init__(self, path: str, *, memory: bool, inline_reads: bool = True,
                 inline_writes: bool = True) -> None:
        if not memory:
            create_private(path)
        self.sql = SqliteDialect()
        self.writer = SqliteWorker(path, "facecall-sqlite-writer")
        self.reader = self.writer if memory else SqliteWorker(path, "facecall-sqlite-reader")
        # An in-memory database is one connection, owned by the writer thread.
        inline = (inline_reads or inline_writes) and not memory
        self.inline = sqlite_connect(path, wait=False) if inline else None
        self._inline_reads = inline_reads
        self._inline_writes = inline_writes and self.inline is not None
        if self._inline_writes:
            assert self.inline is not None
            self.inline.execute("PRAGMA wal_autocheckpoint=0")  # the writer thread's job
        self._batch: list[tuple[Callable[..., Body[Any]], tuple[Any, ...], asyncio.Future[Any]]] = []
        self._since_checkpoint = 0
        self.inline_groups = 0  # transactions committed on the loop (for tests and metrics)

    async def read(
        self, body: Callable[..., Body[T]], *args: Any, atomic: bool = False, offload: bool = False
    ) -> T:
        begin = "BEGIN" if atomic else None
        if self.inline is not None and self._inline_reads and not offload:
            try:
                return run_sqlite_body(self.inline, begin, body(self.sql, *args))
            except sqlite3.OperationalError as exc:
                if not is_busy(exc):
                    raise
        return await self.reader.submit(run_sqlite_body, begin, body(self.sql, *args))

    async def write(self, body: Callable[..., Body[T]], *args: Any, autocommit: bool = False) -> T:
        if not self._inline_writes:
            return await self.writer.submit_write(body(self.sql, *args))
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._batch.append((body, args, future))
        if len(self._batch) == 1:
            loop.call_soon(self._commit_batch)
        return await future

    def _commit_batch(self) -> None:
        """Run this iteration's writes as one transaction; answer each after the COMMIT."""
        batch, self._batch = self._batch, []
        assert self.inline is not None
        outcomes = run_sqlite_group(self.inline, [body(self.sql, *args) for body, args, _ in batch])
        self.inline_groups += 1
        for (body, args, future), (result, error) in zip(batch, outcomes, strict=True):
            if isinstance(error, sqlite3.OperationalError) and is_busy(error):
                # locked by another connection: nothing of it was written; the writer thread
                # waits for the lock (a fresh generator: the first one was closed)
                retry = self.writer.submit_write(body(self.sql, *args))
                retry.add_done_callback(functools.partial(_pass_on, future))
                continue
            _settle(future, result, error)
        self._since_checkpoint += 1
        if self._since_checkpoint >= CHECKPOINT_EVERY:
            self._since_checkpoint = 0
            self.writer.submit(_checkpoint).add_done_callback(_ignore)

    async def close(self) -> None:
        for worker in {id(self.writer): self.writer, id(self.reader): self.reader}.values():
            await asyncio.to_thread(worker.stop)
        if self.inline is not None:
            self.inline.close()


def _checkpoint(conn: sqlite3.Connection) -> None:
    """Copy committed WAL pages into the database file without blocking anyone (PASSIVE)."""
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


def _ignore(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved: a failed checkpoint is retried with the next one


def _pass_on(target: asyncio.Future[Any], source: asyncio.Future[Any]) -> None:
    if source.cancelled():
        if not target.done():
            target.cancel()
        return
    _settle(target, None if source.exception() else source.result(), source.exception())
