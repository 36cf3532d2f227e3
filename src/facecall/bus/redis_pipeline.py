"""The bus's Lua scripts run on Redis, coalesced: the scripts that the requests of one pass of
the event loop run go to Redis in one pipeline (one write, one read) instead of a round trip
each.

redis-py's asyncio client spends 60-75 µs of the node's CPU on one ``EVALSHA`` alone, about
30 µs each in pipelines of 4 and 14-20 µs in pipelines of 16 (``bench/redis_commands.py``;
``docs/benchmarks.md``, "Session 14"). The first script of a
pass leads: it yields once, so that the other requests stepped in the same pass add theirs,
then runs alone (nothing joined) or sends them all as one pipeline, whose replies come back in
order (`Redis pipelining <https://redis.io/docs/latest/develop/use/pipelining/>`_). Each caller
gets its own reply or its own error; a connection failure fails them all. The pipeline runs in
a task of its own, so a caller cancelled meanwhile (its connection closed) does not cancel the
others' scripts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

Args = Sequence[bytes | str | int]


class _Queued:
    """One caller's script in a pipeline being gathered, and where its reply goes."""

    __slots__ = ("args", "future", "keys", "name")

    def __init__(self, name: str, keys: Sequence[bytes], args: Args,
                 future: asyncio.Future[Any]) -> None:
        self.name, self.keys, self.args, self.future = name, keys, args, future


class ScriptRunner:
    """Runs named Lua scripts by ``EVALSHA`` (``EVAL`` when Redis lost its script cache: a
    restarted Redis), coalescing those of one loop pass into one pipeline."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client
        self._scripts: dict[str, tuple[str, bytes]] = {}  # name: (SHA1, source)
        self._gathering: list[_Queued] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def load(self, name: str, source: str) -> None:
        """``SCRIPT LOAD`` ``source`` under ``name`` (one round trip)."""
        encoded = source.encode()
        self._scripts[name] = (await self._client.script_load(encoded), encoded)

    async def run(self, name: str, keys: Sequence[bytes], args: Args) -> Any:
        """The reply of script ``name`` on ``keys`` and ``args``; Redis' errors are raised."""
        loop = asyncio.get_running_loop()
        if self._gathering is not None:  # another script leads this pass's pipeline: join it
            future: asyncio.Future[Any] = loop.create_future()
            self._gathering.append(_Queued(name, keys, args, future))
            return await future
        gathering = self._gathering = []
        try:
            await asyncio.sleep(0)  # the other requests of this pass add their scripts
        except BaseException:  # cancelled: those that joined are sent without this one
            self._gathering = None
            if gathering:
                self._send(gathering)
            raise
        self._gathering = None
        if not gathering:
            return await self._alone(name, keys, args)
        mine: asyncio.Future[Any] = loop.create_future()
        self._send([_Queued(name, keys, args, mine), *gathering])
        return await mine

    def _send(self, batch: list[_Queued]) -> None:
        task = asyncio.get_running_loop().create_task(self._pipeline(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _alone(self, name: str, keys: Sequence[bytes], args: Args) -> Any:
        sha, source = self._scripts[name]
        try:
            return await self._client.evalsha(sha, len(keys), *keys, *args)
        except NoScriptError:  # EVAL caches it again for the EVALSHAs that follow
            return await self._client.eval(source, len(keys), *keys, *args)

    async def _pipeline(self, batch: list[_Queued]) -> None:
        """Send ``batch`` as one pipeline and hand each caller its reply (a script Redis no
        longer knows is run again alone, by ``EVAL``)."""
        try:
            pipe = self._client.pipeline(transaction=False)
            for queued in batch:
                pipe.evalsha(self._scripts[queued.name][0], len(queued.keys), *queued.keys,
                             *queued.args)
            replies = await pipe.execute(raise_on_error=False)
            for queued, reply in zip(batch, replies, strict=True):
                if isinstance(reply, NoScriptError):
                    try:
                        reply = await self._alone(queued.name, queued.keys, queued.args)
                    except Exception as exc:
                        reply = exc
                if queued.future.done():
                    continue
                if isinstance(reply, Exception):
                    queued.future.set_exception(reply)
                else:
                    queued.future.set_result(reply)
        except Exception as exc:  # the connection failed: every caller hears of it
            for queued in batch:
                if not queued.future.done():
                    queued.future.set_exception(exc)
        except BaseException:  # cancelled (the node stops): nobody waits for ever
            for queued in batch:
                queued.future.cancel()
            raise
