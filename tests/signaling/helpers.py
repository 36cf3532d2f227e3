"""Helpers shared by the call machine tests."""

from __future__ import annotations

from typing import Any

from facecall.signaling.effects import CallEnded, Deliver, Effect
from facecall.signaling.machine import CallMachine
from facecall.signaling.protocol import parse_server_message


def check_wire(effects: list[Effect]) -> None:
    """Every delivered message is a valid server event once the delivery layer adds seq."""
    for effect in effects:
        if isinstance(effect, Deliver):
            parse_server_message({**effect.message, "seq": 1})


def sent(effects: list[Effect]) -> list[tuple[str, str, dict[str, Any]]]:
    """(device, type, fields without v/type/call_id) for every Deliver, wire-checked."""
    check_wire(effects)
    out = []
    for effect in effects:
        if isinstance(effect, Deliver):
            fields = {k: v for k, v in effect.message.items() if k not in ("v", "type", "call_id")}
            out.append((effect.device_id, effect.message["type"], fields))
    return out


def ended(effects: list[Effect]) -> list[str]:
    return [e.reason.value for e in effects if isinstance(e, CallEnded)]


def call(
    callees: dict[str, list[str]] | None = None,
    busy: tuple[str, ...] = (),
    now: float = 0.0,
) -> tuple[CallMachine, list[Effect]]:
    """alice (device a1) calls ``callees`` (default bob on b1 and b2)."""
    machine = CallMachine.start(
        call_id="call-1",
        media="video",
        caller_user="alice",
        caller_device="a1",
        callees=callees if callees is not None else {"bob": ["b1", "b2"]},
        busy_users=busy,
        now=now,
    )
    return machine, machine.drain_effects()
