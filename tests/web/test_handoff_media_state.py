"""What the other side shows after a handoff: the new device's media state, not the old one's
(a shared screen or a camera turned off on the old device stuck before an audit found it)."""

from __future__ import annotations

from playwright.async_api import expect

from tests.web.conftest import PersonFactory
from tests.web.people import STEP
from tests.web.test_screen_share import CAMERA, SHARING, decodes, shared_screen


async def test_the_sharer_moves_the_call_the_other_side_stops_saying_screen(people: PersonFactory) -> None:
    """Alice shares her screen on her laptop, then moves the call to her phone (camera on, no
    share there). Bob must show the phone's camera as a camera: no "sharing their screen" note,
    `remote.screen` false (the SDK resets its remote_media on call.handed_off; the page must too)."""
    laptop = await people("alice", device_name="laptop")
    phone = await people("alice", signup=False, device_name="phone")
    bob = await people("bob")
    await laptop.in_call_with(bob)
    await laptop.page.locator("#share-screen").click()
    note = bob.page.locator("#remote-note")
    await expect(note).to_have_text(SHARING, timeout=STEP)
    await decodes(bob, await shared_screen(laptop), "decoding the laptop's screen")

    phone_id = (await phone.diagnostics())["device"]
    await phone.page.get_by_role("button", name="Move video call here").click()
    await phone.wait_connected()
    await bob.wait_for(lambda d: d.get("remoteDevice") == phone_id, "in the call with the phone")
    await decodes(bob, CAMERA, "decoding the phone's camera")
    assert (await phone.diagnostics())["local"]["screen"] is False
    await expect(note).to_be_hidden(timeout=STEP)
    assert (await bob.diagnostics())["remote"]["screen"] is False
    await expect(bob.page.locator("#remote-video")).to_have_css("object-fit", "cover")


async def test_camera_off_on_the_old_device_does_not_hide_the_new_device_s_camera(
        people: PersonFactory) -> None:
    """Alice turns her camera off on the laptop, then moves the call to her phone, whose camera
    is on. Bob must see the phone's camera, not alice's avatar and "camera off"."""
    laptop = await people("alice", device_name="laptop")
    phone = await people("alice", signup=False, device_name="phone")
    bob = await people("bob")
    await laptop.in_call_with(bob)
    await laptop.page.get_by_role("button", name="Camera off").click()
    await expect(bob.page.locator("#remote-note")).to_have_text("alice: camera off", timeout=STEP)

    phone_id = (await phone.diagnostics())["device"]
    await phone.page.get_by_role("button", name="Move video call here").click()
    await phone.wait_connected()
    await bob.wait_for(lambda d: d.get("remoteDevice") == phone_id, "in the call with the phone")
    await decodes(bob, CAMERA, "decoding the phone's camera")
    assert (await phone.diagnostics())["local"]["camera"] is True
    await expect(bob.page.locator("#remote-video")).to_be_visible(timeout=STEP)
    await expect(bob.page.locator("#remote-note")).to_be_hidden()
