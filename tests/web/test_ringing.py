"""Ringing on every device of the callee, and how it stops: answered elsewhere, declined, cancelled."""

from __future__ import annotations

from playwright.async_api import expect

from tests.web.conftest import PersonFactory
from tests.web.people import STEP


async def test_every_device_rings_and_one_answers(people: PersonFactory) -> None:
    bob_laptop = await people("bob", device_name="laptop")
    bob_phone = await people("bob", signup=False, device_name="phone")
    await expect(bob_phone.page.locator("#devices li")).to_have_count(2)
    alice = await people("alice")

    await alice.call("bob", "video")
    await bob_laptop.expect_ringing("alice")
    await bob_phone.expect_ringing("alice")
    for device in (bob_laptop, bob_phone):  # the ringtone sounds on both
        await device.wait_for(lambda d: d["ringtone"] is True, "playing the ringtone")
    await bob_phone.accept()

    await bob_laptop.expect_notice("Answered on another device")
    await expect(bob_laptop.page.locator("#incoming")).to_be_hidden()
    assert await bob_laptop.ring_state() == {"phase": "idle", "rings": [], "ringtone": False}
    await bob_phone.wait_connected()
    await alice.wait_connected()

    await expect(bob_laptop.page.locator("#recents li").first).to_contain_text("in progress")

    await bob_phone.hang_up()
    await alice.expect_notice("Call ended")
    await expect(alice.page.locator("#home-view")).to_be_visible()
    # the laptop hears nothing of the end of a call taken on the phone; its Recents catch up
    await expect(bob_laptop.page.locator("#recents li").first).not_to_contain_text(
        "in progress", timeout=STEP)


async def test_decline_stops_every_device(people: PersonFactory) -> None:
    bob_laptop = await people("bob", device_name="laptop")
    bob_phone = await people("bob", signup=False, device_name="phone")
    alice = await people("alice")

    await alice.call("bob", "audio")
    await bob_laptop.expect_ringing("alice")
    await expect(bob_laptop.page.locator("#incoming-kind")).to_have_text("Incoming audio call")
    await bob_phone.expect_ringing("alice")
    await bob_laptop.decline()

    await bob_phone.expect_notice("Declined on another device")
    await expect(bob_phone.page.locator("#incoming")).to_be_hidden()
    await alice.expect_notice("bob declined the call")
    await expect(alice.page.locator("#home-view")).to_be_visible()
    await expect(alice.page.locator("#recents li").first).to_contain_text("Outgoing audio · declined")
    for device in (bob_laptop, bob_phone):  # the declining device's Recents too
        await expect(device.page.locator("#recents li").first).to_contain_text(
            "Incoming audio · declined", timeout=STEP)


async def test_caller_cancels_and_callee_sees_a_missed_call(people: PersonFactory) -> None:
    bob = await people("bob")
    alice = await people("alice")

    await alice.call("bob", "video")
    await bob.expect_ringing("alice")
    await expect(alice.page.locator("#call-state")).to_have_text("Ringing…", timeout=STEP)
    await alice.hang_up()
    await alice.expect_notice("Call cancelled")

    await bob.expect_notice("Missed call from alice")
    await expect(bob.page.locator("#incoming")).to_be_hidden()
    missed = bob.page.locator("#recents li.missed")
    await expect(missed).to_have_count(1, timeout=STEP)
    await expect(missed).to_contain_text("Missed video call")
