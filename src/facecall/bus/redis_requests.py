"""Requests between the nodes of a Redis bus, and the placement of named things on one node
(mixed into :class:`facecall.bus.redis_bus.RedisBus`, whose node channels and scripts they use).

* **Requests.** :meth:`NodeRequests.request` PUBLISHes ``q`` (asking node, request id, payload)
  on the answering node's channel; that node runs its :data:`RequestHandler` in a task of its
  own (the channel reader never waits on it) and PUBLISHes ``p`` (request id, ``ok``/``error``,
  payload) on the asker's channel. No listener on the channel, no reply in time, or a handler
  that raised: :class:`RequestFailed`. Payloads are at most :data:`MAX_REQUEST` bytes.
* **Placements.** ``<prefix><name>`` holds the id of the node a name is placed on (group media:
  ``sfu:<call id>``, the node holding the call's room): :meth:`NodeRequests.place` takes it
  when it is free or its node's heartbeat key is gone (:data:`PLACE`, one script: never two
  holders), :meth:`~NodeRequests.keep_placed` renews the lease, :meth:`~NodeRequests.unplace`
  gives it up (compare-and-delete).

:class:`BusUnavailable` (Redis unreachable or failing) lives here too, for both modules.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from facecall.bus.redis_scripts import field, fields, from_bytes, to_bytes
from facecall.logs import get_logger

if TYPE_CHECKING:
    import redis.asyncio as aioredis

log = get_logger(__name__)

NODE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
#: the largest payload of a request or reply between nodes (an SDP offer or answer fits many times)
MAX_REQUEST = 256 * 1024

RequestHandler = Callable[[str, bytes], Awaitable[bytes]]
"""Called on the answering node with (asking node id, payload); returns the reply payload. An
exception it raises is the asker's :class:`RequestFailed` (its message, not its traceback)."""

#: KEYS name. ARGV node, px, node key prefix. The name's node: ``node`` when the name was free
#: or its node's heartbeat key is gone (taken over, in this one step: never two owners).
PLACE = """
local owner = redis.call('GET', KEYS[1])
if owner == ARGV[1] then return owner end
if owner and redis.call('EXISTS', ARGV[3] .. owner) == 1 then return owner end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ARGV[1]
"""


class BusUnavailable(ConnectionError):
    """Redis cannot be reached, or failed an operation; the message names the URL (no password)."""


class RequestFailed(Exception):
    """A request to another node (:meth:`RedisBus.request`) got no reply: the node is not
    listening (dead, or stopped), did not answer in time, or answered with an error (its
    handler raised: ``answered`` is True and the message is the handler's)."""

    def __init__(self, message: str, *, answered: bool = False) -> None:
        super().__init__(message)
        self.answered = answered


