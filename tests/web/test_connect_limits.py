"""A call never waits for ever: "Connecting…" is given up with a sentence; relay-only is not
offered by a server without TURN."""

from __future__ import annotations

from playwright.async_api import Browser, expect

from tests.web.conftest import PersonFactory, ServerFactory
from tests.web.people import STEP, Person


async def test_a_call_that_cannot_connect_is_given_up(people: PersonFactory) -> None:
    bob = await people("bob")
    alice = await people("alice")

    # SDP and candidates are lost on the way (no reply either): the media never connects
    await alice.intercept_signaling(
        lambda _ws, frame: frame.get("type") not in ("call.sdp", "call.candidate"))
    for person in (alice, bob):  # 30 s in the product; shortened for the test
        await person.page.evaluate("window.facecall.callLimits.connectMs = 3000")

    await alice.call("bob", "audio")
    await bob.expect_ringing("alice")
    await bob.accept()
    await expect(alice.page.locator("#call-state")).to_have_text("Connecting…", timeout=STEP)
    for person in (alice, bob):
        await person.expect_alert("The call could not connect.")
        await expect(person.page.locator("#home-view")).to_be_visible()
        assert (await person.diagnostics())["phase"] == "idle"
    # recents say so, instead of a duration for a call that never was
    await expect(alice.page.locator("#recents li").first).to_contain_text(
        "Outgoing audio · could not connect", timeout=STEP)
    await expect(bob.page.locator("#recents li").first).to_contain_text(
        "Incoming audio · could not connect", timeout=STEP)


async def test_relay_only_is_not_offered_without_turn(web_server: ServerFactory, browser: Browser) -> None:
    async with web_server(turn_secrets=[], turn_urls=[]) as live:
        alice = await Person.open(browser, live.base_url, "alice", query="?relay=1")
        bob = await Person.open(browser, live.base_url, "bob")
        try:
            await alice.sign_in()
            await bob.sign_in()
            box = alice.page.get_by_label("Relay all media through the server")
            await expect(box).to_be_disabled(timeout=STEP)
            await expect(box).not_to_be_checked()
            await expect(alice.page.locator("#relay-none")).to_contain_text("This server has no relay")
            # the call connects directly instead of waiting for a relay that does not exist
            await alice.call("bob", "video")
            await bob.expect_ringing("alice")
            await bob.accept()
            diag = await alice.wait_connected()
            assert diag["stats"]["localCandidateType"] != "relay", diag
            await alice.hang_up()
        finally:
            await alice.close()
            await bob.close()
