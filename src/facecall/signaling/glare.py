"""Glare: two users call each other at the same moment.

The driver notices glare when a 1:1 ``call.start`` from A to B arrives while B's 1:1 call to A
is still ringing (or the other way round, on another node). Both nodes must pick the same survivor
without talking to each other, so the choice depends only on the two calls:

* the call whose **caller user id sorts lower** (plain string order) survives;
* if both calls have the same caller (not glare proper, but total), the lower ``call_id`` wins.

The driver then aborts the loser with ``Abort(EndReason.GLARE)``; its ringing devices get
``call.stop_ringing(glare)`` and its caller ``call.ended(glare)``, and the survivor rings on.
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


def glare_winner(call_a: CallMachine, call_b: CallMachine) -> CallMachine:
    """The call that survives glare (deterministic and symmetric:
    ``glare_winner(a, b) is glare_winner(b, a)``)."""
    key_a = (call_a.caller_user, call_a.call_id)
    key_b = (call_b.caller_user, call_b.call_id)
    return call_a if key_a <= key_b else call_b
