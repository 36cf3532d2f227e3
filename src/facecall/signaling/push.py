"""Waking devices that are not connected when a call rings them.

The signaling service calls a `PushNotifier` for every ``call.ring`` addressed to a device with
no live connection; the ring itself also waits in the device's mailbox, so a device that connects
while the call still rings gets it. A Web Push / APNs / FCM implementation is a later issue;
until one is configured, `UnconfiguredPush` records that the device could not be woken.
"""

from __future__ import annotations

from typing import Any, Protocol

from prometheus_client import Counter

from facecall.logs import get_logger

log = get_logger(__name__)

PUSH_UNDELIVERABLE = Counter(
    "facecall_push_undeliverable_total",
    "Rings for offline devices that no push transport could deliver.",
)


class PushNotifier(Protocol):
    """Wake an offline device for a call that rings it."""

    async def notify_ring(self, user_id: str, device_id: str, ring: dict[str, Any]) -> None: ...


class UnconfiguredPush:
    """No push transport: count and log the ring that could not wake its device."""

    async def notify_ring(self, user_id: str, device_id: str, ring: dict[str, Any]) -> None:
        PUSH_UNDELIVERABLE.inc()
        log.info("push.unconfigured", user_id=user_id, device_id=device_id,
                 call_id=ring.get("call_id"))
