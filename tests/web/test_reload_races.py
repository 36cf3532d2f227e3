"""Reloads during a call, harder cases: both sides at once, a slow reload with a second tab
open, a page reloaded again before the server welcomed it, a reload during call waiting."""

from __future__ import annotations

import asyncio
import json
import re

from playwright.async_api import Route, WebSocketRoute, expect

from tests.live import LiveServer
from tests.web.conftest import PersonFactory
from tests.web.people import STEP
from tests.web.test_call_waiting import carol_calling_bob
from tests.web.test_reload import decodes_more, reload_in_call
from tests.web.test_tabs import WAITING_FOR_THE_LOCK, second_tab


async def test_both_sides_reloading_at_once_get_the_media_back(people: PersonFactory) -> None:
    """Both pages reload at the same moment: each asks the other for the media anew
    (call.rejoin). The call must come back with pictures flowing both ways."""
    bob = await people("bob")
    alice = await people("alice")
    call_id = (await alice.in_call_with(bob))["callId"]
    for _ in range(4):
        await asyncio.gather(reload_in_call(alice), reload_in_call(bob))
        for who in (alice, bob):
            diag = await who.wait_connected()
            assert (diag["callId"], diag["phase"]) == (call_id, "active")
        await decodes_more(alice)
        await decodes_more(bob)


async def test_a_slow_reload_with_a_second_tab_open_keeps_the_call(people: PersonFactory) -> None:
    """Alice has the app open in a second tab (it waits for the device). Her call tab reloads,
    slowly (a slow network: the page takes 3 s to load). The second tab takes the device when
    the first lets go of it; the reloaded tab takes it back (it ran the device). The call must
    go on: the tab that held the device for a moment did not hold the call, and must not end
    it."""
    bob = await people("bob")
    alice = await people("alice")
    call_id = (await alice.in_call_with(bob))["callId"]
    tab = await second_tab(alice)
    for _ in range(50):  # it waits for the device
        if await tab.evaluate(WAITING_FOR_THE_LOCK):
            break
        await asyncio.sleep(0.1)
    assert await tab.evaluate(WAITING_FOR_THE_LOCK)

    async def slow(route: Route) -> None:
        await asyncio.sleep(3)
        await route.continue_()

    await alice.page.route("**/js/app.js*", slow)
    await reload_in_call(alice)  # today: "The call with bob ended while the page was reloading."
    await alice.page.unroute("**/js/app.js*")
    diag = await alice.wait_connected()
    assert (diag["callId"], diag["phase"]) == (call_id, "active")
    await decodes_more(bob)
    assert (await bob.diagnostics())["callId"] == call_id


async def test_a_page_reloaded_twice_before_its_welcome_keeps_the_call(people: PersonFactory) -> None:
    """Alice's page reloads, and reloads again before the server has welcomed the page in
    between (that page has taken the call it was to rejoin out of sessionStorage, and is not
    in it yet). The call goes on for both: once with the node having seen that page's hello
    (its welcome held back), once with nothing of it reaching the node."""
    bob = await people("bob")
    alice = await people("alice")
    call_id = (await alice.in_call_with(bob))["callId"]
    hold: dict[str, str | None] = {"next": None}  # how the next signaling connection is held
    hello = asyncio.Event()

    def route(ws: WebSocketRoute) -> None:
        held, hold["next"] = hold["next"], None  # only the first connection after the reload
        server = None if held == "hello" else ws.connect_to_server()

        def from_page(message: str | bytes) -> None:
            if json.loads(message).get("type") == "hello":
                hello.set()
            if server is not None:
                server.send(message)

        ws.on_message(from_page)
        if server is not None:
            server.on_message(lambda message: None if held else ws.send(message))

    await alice.page.route_web_socket(re.compile(r".*/v1/signaling.*"), route)
    for held in ("welcome", "hello"):
        hold["next"] = held
        hello.clear()
        await alice.page.reload()
        await asyncio.wait_for(hello.wait(), STEP / 1000)
        assert (await alice.diagnostics())["phase"] == "idle"  # not welcomed: not in the call yet
        await reload_in_call(alice)
        diag = await alice.wait_connected()
        assert (diag["callId"], diag["phase"]) == (call_id, "active"), held
        await decodes_more(alice)
        await decodes_more(bob)
        assert (await bob.diagnostics())["callId"] == call_id
    await expect(bob.page.locator("#call-view")).to_be_visible()
    assert not alice.errors and not bob.errors


async def test_a_reload_during_call_waiting_keeps_both(people: PersonFactory, server: LiveServer) -> None:
    """Bob is in a call with Alice and Carol's call waits (a banner). Bob reloads: he is back
    in the call with Alice, and Carol's call still waits for him; "End & accept" takes it."""
    bob = await people("bob")
    alice = await people("alice")
    bob_id, carol = await carol_calling_bob(server)
    try:
        call_id = (await alice.in_call_with(bob))["callId"]
        waiting = (await carol.request("call.start", to=[bob_id], media="audio"))["call_id"]
        banner = bob.page.get_by_role("dialog", name="carol is calling (audio)")
        await expect(banner).to_be_visible(timeout=STEP)
        await reload_in_call(bob)
        diag = await bob.wait_connected()
        assert diag["callId"] == call_id
        await expect(banner).to_be_visible(timeout=STEP)
        await expect(bob.page.locator("#incoming")).to_be_hidden()
        await banner.get_by_role("button", name="End & accept").click()
        answered = await carol.next_event("call.answered")
        assert answered["call_id"] == waiting
        await alice.expect_notice("Call ended")
    finally:
        await carol.close()

