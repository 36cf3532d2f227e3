"""A reload during a call: the page comes back in the call and the media with it
(docs/protocol.md, "Going away" and "Rejoining the media"); a closed tab ends the call."""

from __future__ import annotations

import asyncio
import re

import pytest
from playwright.async_api import expect

from facecall.client import CallState, EndReason
from tests.live import LiveServer, MakeDevice
from tests.web.conftest import PersonFactory
from tests.web.people import STEP, Person
from tests.web.test_python_peer import browser_calls_sdk, browser_video_reaches, sdk_device  # noqa: F401 (fixture)


async def reload_in_call(person: Person) -> None:
    await person.page.reload()
    await expect(person.page.locator("#call-view")).to_be_visible(timeout=STEP)


async def decodes_more(person: Person, frames: int = 10) -> None:
    """The remote video of ``person``'s call keeps decoding."""
    first = (await person.diagnostics())["stats"]["framesDecoded"]
    await person.wait_for(lambda d: (d.get("stats") or {}).get("framesDecoded", 0) > first + frames,
                          "decoding more frames")


async def test_a_reload_goes_on_in_the_call(people: PersonFactory) -> None:
    """Either side reloads, twice: the same call goes on, pictures flow both ways again, the
    duration goes on from where it was, and nobody is told the call ended."""
    bob = await people("bob")
    alice = await people("alice")
    call_id = (await alice.in_call_with(bob))["callId"]
    await asyncio.sleep(2.2)  # the clock past 00:02

    for who, other in ((alice, bob), (bob, alice)):
        await who.page.get_by_role("button", name="Mute").click()
        await reload_in_call(who)
        diag = await who.wait_connected()
        assert (diag["callId"], diag["phase"]) == (call_id, "active")
        await decodes_more(who)
        await decodes_more(other)
        clock = await who.page.locator("#call-state").text_content()
        assert clock is not None and re.fullmatch(r"\d\d:\d\d", clock) and clock >= "00:02", clock
        # still muted after the reload, and the other side was told again
        assert (await who.diagnostics())["local"]["muted"] is True
        await expect(other.page.locator("#remote-note")).to_have_text(f"{who.username}: muted",
                                                                      timeout=STEP)
        await who.page.get_by_role("button", name="Unmute").click()
        await expect(other.page.locator("#remote-note")).to_be_hidden(timeout=STEP)
        assert (await other.diagnostics())["callId"] == call_id

    await alice.hang_up()
    await expect(bob.page.locator("#home-view")).to_be_visible(timeout=STEP)
    await bob.expect_notice("Call ended")
    assert not alice.errors and not bob.errors


async def test_a_caller_reloading_while_it_rings_is_answered_as_before(people: PersonFactory) -> None:
    bob = await people("bob")
    alice = await people("alice")
    await alice.call("bob", "audio")
    await bob.expect_ringing("alice")
    await reload_in_call(alice)
    await expect(alice.page.locator("#call-state")).to_have_text("Ringing…", timeout=STEP)
    await bob.accept()
    await alice.wait_for(lambda d: d["phase"] == "active", "in the call")
    await bob.wait_for(lambda d: d["phase"] == "active", "in the call")
    await bob.hang_up()
    await expect(alice.page.locator("#home-view")).to_be_visible(timeout=STEP)


@pytest.mark.server_settings(unload_grace=2.0)  # 10 s by default
async def test_a_closed_tab_ends_the_call_as_a_hang_up(people: PersonFactory, server: LiveServer) -> None:
    """The page cannot tell a reload from a close: a closed tab's call ends after the server's
    unload grace (here 2 s), as hung up, not after the resume grace (20 s, the default)."""
    assert server.settings.unload_grace < 16 < server.settings.resume_grace  # the wait below tells them apart
    bob = await people("bob")
    alice = await people("alice")
    await alice.in_call_with(bob)
    await alice.page.close(run_before_unload=True)
    # well before the 20 s resume grace, and "Call ended", not "the connection was lost"
    await expect(bob.page.locator("#home-view")).to_be_visible(timeout=16_000)
    await expect(bob.page.locator("#notice p")).to_have_text("Call ended")


async def test_a_browser_reloading_in_a_call_with_the_sdk(people: PersonFactory,
                                                          sdk_device: MakeDevice) -> None:  # noqa: F811
    """The Python SDK is asked for the media anew (call.rejoin) and offers: its call goes on,
    and it decodes the browser's camera again."""
    bot = await sdk_device("bot")
    alice = await people("alice")
    incoming = await browser_calls_sdk(alice, bot)
    rejoined = asyncio.get_running_loop().create_future()
    incoming.on("rejoined", lambda event: rejoined.done() or rejoined.set_result(event))

    await reload_in_call(alice)
    await alice.wait_connected()
    await decodes_more(alice)
    await asyncio.wait_for(rejoined, STEP / 1000)
    assert incoming.state is CallState.CONNECTED
    assert all(w > 0 and h > 0 for w, h in await browser_video_reaches(incoming))

    await alice.hang_up()
    assert await incoming.wait_ended(10) is EndReason.HUNG_UP
