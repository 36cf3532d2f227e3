"""The app open in two tabs of one browser: the tabs share the device (its token), and the
server keeps one connection per device. One tab runs the device; the other says so and offers
"Use here" (docs/web.md, "Several tabs")."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets
from playwright.async_api import Page, expect

from tests.web.conftest import PersonFactory
from tests.web.people import STEP, Person

NO_WEB_LOCKS = "Object.defineProperty(navigator, 'locks', {value: undefined});"
# the device's lock (tabs.js) is held, and one request waits for it
WAITING_FOR_THE_LOCK = """async () => {
  const name = `facecall-device-${window.facecall.identity.deviceId}`;
  const { held, pending } = await navigator.locks.query();
  const mine = (locks) => locks.filter((lock) => lock.name === name).length;
  return mine(held) === 1 && mine(pending) === 1;
}"""


async def second_tab(person: Person) -> Page:
    """Open the app again in a new tab of ``person``'s browser (same localStorage)."""
    page = await person.context.new_page()
    sockets: list[object] = []
    page.on("websocket", lambda ws: sockets.append(ws))
    page.sockets = sockets  # type: ignore[attr-defined]
    await page.goto(f"{person.base_url}/")
    await expect(page.locator("body[data-ready=true]")).to_be_attached()
    return page


async def test_a_second_tab_leaves_the_device_to_the_first(people: PersonFactory) -> None:
    """The second tab does not take the device: the first keeps its one connection and rings;
    "Use here" moves the device to the second tab, and the first steps back."""
    bob = await people("bob")
    sockets: list[object] = []
    bob.page.on("websocket", lambda ws: sockets.append(ws))
    tab = await second_tab(bob)
    await expect(tab.locator("#elsewhere-view")).to_be_visible(timeout=STEP)
    # the second tab has settled: it waits for the device's lock, which the first one holds
    for _ in range(50):
        if await tab.evaluate(WAITING_FOR_THE_LOCK):
            break
        await asyncio.sleep(0.1)
    assert await tab.evaluate(WAITING_FOR_THE_LOCK)
    assert sockets == [] and tab.sockets == []  # type: ignore[attr-defined]
    assert await bob.page.evaluate("window.facecall.signaling") == "open"
    assert await tab.evaluate("window.facecall.signaling") == "closed"

    alice = await people("alice")
    await alice.call("bob", "audio")
    await bob.expect_ringing("alice")
    await expect(tab.get_by_role("dialog", name="alice")).to_be_hidden()
    await alice.hang_up()
    await expect(bob.page.get_by_role("dialog", name="alice")).to_be_hidden(timeout=STEP)

    await tab.get_by_role("button", name="Use here").click()
    await expect(tab.locator("#home-view")).to_be_visible(timeout=STEP)
    await expect(bob.page.locator("#elsewhere-view")).to_be_visible(timeout=STEP)
    await expect(tab.locator("#connection")).to_be_hidden(timeout=STEP)
    assert await bob.page.evaluate("window.facecall.signaling") == "closed"
    await alice.call("bob", "audio")
    await expect(tab.get_by_role("dialog", name="alice")).to_be_visible(timeout=STEP)
    await expect(bob.page.get_by_role("dialog", name="alice")).to_be_hidden()
    await tab.get_by_role("button", name="Accept").click()
    await alice.wait_for(lambda d: d["phase"] == "active", "the call is up")
    await tab.close()


async def test_without_web_locks_the_replaced_tab_stops(people: PersonFactory) -> None:
    """Where tabs cannot coordinate (Web Locks need HTTPS or localhost), the second tab takes
    the device; the server closes the first one's connection with 4409 and the first tab stays
    closed instead of taking the device back (which made the two take turns for ever)."""
    bob = await people("bob")
    await bob.context.add_init_script(NO_WEB_LOCKS)
    await bob.page.reload()  # this tab without Web Locks too
    await expect(bob.page.locator("#home-view")).to_be_visible(timeout=STEP)
    tab = await second_tab(bob)
    await expect(tab.locator("#home-view")).to_be_visible(timeout=STEP)
    await expect(bob.page.locator("#elsewhere-view")).to_be_visible(timeout=STEP)
    await asyncio.sleep(3)
    assert len(tab.sockets) == 1  # type: ignore[attr-defined]
    assert await tab.evaluate("window.facecall.signaling") == "open"
    assert await bob.page.evaluate("window.facecall.signaling") == "closed"
    await tab.close()


