"""Browser <-> Python SDK: a shared screen, and an SDK ICE restart (a new peer connection with a
new certificate) that the browser answers on a new peer connection, showing the new code."""

from __future__ import annotations

import asyncio

from playwright.async_api import expect

from tests.live import MakeDevice
from tests.web.conftest import PersonFactory
from tests.web.people import STEP
from tests.web.test_python_peer import browser_calls_sdk, browser_video_reaches, sdk_calls_browser, sdk_device  # noqa: F401 (fixture)
from tests.web.test_security_code import shown_code


async def until(predicate, what: str, timeout: float = STEP / 1000) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, what
        await asyncio.sleep(0.1)


async def test_the_sdk_sees_a_browser_s_shared_screen(people: PersonFactory,
                                                     sdk_device: MakeDevice) -> None:  # noqa: F811
    bot = await sdk_device("bot")
    alice = await people("alice")
    incoming = await browser_calls_sdk(alice, bot)
    await alice.page.locator("#share-screen").click()
    await expect(alice.page.locator("#share-screen")).to_have_attribute("aria-pressed", "true", timeout=STEP)
    await until(lambda: incoming.remote_media.get("screen") is True, "the SDK told of the screen")
    sizes = await browser_video_reaches(incoming, 20)
    width, height = sizes[-1]  # the screen's frames (about 16:9), not the camera's (4:3, scaled
    assert width / height > 1.6, sizes  # down or not)
    await alice.page.locator("#share-screen").click()
    await until(lambda: incoming.remote_media.get("screen") is False, "the SDK told the share ended")
    await alice.hang_up()


async def test_a_browser_placed_call_survives_an_sdk_ice_restart(people: PersonFactory,
                                                                 sdk_device: MakeDevice) -> None:  # noqa: F811
    """The browser called; the SDK (the callee) restarts ICE — as its watchdog does after a few
    silent seconds — by offering a new peer connection with `ice_restart: true`. The browser
    applies that offer to its existing RTCPeerConnection, whose RTP header-extension ids were
    its own: Chromium refuses it ("RTP extension ID reassignment not supported"), every restart
    fails and the call ends `connection_lost`. It must reconnect, with matching codes."""
    bot = await sdk_device("bot")
    alice = await people("alice")
    incoming = await browser_calls_sdk(alice, bot)
    code = await shown_code(alice)
    assert incoming.security_code == code

    # the browser is the caller and offers; make the SDK restart the way it does for a path it
    # finds dead: it offers on a new peer connection
    await incoming.restart_ice()
    await incoming.wait_connected(30)
    await until(lambda: incoming.security_code is not None, "the SDK's new code")
    await expect(alice.page.locator("#security-code")).to_have_text(incoming.security_code or "",
                                                                     timeout=STEP)


async def test_an_sdk_caller_s_ice_restart_renews_the_browser_s_code(people: PersonFactory,
                                                                    sdk_device: MakeDevice) -> None:  # noqa: F811
    """The SDK called and restarts ICE (a new peer connection, a new certificate): the browser
    must show the new connection's code, the one the SDK shows, never the old one."""
    alice = await people("alice")
    # keep the page's peer connections, to ask the page's own code function about the live one
    await alice.context.add_init_script(KEEP_PCS)
    await alice.page.reload()
    await expect(alice.page.locator("#home-view")).to_be_visible(timeout=STEP)
    bot = await sdk_device("bot")
    outgoing = await sdk_calls_browser(bot, alice)
    code = await shown_code(alice)
    assert outgoing.security_code == code
    await outgoing.restart_ice()
    await outgoing.wait_connected(30)
    frames = (await alice.diagnostics())["stats"]["framesDecoded"]
    await alice.wait_for(lambda d: d["stats"]["framesDecoded"] > frames + 30, "decoding after the restart")
    sdk_code = outgoing.security_code
    assert sdk_code is not None and sdk_code != code  # a new certificate
    assert await alice.page.evaluate(LIVE_CODE) == sdk_code  # the page's live connection's
    await expect(alice.page.locator("#security-code")).to_have_text(sdk_code, timeout=STEP)


KEEP_PCS = """
(() => {
  const Original = window.RTCPeerConnection;
  window.__pcs = [];
  window.RTCPeerConnection = function (...args) {
    const pc = new Original(...args);
    window.__pcs.push(pc);
    return pc;
  };
  window.RTCPeerConnection.prototype = Original.prototype;
})();
"""
LIVE_CODE = """async () => {
  const { peerSecurityCode } = await import('/js/security-code.js');
  const live = window.__pcs.filter((pc) => pc.connectionState !== 'closed');
  return live.length === 1 ? await peerSecurityCode(live[0], 2000) : `live: ${live.length}`;
}"""
