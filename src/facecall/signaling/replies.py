"""Request-id dedupe of one node: a request resent with its id is answered, never acted on twice.

A client resends every request it got no reply to, with the same id, on its next connection
(docs/protocol.md, "Requests across a drop"). :class:`Replies` keeps, per device, the ``ok``
replies of its last :data:`REPLY_CACHE_PER_DEVICE` requests, and the requests still being
handled (by a connection the device has since replaced), so that a resend arriving meanwhile
waits for their reply instead of acting a second time.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict

REPLY_CACHE_PER_DEVICE = 128  # answered request ids remembered for resend dedupe


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
