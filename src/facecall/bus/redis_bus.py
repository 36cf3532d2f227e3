"""The Redis `Bus`: mailboxes, registrations and presence in Redis, shared by every node.

The mailbox semantics are InProcessBus's (facecall.bus.memory), kept in Redis by the Lua
scripts of :mod:`facecall.bus.redis_scripts` (its docstring lists the keys of a device). Beyond
those, with ``P`` the prefix:

``P n:<node>``     STRING, the node's heartbeat (SET PX 3 x ``heartbeat``): the node is alive
``P lock:<name>``  STRING, the random token of the holder of :meth:`RedisBus.exclusive`
                   (SET NX PX, a lease renewed while held, released by compare-and-delete)
``P <name>``       STRING, the id of the node a :meth:`RedisBus.place` put ``name`` on (group
                   media: ``sfu:<call id>``, the node holding the call's room), a lease the
                   owner renews (:meth:`RedisBus.keep_placed`) and deletes (:meth:`RedisBus.unplace`)

Requests between nodes (:meth:`RedisBus.request`) travel on the node channels too (the
protocol and the placements: :mod:`facecall.bus.redis_requests`).

Each node has one pub/sub connection, SUBSCRIBEd to its own channel ``P node:<node>`` (the
deliveries, kicks and barriers for it) and to the broadcast channel ``P all`` (announcements).
Redis delivers one connection's messages in the order they were PUBLISHed, and a node reads them
in one task, one at a time.

Order: a device attached here gets its seqs from this node's ``deliver`` and from its channel;
a :class:`~facecall.bus.redis_inbox.Inbox` puts them in order (see there).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import secrets
import time
import urllib.parse
import uuid
from collections.abc import (
    AsyncIterator,
    Callable,
    Collection,
    Coroutine,
    Iterable,
    Sequence,
)
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError

from facecall.bus import redis_scripts as lua
from facecall.bus.base import AnnouncementHandler, Bus, Kicker, Listener, LockTimeout, Replay
from facecall.bus.memory import first_seq
from facecall.bus.redis_inbox import Inbox
from facecall.bus.redis_pipeline import ScriptRunner
from facecall.bus.redis_requests import (  # noqa: F401 (RequestFailed, MAX_REQUEST: its API)
    MAX_REQUEST,
    NODE_ID,
    PLACE,
    BusUnavailable,
    NodeRequests,
    RequestFailed,
    RequestHandler,
)
from facecall.bus.redis_scripts import field, fields, from_bytes, kept_text, to_bytes
from facecall.logs import get_logger

log = get_logger(__name__)

_BARRIER_WAIT = 2.0  # s; past it a gap is filled from the mailbox anyway
_REPLAY_ATTEMPTS = 50


def safe_url(url: str) -> str:
    """``url`` without its password and query (which may hold one)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _reason(exc: BaseException) -> str:
    """The OS's words for a failed connection (``Connection refused``), else the error's."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno:
            return os.strerror(seen.errno)
        seen = seen.__cause__ or seen.__context__
    return str(exc) or type(exc).__name__


class RedisBus(NodeRequests, Bus):
    """Mailboxes of at most ``limit`` unacknowledged messages for ``ttl`` s, in Redis at ``url``.

    ``node_id`` names this node (default: random); ``prefix`` starts every key and channel;
    ``heartbeat`` s between heartbeats (a node counts as dead 3 heartbeats after its last);
    ``keep`` s an idle mailbox's counter and session flag stay (then it restarts at
    ``first_seq()``, as on a restarted in-process node); ``lock_lease`` s a dead holder keeps a
    lock of :meth:`exclusive`; ``claim_lease`` s a dead node's claim of a request
    (:meth:`claim_request`) holds its resends off.
    """

    shared = True

    def __init__(self, url: str, *, limit: int = 512, ttl: float = 300.0, node_id: str | None = None,
                 prefix: str = "facecall:", heartbeat: float = 5.0, keep: float = 86400.0,
                 lock_lease: float = 10.0, claim_lease: float = 30.0) -> None:
        node_id = node_id or uuid.uuid4().hex
        if not NODE_ID.match(node_id):
            raise ValueError(f"node_id must be 1-64 of A-Z a-z 0-9 . _ -: {node_id!r}")
        if heartbeat <= 0 or ttl <= 0 or lock_lease <= 0:
            raise ValueError("heartbeat, ttl and lock_lease must be positive")
        self.url = url
        self.where = safe_url(url)
        self.limit = limit
        self.ttl = ttl
        self.node_id = node_id
        self.prefix = prefix
        self.heartbeat = heartbeat
        self.lock_lease = lock_lease
        self._p = to_bytes(prefix)
        self._node = to_bytes(node_id)
        self._ttl_ms = repr(ttl * 1000)
        self._msgs_px = int(ttl * 1000) + 1000
        self._box_px = int(max(keep, ttl) * 1000)
        self._node_px = int(3 * heartbeat * 1000)
        self._reg_px = int(max(60.0, 12 * heartbeat) * 1000)
        self._claim_px = int(claim_lease * 1000)
        self._channels = self._p + b"node:"
        self._own_channel = self._channels + self._node
        self._all_channel = self._p + b"all"
        self._client: aioredis.Redis | None = None
        self._pubsub: Any = None
        self._scripts: ScriptRunner | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._local: dict[str, Inbox] = {}
        self._barriers: dict[int, asyncio.Future[None]] = {}
        self._tokens = itertools.count(1)
        self._kicker: Kicker | None = None
        self._announced: AnnouncementHandler | None = None
        self._requests: dict[int, asyncio.Future[tuple[bool, bytes]]] = {}  # id -> its reply
        self._request_ids = itertools.count(1)
        self._answerer: RequestHandler | None = None

    # ------------------------------------------------------------------ plumbing

    def _key(self, device_id: str, what: bytes) -> bytes:
        return self._p + b"d:" + to_bytes(device_id) + b":" + what

    def _reg_value(self, connection_id: str) -> bytes:
        return self._node + b"\n" + to_bytes(connection_id)

    def _failed(self, what: str, exc: BaseException) -> BusUnavailable:
        return BusUnavailable(f"Redis at {self.where} failed to {what}: {_reason(exc)}")

    async def _run(self, what: str, script: str, keys: Sequence[bytes],
                   args: Sequence[bytes | str | int]) -> Any:
        """Run one script (coalesced with the others of this loop pass: see
        :mod:`facecall.bus.redis_pipeline`); Redis failures become :class:`BusUnavailable`."""
        scripts = self._scripts
        if scripts is None or self._client is None:
            raise BusUnavailable(f"the Redis bus at {self.where} is not started (or closed)")
        try:
            return await scripts.run(script, keys, args)
        except (RedisError, OSError) as exc:
            raise self._failed(what, exc) from exc

    async def _publish(self, what: str, channel: bytes, payload: bytes) -> None:
        if self._client is None:
            raise BusUnavailable(f"the Redis bus at {self.where} is not started (or closed)")
        try:
            await self._client.publish(channel, payload)
        except (RedisError, OSError) as exc:
            raise self._failed(what, exc) from exc

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Connect, load the scripts, beat once, SUBSCRIBE (confirmed) and start the reader and
        heartbeat tasks. Raises :class:`BusUnavailable` when Redis cannot be reached."""
        client = aioredis.Redis.from_url(
            self.url, socket_connect_timeout=3.0, socket_timeout=None,
            retry=Retry(ExponentialBackoff(cap=0.25, base=0.025), 2))
        self._client = client
        try:
            await client.ping()
            scripts = ScriptRunner(client)
            for name in ("DELIVER", "ATTACH", "DETACH", "DROP_IF", "RENEW_IF", "REPLAY", "RENUMBER",
                         "FETCH", "ACK", "END_SESSION", "KICK", "ONLINE", "HEARTBEAT", "CLAIM",
                         "RELEASE"):
                await scripts.load(name, getattr(lua, name))
            await scripts.load("PLACE", PLACE)
            self._scripts = scripts
            await self._beat()
            self._pubsub = client.pubsub()
            await self._pubsub.subscribe(self._own_channel, self._all_channel)
            confirmed = 0
            while confirmed < 2:  # SUBSCRIBE is in force once Redis has answered it
                message = await self._pubsub.get_message(timeout=5.0)
                if message is None:
                    raise TimeoutError("no answer to SUBSCRIBE")
                confirmed += message["type"] == "subscribe"
        except (RedisError, OSError, BusUnavailable) as exc:
            await self._disconnect()
            raise BusUnavailable(f"cannot reach Redis at {self.where}: {_reason(exc)}") from exc
        self.spawn(self._read(), f"bus-reader-{self.node_id}")
        self.spawn(self._beating(), f"bus-heartbeat-{self.node_id}")

    async def close(self) -> None:
        """Drop this node's registrations and heartbeat key, stop its tasks, disconnect."""
        if self._client is None:
            return
        attached = list(self._local.values())
        self._local.clear()
        try:
            await self._run("drop this node's registrations", "DROP_IF",
                            [self._key(a.device_id, b"reg") for a in attached],
                            [self._reg_value(a.connection_id) for a in attached])
            await self._client.delete(self._p + b"n:" + self._node)
        except (BusUnavailable, RedisError, OSError) as exc:
            log.warning("bus.close_unclean", node=self.node_id, error=str(exc))
        await self._disconnect()

    async def _disconnect(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for closing in (self._pubsub, self._client):
            if closing is not None:
                with contextlib.suppress(RedisError, OSError):
                    await closing.aclose()
        self._pubsub = self._client = None

    async def _beat(self) -> None:
        """One HEARTBEAT: the node key, and this node's registrations (one round trip)."""
        attached = [a for a in self._local.values() if a.next_seq is not None]
        restored, lost = await self._run(
            "refresh the heartbeat", "HEARTBEAT",
            [self._p + b"n:" + self._node, *(self._key(a.device_id, b"reg") for a in attached)],
            [self._node_px, self._reg_px, *(self._reg_value(a.connection_id) for a in attached)])
        for index in lost:  # attached elsewhere since: that node has the device now
            gone = attached[int(index) - 1]
            if self._local.get(gone.device_id) is gone:
                del self._local[gone.device_id]
        if restored:  # what was delivered while they were not registered is in the mailboxes
            self._catch_up()

    def _catch_up(self) -> None:
        """Fetch whatever the devices attached here may have missed (see :meth:`Inbox.fill`)."""
        for attached in self._local.values():
            if attached.next_seq is not None:
                self.spawn(attached.fill(catch_up=True), f"bus-catch-up-{self.node_id}")

    async def _beating(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            try:
                await self._beat()
            except BusUnavailable as exc:
                log.warning("bus.heartbeat_failed", node=self.node_id, error=str(exc))

    # ------------------------------------------------------------------ the subscriber

    async def _read(self) -> None:
        """Handle this node's pub/sub messages one at a time, in order. A lost connection is
        retried (redis-py reconnects and SUBSCRIBEs again); what was published meanwhile is
        lost to pub/sub, not to the mailboxes: :meth:`_catch_up` fetches it."""
        pause, lost = 0.05, False
        while True:
            try:
                message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            except (RedisError, OSError) as exc:
                log.warning("bus.subscriber_lost", node=self.node_id, error=_reason(exc))
                await asyncio.sleep(pause)
                pause, lost = min(pause * 2, 1.0), True
                continue
            if lost:  # connected and subscribed again: what was published meanwhile is lost
                log.info("bus.subscriber_back", node=self.node_id)
                pause, lost = 0.05, False
                self._catch_up()
            if message is None or message["type"] != "message":
                continue
            try:
                await self._on_message(message["data"])
            except Exception:
                log.exception("bus.message_failed", node=self.node_id)

    async def _on_message(self, data: bytes) -> None:
        kind = data[:1]
        if kind == b"m":
            seq, device, text = fields(data, 2)
            if (attached := self._local.get(from_bytes(device))) is not None:
                await attached.offer(int(seq), text, wait=False)
        elif kind == b"k":
            code, device, reason = fields(data, 2)
            if self._kicker is not None:
                await self._kicker(from_bytes(device), from_bytes(reason), int(code))
        elif kind == b"a":
            node, topic, key = fields(data, 2)
            if node != self._node and self._announced is not None:
                await self._announced(from_bytes(topic), from_bytes(key))
        elif kind == b"r":
            device, connection = fields(data, 1)
            attached = self._local.get(from_bytes(device))
            if attached is not None and attached.connection_id == from_bytes(connection) \
                    and attached.next_seq is not None:
                del self._local[attached.device_id]
        elif kind == b"b" and (waiting := self._barriers.get(int(data[1:]))) is not None:
            if not waiting.done():
                waiting.set_result(None)
        elif kind == b"q":  # a request: answered in a task of its own (never block the reader)
            self._asked(data)
        elif kind == b"p":
            self._replied(data)

    # ------------------------------------------------------------------ what an Inbox needs

    def is_current(self, inbox: Inbox) -> bool:
        """Whether ``inbox`` is still its device's on this node."""
        return self._local.get(inbox.device_id) is inbox

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Run ``coro`` as a task that :meth:`close` cancels."""
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def fetch(self, device_id: str, low: int, high: int) -> list[tuple[int, bytes]]:
        """FETCH (one round trip): the kept messages with ``low <= seq <= high``, minus those
        a replay numbered anew."""
        first, found = await self._run(
            "fetch missed messages", "FETCH",
            [self._key(device_id, b"box"), self._key(device_id, b"msgs")], [low, high])
        return [(seq, kept_text(element)) for seq, element in enumerate(found, int(first))]

    async def barrier(self) -> None:
        """Return once everything published to this node before the call has been read: a
        PUBLISH to this node's own channel, read in order after what was published before."""
        token = next(self._tokens)
        waiting = self._barriers[token] = asyncio.get_running_loop().create_future()
        try:
            await self._publish("publish a barrier", self._own_channel, b"b%d" % token)
            await asyncio.wait_for(waiting, _BARRIER_WAIT)
        finally:
            self._barriers.pop(token, None)

    # ------------------------------------------------------------------ mailboxes

    async def deliver(self, device_id: str, message: dict[str, object]) -> int:
        """DELIVER (one round trip); push here if the device is attached here."""
        return (await self.deliver_many([(device_id, message)]))[0]

    async def deliver_many(self, deliveries: Sequence[tuple[str, dict[str, object]]],
                           announcing: tuple[str, str] | None = None,
                           if_attached: Collection[int] = ()) -> list[int]:
        """DELIVER of them all, after PUBLISHing the announcement (one round trip); then this
        node's announcement handler, then the pushes to devices attached here, in order. Those
        of ``if_attached`` go only to a device registered now (on a node whose heartbeat may
        have stopped: :meth:`online` would also ask for that)."""
        if not deliveries and announcing is None:
            return []
        keys: list[bytes] = []
        args: list[bytes | str | int] = [
            first_seq(), self.limit, self._ttl_ms, self._msgs_px, self._box_px, self._node,
            self._channels, self._all_channel,
            b"" if announcing is None else self._announcement(*announcing)]
        heads = []
        for index, (device_id, message) in enumerate(deliveries):
            if "seq" in message:  # ours goes last (InProcessBus keeps a given key's place)
                message = {k: v for k, v in message.items() if k != "seq"}
            body = orjson.dumps(message)
            head = body[:-1] + (b"," if len(body) > 2 else b"")
            heads.append(head)
            keys += [self._key(device_id, b"box"), self._key(device_id, b"msgs"),
                     self._key(device_id, b"reg")]
            args += [head, to_bytes(device_id), b"1" if index in if_attached else b"0"]
        done = await self._run("deliver messages", "DELIVER", keys, args)
        if announcing is not None and self._announced is not None:
            await self._announced(*announcing)
        seqs = []
        for index, (device_id, _) in enumerate(deliveries):
            seq, where = int(done[2 * index]), done[2 * index + 1]  # where 3: seq 0, dropped
            if where == 1 and (attached := self._local.get(device_id)) is not None:
                await attached.offer(seq, heads[index] + b'"seq":%d}' % seq, wait=True)
            seqs.append(seq)
        return seqs

    async def attach(self, device_id: str, connection_id: str, listener: Listener) -> None:
        """ATTACH (one round trip): what is delivered after it is pushed to ``listener``."""
        attached = Inbox(self, device_id, connection_id, listener)
        previous = self._local.get(device_id)
        self._local[device_id] = attached  # deliveries racing the script are held, not lost
        try:
            last = await self._run(
                "attach a device", "ATTACH",
                [self._key(device_id, b"box"), self._key(device_id, b"msgs"),
                 self._key(device_id, b"reg")],
                [first_seq(), self._box_px, self._reg_value(connection_id), self._reg_px,
                 self._node, self._channels, to_bytes(device_id)])
        except BaseException:
            if self._local.get(device_id) is attached:
                if previous is None:
                    del self._local[device_id]
                else:
                    self._local[device_id] = previous
            raise
        await attached.open(int(last))

    async def detach(self, device_id: str, connection_id: str) -> bool:
        """DETACH: compare-and-delete of the registration, by connection id (one round trip)."""
        attached = self._local.get(device_id)
        if attached is not None and attached.connection_id == connection_id:
            del self._local[device_id]
        dropped = await self._run("detach a device", "DETACH", [self._key(device_id, b"reg")],
                                  [to_bytes(connection_id)])
        return bool(dropped)

    async def replay(self, device_id: str, after_seq: int | None,
                     carry: Callable[[bytes], bool] | None = None) -> Replay:
        """REPLAY (one round trip); a non-complete one that carries messages over adds
        RENUMBER, which applies only if the mailbox did not change in between (else again)."""
        keys = [self._key(device_id, b"box"), self._key(device_id, b"msgs")]
        for _ in range(_REPLAY_ATTEMPTS):
            complete, last, first, kept, count = await self._run(
                "replay a mailbox", "REPLAY", keys,
                ["" if after_seq is None else str(after_seq), first_seq(), self.limit,
                 self._ttl_ms, self._box_px, "1" if carry is not None else "0"])
            last, first = int(last), int(first)
            texts = [kept_text(element) for element in kept]
            if complete:
                return Replay(complete=True, last_seq=last, messages=list(enumerate(texts, first)))
            if not texts or carry is None:
                return Replay(complete=False, last_seq=last, messages=[])
            heads = [text[:text.rindex(b'"seq":')] for text in texts if carry(text)]
            if await self._run("renumber a mailbox", "RENUMBER", keys,
                               [last, count, self._msgs_px, self._box_px, *heads]):
                attached = self._local.get(device_id)
                if attached is not None:
                    attached.renumbered(last, len(heads))
                return Replay(complete=False, last_seq=last, messages=[
                    (seq, head + b'"seq":%d}' % seq) for seq, head in enumerate(heads, last + 1)])
        raise BusUnavailable(f"the mailbox of device {device_id[:64]!r} kept changing during a replay")

    async def end_session(self, device_id: str) -> None:
        """END_SESSION (one round trip)."""
        await self._run("end a session", "END_SESSION", [self._key(device_id, b"box")], [])

    async def ack(self, device_id: str, seq: int) -> None:
        """ACK (one round trip)."""
        await self._run("acknowledge messages", "ACK",
                        [self._key(device_id, b"box"), self._key(device_id, b"msgs")], [seq])

    async def online(self, device_ids: Iterable[str]) -> set[str]:
        """ONLINE: registered, and the registering node's heartbeat key exists (one round trip
        for all of them)."""
        ids = list(dict.fromkeys(device_ids))
        if not ids:
            return set()
        found = await self._run("look up presence", "ONLINE",
                                [self._key(d, b"reg") for d in ids], [self._p + b"n:"])
        return {ids[int(index) - 1] for index in found}

    async def forget(self, device_id: str) -> None:
        """DEL of the device's box, messages and registration (one round trip)."""
        self._local.pop(device_id, None)
        if self._client is None:
            raise BusUnavailable(f"the Redis bus at {self.where} is not started (or closed)")
        try:
            await self._client.delete(*(self._key(device_id, what) for what in (b"box", b"msgs", b"reg")))
        except (RedisError, OSError) as exc:
            raise self._failed("forget a device", exc) from exc

    # ------------------------------------------------------------------ requests across nodes

    def _request_key(self, device_id: str, msg_id: str) -> bytes:
        return self._key(device_id, b"r:" + to_bytes(msg_id))

    async def claim_request(self, device_id: str, msg_id: str) -> bytes | None:
        """CLAIM (one round trip): SET of an empty value, PX ``claim_lease``, unless the key
        holds something: the reply, or empty while another node acts (:data:`IN_PROGRESS`)."""
        kept = await self._run("claim a request", "CLAIM", [self._request_key(device_id, msg_id)],
                               [self._claim_px])
        return None if kept is None else bytes(kept)

    async def request_answered(self, device_id: str, msg_id: str, reply: bytes) -> None:
        """SET of the reply, PX ``ttl`` (as long as the device's messages are kept)."""
        if self._client is None:
            raise BusUnavailable(f"the Redis bus at {self.where} is not started (or closed)")
        try:
            await self._client.set(self._request_key(device_id, msg_id), reply, px=self._msgs_px)
        except (RedisError, OSError) as exc:
            raise self._failed("keep a reply", exc) from exc

    async def request_released(self, device_id: str, msg_id: str) -> None:
        """RELEASE (one round trip): the claim goes unless a reply is kept."""
        await self._run("release a request", "RELEASE", [self._request_key(device_id, msg_id)], [])

    # ------------------------------------------------------------------ kicks, announcements

    def on_kick(self, kicker: Kicker) -> None:
        self._kicker = kicker

    async def kick(self, device_id: str, reason: str, code: int) -> None:
        """KICK: the holder's node is read and, if it is another, told on its channel (one round
        trip); if it is this node the kicker runs before this returns."""
        payload = b"k" + field(b"%d" % code) + field(to_bytes(device_id)) + to_bytes(reason)
        where = await self._run("kick a device", "KICK", [self._key(device_id, b"reg")],
                                [self._node, self._channels, payload])
        if where == 1 and self._kicker is not None:
            await self._kicker(device_id, reason, code)

    def on_announce(self, handler: AnnouncementHandler) -> None:
        self._announced = handler

    async def announce(self, topic: str, key: str) -> None:
        """PUBLISH on the broadcast channel (one round trip), then this node's handler. Every
        later PUBLISH of this node (deliveries included) reaches each node after it."""
        await self._publish("announce", self._all_channel, self._announcement(topic, key))
        if self._announced is not None:
            await self._announced(topic, key)

    def _announcement(self, topic: str, key: str) -> bytes:
        return b"a" + field(self._node) + field(to_bytes(topic)) + to_bytes(key)

    # ------------------------------------------------------------------ locks

    @contextlib.asynccontextmanager
    async def exclusive(self, name: str, timeout: float = 5.0) -> AsyncIterator[None]:
        """SET NX PX ``lock_lease`` with a random token, retried with a backoff (5 ms doubling
        to 100 ms) until ``timeout``; the lease is renewed (RENEW_IF) every third of it while
        held, and the lock released by compare-and-delete (DROP_IF)."""
        if self._client is None:
            raise BusUnavailable(f"the Redis bus at {self.where} is not started (or closed)")
        key, token = self._p + b"lock:" + to_bytes(name), secrets.token_hex(16)
        lease_ms = int(self.lock_lease * 1000)
        deadline, pause = time.monotonic() + timeout, 0.005
        while True:
            try:
                if await self._client.set(key, token, nx=True, px=lease_ms):
                    break
            except (RedisError, OSError) as exc:
                raise self._failed(f"take the lock {name}", exc) from exc
            left = deadline - time.monotonic()
            if left <= 0:
                raise LockTimeout(f"{name} is held by another request (on this or another node)")
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, 0.1)
        renewing = self.spawn(self._renew(name, key, token, lease_ms), f"bus-lock-{name}")
        try:
            yield
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing
            try:
                await self._run(f"release the lock {name}", "DROP_IF", [key], [token])
            except BusUnavailable as exc:  # its lease ends it
                log.warning("bus.unlock_failed", lock=name, error=str(exc))

    async def _renew(self, name: str, key: bytes, token: str, lease_ms: int) -> None:
        while True:
            await asyncio.sleep(self.lock_lease / 3)
            try:
                if not await self._run(f"renew the lock {name}", "RENEW_IF", [key],
                                       [token, lease_ms]):
                    log.warning("bus.lock_lost", lock=name)
                    return
            except BusUnavailable as exc:
                log.warning("bus.lock_renew_failed", lock=name, error=str(exc))
