"""Moving a call between a user's devices with two nodes sharing PostgreSQL and Redis: the
call is on node one, the device that takes it over is on node two."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.server.test_nodes import (  # noqa: F401
    Node,
    _device,
    _id,
    _on,
    nodes,
    postgres,
    redis_server,
)
from tests.server.test_restart import new_user

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


async def test_a_device_on_the_other_node_finds_the_call_and_takes_it(nodes: list[Node]) -> None:  # noqa: F811
    one, two = nodes
    async with httpx.AsyncClient(base_url=one.base_url) as http:
        alice_account, _, alice_laptop_token = await new_user(http, "alice")
        alice_phone_token = await _device(http, alice_account, "phone")
        _, bob_id, bob_token = await new_user(http, "bob")
    laptop, bob = await _on(one, alice_laptop_token), await _on(one, bob_token)
    phone = None
    try:
        call_id = (await laptop.request("call.start", to=[bob_id], media="video"))["call_id"]
        await bob.next_event("call.ring")
        await bob.request("call.answer", call_id=call_id)
        await laptop.next_event("call.answered")
        # node two never saw this call nor these users: the welcome still names bob
        phone = await _on(two, alice_phone_token)
        assert phone.welcome is not None
        assert phone.welcome["elsewhere"] == [{
            "call_id": call_id, "device_id": _id(laptop), "media": "video", "role": "caller",
            "participants": [{"user_id": bob_id, "name": "bob"}]}]
        reply = await phone.request("call.handoff", call_id=call_id)
        assert reply["participants"] == [{"user_id": bob_id, "device_id": _id(bob)}]
        moved = await bob.next_event("call.handed_off")
        assert (moved["from_device"], moved["to_device"]) == (_id(laptop), _id(phone))
        assert (await laptop.next_event("call.ended"))["reason"] == "handed_off"
        back = await laptop.next_event("call.elsewhere")
        assert (back["state"], back["device_id"]) == ("active", _id(phone))
        # node one relays between bob and the device that took the call on node two
        await bob.request("call.sdp", call_id=call_id, to_device=_id(phone),
                          description={"type": "offer", "sdp": "v=0\r\n"})
        assert (await phone.next_event("call.sdp"))["from_device"] == _id(bob)
        await bob.request("call.hangup", call_id=call_id)
        assert (await phone.next_event("call.ended"))["reason"] == "hung_up"
        assert (await laptop.next_event("call.elsewhere"))["state"] == "ended"
    finally:
        for conn in (laptop, bob, phone):
            if conn is not None:
                await conn.close()


async def test_two_devices_on_two_nodes_taking_the_call_at_once(nodes: list[Node]) -> None:  # noqa: F811
    """Each node saves a version of the call; the one that loses the race reloads and applies its
    handoff to the newer call: the call moves twice, in one order, and nothing is lost."""
    one, two = nodes
    async with httpx.AsyncClient(base_url=one.base_url) as http:
        alice_account, _, laptop_token = await new_user(http, "alice")
        phone_token = await _device(http, alice_account, "phone")
        tablet_token = await _device(http, alice_account, "tablet")
        _, bob_id, bob_token = await new_user(http, "bob")
    laptop, bob = await _on(one, laptop_token), await _on(one, bob_token)
    phone, tablet = await _on(one, phone_token), await _on(two, tablet_token)
    try:
        call_id = (await laptop.request("call.start", to=[bob_id], media="audio"))["call_id"]
        await bob.next_event("call.ring")
        await bob.request("call.answer", call_id=call_id)
        await laptop.next_event("call.answered")
        await asyncio.gather(phone.request("call.handoff", call_id=call_id),
                             tablet.request("call.handoff", call_id=call_id))
        moves = [await bob.next_event("call.handed_off") for _ in range(2)]
        assert moves[0]["from_device"] == _id(laptop)
        assert moves[1]["from_device"] == moves[0]["to_device"]
        holder = phone if moves[1]["to_device"] == _id(phone) else tablet
        await bob.request("call.hangup", call_id=call_id)
        assert (await holder.next_event("call.ended"))["reason"] == "hung_up"
    finally:
        for conn in (laptop, bob, phone, tablet):
            await conn.close()
