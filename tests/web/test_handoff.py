"""Moving a live call to another of my devices in real Chromium: the device I move it to shows
"Move call here", takes the call, and the person on the other side sees the call go on (the
same call, never "Reconnecting…" or "Call ended"), now with media from the new device."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

from playwright.async_api import expect

from tests.web.conftest import PersonFactory
from tests.web.people import STEP, Person

#: records every text the call-state line and the toasts show from now on
WATCH = """() => {
  window.__seen = [];
  for (const id of ["call-state", "notice", "alert", "remote-note"]) {
    const node = document.getElementById(id);
    new MutationObserver(() => window.__seen.push(`${id}: ${node.hidden ? "(hidden)" : node.textContent}`))
      .observe(node, { childList: true, characterData: true, subtree: true, attributes: true });
  }
}"""


async def seen(person: Person) -> list[str]:
    texts: list[str] = await person.page.evaluate("window.__seen")
    return texts


def noticed(texts: list[str]) -> list[str]:
    """What of ``texts`` a person would notice: anything but the duration ticking on and the
    notes and toasts staying hidden."""
    return [t for t in texts
            if not re.fullmatch(r"call-state: \d\d:\d\d", t) and not t.endswith("(hidden)")]


def from_device(device_id: str) -> Any:
    """The diagnostics of a call whose media comes from ``device_id`` and decodes."""
    return lambda d: d.get("remoteDevice") == device_id and (d.get("stats") or {}).get("framesDecoded", 0) > 0


async def test_a_call_moves_to_my_other_device_and_back_and_bob_does_not_notice(
        people: PersonFactory, screenshots: Path) -> None:
    laptop = await people("alice", device_name="laptop")
    phone = await people("alice", signup=False, device_name="phone")
    bob = await people("bob")
    await laptop.in_call_with(bob)
    bar = phone.page.locator("#handoff")
    await expect(bar).to_contain_text("You are in a call with bob on laptop", timeout=STEP)
    await expect(laptop.page.locator("#handoff")).to_be_hidden()  # the call is on this one
    await phone.page.screenshot(path=screenshots / "handoff.png")
    call_id = (await bob.diagnostics())["callId"]
    phone_id = (await phone.diagnostics())["device"]
    laptop_id = (await laptop.diagnostics())["device"]
    await bob.page.evaluate(WATCH)

    await asyncio.sleep(2)  # they talk a little
    moved_at = time.monotonic()
    await phone.page.get_by_role("button", name="Move video call here").click()
    await phone.wait_connected()
    duration = await phone.page.locator("#call-state").text_content()
    assert duration is not None and duration >= "00:02", duration  # it went on, not from 00:00
    diag = await bob.wait_for(from_device(phone_id), "seeing the phone's video")
    print(f"\nbob's picture came from the phone {time.monotonic() - moved_at:.2f} s after the click")
    assert diag["phase"] == "active" and diag["callId"] == call_id
    await laptop.expect_notice("The call moved to another device")
    await expect(laptop.page.locator("#home-view")).to_be_visible()
    await expect(laptop.page.locator("#handoff")).to_contain_text("on phone", timeout=STEP)
    await expect(bar).to_be_hidden()
    await asyncio.sleep(1.5)  # the duration goes on ticking; nothing else is shown to bob
    assert not noticed(await seen(bob))
    assert bob.errors == [] and phone.errors == [] and laptop.errors == []

    # a tablet opened now finds the call on the phone, and the laptop takes it back
    tablet = await people("alice", signup=False, device_name="tablet")
    await expect(tablet.page.locator("#handoff")).to_contain_text("on phone", timeout=STEP)
    await laptop.page.get_by_role("button", name="Move video call here").click()
    await laptop.wait_connected()
    await bob.wait_for(from_device(laptop_id), "seeing the laptop's video again")
    await phone.expect_notice("The call moved to another device")
    await expect(tablet.page.locator("#handoff")).to_contain_text("on laptop", timeout=STEP)
    assert not noticed(await seen(bob))

    await bob.hang_up()
    await laptop.expect_notice("Call ended")
    for device in (phone, tablet):
        await expect(device.page.locator("#handoff")).to_be_hidden(timeout=STEP)
    assert (await bob.diagnostics())["phase"] == "idle"


async def test_an_audio_call_moves_with_its_mute_state(people: PersonFactory) -> None:
    laptop = await people("alice", device_name="laptop")
    bob = await people("bob")
    phone = await people("alice", signup=False, device_name="phone")
    await bob.call("alice", "audio")
    await laptop.expect_ringing("bob")
    await phone.expect_ringing("bob")
    await laptop.accept()
    await laptop.wait_for(lambda d: d["phase"] == "active", "in the call")
    await bob.page.get_by_role("button", name="Mute").click()  # bob is muted before the move
    await expect(phone.page.locator("#handoff")).to_contain_text("a call with bob on laptop",
                                                                timeout=STEP)
    await phone.page.get_by_role("button", name="Move call here").click()
    await phone.wait_for(lambda d: d["phase"] == "active"
                         and (d.get("stats") or {}).get("audioPacketsReceived", 0) > 0,
                         "hearing bob on the phone")
    await expect(phone.page.locator("#remote-note")).to_have_text("bob: muted", timeout=STEP)
    await laptop.expect_notice("The call moved to another device")
    await phone.hang_up()
    await bob.expect_notice("Call ended")
