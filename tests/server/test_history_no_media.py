"""``no_media`` and the duration kept in history: a call that somebody left another way did last."""

from __future__ import annotations

import asyncio

from tests.live import LiveServer
from tests.server.test_calls import ring_ids


async def test_a_late_joiner_giving_up_on_its_media_does_not_erase_the_others_duration(
        server: LiveServer) -> None:
    """Alice and Bob talk; Bob invites Carol, whose media never connects. Bob hangs up, then
    Carol's client gives up (``no_media``): the call ends ``no_media``. Alice and Bob did talk:
    their history keeps a duration."""
    alice, (a1,) = await server.user_with_devices("alice", 1)
    bob, (b1,) = await server.user_with_devices("bob", 1)
    carol, (c1,) = await server.user_with_devices("carol", 1)
    call_id = (await a1.request("call.start", to=[bob["user"]["id"]], media="video"))["call_id"]
    await b1.next_event("call.ring")
    await b1.request("call.answer", call_id=call_id)
    await asyncio.sleep(0.3)  # they talk
    await b1.request("call.invite", call_id=call_id, to=[carol["user"]["id"]])
    await ring_ids([c1], call_id)
    await c1.request("call.answer", call_id=call_id)
    await b1.request("call.hangup", call_id=call_id)
    await c1.request("call.hangup", call_id=call_id, reason="no_media")
    assert (await a1.next_event("call.ended"))["reason"] == "no_media"
    for account in (alice, bob):
        history = await server.http.get("/v1/calls/history",
                                        headers={"Authorization": f"Bearer {account['token']}"})
        item = history.json()["items"][0]
        assert item["call_id"] == call_id
        assert item["duration"] is not None and item["duration"] >= 0.3, item
