"""Request-id dedupe: a request resent with its id is answered, never acted on twice.

A client resends every request it got no reply to, with the same id, on its next connection
(docs/protocol.md, "Requests across a drop"). :class:`Replies` keeps, per device, the ``ok``
replies of its last :data:`REPLY_CACHE_PER_DEVICE` requests, and the requests still being
handled (by a connection the device has since replaced), so that a resend arriving meanwhile
waits for their reply instead of acting a second time.

With several nodes a device may resend to another node than the one that acted on the request.
The requests that would act twice (:data:`CLAIMED_ACROSS_NODES`: placing a call, inviting) are
then also claimed on the shared bus (:func:`claim_across_nodes`); the others are deduped by the
node that got them only, as claiming each would cost two round trips to Redis: the other call
requests come out the same when applied twice, and a relayed message repeated after a drop is
one the devices already handle (an ICE restart follows a reconnect).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict

import orjson

from facecall.bus import IN_PROGRESS, Bus
from facecall.signaling.errors import ErrorCode, ProtocolError

REPLY_CACHE_PER_DEVICE = 128  # answered request ids remembered for resend dedupe
#: requests claimed on a shared bus: those that would act a second time if resent. A second
#: ``call.answer`` from the device that answered gets the same ``ok`` (the machine knows it
#: answered), and a second decline, cancel or hang-up is refused (``call_ended``,
#: ``invalid_state``) and changes nothing: the clients take that as done
#: (docs/protocol.md, "Requests across a drop").
CLAIMED_ACROSS_NODES = frozenset({"call.start", "call.invite"})
CLAIM_WAIT = 10.0  # seconds a resend waits for another node to answer the request
CLAIM_POLL = 0.05  # seconds between looks at a request another node is acting on


async def claim_across_nodes(bus: Bus, device_id: str, msg_id: str) -> bytes | None:
    """Claim request ``msg_id`` of the device on the shared bus (:meth:`Bus.claim_request`):
    None when this node is to act on it, else the reply to send, also after waiting for the
    node acting on it. A request still in progress elsewhere after :data:`CLAIM_WAIT` is
    answered ``internal`` ("retry"), as a request cut short at shutdown is."""
    deadline = time.monotonic() + CLAIM_WAIT
    while (earlier := await bus.claim_request(device_id, msg_id)) == IN_PROGRESS:
        if time.monotonic() >= deadline:
            return internal_error(msg_id)
        await asyncio.sleep(CLAIM_POLL)
    return earlier


def internal_error(msg_id: str) -> bytes:
    """The reply to a request that was not seen through: the client retries it."""
    return orjson.dumps(ProtocolError(ErrorCode.INTERNAL, "internal error; retry", msg_id).to_wire())


class Replies:
    """The answered and the running requests of every device of this node."""

    def __init__(self) -> None:
        self._answered: dict[str, OrderedDict[str, bytes]] = {}
        # (device id, request id) -> futures of its resends, while the request is handled
        self._running: dict[tuple[str, str], list[asyncio.Future[bytes | None]]] = {}

    def cached(self, device_id: str, msg_id: str) -> bytes | None:
        """The ``ok`` reply already sent for request ``msg_id`` of this device, or None."""
        answered = self._answered.get(device_id)
        return answered.get(msg_id) if answered else None

    def remember(self, device_id: str, msg_id: str, text: bytes) -> None:
        """Request ``msg_id`` was answered ``ok`` with ``text``."""
        answered = self._answered.setdefault(device_id, OrderedDict())
        answered[msg_id] = text
        while len(answered) > REPLY_CACHE_PER_DEVICE:
            answered.popitem(last=False)

    def pending(self, device_id: str, msg_id: str) -> asyncio.Future[bytes | None] | None:
        """While request ``msg_id`` of this device is still being handled, the reply it will
        get (None if it was cancelled); else None."""
        waiting = self._running.get((device_id, msg_id))
        if waiting is None:
            return None
        future: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        waiting.append(future)
        return future

    def started(self, device_id: str, msg_id: str) -> None:
        """Request ``msg_id`` of this device is being handled from now on."""
        self._running[(device_id, msg_id)] = []

    def finished(self, device_id: str, msg_id: str, text: bytes | None) -> None:
        """Request ``msg_id`` was answered with ``text`` (None: cancelled); its resends get it."""
        for future in self._running.pop((device_id, msg_id), ()):
            if not future.done():
                future.set_result(text)

    def forget(self, device_id: str) -> None:
        """The device left for good: its answered requests are dropped."""
        self._answered.pop(device_id, None)
