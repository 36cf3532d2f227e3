"""The PostgreSQL driver of :mod:`facecall.store.driver`: bodies run on the event loop over a
small pool of ``asyncpg`` connections, which keep their prepared statements."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from facecall.store.driver import (
    ALL,
    COLUMN,
    MANY,
    ONE,
    Body,
    Database,
    IntegrityViolation,
    PgDialect,
    Stmt,
    T,
)

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
