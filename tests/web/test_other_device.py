"""A call on another device of mine: recents are not a live region rebuilt every few seconds;
removing that device during its call signs it out cleanly (no script error)."""

from __future__ import annotations

import asyncio

from playwright.async_api import expect

from tests.web.conftest import PersonFactory
from tests.web.people import STEP

# marks the first line of recents, and counts the reads of the history whose answers end from
# now on (window.__historyReads)
MARK_AND_COUNT_READS = """li => {
  li.stillHere = true;
  window.__historyReads = 0;
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      if (entry.name.includes("/v1/calls/history")) window.__historyReads += 1;
    }
  }).observe({ type: "resource" });
}"""


async def test_recents_stay_still_and_a_removed_device_signs_out_cleanly(people: PersonFactory) -> None:
    bob_laptop = await people("bob", device_name="laptop")
    bob_phone = await people("bob", signup=False, device_name="phone")
    alice = await people("alice")

    await alice.call("bob", "audio")
    await bob_phone.expect_ringing("alice")
    await bob_phone.accept()
    await bob_phone.wait_for(lambda d: d["phase"] == "active", "in the call")

    await bob_laptop.page.reload()  # its list of devices shows the phone now
    await expect(bob_laptop.page.locator("#devices li")).to_have_count(2, timeout=STEP)
    recents = bob_laptop.page.locator("#recents")
    await expect(recents.locator("li").first).to_contain_text("in progress", timeout=STEP)
    assert await recents.get_attribute("aria-live") is None
    # the list is read again every 3 s while the call goes on; unchanged, it is left alone
    await recents.locator("li").first.evaluate(MARK_AND_COUNT_READS)
    # two reads whose answers came after the mark: the second is asked for only once the
    # first was handled (home.js sets its timer last)
    for _ in range(100):
        if await bob_laptop.page.evaluate("window.__historyReads") >= 2:
            break
        await asyncio.sleep(0.1)
    assert await bob_laptop.page.evaluate("window.__historyReads") >= 2, "recents were not read again"
    assert await recents.locator("li").first.evaluate("li => li.stillHere === true")

    await bob_laptop.page.get_by_role("button", name="Remove device phone").click()  # confirmed
    await expect(bob_phone.page.locator("#auth-view")).to_be_visible(timeout=STEP)
    await bob_phone.expect_alert("This device was removed or signed out")
    await alice.expect_notice("signed out or removed that device")
    await asyncio.sleep(1)
    assert bob_phone.errors == [], bob_phone.errors
    assert alice.errors == [] and bob_laptop.errors == []
