"""Cameras: a device without one calls on audio only; a device with several switches between them."""

from __future__ import annotations

import asyncio

from playwright.async_api import Playwright, expect

from tests.live import LiveServer
from tests.web.conftest import PersonFactory, launch
from tests.web.people import STEP


async def test_no_camera_then_switching_cameras(playwright: Playwright, server: LiveServer,
                                               people: PersonFactory) -> None:
    no_camera = await launch(playwright, cameras=0)
    three_cameras = await launch(playwright, cameras=3)
    try:
        bob = await people("bob", b=three_cameras)
        alice = await people("alice", b=no_camera)
        await alice.call("bob", "video")
        await alice.expect_notice("No camera was found: the call continues with audio only.")
        await bob.expect_ringing("alice")
        await bob.accept()

        await alice.wait_connected()  # alice sees bob's camera
        bob_view = await bob.wait_for(lambda d: (d.get("stats") or {}).get("audioPacketsReceived", 0) > 0,
                                      "hearing alice")
        assert bob_view["stats"]["framesDecoded"] == 0  # alice sends no video
        local = (await alice.diagnostics())["local"]
        assert local["camera"] is False and local["cameras"] == 0
        await expect(alice.page.get_by_role("button", name="Camera off")).to_be_disabled()

        # Bob has three cameras: "Switch camera" goes through them in turn. (Chromium's second fake
        # camera delivers Y16 depth frames, which no encoder takes; the third is a normal one.)
        before = (await bob.diagnostics())["local"]
        assert before["cameras"] == 3 and before["cameraLabel"] == "fake_device_0"
        switch = bob.page.get_by_role("button", name="Switch camera")
        await expect(switch).to_be_enabled()
        for label in ("fake_device_1", "fake_device_2"):
            await switch.click()
            now = await bob.wait_for(lambda d, label=label: d["local"]["cameraLabel"] == label,
                                     f"using {label}")
            assert now["local"]["camera"] is True
        frames = (await alice.diagnostics())["stats"]["framesDecoded"]
        await alice.wait_for(lambda d: d["stats"]["framesDecoded"] > frames + 10, "decoding the other camera")
        await switch.click()
        await bob.wait_for(lambda d: d["local"]["cameraLabel"] == "fake_device_0", "back to the first camera")
        frames = (await alice.diagnostics())["stats"]["framesDecoded"]
        await alice.wait_for(lambda d: d["stats"]["framesDecoded"] > frames + 10, "decoding the first camera")
        await alice.hang_up()
        await expect(bob.page.locator("#home-view")).to_be_visible()
    finally:
        await no_camera.close()
        await three_cameras.close()


# getUserMedia that takes 1.5 s (a permission prompt, a slow camera) and keeps what it returned
SLOW_CAMERA = """
window.__captures = [];
const original = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
navigator.mediaDevices.getUserMedia = async (constraints) => {
  await new Promise((resolve) => setTimeout(resolve, 1500));
  const stream = await original(constraints);
  window.__captures.push(stream);
  return stream;
};
"""
LIVE_TRACKS = "window.__captures.flatMap((s) => s.getTracks()).filter((t) => t.readyState === 'live').length"


async def test_ending_a_call_while_the_camera_starts_leaves_it_off(people: PersonFactory) -> None:
    """End is pressed while the browser is still starting the camera: when the capture arrives
    it is stopped at once (the camera light and the microphone go off), and the next call's
    capture is the only one live while it lasts."""
    await people("bob")
    alice = await people("alice")
    await alice.context.add_init_script(SLOW_CAMERA)
    await alice.page.reload()
    await expect(alice.page.locator("#home-view")).to_be_visible(timeout=STEP)
    await alice.call("bob", "video")
    await expect(alice.page.locator("#call-state")).to_have_text("Starting camera…")
    await alice.hang_up()
    await expect(alice.page.locator("#home-view")).to_be_visible(timeout=STEP)
    for _ in range(50):  # the capture arrives 1.5 s after it was asked for
        if await alice.page.evaluate("window.__captures.length") == 1:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)
    assert await alice.page.evaluate("window.__captures.length") == 1
    assert await alice.page.evaluate(LIVE_TRACKS) == 0

    await alice.call("bob", "video")
    await expect(alice.page.locator("#call-state")).to_have_text("Ringing…", timeout=STEP)
    assert await alice.page.evaluate(LIVE_TRACKS) == 2  # this call's microphone and camera
    await alice.hang_up()
    await expect(alice.page.locator("#home-view")).to_be_visible(timeout=STEP)
    assert await alice.page.evaluate(LIVE_TRACKS) == 0
