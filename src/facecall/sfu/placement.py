"""Group media on several nodes: each call's room is on one node, its owner, and the others ask
it (docs/sfu.md, "Several nodes").

* **The owner.** ``<prefix>sfu:<call id>`` in Redis holds the owner's node id
  (:meth:`RedisBus.place`): set by the node that takes the call's first join, a lease of
  :attr:`ClusterSfu.lease` s that the owner renews every :attr:`ClusterSfu.renew` s while its
  room is open and deletes when the room closes. A node whose heartbeat key is gone is dead:
  the next join takes the call over (compare-and-set in one script: never two owners), and
  the devices that were in the dead node's room join again by themselves (their media stopped).
* **Requests.** Join, leave, close and the room's devices are asked of the owner
  (:meth:`RedisBus.request`, JSON ``{"op": ...}``) when it is another node; its answer SDP
  carries its own ICE candidates, so media goes straight to it.
* **Events.** The owner's rooms tell the owner's signaling, which delivers ``sfu.slots``,
  ``sfu.members`` and ``sfu.speaker`` through the bus to devices wherever they are connected.
  The events of a device joining from another node are held on the owner from the start of
  its join until that node says its reply is queued (``answered``), or :attr:`ClusterSfu.hold`
  s at most.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from typing import Any

import orjson

from facecall.bus.redis_bus import BusUnavailable, RedisBus, RequestFailed
from facecall.logs import get_logger
from facecall.sfu.control import InProcessSfu
from facecall.signaling.errors import ErrorCode
from facecall.signaling.sfu_control import (
    JoinHolds,
    Member,
    MembersListener,
    SfuJoined,
    SfuRefused,
    Slot,
    SlotsListener,
    Speaker,
    SpeakerListener,
)

log = get_logger(__name__)

_OPS = frozenset({"join", "answered", "leave", "close", "devices"})
_TEXT_LIMIT = 128  # ids are far shorter; the SDP is bounded by the request size


def _joined_to_wire(joined: SfuJoined) -> dict[str, Any]:
    return {"answer": joined.answer, "slots": [s.to_wire() for s in joined.slots],
            "members": [m.to_wire() for m in joined.members],
            "speaker": joined.speaker.to_wire() if joined.speaker is not None else None}


def _joined_from_wire(data: dict[str, Any]) -> SfuJoined:
    speaker = data["speaker"]
    return SfuJoined(
        data["answer"], tuple(Slot(s["mid"], s["kind"], s["user_id"], s["device_id"])
                              for s in data["slots"]),
        tuple(Member(m["user_id"], m["device_id"], m["joined"]) for m in data["members"]),
        None if speaker is None else Speaker(speaker["user_id"], speaker["device_id"]))


def _text(request: dict[str, Any], name: str, limit: int = _TEXT_LIMIT) -> str:
    value = request.get(name)
    if not isinstance(value, str) or not 0 < len(value) <= limit:
        raise ValueError(f"{name} must be a string of 1-{limit} characters")
    return value


class ClusterSfu:
    """Signaling's :class:`SfuControl` on a node sharing ``bus`` with others: the call's room
    on its owner node, ``local`` being this node's rooms."""

    spans_nodes = True

    def __init__(self, local: InProcessSfu, bus: RedisBus, *, lease: float = 30.0,
                 renew: float = 10.0, timeout: float = 15.0, hold: float = 10.0) -> None:
        self.local = local
        self.bus = bus
        self.lease, self.renew, self.timeout, self.hold = lease, renew, timeout, hold
        self._owned: set[str] = set()  # call ids whose room this node owns
        self._joining: Counter[str] = Counter()  # call id -> joins under way here
        self._holds: JoinHolds | None = None
        # (call id, device id) -> the owner node, for joins asked of another node
        self._asked: dict[tuple[str, str], str] = {}
        # (call id, device id) -> the timer releasing a remote join's held events
        self._held: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._renewer: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Answer the other nodes' requests; renew the owned rooms' leases."""
        self.bus.on_request(self._on_request)
        self._renewer = asyncio.create_task(self._renewing(), name="facecall-sfu-leases")

    async def shutdown(self) -> None:
        """Close this node's rooms and give their calls up (the devices join again elsewhere)."""
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        for timer in self._held.values():
            timer.cancel()
        self._held.clear()
        await self.local.shutdown()
        for call_id in sorted(self._owned):
            with contextlib.suppress(BusUnavailable):
                await self.bus.unplace(self._name(call_id))
        self._owned.clear()

    # ------------------------------------------------------------------ SfuControl

    async def join(self, call_id: str, user_id: str, device_id: str,
                   offer_sdp: str) -> SfuJoined:
        owner = await self._place(call_id)
        if owner == self.bus.node_id:
            return await self._join_here(call_id, user_id, device_id, offer_sdp, placed=True)
        reply = await self._ask(owner, {"op": "join", "call_id": call_id, "user_id": user_id,
                                        "device_id": device_id, "sdp": offer_sdp})
        if "refused" in reply:
            raise SfuRefused(ErrorCode(reply["refused"]["code"]), reply["refused"]["message"])
        self._asked[(call_id, device_id)] = owner
        return _joined_from_wire(reply)

    async def leave(self, call_id: str, device_id: str) -> bool:
        owner = await self._owner(call_id)
        if owner is None or owner == self.bus.node_id:
            return await self._leave_here(call_id, device_id)
        return bool((await self._ask(owner, {"op": "leave", "call_id": call_id,
                                             "device_id": device_id}))["left"])

    async def close(self, call_id: str) -> bool:
        owner = await self._owner(call_id)
        if owner is None or owner == self.bus.node_id:
            return await self._close_here(call_id)
        try:
            return bool((await self._ask(owner, {"op": "close", "call_id": call_id}))["closed"])
        except SfuRefused:  # the owner is gone, and its room with it
            return False

    def members(self, call_id: str) -> frozenset[str]:
        return self.local.members(call_id)

    async def devices(self, call_id: str) -> frozenset[str]:
        owner = await self._owner(call_id)
        if owner is None or owner == self.bus.node_id:
            return self.local.members(call_id)
        try:
            reply = await self._ask(owner, {"op": "devices", "call_id": call_id})
        except SfuRefused:  # the owner is gone, and its room with it
            return frozenset()
        return frozenset(reply["devices"])

    def answered(self, call_id: str, device_id: str) -> None:
        owner = self._asked.pop((call_id, device_id), None)
        if owner is not None:  # tell the owner (after the reply is queued: a task)
            self._spawn(self._tell_answered(owner, call_id, device_id))

    def hold_joins_with(self, holds: JoinHolds) -> None:
        self._holds = holds

    def on_slots(self, listener: SlotsListener) -> None:
        self.local.on_slots(listener)

    def on_members(self, listener: MembersListener) -> None:
        self.local.on_members(listener)

    def on_speaker(self, listener: SpeakerListener) -> None:
        self.local.on_speaker(listener)

    # ------------------------------------------------------------------ this node's rooms

    def _name(self, call_id: str) -> str:
        return "sfu:" + call_id

    async def _place(self, call_id: str) -> str:
        try:
            return await self.bus.place(self._name(call_id), self.lease)
        except BusUnavailable as exc:
            raise SfuRefused(ErrorCode.SFU_UNAVAILABLE, str(exc)) from None

    async def _owner(self, call_id: str) -> str | None:
        try:
            return await self.bus.placed(self._name(call_id))
        except BusUnavailable as exc:
            raise SfuRefused(ErrorCode.SFU_UNAVAILABLE, str(exc)) from None

    async def _join_here(self, call_id: str, user_id: str, device_id: str, offer_sdp: str,
                         placed: bool = False) -> SfuJoined:
        """Join the device to this node's room of the call, this node owning it."""
        self._joining[call_id] += 1
        try:
            if not placed and await self._place(call_id) != self.bus.node_id:
                raise SfuRefused(ErrorCode.SFU_UNAVAILABLE,
                                 "the call's group media moved to another node: join again")
            self._owned.add(call_id)
            return await self.local.join(call_id, user_id, device_id, offer_sdp)
        finally:
            self._joining[call_id] -= 1
            if not self._joining[call_id]:
                del self._joining[call_id]
            await self._settle(call_id)

    async def _leave_here(self, call_id: str, device_id: str) -> bool:
        left = await self.local.leave(call_id, device_id)
        await self._settle(call_id)
        return left

    async def _close_here(self, call_id: str) -> bool:
        closed = await self.local.close(call_id)
        await self._settle(call_id)
        return closed

    async def _settle(self, call_id: str) -> None:
        """Give the call up once its room here is gone (no join of it under way)."""
        if call_id in self._owned and not self._joining[call_id] \
                and self.local.registry.room(call_id) is None:
            self._owned.discard(call_id)
            try:
                await self.bus.unplace(self._name(call_id))
            except BusUnavailable as exc:  # its lease ends it
                log.warning("sfu.unplace_failed", call_id=call_id, error=str(exc))

    async def _renewing(self) -> None:
        """Every :attr:`renew` s: renew the lease of each room open here, give up the calls
        whose room closed by itself, and close a room whose call another node took."""
        while True:
            await asyncio.sleep(self.renew)
            for call_id in sorted(self._owned):
                try:
                    if self.local.registry.room(call_id) is None:
                        await self._settle(call_id)
                    elif not await self.bus.keep_placed(self._name(call_id), self.lease):
                        log.warning("sfu.room_lost", call_id=call_id)
                        self._owned.discard(call_id)
                        await self.local.close(call_id)
                except BusUnavailable as exc:
                    log.warning("sfu.lease_not_renewed", call_id=call_id, error=str(exc))
                except Exception:
                    log.exception("sfu.lease_failed", call_id=call_id)

    # ------------------------------------------------------------------ between nodes

    async def _ask(self, owner: str, request: dict[str, Any]) -> dict[str, Any]:
        try:
            reply = await self.bus.request(owner, orjson.dumps(request), self.timeout)
        except (RequestFailed, BusUnavailable) as exc:
            raise SfuRefused(ErrorCode.SFU_UNAVAILABLE,
                             f"the node holding the call's group media failed: {exc}") from None
        answer: dict[str, Any] = orjson.loads(reply)
        return answer

    async def _tell_answered(self, owner: str, call_id: str, device_id: str) -> None:
        with contextlib.suppress(SfuRefused):  # the owner's own timer releases them
            await self._ask(owner, {"op": "answered", "call_id": call_id, "device_id": device_id})

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro, name="facecall-sfu-answered")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _on_request(self, asker: str, payload: bytes) -> bytes:
        """Another node's request: ``{"op": "join"|"answered"|"leave"|"close"|"devices",
        "call_id", ...}``. A malformed one raises ValueError (the asker's error)."""
        try:
            request = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise ValueError("a request must be a JSON object") from None
        if not isinstance(request, dict):
            raise ValueError("a request must be a JSON object")
        op = request.get("op")
        if op not in _OPS:
            raise ValueError(f"unknown op {str(op)[:40]!r}")
        call_id = _text(request, "call_id")
        if op == "devices":
            return orjson.dumps({"devices": sorted(self.local.members(call_id))})
        if op == "close":
            return orjson.dumps({"closed": await self._close_here(call_id)})
        device_id = _text(request, "device_id")
        if op == "leave":
            return orjson.dumps({"left": await self._leave_here(call_id, device_id)})
        if op == "answered":
            self._release(call_id, device_id)
            return b"{}"
        return orjson.dumps(await self._join_for(asker, call_id, _text(request, "user_id"),
                                                 device_id, _text(request, "sdp", 1 << 18)))

    async def _join_for(self, asker: str, call_id: str, user_id: str, device_id: str,
                        sdp: str) -> dict[str, Any]:
        """A join asked by node ``asker``: the device's events are held from now until it says
        the reply is queued (``answered``), or :attr:`hold` s."""
        key = (call_id, device_id)
        if self._holds is not None and key not in self._held:
            self._holds.hold(device_id)
            self._held[key] = asyncio.get_running_loop().call_later(
                self.hold, self._release, call_id, device_id)
        try:
            joined = await self._join_here(call_id, user_id, device_id, sdp)
        except SfuRefused as exc:
            self._release(call_id, device_id)
            return {"refused": {"code": str(exc.code), "message": exc.message}}
        except BaseException:
            self._release(call_id, device_id)
            raise
        if self._holds is not None:
            self._holds.joined(call_id, device_id)
        return _joined_to_wire(joined)

    def _release(self, call_id: str, device_id: str) -> None:
        timer = self._held.pop((call_id, device_id), None)
        if timer is not None and self._holds is not None:
            timer.cancel()
            self._holds.release(device_id)
