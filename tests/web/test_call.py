"""Browser ↔ browser calls in real Chromium: video flows both ways, hanging up ends both."""

from __future__ import annotations

import re
from pathlib import Path

from playwright.async_api import expect

from tests.live import LiveServer
from tests.web.conftest import PersonFactory
from tests.web.people import STEP


async def test_video_call_between_two_browsers(people: PersonFactory, server: LiveServer,
                                               screenshots: Path) -> None:
    bob = await people("bob")
    alice = await people("alice")

    await alice.call("bob", "video")
    await expect(alice.page.locator("#call-view")).to_be_visible()
    await bob.expect_ringing("alice")
    await expect(bob.page.locator("#incoming-kind")).to_have_text("Incoming video call")
    await bob.page.screenshot(path=screenshots / "incoming-call.png")
    await expect(alice.page.locator("#call-state")).to_have_text("Ringing…")

    # the device token travels in a subprotocol (docs/protocol.md, "Connection"): never in the
    # URL, which proxies log and the console shows when a connection fails
    for person in (alice, bob):
        assert person.sockets and set(person.sockets) == {server.ws_url}, person.sockets

    await bob.accept()
    first_bob = await bob.wait_connected()
    first_alice = await alice.wait_connected()
    # The decoders keep going: framesDecoded rises on both sides.
    await bob.wait_for(lambda d: d["stats"]["framesDecoded"] > first_bob["stats"]["framesDecoded"] + 10,
                       "decoding more frames")
    await alice.wait_for(lambda d: d["stats"]["framesDecoded"] > first_alice["stats"]["framesDecoded"] + 10,
                         "decoding more frames")
    diag = await alice.diagnostics()
    assert diag["phase"] == "active" and diag["media"] == "video" and diag["role"] == "caller"
    assert diag["stats"]["frameWidth"] > 0
    await expect(alice.page.locator("#quality")).to_have_attribute("data-level", "good", timeout=STEP)
    await expect(alice.page.locator("#remote-video")).to_be_visible()
    await expect(alice.page.locator("#local-video")).to_be_visible()
    # the duration clock past 00:00 for the screenshot
    await expect(alice.page.locator("#call-state")).to_have_text(re.compile(r"^\d\d:\d\d$"))
    await expect(alice.page.locator("#call-state")).not_to_have_text("00:00")
    await alice.page.screenshot(path=screenshots / "in-call.png")

    # Mute and camera off/on: bob is told (call.media) and shows alice's avatar and a note
    # instead of silence and a frozen picture; he decodes again once the camera is back.
    note = bob.page.locator("#remote-note")
    await alice.page.get_by_role("button", name="Mute").click()
    await expect(alice.page.get_by_role("button", name="Unmute")).to_have_attribute("aria-pressed", "true")
    assert (await alice.diagnostics())["local"]["muted"] is True
    await expect(note).to_have_text("alice: muted", timeout=STEP)
    await alice.page.get_by_role("button", name="Unmute").click()
    assert (await alice.diagnostics())["local"]["muted"] is False
    await expect(note).to_be_hidden(timeout=STEP)
    await alice.page.get_by_role("button", name="Camera off").click()
    await expect(alice.page.locator("#local-video")).to_be_hidden()
    assert (await alice.diagnostics())["local"]["camera"] is False
    await expect(note).to_have_text("alice: camera off", timeout=STEP)
    await expect(bob.page.locator("#remote-avatar")).to_be_visible()
    await expect(bob.page.locator("#remote-video")).to_be_hidden()
    assert (await bob.diagnostics())["remote"] == {"audio": True, "video": False, "screen": False}
    await alice.page.get_by_role("button", name="Camera on").click()
    await expect(alice.page.locator("#local-video")).to_be_visible()
    await expect(note).to_be_hidden(timeout=STEP)
    await expect(bob.page.locator("#remote-video")).to_be_visible()
    await expect(bob.page.locator("#remote-avatar")).to_be_hidden()
    resumed = (await bob.diagnostics())["stats"]["framesDecoded"]
    await bob.wait_for(lambda d: d["stats"]["framesDecoded"] > resumed + 10, "decoding after camera on")
    # One fake camera: switching is offered but disabled.
    await expect(alice.page.get_by_role("button", name="Switch camera")).to_be_disabled()

    await alice.hang_up()
    await expect(alice.page.locator("#home-view")).to_be_visible()
    await expect(bob.page.locator("#home-view")).to_be_visible(timeout=STEP)
    await bob.expect_notice("Call ended")
    assert (await bob.diagnostics())["phase"] == "idle"
    # Both recents show the answered call with its duration.
    for person in (alice, bob):
        first = person.page.locator("#recents li").first
        await expect(first).to_contain_text("video ·", timeout=STEP)
        await expect(first).not_to_have_class("missed")
    await expect(alice.page.locator("#recents li").first).to_contain_text("Outgoing video")
    await expect(bob.page.locator("#recents li").first).to_contain_text("Incoming video")
    close_notice = alice.page.get_by_role("button", name="Dismiss notice")  # "Call ended"
    if await close_notice.is_visible():
        await close_notice.click()
    await alice.page.screenshot(path=screenshots / "home.png")


async def test_audio_call_shows_the_avatar_and_no_camera_controls(people: PersonFactory) -> None:
    bob = await people("bob")
    alice = await people("alice")
    await alice.call("bob", "audio")
    await bob.expect_ringing("alice")
    await expect(bob.page.locator("#incoming-kind")).to_have_text("Incoming audio call")
    await bob.accept()
    await expect(bob.page.locator("#call-state")).to_have_text(re.compile(r"^\d\d:\d\d$"), timeout=STEP)
    first = await alice.wait_for(lambda d: (d.get("stats") or {}).get("audioPacketsReceived", 0) > 0,
                                 "receiving audio")
    await alice.wait_for(
        lambda d: d["stats"]["audioPacketsReceived"] > first["stats"]["audioPacketsReceived"] + 20,
        "receiving more audio")
    diag = await alice.diagnostics()
    assert diag["media"] == "audio" and diag["stats"]["framesDecoded"] == 0
    for person in (alice, bob):
        await expect(person.page.locator("#remote-avatar")).to_be_visible()
        await expect(person.page.get_by_role("button", name="Camera off")).to_be_hidden()
        await expect(person.page.get_by_role("button", name="Switch camera")).to_be_hidden()
        await expect(person.page.locator("#local-video")).to_be_hidden()
    await bob.hang_up()
    await expect(alice.page.locator("#home-view")).to_be_visible(timeout=STEP)
