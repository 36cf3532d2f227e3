"""Share screen in the browser against races: a picker answered late (after the call ended,
pressed twice), and the other side's reload replacing the peer connection while the screen is
being put on its sender (found by an audit)."""

from __future__ import annotations

from typing import Any

from playwright.async_api import expect

from tests.web.conftest import PersonFactory
from tests.web.people import STEP
from tests.web.test_screen_share import SHARING, decodes

# getDisplayMedia that waits for window.__release() before asking the real one; every stream it
# gave is kept in window.__displayStreams, and every call counted in window.__displayCalls
LATE_PICKER = """
(() => {
  const real = navigator.mediaDevices.getDisplayMedia.bind(navigator.mediaDevices);
  window.__displayStreams = [];
  window.__displayCalls = 0;
  navigator.mediaDevices.getDisplayMedia = async (constraints) => {
    window.__displayCalls += 1;
    await new Promise((resolve) => { window.__release = resolve; });
    const stream = await real(constraints);
    window.__displayStreams.push(stream);
    return stream;
  };
})();
"""
LIVE_SCREEN_TRACKS = """() => window.__displayStreams.flatMap((s) => s.getTracks())
  .filter((t) => t.readyState !== 'ended').length"""
NO_LIVE_SCREEN_TRACK = f"({LIVE_SCREEN_TRACKS})() === 0"
# the first replaceTrack of a screen track waits for window.__go() (window.__held says it
# waits): a window for the other side's reload to replace the peer connection under it
SLOW_REPLACE = """
(() => {
  const real = RTCRtpSender.prototype.replaceTrack;
  let once = true;
  RTCRtpSender.prototype.replaceTrack = async function (track) {
    if (once && track && track.label.startsWith("screen")) {
      once = false;
      window.__held = true;
      await new Promise((resolve) => { window.__go = resolve; });
    }
    return real.call(this, track);
  };
})();
"""


async def until(person: Any, expression: str) -> None:
    for _ in range(150):
        if await person.page.evaluate(expression):
            return
        await person.page.wait_for_timeout(100)
    raise AssertionError(expression)


async def late_picker(person: Any) -> None:
    await person.context.add_init_script(LATE_PICKER)
    await person.page.reload()
    await expect(person.page.locator("#home-view")).to_be_visible(timeout=STEP)


async def test_a_picker_answered_after_the_call_ended_leaves_no_capture(people: PersonFactory) -> None:
    bob = await people("bob")
    alice = await people("alice")
    await late_picker(alice)
    await alice.in_call_with(bob)
    share = alice.page.locator("#share-screen")
    await share.click()
    await until(alice, "window.__displayCalls === 1")
    await share.click()  # pressed twice quickly: one picker
    await alice.hang_up()
    await expect(bob.page.locator("#home-view")).to_be_visible(timeout=STEP)
    await alice.page.evaluate("window.__release()")
    await until(alice, "window.__displayStreams.length === 1")
    await until(alice, NO_LIVE_SCREEN_TRACK)  # the late capture is stopped as it comes
    assert await alice.page.evaluate("window.__displayCalls") == 1
    assert (await alice.diagnostics())["phase"] == "idle"

    # the next call can share at once
    await alice.in_call_with(bob)
    await share.click()
    await until(alice, "window.__displayCalls === 2")
    await alice.page.evaluate("window.__release()")
    await expect(bob.page.locator("#remote-note")).to_have_text(SHARING, timeout=STEP)
    await alice.hang_up()
    await until(alice, NO_LIVE_SCREEN_TRACK)
    assert alice.errors == []


async def test_the_other_side_reloads_while_the_screen_is_being_put_on_the_sender(
        people: PersonFactory) -> None:
    bob = await people("bob")
    alice = await people("alice")
    await alice.context.add_init_script(SLOW_REPLACE)
    await alice.page.reload()
    await expect(alice.page.locator("#home-view")).to_be_visible(timeout=STEP)
    await alice.in_call_with(bob)
    await alice.page.locator("#share-screen").click()
    await until(alice, "window.__held === true")
    await bob.page.reload()
    await bob.wait_connected()
    await alice.page.evaluate("window.__go()")
    # until the share is done with, either way: the screen sent, or an error said
    await until(alice, "!document.getElementById('alert').hidden"
                       " || document.getElementById('share-screen').getAttribute('aria-pressed') === 'true'")
    diag = await alice.diagnostics()
    alert = await alice.page.locator("#alert").is_visible()
    # the screen she picked goes on the connection that replaced the old one: no error about
    # a closed peer connection, bob sees her screen
    assert not alert
    assert diag["local"]["screen"] is True
    await expect(bob.page.locator("#remote-note")).to_have_text(SHARING, timeout=STEP)
    await decodes(bob, (1100, 620), "decoding alice's screen")
