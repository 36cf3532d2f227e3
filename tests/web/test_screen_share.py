"""Share screen in a browser call: the screen's track replaces the camera's on the same sender,
the other side is told (`call.media {screen: true}`) and shows it whole with a note, and the
camera comes back as it was when the share ends (pressed again, the browser's "Stop sharing",
the call ending, a reload).

Chromium's fake capture (`--use-fake-device-for-media-stream`, picker auto-accepted by
`--use-fake-ui-for-media-stream`) gives a "screen" (`screen:-3:0`) of the page's screen size
fitted to 16:9 at most 1280x720 — 1100x620 in these 1100x720 contexts — where the fake camera
is 640x480, so the shape of the frames bob decodes says which one alice sends: 4:3 for the
camera, about 16:9 for the screen. Not their exact size: under CPU load Chromium's sender scales
its frames down (480x360 for the camera in loaded runs), keeping their shape.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from playwright.async_api import expect

from tests.web.conftest import PersonFactory
from tests.web.people import STEP, Person

CAMERA = (640, 480)
SHARING = "alice is sharing their screen"

# the track the local preview shows (the shared screen while it is shared), kept for later
# (the size of its frames: as the preview plays them, once it does; the track's settings may
# give the screen's size before the first frame comes)
KEEP_PREVIEW_TRACK = """async () => {
  const video = document.getElementById('local-video');
  const track = video.srcObject.getVideoTracks()[0];
  window.__shared = track;
  while (!video.videoWidth) await new Promise((resolve) => setTimeout(resolve, 50));
  return [track.label, video.videoWidth, video.videoHeight];
}"""
# what the browser's own "Stop sharing" does: the capture ends (track.stop() from the page that
# stopped it fires no `ended`)
BROWSER_STOPS_SHARING = "window.__shared.dispatchEvent(new Event('ended'))"


def frames_of(source: tuple[int, int]) -> Callable[[dict[str, Any]], bool]:
    """Decoded frames of ``source`` (its width and height): its shape, at its size or scaled
    down by the sender (never up). 640x480 and 1100x620 differ in shape by a third; a frame
    scaled down to whole pixels keeps its shape within 2 %."""
    width, height = source

    def predicate(diag: dict[str, Any]) -> bool:
        stats = diag.get("stats") or {}
        w, h = stats.get("frameWidth") or 0, stats.get("frameHeight") or 0
        return 0 < w <= width and 0 < h <= height and abs(w * height / (h * width) - 1) < 0.02

    return predicate


async def shared_screen(person: Person) -> tuple[int, int]:
    """The size of the screen ``person`` shares (the track its preview shows, kept as
    ``window.__shared``)."""
    label, width, height = await person.page.evaluate(KEEP_PREVIEW_TRACK)
    assert label.startswith("screen:"), label
    assert (width, height) != CAMERA and width > height, (width, height)
    return width, height


async def decodes(person: Person, source: tuple[int, int], what: str) -> None:
    """``person`` decodes frames of ``source`` (``frames_of``), and goes on decoding them."""
    of_source = frames_of(source)
    first = await person.wait_for(of_source, f"{what} ({source[0]}x{source[1]} or its shape scaled down)")
    frames = first["stats"]["framesDecoded"]
    await person.wait_for(lambda d: of_source(d) and d["stats"]["framesDecoded"] > frames + 10,
                          f"{what}, on and on")


async def test_share_screen_then_back_to_the_camera(people: PersonFactory, screenshots: Path) -> None:
    bob = await people("bob")
    alice = await people("alice")
    await alice.in_call_with(bob)
    share = alice.page.locator("#share-screen")
    note = bob.page.locator("#remote-note")
    remote = bob.page.locator("#remote-video")
    await expect(share).to_be_visible()
    await expect(share).to_be_enabled()
    await expect(share).to_have_attribute("aria-pressed", "false")
    await expect(share).to_have_text("Share screen")
    await decodes(bob, CAMERA, "decoding alice's camera")

    # Alice shares: bob sees her screen whole, with a note; her preview shows it unmirrored.
    await share.click()
    await expect(note).to_have_text(SHARING, timeout=STEP)
    await expect(note).to_have_attribute("role", "status")
    await expect(remote).to_have_css("object-fit", "contain")
    await expect(remote).to_have_css("transform", "none")
    screen = await shared_screen(alice)
    await decodes(bob, screen, "decoding alice's screen")
    await expect(share).to_have_attribute("aria-pressed", "true")
    await expect(share).to_have_text("Stop sharing")
    local = alice.page.locator("#local-video")
    await expect(local).to_be_visible()
    await expect(local).to_have_css("transform", "none")
    await expect(local).to_have_attribute("aria-label", "Your shared screen")
    assert (await alice.diagnostics())["local"]["screen"] is True
    assert (await alice.diagnostics())["local"]["camera"] is False  # released while the screen is sent
    assert (await bob.diagnostics())["remote"] == {"audio": True, "video": True, "screen": True}
    switch = alice.page.get_by_role("button", name="Switch camera")
    await expect(switch).to_be_disabled()
    await expect(switch).to_have_attribute("title", "Not while you share your screen")
    await bob.page.screenshot(path=screenshots / "screen-share.png")  # bob's screen
    await alice.page.screenshot(path=screenshots / "screen-share-sender.png")

    # Pressed again: the camera again, the note gone, the screen's capture stopped.
    await share.click()
    await expect(note).to_be_hidden(timeout=STEP)
    await expect(remote).to_have_css("object-fit", "cover")
    await decodes(bob, CAMERA, "decoding alice's camera again")
    await expect(share).to_have_attribute("aria-pressed", "false")
    await expect(share).to_have_text("Share screen")
    await expect(local).to_have_attribute("aria-label", "Your camera")
    await expect(local).to_have_css("transform", "matrix(-1, 0, 0, 1, 0, 0)")  # a mirror again
    assert await alice.page.evaluate("window.__shared.readyState") == "ended"
    diag = await alice.diagnostics()
    assert diag["local"]["screen"] is False and diag["local"]["camera"] is True
    assert (await bob.diagnostics())["remote"] == {"audio": True, "video": True, "screen": False}

    # Camera off while sharing changes what comes back, not the screen bob sees.
    await share.click()
    await expect(note).to_have_text(SHARING, timeout=STEP)
    await decodes(bob, screen, "decoding alice's screen")
    await alice.page.get_by_role("button", name="Camera off").click()
    await expect(alice.page.get_by_role("button", name="Camera on")).to_have_attribute("aria-pressed", "true")
    await decodes(bob, screen, "still decoding alice's screen")
    await expect(note).to_have_text(SHARING)
    await share.click()  # the camera stays off: no video
    await expect(note).to_have_text("alice: camera off", timeout=STEP)
    await expect(bob.page.locator("#remote-avatar")).to_be_visible()
    await expect(remote).to_be_hidden()
    await expect(alice.page.locator("#local-video")).to_be_hidden()
    diag = await alice.diagnostics()
    assert diag["local"]["screen"] is False and diag["local"]["camera"] is False
    await alice.page.get_by_role("button", name="Camera on").click()
    await expect(note).to_be_hidden(timeout=STEP)
    await decodes(bob, CAMERA, "decoding alice's camera after camera on")

    # The browser's own "Stop sharing" (the capture ends): back to the camera.
    await share.click()
    await expect(note).to_have_text(SHARING, timeout=STEP)
    await decodes(bob, await shared_screen(alice), "decoding alice's screen")
    await alice.page.evaluate(BROWSER_STOPS_SHARING)
    await expect(note).to_be_hidden(timeout=STEP)
    await expect(share).to_have_attribute("aria-pressed", "false")
    await decodes(bob, CAMERA, "decoding alice's camera after the browser stopped the share")
    assert await alice.page.evaluate("window.__shared.readyState") == "ended"

    # The share ends with the call.
    await share.click()
    await expect(note).to_have_text(SHARING, timeout=STEP)
    await shared_screen(alice)
    await alice.hang_up()
    await expect(bob.page.locator("#home-view")).to_be_visible(timeout=STEP)
    assert await alice.page.evaluate("window.__shared.readyState") == "ended"
    assert alice.errors == [] and bob.errors == []


async def test_a_shared_screen_across_reloads_and_a_move(people: PersonFactory) -> None:
    """Bob's page reloads while alice shares: his new page is told again and shows her screen.
    Alice's page reloads: the share is not kept, her camera comes back. Bob moves the call to
    his phone while alice shares: the phone is told and shows her screen."""
    bob = await people("bob", device_name="laptop")
    phone = await people("bob", signup=False, device_name="phone")
    alice = await people("alice")
    await alice.in_call_with(bob)
    share = alice.page.locator("#share-screen")
    note = bob.page.locator("#remote-note")
    await share.click()
    await expect(note).to_have_text(SHARING, timeout=STEP)
    screen = await shared_screen(alice)
    await decodes(bob, screen, "decoding alice's screen")

    await bob.page.reload()
    await bob.wait_connected()
    await expect(note).to_have_text(SHARING, timeout=STEP)
    await expect(bob.page.locator("#remote-video")).to_have_css("object-fit", "contain")
    await decodes(bob, screen, "decoding alice's screen after reloading")

    await alice.page.reload()
    await alice.wait_connected()
    await expect(share).to_have_attribute("aria-pressed", "false")
    await expect(note).to_be_hidden(timeout=STEP)
    await decodes(bob, CAMERA, "decoding alice's camera after her reload")
    assert (await bob.diagnostics())["remote"]["screen"] is False
    assert (await alice.diagnostics())["local"]["screen"] is False

    await share.click()
    await expect(note).to_have_text(SHARING, timeout=STEP)
    screen = await shared_screen(alice)
    await phone.page.get_by_role("button", name="Move video call here").click()
    await phone.wait_connected()
    await expect(phone.page.locator("#remote-note")).to_have_text(SHARING, timeout=STEP)
    await expect(phone.page.locator("#remote-video")).to_have_css("object-fit", "contain")
    await decodes(phone, screen, "decoding alice's screen on the phone")
    await bob.expect_notice("The call moved to another device")
    await alice.hang_up()
    await expect(phone.page.locator("#home-view")).to_be_visible(timeout=STEP)
    assert alice.errors == [] and bob.errors == [] and phone.errors == []


# a browser whose picker is closed or refused (or fails otherwise: window.__displayError)
REFUSED_PICKER = """
navigator.mediaDevices.getDisplayMedia = async () => {
  throw new DOMException("Permission denied by user", window.__displayError || "NotAllowedError");
};
"""


async def test_audio_calls_and_a_refused_picker(people: PersonFactory) -> None:
    bob = await people("bob")
    alice = await people("alice")
    await alice.context.add_init_script(REFUSED_PICKER)
    await alice.page.reload()
    await expect(alice.page.locator("#home-view")).to_be_visible(timeout=STEP)
    share = alice.page.locator("#share-screen")

    # An audio call has no video to replace: the button is there, disabled, and says why.
    await alice.call("bob", "audio")
    await bob.expect_ringing("alice")
    await bob.accept()
    await expect(alice.page.locator("#call-state")).to_have_text(re.compile(r"^\d\d:\d\d$"), timeout=STEP)
    await expect(share).to_be_visible()
    await expect(share).to_be_disabled()
    await expect(share).to_have_attribute("title",
                                          "Screen sharing needs a video call: an audio call sends no video")
    await alice.hang_up()
    await expect(bob.page.locator("#home-view")).to_be_visible(timeout=STEP)

    # A video call: the picker is refused. The call goes on as it was, with a notice.
    await alice.in_call_with(bob)
    await expect(share).to_be_enabled()
    await share.click()
    await alice.expect_notice("Screen sharing was cancelled: the call goes on as before.")
    await expect(alice.page.get_by_role("alert")).to_be_hidden()
    await expect(share).to_have_attribute("aria-pressed", "false")
    await decodes(bob, CAMERA, "decoding alice's camera")
    await expect(bob.page.locator("#remote-note")).to_be_hidden()
    diag = await alice.diagnostics()
    assert diag["phase"] == "active" and diag["local"]["screen"] is False and diag["local"]["camera"] is True

    # Another failure is an error, and the call goes on as well.
    await alice.page.evaluate("window.__displayError = 'NotReadableError'")
    await share.click()
    await alice.expect_alert(
        "Your screen could not be shared: the system did not let the browser capture it.")
    await decodes(bob, CAMERA, "still decoding alice's camera")
    assert (await alice.diagnostics())["phase"] == "active"
    await alice.hang_up()
    await expect(bob.page.locator("#home-view")).to_be_visible(timeout=STEP)
    assert alice.errors == [] and bob.errors == []
