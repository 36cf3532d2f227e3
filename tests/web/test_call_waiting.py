"""Call waiting: a second call rings as a banner during a call; decline it (busy) or switch."""

from __future__ import annotations

from playwright.async_api import expect

from facecall.client.signaling import SignalingConnection
from tests.live import LiveServer
from tests.web.conftest import PersonFactory
from tests.web.people import STEP


async def carol_calling_bob(server: LiveServer) -> tuple[str, SignalingConnection]:
    """carol, a bot with one connected device, and bob's user id (for her ``call.start``)."""
    bob_id: str = (await server.http.get("/v1/users/bob", headers={
        "Authorization": f"Bearer {(await server.sign_up('carol'))['token']}"})).json()["id"]
    carol_account = (await server.http.post("/v1/sessions", json={
        "username": "carol", "password": "correct horse battery"})).json()
    reg = await server.register_device(carol_account["token"], name="carol's bot")
    return bob_id, await server.device(reg["token"])


async def test_call_waiting_decline_then_switch(people: PersonFactory, server: LiveServer) -> None:
    bob = await people("bob")
    alice = await people("alice")
    bob_id, carol = await carol_calling_bob(server)
    try:
        await alice.call("bob", "video")
        await bob.expect_ringing("alice")
        await bob.accept()
        await bob.wait_connected()

        # A second call while in one: a banner, the call goes on.
        first = (await carol.request("call.start", to=[bob_id], media="audio"))["call_id"]
        banner = bob.page.get_by_role("dialog", name="carol is calling (audio)")
        await expect(banner).to_be_visible(timeout=STEP)
        await expect(bob.page.locator("#incoming")).to_be_hidden()
        await banner.get_by_role("button", name="Decline").click()
        ended = await carol.next_event("call.ended")
        assert ended["call_id"] == first and ended["reason"] == "busy"
        await expect(banner).to_be_hidden()
        assert (await bob.diagnostics())["phase"] == "active"

        # Again, and this time end the current call and take the new one.
        second = (await carol.request("call.start", to=[bob_id], media="audio"))["call_id"]
        await expect(banner).to_be_visible(timeout=STEP)
        await banner.get_by_role("button", name="End & accept").click()
        await alice.expect_notice("Call ended")
        answered = await carol.next_event("call.answered")
        assert answered["call_id"] == second and answered["user_id"] == bob_id
        diag = await bob.diagnostics()
        assert diag["callId"] == second and diag["media"] == "audio"
        await expect(bob.page.locator("#call-peer")).to_have_text("carol")
        await carol.request("call.hangup", call_id=second)
        await bob.expect_notice("Call ended")
    finally:
        await carol.close()