async def test_the_tab_that_holds_the_device_takes_it_back_from_a_stale_connection(
        people: PersonFactory) -> None:
    """Two tabs trade the device quickly: the tab that just lost the lock may still get its
    hello to the server after the new holder's, and the holder's connection is replaced (4409).
    The holder takes the device back (the stale tab is closing) instead of stepping back, which
    left no tab running the device. Here the stale connection is a raw one with the token."""
    bob = await people("bob")
    device = await bob.page.evaluate("JSON.parse(localStorage.getItem('facecall.device'))")
    ws_url = bob.base_url.replace("http", "ws", 1) + "/v1/signaling"
    async with websockets.connect(ws_url, additional_headers={
            "Authorization": f"Bearer {device['token']}"}) as stale:
        await stale.send(json.dumps({"v": 1, "id": "h", "type": "hello"}))
        assert json.loads(await stale.recv())["type"] == "welcome"
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:  # bob's tab takes the device back: this connection is replaced
                await asyncio.wait_for(stale.recv(), STEP / 1000)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4409
    await expect(bob.page.locator("#home-view")).to_be_visible(timeout=STEP)
    for _ in range(50):
        if await bob.page.evaluate("window.facecall.signaling") == "open":
            break
        await asyncio.sleep(0.1)
    assert await bob.page.evaluate("window.facecall.signaling") == "open"
    alice = await people("alice")
    await alice.call("bob", "audio")
    await bob.expect_ringing("alice")


async def test_a_waiting_tab_takes_over_when_the_running_one_closes_or_signs_out(
        people: PersonFactory) -> None:
    """The tab that shows "open in another tab" waits for the device: when the tab that runs it
    is closed, it takes over (calls ring there, not nowhere); when that tab signs out (the device
    is removed), it goes to sign-in instead of claiming calls ring elsewhere."""
    bob = await people("bob")
    tab = await second_tab(bob)
    await expect(tab.locator("#elsewhere-view")).to_be_visible(timeout=STEP)
    third = await second_tab(bob)
    await expect(third.locator("#elsewhere-view")).to_be_visible(timeout=STEP)
    await bob.page.close()
    for _ in range(150):  # one of the two waiting tabs gets the device
        shown = [await page.locator("#home-view").is_visible() for page in (tab, third)]
        if any(shown):
            break
        await asyncio.sleep(0.1)
    assert shown.count(True) == 1, shown
    running, waiting = (tab, third) if shown[0] else (third, tab)
    await expect(waiting.locator("#elsewhere-view")).to_be_visible()
    alice = await people("alice")
    await alice.call("bob", "audio")
    await expect(running.get_by_role("dialog", name="alice")).to_be_visible(timeout=STEP)
    await alice.hang_up()
    await expect(running.get_by_role("dialog", name="alice")).to_be_hidden(timeout=STEP)

    await running.get_by_role("button", name="Sign out").click()
    await expect(waiting.locator("#auth-view")).to_be_visible(timeout=STEP)
    await expect(waiting.locator("#alert")).to_contain_text("removed or signed out")
    await tab.close()
    await third.close()


async def test_a_reload_keeps_the_device_in_the_reloaded_tab(people: PersonFactory) -> None:
    """A waiting tab gets the lock for a moment while the tab that runs the device reloads; the
    reloaded tab takes the device back (it ran it: sessionStorage says so) and the waiting tab
    goes on waiting, instead of a reload moving the device to a tab in the background."""
    bob = await people("bob")
    tab = await second_tab(bob)
    await expect(tab.locator("#elsewhere-view")).to_be_visible(timeout=STEP)
    await bob.page.reload()
    await expect(bob.page.locator("#home-view")).to_be_visible(timeout=STEP)
    await asyncio.sleep(3)  # past the waiting tab's take-over delay
    await expect(tab.locator("#elsewhere-view")).to_be_visible()
    assert await bob.page.evaluate("window.facecall.signaling") == "open"
    assert await tab.evaluate("window.facecall.signaling") == "closed"
    alice = await people("alice")
    await alice.call("bob", "audio")
    await bob.expect_ringing("alice")
    await tab.close()
