"""Clear messages for what goes wrong: no permission, nobody to call, a lost connection."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from playwright.async_api import Playwright, WebSocketRoute, expect

from tests.live import LiveServer
from tests.web.conftest import PersonFactory, launch
from tests.web.people import STEP


async def test_camera_permission_denied(playwright: Playwright, server: LiveServer,
                                        people: PersonFactory) -> None:
    denied = await launch(playwright, grant_media=False)
    try:
        bob = await people("bob")
        alice = await people("alice", b=denied)
        await alice.call("bob", "video")
        await alice.expect_alert("Permission to use the camera and microphone was denied")
        await expect(alice.page.locator("#home-view")).to_be_visible()
        # Nothing rang: the call was never placed.
        assert (await bob.diagnostics())["rings"] == []
        await expect(bob.page.locator("#incoming")).to_be_hidden()
    finally:
        await denied.close()


async def test_a_blocked_camera_leaves_the_call_on_audio(playwright: Playwright, server: LiveServer,
                                                        people: PersonFactory) -> None:
    """The site may use alice's microphone but not her camera. Chromium then refuses a request
    for both with the NotAllowedError it gives when both are blocked; the microphone alone is
    allowed. Her video calls, answered and placed, go on with audio only and say why; once she
    allows the camera, Camera on sends her picture."""
    blocked = await launch(playwright, grant_media=False)
    try:
        bob = await people("bob")
        alice = await people("alice", b=blocked, permissions=["microphone"])
        notice = "Camera access is blocked: the call continues with audio only."

        await bob.call("alice", "video")  # alice answers
        await alice.expect_ringing("bob")
        await alice.accept()
        await alice.expect_notice(notice)
        await alice.wait_connected()  # alice sees bob's camera
        await bob.wait_for(lambda d: (d.get("stats") or {}).get("audioPacketsReceived", 0) > 0,
                           "hearing alice")
        await expect(bob.page.locator("#remote-note")).to_have_text("alice: camera off", timeout=STEP)
        local = (await alice.diagnostics())["local"]
        assert local["camera"] is False and local["muted"] is False
        await alice.hang_up()
        await expect(bob.page.locator("#home-view")).to_be_visible(timeout=STEP)

        await alice.call("bob", "video")  # alice places the call
        await alice.expect_notice(notice)
        await bob.expect_ringing("alice")
        await bob.accept()
        await alice.wait_connected()
        await expect(bob.page.locator("#remote-note")).to_have_text("alice: camera off", timeout=STEP)
        camera_on = alice.page.get_by_role("button", name="Camera on")
        await camera_on.click()  # still blocked: it says so, and the call goes on
        await alice.expect_alert("Permission to use the camera was denied")
        await alice.context.grant_permissions(["camera", "microphone"])
        await camera_on.click()
        await bob.wait_for(lambda d: (d.get("stats") or {}).get("framesDecoded", 0) > 10, "seeing alice")
        await expect(bob.page.locator("#remote-note")).to_be_hidden(timeout=STEP)
        await alice.hang_up()
        await expect(bob.page.locator("#home-view")).to_be_visible(timeout=STEP)
        assert alice.errors == [] and bob.errors == []
    finally:
        await blocked.close()


async def test_accept_without_media_rings_on(playwright: Playwright, server: LiveServer,
                                            people: PersonFactory) -> None:
    """Bob's laptop may not use camera or microphone; he presses Accept there. That is not a
    decline: the laptop says why and rings on (Accept again, or Decline), his phone never stops
    ringing, and alice still hears it ring; the phone answers and the call connects."""
    denied = await launch(playwright, grant_media=False)
    try:
        laptop = await people("bob", b=denied, device_name="laptop")
        phone = await people("bob", signup=False, device_name="phone")
        alice = await people("alice")
        await alice.call("bob", "video")
        await laptop.expect_ringing("alice")
        await phone.expect_ringing("alice")
        await expect(alice.page.locator("#call-state")).to_have_text("Ringing…", timeout=STEP)
        call_id = (await alice.diagnostics())["callId"]

        for _ in range(2):  # Accept again: the same
            await laptop.accept()
            await laptop.expect_alert("Permission to use the camera and microphone was denied")
            await laptop.expect_ringing("alice")
            await laptop.wait_for(
                lambda d: d["phase"] == "idle" and d["rings"] == [call_id] and d["ringtone"], "ringing again")
        await asyncio.sleep(1)  # long enough for a decline to have reached everyone
        await phone.expect_ringing("alice")
        assert await phone.ring_state() == {"phase": "idle", "rings": [call_id], "ringtone": True}
        await expect(alice.page.locator("#call-state")).to_have_text("Ringing…")
        assert (await alice.diagnostics())["phase"] == "ringing"
        await expect(alice.page.locator("#notice")).to_be_hidden()

        await phone.accept()
        await laptop.expect_notice("Answered on another device")
        await expect(laptop.page.locator("#incoming")).to_be_hidden()
        assert await laptop.ring_state() == {"phase": "idle", "rings": [], "ringtone": False}
        await phone.wait_connected()
        await alice.wait_connected()
        await alice.hang_up()
        await expect(phone.page.locator("#home-view")).to_be_visible(timeout=STEP)
        assert laptop.errors == [] and phone.errors == [] and alice.errors == []
    finally:
        await denied.close()


async def test_unknown_and_unavailable_callees(people: PersonFactory, server: LiveServer) -> None:
    alice = await people("alice")
    await alice.call("nobody", "video")
    await alice.expect_alert("No user named nobody")
    bob = await people("bob")
    await alice.call("bob", "audio")  # the error was about the last attempt, not this call
    await expect(alice.page.get_by_role("alert").filter(has_text="No user named nobody")).to_be_hidden()
    await bob.expect_ringing("alice")
    await alice.hang_up()
    await expect(alice.page.locator("#home-view")).to_be_visible(timeout=STEP)

    await alice.call("alice", "audio")
    await alice.expect_alert("You cannot call yourself")

    await server.sign_up("carol")  # an account without any device
    await alice.call("carol", "audio")
    await alice.expect_notice("carol is unavailable")
    await expect(alice.page.locator("#home-view")).to_be_visible()

    # dave has a device, but it is not connected: the caller is told, and it rings on anyway
    dave = await server.sign_up("dave")
    await server.register_device(dave["token"], "dave's phone", "ios")
    await alice.call("dave", "audio")
    await expect(alice.page.locator("#call-state")).to_contain_text("dave is offline", timeout=STEP)


async def test_signaling_reconnects_and_the_call_goes_on(people: PersonFactory) -> None:
    bob = await people("bob")
    alice = await people("alice")
    await alice.in_call_with(bob)

    # Each side's connection breaks under it (the socket is given up, as when TCP dies); it
    # reconnects, resumes, and the call is untouched. (Chromium's offline emulation does not
    # reach WebSockets, and in a loopback-only namespace navigator.onLine is false throughout.)
    for person in (alice, bob):
        await person.page.evaluate("window.facecall.dropConnection()")
        banner = person.page.locator("#connection")
        await expect(banner).to_have_text("Connection lost. Reconnecting…")
        await expect(banner).to_be_hidden(timeout=STEP)
    for person in (alice, bob):
        assert await person.page.evaluate("window.facecall.signaling") == "open"
        assert (await person.diagnostics())["phase"] == "active"

    # Still one call: media flows and a hang-up reaches the other side over the resumed sessions.
    frames = (await bob.diagnostics())["stats"]["framesDecoded"]
    await bob.wait_for(lambda d: d["stats"]["framesDecoded"] > frames + 10, "decoding after the drop")
    await bob.hang_up()
    await expect(alice.page.locator("#home-view")).to_be_visible(timeout=STEP)
    await alice.expect_notice("Call ended")


async def test_a_call_the_caller_cannot_connect_ends_for_the_callee_too(people: PersonFactory) -> None:
    """The caller's page gives up on a call (its offer is refused): it tells the server, so the
    callee's page ends the call too instead of showing "Connecting…" for ever."""
    bob = await people("bob")
    alice = await people("alice")

    def refuse_offers(ws: WebSocketRoute, frame: dict[str, Any]) -> bool:
        if frame.get("type") == "call.sdp":  # the node refuses the offer
            ws.send(json.dumps({"v": 1, "type": "error", "re": frame["id"], "code": "internal",
                                "message": "refused by the test"}))
            return False
        return True

    await alice.intercept_signaling(refuse_offers)
    await alice.call("bob", "audio")
    await bob.expect_ringing("alice")
    await bob.accept()
    await alice.expect_alert("The call could not connect: refused by the test")
    await expect(bob.page.locator("#home-view")).to_be_visible(timeout=STEP)
    assert (await bob.diagnostics())["phase"] == "idle"
