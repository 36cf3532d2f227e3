"""A device takes a call over while it rings for another call (SDK, real server)."""

from __future__ import annotations

import asyncio

from facecall.client import CallState, EndReason
from tests.client.conftest import MakeDevice
from tests.client.test_handoff import answered_call, until


async def test_a_ringing_device_takes_over_another_call(make_device: MakeDevice) -> None:
    a1 = await make_device("alice")
    a2 = await make_device("alice")
    bob = await make_device("bob")
    carol = await make_device("carol")
    outgoing, incoming = await answered_call(a1, bob)
    await until(lambda: outgoing.id in a2.calls_elsewhere, "a2 sees the call elsewhere")
    # carol calls alice: a1 (in a call: call waiting) and a2 ring
    ringing = await carol.call("alice", video=True)
    ring_a2 = await a2.next_call(timeout=10)
    ring_a1 = await a1.next_call(timeout=10)
    assert ring_a2.state is CallState.RINGING and ring_a1.state is CallState.RINGING

    taken = await a2.take_call(outgoing.id)  # while carol's call rings a2
    assert await outgoing.wait_ended(10) is EndReason.HANDED_OFF
    await asyncio.gather(taken.wait_connected(30), incoming.wait_connected(30))
    assert incoming.remote_device == a2.device_id
    # carol's call still rings alice's devices (a2 now as call waiting)
    await asyncio.sleep(1)
    assert ring_a2.state is CallState.RINGING, ring_a2.state
    assert ring_a1.state is CallState.RINGING, ring_a1.state
    assert ringing.state in (CallState.CALLING, CallState.RINGING), ringing.state
    # a1, now free, answers carol; a2 stays in the call with bob
    await ring_a1.answer()
    await asyncio.gather(ring_a1.wait_connected(30), ringing.wait_connected(30))
    assert await ring_a2.wait_ended(10) is EndReason.ANSWERED_ELSEWHERE
    assert taken.state is CallState.CONNECTED and incoming.state is CallState.CONNECTED
    assert taken.security_code == incoming.security_code
