"""Effects produced by :class:`facecall.signaling.machine.CallMachine` for the driver.

The driver persists the machine's snapshot first, then performs the effects in order
(invariant 2 of DESIGN.md: state is written before effects go out).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .reasons import EndReason


@dataclass(frozen=True, slots=True)
class Deliver:
    """Send ``message`` (a JSON-safe server event without ``seq``) to one device.

    The delivery layer assigns the device's next ``seq``, keeps the event for replay until it is
    acknowledged, and wakes an offline ringing device through push where it has to.
    """

    user_id: str
    device_id: str
    message: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CallEnded:
    """The call reached its terminal state with ``reason``; this is always the last effect."""

    reason: EndReason


#: Every effect :meth:`CallMachine.next_effect` may return.
Effect = Deliver | CallEnded


def effect_to_dict(effect: Effect) -> dict[str, Any]:
    """A JSON-safe form of ``effect`` (part of the machine snapshot)."""
    if isinstance(effect, Deliver):
        return {
            "kind": "deliver",
            "user_id": effect.user_id,
            "device_id": effect.device_id,
            "message": effect.message,
        }
    return {"kind": "call_ended", "reason": effect.reason._value_}


def effect_from_dict(data: dict[str, Any]) -> Effect:
    """Inverse of :func:`effect_to_dict`."""
    if data["kind"] == "deliver":
        return Deliver(data["user_id"], data["device_id"], data["message"])
    if data["kind"] == "call_ended":
        return CallEnded(EndReason(data["reason"]))
    raise ValueError(f"unknown effect kind {data['kind']!r}")
