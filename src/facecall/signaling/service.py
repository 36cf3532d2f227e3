"""The signaling service: drives `CallMachine`s with the store, the bus and the clock.

For every request it loads the call (cached, optimistic version), feeds the event to the pure
machine, **writes the new state before any effect goes out** (DESIGN.md invariant 2), then
delivers the effects through the `Bus`. Ring deadlines are kept in the ``calls.next_deadline``
column, so a restarted node — or another node — finishes what was in flight. Devices whose
connection drops get ``Settings.resume_grace`` seconds to resume before they leave their calls.

Glare (two users calling each other at once) is settled by queueing the two ``call.start``
requests of a user pair on a lock of the bus (:meth:`Bus.exclusive`: across every node when the
bus is shared): the second finds the first ringing and answers it.

Several nodes share calls through the store (each save names the version it replaces: a node
whose cached machine is behind gets :class:`StaleVersion`, reloads and applies the event again)
and devices through a shared bus: with one, a node announces every save so that the others drop
their cached copy before any effect of it reaches a device, a device's connection is closed
(replaced, removed) on whichever node holds it, and a user's changed name is dropped from every
node's cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from facecall.bus import Bus, Listener, LockTimeout
from facecall.config import Settings
from facecall.logs import get_logger
from facecall.ratelimit import TokenBucket
from facecall.signaling import metrics
from facecall.signaling.call_writes import Rows, write_and_rows
from facecall.signaling.effects import CallEnded, Deliver, Effect
from facecall.signaling.errors import ErrorCode, ProtocolError
from facecall.signaling.events import (
    RELAY_KINDS,
    Answer,
    Cancel,
    Decline,
    DeviceLost,
    Event,
    Handoff,
    Hangup,
    Invite,
    Relay,
)
from facecall.signaling.glare import is_glare
from facecall.signaling.group_media import SFU_KINDS, GroupMedia
from facecall.signaling.hello import DeviceHello
from facecall.signaling.machine import CallMachine
from facecall.signaling.protocol import CLOSE_REMOVED, CLOSE_REPLACED
from facecall.signaling.push import PushNotifier, UnconfiguredPush
from facecall.signaling.reasons import EndReason
from facecall.signaling.records import LegState
from facecall.signaling.replies import Replies
from facecall.signaling.sfu_control import SfuControl
from facecall.store import StaleVersion, Store
from facecall.store.ids import time_ordered_id

if TYPE_CHECKING:
    from facecall.signaling.session import DeviceSession

log = get_logger(__name__)

CACHE_LIMIT = 10_000  # calls kept in memory between requests
SAVE_ATTEMPTS = 4
TIMER_POLL = 1.0  # seconds between store polls for deadlines set by other nodes or past runs
GLARE_WAIT = 10.0  # seconds a call.start waits for the other start of its user pair
REPLACED = "replaced by a newer connection of this device"
ANNOUNCE_USER = "user"  # key: user id (renamed or deleted)
ANNOUNCE_CALL = "call"  # key: "call_id version" (saved by some node)
ANNOUNCE_ATTACHED = "attached"  # key: device id (connected to some node: no grace runs out)


class CallService(DeviceHello):
    """All call signaling of one node."""

    def __init__(self, store: Store, bus: Bus, settings: Settings,
                 push: PushNotifier | None = None, clock: Callable[[], float] = time.time,
                 sfu: SfuControl | None = None) -> None:
        self.store = store
        self.bus = bus
        self.settings = settings
        self.push = push or UnconfiguredPush()
        self.clock = clock
        self._cache: OrderedDict[str, tuple[int, CallMachine]] = OrderedDict()
        # call id -> (version, the participant and leg rows the store holds at that version)
        self._stored_rows: dict[str, tuple[int, Rows]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.replies = Replies()  # request-id dedupe of the devices' sessions
        self._sessions: dict[str, DeviceSession] = {}
        self._grace: dict[str, asyncio.Task[None]] = {}
        self._deadlines: list[tuple[float, str]] = []  # heap of (deadline, call id)
        self._scheduled: dict[str, float] = {}  # call id -> the deadline pushed last
        self._wake = asyncio.Event()
        self._sleep_until = 0.0  # when the timer loop wakes next by itself
        self._timer_task: asyncio.Task[None] | None = None
        # user id -> display name, for `call.ring`; also the users known to exist. Users are
        # never deleted; a rename drops the entry (:meth:`user_renamed`).
        self._names: dict[str, str] = {}
        self._buckets: dict[str, TokenBucket] = {}  # device id -> its message rate limit
        self.group_media = GroupMedia(sfu, bus, self._load)  # sfu.*: the SFU follows the calls
        bus.on_kick(self._kicked)
        bus.on_announce(self._announced)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Recover calls left by an earlier run, then run the timer loop."""
        for call_id in await self.store.unended_calls():
            entry = await self._load(call_id)
            if entry is None:
                continue
            machine = entry[1]
            if (deadline := machine.get_timer()) is not None:
                self._schedule(call_id, deadline)
            online = await self.bus.online(leg.device_id for leg in machine.legs)
            for leg in machine.legs:  # a ringing device rings on (see CallMachine)
                if leg.state is LegState.JOINED and leg.device_id not in online \
                        and leg.device_id not in self._grace:
                    self._start_grace(leg.user_id, leg.device_id)
        self._timer_task = asyncio.create_task(self._timer_loop(), name="facecall-ring-timers")

    async def stop(self) -> None:
        tasks = [*self._grace.values(), *([self._timer_task] if self._timer_task else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._grace.clear()
        await self.group_media.stop()

    # ------------------------------------------------------------------ sessions

    def message_bucket(self, device_id: str) -> TokenBucket:
        """The device's rate limit on the messages it sends: one bucket per device, which its
        next connection takes over (reconnecting does not refill it); dropped when the device
        leaves for good (grace expired, removed)."""
        bucket = self._buckets.get(device_id)
        if bucket is None:
            settings = self.settings
            bucket = self._buckets[device_id] = TokenBucket(settings.messages_per_second,
                                                            settings.message_burst)
        return bucket

    async def device_attached(self, user_id: str, device_id: str, session: DeviceSession,
                              listener: Listener) -> bool:
        """A device said hello: make ``session`` the device's one connection and stop its
        grace timer. False (nothing attached) when the connection closed meanwhile; raises
        :class:`~facecall.store.NotFound` when the device was removed."""
        await self.store.touch_device(device_id, self.clock())  # a removed device stops here
        if session.closed:  # dropped during the write: it must not look online
            return False
        previous = self._sessions.get(device_id)
        if previous is None and self.bus.shared:  # its older connection may be on another node
            await self.bus.kick(device_id, REPLACED, CLOSE_REPLACED)
        self._sessions[device_id] = session
        if previous is not None and previous is not session:
            previous.kick(REPLACED, CLOSE_REPLACED)
        else:
            metrics.CONNECTED_DEVICES.inc()
        if (task := self._grace.pop(device_id, None)) is not None:
            task.cancel()
        session.attached = True
        await self.bus.attach(device_id, session.connection_id, listener)
        if self.bus.shared:  # a grace started on the node it left must not run out later
            await self.bus.announce(ANNOUNCE_ATTACHED, device_id)
        return True

    async def _known_names(self, user_ids: list[str]) -> set[str]:
        """Cache the display names of ``user_ids`` (one store read, only if some are not
        cached yet); returns those of them that are users (a deleted account is no one)."""
        names = self._names
        if all(u in names for u in user_ids):
            return set(user_ids)
        found = await self.store.get_users(user_ids)
        for user in found.values():
            if user.deleted_at is None:
                names[user.id] = user.display_name
        while len(names) > CACHE_LIMIT:
            del names[next(iter(names))]
        return {u for u in user_ids if u in found and found[u].deleted_at is None}

    async def _named(self, fields: dict[str, Any]) -> dict[str, Any]:
        """``fields`` with the users' display names filled into ``participants``."""
        others = [other["user_id"] for other in fields["participants"]]
        await self._known_names(others)
        names = self._names
        return {**fields, "participants": [{"user_id": user_id, "name": names.get(user_id)}
                                           for user_id in others]}

    async def device_detached(self, user_id: str, device_id: str, session: DeviceSession) -> None:
        """A connection closed; if it was the device's current one, the resume grace starts."""
        if self._sessions.get(device_id) is session:
            del self._sessions[device_id]
            metrics.CONNECTED_DEVICES.dec()
        if await self.bus.detach(device_id, session.connection_id):
            self._start_grace(user_id, device_id, unloaded=session.leaving)

    def _start_grace(self, user_id: str, device_id: str, unloaded: bool = False) -> None:
        """The device has ``resume_grace`` seconds to come back before it leaves its calls
        (``connection_lost``); a page that said ``bye`` (``unloaded``) has ``unload_grace``,
        and hangs up (it was closed, unless it is back: a reload)."""
        grace = self.settings.unload_grace if unloaded else self.settings.resume_grace
        leave: Event = Hangup(user_id, device_id) if unloaded else DeviceLost(user_id, device_id)

        async def expire() -> None:
            await asyncio.sleep(grace)
            if device_id in await self.bus.online([device_id]):
                return
            self._grace.pop(device_id, None)
            self._buckets.pop(device_id, None)
            await self._leave_all(user_id, device_id, leave)
            await self.bus.end_session(device_id)  # its next hello is not a complete resume

        if (old := self._grace.pop(device_id, None)) is not None:
            old.cancel()
        self._grace[device_id] = asyncio.create_task(expire(), name=f"grace-{device_id}")

    async def _leave_all(self, user_id: str, device_id: str, event: Event) -> None:
        for call_id in await self.store.live_calls_of_user(user_id):
            with contextlib.suppress(ProtocolError):  # this device was not in that call
                await self._apply(call_id, event)

    async def user_renamed(self, user_id: str) -> None:
        """A user changed their display name or deleted their account: rings read the user
        from the store again, on every node sharing the bus."""
        await self.bus.announce(ANNOUNCE_USER, user_id)

    async def device_removed(self, user_id: str, device_id: str, why: str = "device removed") -> None:
        """A device was removed: close its connection (4009, ``why`` as the close reason:
        "device removed" or "account deleted"), on whichever node holds it; it leaves every
        call it is in."""
        await self.bus.kick(device_id, why, CLOSE_REMOVED)
        self._forget_device(device_id)
        await self._leave_all(user_id, device_id, DeviceLost(user_id, device_id, removed=True))
        await self.bus.forget(device_id)

    def _forget_device(self, device_id: str) -> None:
        """Drop what this node keeps for a removed device: its resume grace, request replies
        and rate limit."""
        if (task := self._grace.pop(device_id, None)) is not None:
            task.cancel()
        self.replies.forget(device_id)
        self._buckets.pop(device_id, None)

    async def _kicked(self, device_id: str, reason: str, code: int) -> None:
        """The bus asks this node to close the device's connection (see :meth:`Bus.kick`)."""
        if (session := self._sessions.pop(device_id, None)) is not None:
            session.kick(reason, code)
            metrics.CONNECTED_DEVICES.dec()
        if code == CLOSE_REMOVED:
            self._forget_device(device_id)

    async def _announced(self, topic: str, key: str) -> None:
        """Another node (or this one) changed something this node may hold in a cache."""
        if topic == ANNOUNCE_USER:
            self._names.pop(key, None)
        elif topic == ANNOUNCE_ATTACHED:
            if (task := self._grace.pop(key, None)) is not None:
                task.cancel()
        elif topic == ANNOUNCE_CALL:
            call_id, _, version = key.partition(" ")
            cached = self._cache.get(call_id)
            if cached is not None and cached[0] < int(version):
                self._forget(call_id)

    # ------------------------------------------------------------------ requests

    async def handle_request(self, user_id: str, device_id: str, message: Any) -> dict[str, Any]:
        """Act on one validated client request; returns the ``ok`` fields or raises ProtocolError."""
        kind: str = message.type
        started = time.perf_counter()
        try:
            result = await self._dispatch(user_id, device_id, kind, message)
        except ProtocolError as exc:
            metrics.REQUEST_STATS.count(kind, exc.code.value)
            raise
        metrics.REQUEST_STATS.count(kind, "ok")
        metrics.REQUEST_STATS.observe(time.perf_counter() - started)
        return result

    async def _dispatch(self, user_id: str, device_id: str, kind: str,
                        message: Any) -> dict[str, Any]:
        if kind == "call.start":
            return await self.start_call(user_id, device_id, list(message.to), message.media)
        if kind in RELAY_KINDS:
            relay = Relay.from_message(user_id, device_id, message)
            return await self._apply(message.call_id, relay, persist=False)
        if kind == "call.invite":
            callees, busy, _ = await self._callees(user_id, list(message.to))
            invite = Invite(user_id, device_id, callees, frozenset(busy))
            return await self._apply(message.call_id, invite)
        if kind == "call.decline":
            return await self._apply(message.call_id, Decline(user_id, device_id, message.busy))
        if kind == "call.answer":
            entry = await self._load(message.call_id)
            if entry is not None and (again := entry[1].answered_by(user_id, device_id)):
                return again  # answered already: the same reply, and nothing to write
            return await self._apply(message.call_id, Answer(user_id, device_id))
        if kind == "call.hangup":
            return await self._apply(message.call_id,
                                     Hangup(user_id, device_id, EndReason(message.reason)))
        if kind == "call.handoff":
            return await self._handoff(user_id, device_id, message.call_id)
        if kind in SFU_KINDS:
            return await self.group_media.handle(user_id, device_id, message)
        if kind != "call.cancel":
            raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"{kind} is not a request")
        return await self._apply(message.call_id, Cancel(user_id, device_id))

    async def _handoff(self, user_id: str, device_id: str, call_id: str) -> dict[str, Any]:
        """``call.handoff``: move the user's call to this device. A resend, or one from the
        device that has the call, answers the same and writes nothing; a device joined in
        another call of the user's is refused (``not_allowed``): it would be in two at once.
        ``group_media``: the call's media goes through the SFU (its room has devices), so this
        device joins it there rather than wait for a P2P offer."""
        entry = await self._load(call_id)
        if entry is not None and (again := entry[1].handed_to(user_id, device_id, self.clock())):
            return {**again, "group_media": await self.group_media.in_use(call_id)}
        for other in await self.store.joined_calls_of_user(user_id):
            held = None if other == call_id else await self._load(other)
            leg = None if held is None else held[1].active_leg(user_id, device_id)
            if leg is not None and leg.state is LegState.JOINED:
                raise ProtocolError(ErrorCode.NOT_ALLOWED,
                                    f"this device is in another call ({other}): hang it up first")
        result = await self._apply(call_id, Handoff(user_id, device_id))
        # (the old device has left the call's room by now: GroupMedia.follow)
        return {**result, "group_media": await self.group_media.in_use(call_id)}

    async def _callees(self, caller: str, user_ids: list[str], with_caller: bool = False
                       ) -> tuple[dict[str, list[str]], set[str], list[str]]:
        """Devices to ring per callee, which callees are already in a call, and (``with_caller``,
        in the same query) the caller's own devices."""
        existing = await self._known_names([*user_ids, caller])  # the caller's: `from_name`
        missing = [u for u in user_ids if u not in existing]
        if missing:
            raise ProtocolError(ErrorCode.UNKNOWN_USER, f"no such user: {', '.join(missing[:5])}")
        devices = await self.store.list_devices_of_users([*user_ids, caller] if with_caller
                                                         else user_ids)
        callees = {u: [d.id for d in devices.get(u, [])] for u in user_ids}
        own = [d.id for d in devices.get(caller, [])] if with_caller else []
        busy = {u for u in user_ids if u != caller and await self.store.joined_calls_of_user(u)}
        return callees, busy, own

    async def start_call(self, user_id: str, device_id: str, to: list[str],
                         media: str) -> dict[str, Any]:
        """Place a call. Glare (the callee's call to us is already ringing) merges into that
        call: this device answers it instead of placing a second one."""
        to = list(dict.fromkeys(to))
        if len(to) != 1:
            return await self._place(user_id, device_id, to, media)
        pair = "|".join(sorted((user_id, to[0])))
        try:
            # two users calling each other at once queue here, one by one, on every node
            async with self.bus.exclusive(f"glare:{pair}", GLARE_WAIT):
                return await self._place(user_id, device_id, to, media)
        except LockTimeout as exc:
            raise ProtocolError(ErrorCode.INTERNAL, "the call is busy; retry") from exc

    async def _place(self, user_id: str, device_id: str, to: list[str],
                     media: str) -> dict[str, Any]:
        callees, busy, own = await self._callees(user_id, to, with_caller=True)
        now = self.clock()
        machine = CallMachine.start(
            call_id=time_ordered_id(now), media=media, caller_user=user_id, caller_device=device_id,
            callees=callees, now=now, busy_users=busy,
            ring_timeout=self.settings.ring_timeout, caller_devices=own,
        )
        if len(to) == 1:
            for other_id in await self.store.ringing_calls_between(to[0], user_id):
                entry = await self._load(other_id)
                ringing = entry[1].active_leg(user_id, device_id) if entry is not None else None
                # merged by answering it from this device; a device of the user that the other
                # call does not ring (registered since) places its own call instead
                if entry is not None and ringing is not None and \
                        ringing.state is LegState.RINGING and is_glare(entry[1], machine):
                    await self._apply(other_id, Answer(user_id, device_id))
                    return {"call_id": other_id, "glare": "merged"}
        await self._create(machine, machine.drain_effects())
        return {"call_id": machine.call_id}

    async def _create(self, machine: CallMachine, effects: list[Effect]) -> None:
        write, rows = write_and_rows(machine, None)
        version = await self.store.create_call(write)
        metrics.calls_started(machine.media).inc()
        self._remember(machine, version, rows)
        await self._perform(machine, effects)

    # ------------------------------------------------------------------ the core loop

    def _lock(self, call_id: str) -> asyncio.Lock:
        lock = self._locks.get(call_id)
        if lock is None:
            lock = self._locks[call_id] = asyncio.Lock()
        return lock

    async def _load(self, call_id: str) -> tuple[int, CallMachine] | None:
        cached = self._cache.get(call_id)
        if cached is not None:
            self._cache.move_to_end(call_id)
            return cached
        if len(call_id) > 64:
            return None
        stored = await self.store.load_call(call_id, with_rows=False)  # the snapshot is all
        if stored is None:
            return None
        entry = (stored.version, CallMachine.from_dict(stored.snapshot))
        if not entry[1].ended:
            self._cache[call_id] = entry
        return entry

    def _forget(self, call_id: str) -> None:
        self._cache.pop(call_id, None)
        self._stored_rows.pop(call_id, None)

    def _stored(self, call_id: str, version: int) -> Rows | None:
        """The rows the store holds for the call at ``version``, if this node knows them."""
        known = self._stored_rows.get(call_id)
        return known[1] if known is not None and known[0] == version else None

    def _remember(self, machine: CallMachine, version: int, rows: Rows | None = None) -> None:
        if machine.ended:
            self._forget(machine.call_id)
            self._scheduled.pop(machine.call_id, None)  # its heap entry is stale now
            return
        self._cache[machine.call_id] = (version, machine)
        self._cache.move_to_end(machine.call_id)
        if rows is not None:
            self._stored_rows[machine.call_id] = (version, rows)
        while len(self._cache) > CACHE_LIMIT:
            self._stored_rows.pop(self._cache.popitem(last=False)[0], None)
        if (deadline := machine.get_timer()) is not None:
            self._schedule(machine.call_id, deadline)
        else:  # answered: nothing to time out; the heap entry is skipped when it comes up
            self._scheduled.pop(machine.call_id, None)

    def _schedule(self, call_id: str, deadline: float) -> None:
        """Have the timer loop handle the call at ``deadline`` (once per distinct deadline of
        a call); the loop is woken only when that is earlier than it would wake anyway."""
        if self._scheduled.get(call_id) == deadline:
            return
        self._scheduled[call_id] = deadline
        heapq.heappush(self._deadlines, (deadline, call_id))
        if deadline < self._sleep_until:
            self._wake.set()

    async def _apply(self, call_id: str, event: Event | None, *, persist: bool = True,
                     timer: bool = False) -> dict[str, Any]:
        """Apply ``event`` (or the timers, when ``timer``) to the call; save; deliver."""
        async with self._lock(call_id):
            for _ in range(SAVE_ATTEMPTS):
                entry = await self._load(call_id)
                if entry is None:
                    raise ProtocolError(ErrorCode.UNKNOWN_CALL, "no such call")
                version, machine = entry
                try:
                    if timer:
                        deadline = machine.get_timer()
                        if deadline is None or deadline > self.clock():
                            return {}  # a stale heap entry: nothing is due
                        machine.handle_timer(self.clock())
                        result: dict[str, Any] = {}
                    else:
                        assert event is not None
                        result = machine.handle(event, self.clock())
                    effects = machine.drain_effects()
                    rows: Rows | None = None
                    if persist:
                        write, all_rows = write_and_rows(machine, self._stored(call_id, version))
                        version = await self.store.save_call(write, version)
                        rows = all_rows
                except StaleVersion:
                    metrics.STALE_RETRIES.inc()
                    self._forget(call_id)
                    continue
                except ProtocolError:
                    raise  # the machine changed nothing
                except BaseException:
                    self._forget(call_id)  # the machine may be ahead of the store
                    raise
                if persist:  # a relay changes no state: the cached entry stays as it is
                    self._remember(machine, version, rows)
                # with other nodes, they drop their copy of the call before any effect
                saved = (ANNOUNCE_CALL, f"{call_id} {version}") \
                    if persist and self.bus.shared else None
                await self._perform(machine, effects, saved)
                if persist:  # who left the call leaves its group media; an ended call's closes
                    await self.group_media.follow(machine)
                if machine.ended:
                    self._locks.pop(call_id, None)
                return result
        raise ProtocolError(ErrorCode.INTERNAL, "the call is busy; retry")

    async def _perform(self, machine: CallMachine, effects: list[Effect],
                       announcing: tuple[str, str] | None = None) -> None:
        """Deliver effects in order, after the state that caused them was stored: all at once,
        after ``announcing`` (one round trip on a shared bus), after one look at who of the
        rung is online (for ``call.ringing`` and the push of a ring to a device that is not).
        ``call.elsewhere`` goes to connected devices only (``if_attached``: the bus looks in the
        same round trip); one that connects later reads ``welcome.elsewhere``."""
        deliveries: list[tuple[str, dict[str, Any]]] = []
        rung: set[str] = set()
        for effect in effects:
            if isinstance(effect, Deliver):
                kind = effect.message["type"]
                if kind == "call.ring":
                    rung.add(effect.device_id)
                elif kind == "call.ringing":
                    rung.update(self._rung_devices(machine, effect.message["user_id"]))
            elif isinstance(effect, CallEnded):
                metrics.calls_ended(effect.reason.value).inc()
                log.info("call.ended", call_id=machine.call_id, reason=effect.reason.value)
        online = await self.bus.online(rung) if rung else set()
        offline_rings: list[tuple[Deliver, dict[str, Any]]] = []
        if_attached: list[int] = []
        for effect in effects:
            if isinstance(effect, Deliver):
                message = effect.message
                if message["type"] == "call.ring":
                    message = {**message, "from_name": self._names.get(message["from_user"])}
                    if effect.device_id not in online:
                        offline_rings.append((effect, message))
                elif message["type"] == "call.ringing":  # is the callee reachable right now?
                    reachable = online.intersection(self._rung_devices(machine, message["user_id"]))
                    message = {**message, "online": len(reachable)}
                elif message["type"] == "call.elsewhere":
                    if_attached.append(len(deliveries))
                    if message["state"] == "active":
                        message = await self._named(message)
                deliveries.append((effect.device_id, message))
        await self.bus.deliver_many(deliveries, announcing, if_attached)
        for effect, message in offline_rings:
            await self.push.notify_ring(effect.user_id, effect.device_id, message)

    @staticmethod
    def _rung_devices(machine: CallMachine, user_id: str) -> list[str]:
        """The devices of ``user_id`` that ``machine`` rings now."""
        return [leg.device_id for leg in machine.ringing_legs() if leg.user_id == user_id]

    # ------------------------------------------------------------------ timers

    async def _timer_loop(self) -> None:
        next_poll = 0.0
        while True:
            now = self.clock()
            due: set[str] = set()
            while self._deadlines and self._deadlines[0][0] <= now:
                deadline, call_id = heapq.heappop(self._deadlines)
                if self._scheduled.get(call_id) == deadline:  # else answered, ended or moved
                    del self._scheduled[call_id]
                    due.add(call_id)
            if now >= next_poll:
                due.update(await self.store.due_calls(now))
                next_poll = now + TIMER_POLL
            for call_id in due:
                try:
                    await self._apply(call_id, None, timer=True)
                except ProtocolError:
                    pass  # ended meanwhile
                except Exception:
                    log.exception("timer.failed", call_id=call_id)
            wait = next_poll - self.clock()
            if self._deadlines:
                wait = min(wait, self._deadlines[0][0] - self.clock())
            self._wake.clear()
            wait = max(0.0, wait)
            self._sleep_until = self.clock() + wait
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
            self._sleep_until = 0.0  # awake: a deadline scheduled now is seen on the next pass
