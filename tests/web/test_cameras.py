"""Cameras: a device without one calls on audio only; a device with several switches between them."""

from __future__ import annotations

from playwright.async_api import Playwright, expect

from tests.live import LiveServer
from tests.web.conftest import PersonFactory, launch


async def test_no_camera_then_switching_cameras(playwright: Playwright, server: LiveServer,
                                               people: PersonFactory) -> None:
    no_camera = await launch(playwright, cameras=0)
    three_cameras = await launch(playwright, cameras=3)
    try:
        bob = await people("bob", b=three_cameras)
        alice = await people("alice", b=no_camera)
        await alice.call("bob", "video")
        await alice.expect_alert("No camera was found: the call continues with audio only.")
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
