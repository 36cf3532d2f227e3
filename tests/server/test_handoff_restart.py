"""Moving a call after the node was killed (SIGKILL) and restarted: the call lives in the
store, so a device of the user that connects to the restarted node finds it in
``welcome.elsewhere`` and takes it over."""

from __future__ import annotations

import httpx

from tests.live import ServerProcess
from tests.server.test_restart import connected, new_user, node  # noqa: F401


async def test_a_call_moves_after_a_kill_9(node: ServerProcess) -> None:  # noqa: F811
    node.start()
    await node.ready()
    ws_url = f"ws://127.0.0.1:{node.port}/v1/signaling"
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{node.port}") as http:
        alice_token, alice_id, laptop_token = await new_user(http, "alice")
        phone_token = (await http.post("/v1/devices", json={"kind": "sdk", "name": "phone"},
                                       headers={"Authorization": f"Bearer {alice_token}"})).json()["token"]
        _, bob_id, bob_token = await new_user(http, "bob")
    laptop, bob = await connected(ws_url, laptop_token, bob_token)
    call_id = (await laptop.request("call.start", to=[bob_id], media="video"))["call_id"]
    await bob.next_event("call.ring")
    await bob.request("call.answer", call_id=call_id)
    await laptop.next_event("call.answered")
    node.kill()
    for conn in (laptop, bob):
        await conn.drop()

    node.start()
    await node.ready()
    await laptop.connect(calls=[call_id])  # both still hold the call
    await bob.connect(calls=[call_id])
    (phone,) = await connected(ws_url, phone_token)
    assert phone.welcome is not None
    assert phone.welcome["elsewhere"] == [{
        "call_id": call_id, "device_id": laptop.welcome["device_id"],  # type: ignore[index]
        "media": "video", "role": "caller", "participants": [{"user_id": bob_id, "name": "bob"}]}]
    reply = await phone.request("call.handoff", call_id=call_id)
    assert reply["participants"] == [{"user_id": bob_id,
                                      "device_id": bob.welcome["device_id"]}]  # type: ignore[index]
    assert (await bob.next_event("call.handed_off"))["to_device"] == phone.welcome["device_id"]
    assert (await laptop.next_event("call.ended"))["reason"] == "handed_off"
    assert alice_id == phone.welcome["user_id"]
    for conn in (laptop, bob, phone):
        await conn.close()