class NodeRequests:
    """Requests and placements of a :class:`~facecall.bus.redis_bus.RedisBus` (a mixin: the
    attributes below are the bus's)."""

    node_id: str
    where: str
    _node: bytes
    _p: bytes
    _channels: bytes
    _client: aioredis.Redis | None
    _requests: dict[int, asyncio.Future[tuple[bool, bytes]]]
    _request_ids: itertools.count[int]
    _answerer: RequestHandler | None

    if TYPE_CHECKING:
        def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]: ...
        async def _run(self, what: str, script: str, keys: Sequence[bytes],
                       args: Sequence[Any]) -> Any: ...
        async def _publish(self, what: str, channel: bytes, payload: bytes) -> None: ...
        def _failed(self, what: str, exc: BaseException) -> Exception: ...

    def _asked(self, data: bytes) -> None:
        """A ``q`` message: answer it in a task of its own."""
        asker, request_id, payload = fields(data, 2)
        if not NODE_ID.match(from_bytes(asker)) or not request_id.isdigit():
            raise ValueError("a request with no valid asking node or id")
        self.spawn(self._answer(asker, request_id, payload), f"bus-answer-{self.node_id}")

    def _replied(self, data: bytes) -> None:
        """A ``p`` message: the reply to one of this node's requests."""
        request_id, status, payload = fields(data, 2)
        replied = self._requests.get(int(request_id)) if request_id.isdigit() else None
        if replied is None:  # timed out meanwhile, or never asked: nothing waits for it
            log.info("bus.reply_unknown", node=self.node_id, request=request_id[:20])
        elif not replied.done():
            replied.set_result((status == b"ok", payload))

    def on_request(self, handler: RequestHandler) -> None:
        """Set this node's :data:`RequestHandler` (one per node)."""
        self._answerer = handler

    async def request(self, node: str, payload: bytes, timeout: float = 10.0) -> bytes:
        """Ask ``node`` (its :data:`RequestHandler`) and return its reply: one PUBLISH to its
        channel, the reply read from this node's. :class:`RequestFailed` when no node listens
        there (dead or stopped), none answers within ``timeout`` s, or the handler raised;
        ValueError for a bad node id or a payload past :data:`MAX_REQUEST`."""
        if not NODE_ID.match(node):
            raise ValueError(f"not a node id: {node[:80]!r}")
        if len(payload) > MAX_REQUEST:
            raise ValueError(f"a request of {len(payload)} bytes is past {MAX_REQUEST}")
        if self._client is None:
            raise BusUnavailable(f"the Redis bus at {self.where} is not started (or closed)")
        request_id = next(self._request_ids)
        replied = self._requests[request_id] = asyncio.get_running_loop().create_future()
        try:
            message = b"q" + field(self._node) + field(b"%d" % request_id) + payload
            try:
                listening = await self._client.publish(self._channels + to_bytes(node), message)
            except (RedisError, OSError) as exc:
                raise self._failed("send a request", exc) from exc
            if not listening:
                raise RequestFailed(f"node {node} is not listening (dead or stopped)")
            try:
                ok, reply = await asyncio.wait_for(replied, timeout)
            except TimeoutError:
                raise RequestFailed(f"node {node} did not answer within {timeout:g} s") from None
        finally:
            del self._requests[request_id]
        if not ok:
            raise RequestFailed(f"node {node} answered: {from_bytes(reply)}", answered=True)
        return reply

    async def _answer(self, asker: bytes, request_id: bytes, payload: bytes) -> None:
        """Run the handler on a request and PUBLISH its reply (or its error) to the asker."""
        status, reply = b"ok", b""
        try:
            if len(payload) > MAX_REQUEST:
                raise ValueError(f"a request of {len(payload)} bytes is past {MAX_REQUEST}")
            if self._answerer is None:
                raise LookupError("this node takes no requests")
            reply = await self._answerer(from_bytes(asker), payload)
            if len(reply) > MAX_REQUEST:
                raise ValueError(f"a reply of {len(reply)} bytes is past {MAX_REQUEST}")
        except Exception as exc:
            if not isinstance(exc, ValueError | LookupError):
                log.exception("bus.request_failed", node=self.node_id)
            status, reply = b"error", to_bytes(f"{type(exc).__name__}: {exc}"[:1000])
        try:
            await self._publish("answer a request", self._channels + asker,
                                b"p" + field(request_id) + field(status) + reply)
        except BusUnavailable as exc:  # the asker times out
            log.warning("bus.reply_lost", node=self.node_id, error=str(exc))

    # ------------------------------------------------------------------ placements

    def _placed_key(self, name: str) -> bytes:
        return self._p + to_bytes(name)

    async def place(self, name: str, lease: float) -> str:
        """PLACE (one round trip): the node ``name`` is on -- this one when it was on none, or
        on one whose heartbeat key is gone (compare-and-set in one script); this node's
        placement lasts ``lease`` s unless :meth:`keep_placed`."""
        return from_bytes(await self._run(
            "place " + name, "PLACE", [self._placed_key(name)],
            [self._node, int(lease * 1000), self._p + b"n:"]))

    async def placed(self, name: str) -> str | None:
        """GET: the node ``name`` is on, if any (its heartbeat may have stopped)."""
        if self._client is None:
            raise BusUnavailable(f"the Redis bus at {self.where} is not started (or closed)")
        try:
            node = await self._client.get(self._placed_key(name))
        except (RedisError, OSError) as exc:
            raise self._failed("read a placement", exc) from exc
        return None if node is None else from_bytes(node)

    async def keep_placed(self, name: str, lease: float) -> bool:
        """RENEW_IF (one round trip): ``lease`` s more for this node's placement of ``name``;
        False when ``name`` is no longer on this node (its lease ran out, another took it)."""
        return bool(await self._run("renew " + name, "RENEW_IF", [self._placed_key(name)],
                                    [self._node, int(lease * 1000)]))

    async def unplace(self, name: str) -> bool:
        """DROP_IF (one round trip): ``name`` is on no node, if it was on this one."""
        return bool(await self._run("unplace " + name, "DROP_IF", [self._placed_key(name)],
                                    [self._node]))
