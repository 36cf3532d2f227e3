"""Glare: two users call each other at the same moment.

The driver queues the two 1:1 ``call.start`` requests of a user pair on a lock of the bus
(:meth:`facecall.bus.Bus.exclusive`, which spans every node sharing the bus), so the second one
always finds the first call ringing: :func:`is_glare` tells it so, and its device answers that
call instead of placing another (``"glare": "merged"``, docs/protocol.md).
"""

from __future__ import annotations

from .machine import CallMachine
from .records import CallState, ParticipantState


def is_glare(call_a: CallMachine, call_b: CallMachine) -> bool:
    """Whether the two calls are glare: two 1:1 calls, both still unanswered, and each one's
    caller is the ringing callee of the other. A call with more users (a group call, or one
    that invited someone) is never glare: the two users each meant a different call, and both
    ring on (with call waiting), whichever of them came first."""
    if call_a.state is not CallState.RINGING or call_b.state is not CallState.RINGING:
        return False
    if len(call_a.participants) != 2 or len(call_b.participants) != 2:
        return False
    a_in_b = call_b.participant(call_a.caller_user)
    b_in_a = call_a.participant(call_b.caller_user)
    return (
        a_in_b is not None
        and b_in_a is not None
        and a_in_b.state is ParticipantState.RINGING
        and b_in_a.state is ParticipantState.RINGING
    )
