"""Calls that ring while the person looks elsewhere: the tab's title, system notifications
(js/alerts.js), and "Missed call" when the caller gives up.

"Elsewhere" is real: Playwright emulates focus for every page, so the test turns that off
(CDP ``Emulation.setFocusEmulationEnabled``) and brings another tab of the same browser to the
front; the page then reports ``document.hasFocus()`` false, as for a person in another tab.
The Notifications API is Chromium's own (permission granted to the context, or not); the test
wraps its constructor to see what the page showed and closed."""

from __future__ import annotations

import asyncio
from typing import Any

from playwright.async_api import Page, expect

from tests.web.conftest import PersonFactory
from tests.web.people import STEP, Person

#: records each notification the page makes (title, body, tag) and whether it closed it
NOTIFICATION_SPY = """() => {
  const Real = window.Notification;
  window.__notifications = [];
  class Recorded extends Real {
    constructor(title, options) {
      super(title, options);
      this.__entry = { title, body: options.body, tag: options.tag, closed: false };
      window.__notifications.push(this.__entry);
    }
    close() {
      this.__entry.closed = true;
      super.close();
    }
  }
  Object.defineProperty(Recorded, "permission", { get: () => Real.permission });
  Recorded.requestPermission = (...args) => Real.requestPermission(...args);
  window.Notification = Recorded;
}"""


async def notifications(page: Page) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = await page.evaluate("window.__notifications")
    return result


async def until(page: Page, check: Any, what: str) -> list[dict[str, Any]]:
    """Poll the page's notifications until ``check`` holds."""
    for _ in range(int(STEP / 100)):
        shown = await notifications(page)
        if check(shown):
            return shown
        await asyncio.sleep(0.1)
    raise AssertionError(f"not {what}: {await notifications(page)}")


async def turn_notifications_on(person: Person, base_url: str) -> None:
    await person.context.grant_permissions(["notifications"], origin=base_url)
    await person.page.evaluate(NOTIFICATION_SPY)
    box = person.page.get_by_label("Notify me of calls while this tab is in the background")
    await box.check()
    await expect(box).to_be_checked()


async def look_away(person: Person) -> Page:
    """Bring another tab of the person's browser to the front; returns that tab."""
    cdp = await person.context.new_cdp_session(person.page)
    await cdp.send("Emulation.setFocusEmulationEnabled", {"enabled": False})
    elsewhere = await person.context.new_page()
    await elsewhere.bring_to_front()
    for _ in range(50):
        if not await person.page.evaluate("document.hasFocus()"):
            return elsewhere
        await asyncio.sleep(0.1)
    raise AssertionError("the facecall tab kept the focus")


async def test_a_ring_in_a_background_tab_notifies_then_says_missed(people: PersonFactory) -> None:
    bob = await people("bob")
    alice = await people("alice")
    await turn_notifications_on(bob, bob.base_url)
    await look_away(bob)

    await alice.call("bob", "video")
    await bob.expect_ringing("alice")
    shown = await until(bob.page, lambda n: len(n) == 1, "notified of the ring")
    assert shown[0]["title"] == "alice" and shown[0]["body"] == "Incoming video call"
    await expect(bob.page).to_have_title("alice is calling… — facecall")

    await alice.hang_up()  # alice gives up while it rings
    shown = await until(bob.page, lambda n: len(n) == 2, "told of the missed call")
    assert shown[0]["closed"] is True  # the ring's notification went away
    assert shown[1]["title"] == "Missed call from alice" and shown[1]["closed"] is False
    assert shown[1]["tag"] == shown[0]["tag"]  # one call, one place in the notification list
    await expect(bob.page).to_have_title("Missed call from alice — facecall")

    await bob.page.bring_to_front()  # bob looks: the notification and the title have done their job
    await until(bob.page, lambda n: n[1]["closed"], "closing the missed-call notification")
    await expect(bob.page).to_have_title("facecall")
    await expect(bob.page.locator("#recents li").first).to_contain_text("missed", ignore_case=True)


async def test_a_ring_answered_on_another_device_takes_its_notification_away(
        people: PersonFactory) -> None:
    bob_laptop = await people("bob", device_name="laptop")
    bob_phone = await people("bob", signup=False, device_name="phone")
    alice = await people("alice")
    for device in (bob_laptop, bob_phone):
        await turn_notifications_on(device, device.base_url)
    await look_away(bob_laptop)  # the phone stays in view

    await alice.call("bob", "audio")
    await bob_laptop.expect_ringing("alice")
    await bob_phone.expect_ringing("alice")
    shown = await until(bob_laptop.page, lambda n: len(n) == 1, "notified of the ring")
    assert shown[0]["body"] == "Incoming audio call"
    # the device in view rings on screen: its title says so, with no notification on top
    await expect(bob_phone.page).to_have_title("alice is calling… — facecall")
    assert await notifications(bob_phone.page) == []

    await bob_phone.accept()
    await until(bob_laptop.page, lambda n: n[0]["closed"], "taking the notification away")
    await bob_laptop.expect_notice("Answered on another device")
    assert len(await notifications(bob_laptop.page)) == 1  # answered is not missed
    for device in (bob_laptop, bob_phone):
        await expect(device.page).to_have_title("facecall")
    await bob_phone.hang_up()


async def test_notifications_the_browser_blocks_are_explained(people: PersonFactory) -> None:
    bob = await people("bob")  # no permission granted: Chromium answers the request "denied"
    box = bob.page.get_by_label("Notify me of calls while this tab is in the background")
    await box.check()
    await bob.expect_alert("This browser blocks notifications from this site")
    await expect(box).not_to_be_checked()
    assert await bob.page.evaluate("localStorage.getItem('facecall.callNotifications')") == "false"


async def test_a_ring_that_began_in_view_notifies_when_the_person_looks_away(
        people: PersonFactory) -> None:
    bob = await people("bob")
    alice = await people("alice")
    await turn_notifications_on(bob, bob.base_url)
    await alice.call("bob", "audio")
    await bob.expect_ringing("alice")
    assert await notifications(bob.page) == []  # bob sees it ring
    await look_away(bob)
    shown = await until(bob.page, lambda n: len(n) == 1, "notified once bob looked away")
    assert shown[0]["body"] == "Incoming audio call" and not shown[0]["closed"]
    await bob.decline()  # from the page (it rings there still)
    await until(bob.page, lambda n: n[0]["closed"], "taking the notification away")
    assert len(await notifications(bob.page)) == 1  # declined is not missed


async def test_a_waiting_call_keeps_its_one_notification_when_the_call_in_progress_ends(
        people: PersonFactory) -> None:
    bob = await people("bob")
    alice = await people("alice")
    carol = await people("carol")
    await turn_notifications_on(bob, bob.base_url)
    await alice.call("bob", "video")
    await bob.expect_ringing("alice")
    await bob.accept()
    await bob.wait_connected()
    await look_away(bob)
    await carol.call("bob", "audio")
    await expect(bob.page.locator("#call-waiting")).to_be_visible(timeout=STEP)
    await until(bob.page, lambda n: len(n) == 1, "notified of the waiting call")
    await alice.hang_up()  # bob's call ends; carol's ring moves to the incoming screen
    await bob.expect_ringing("carol")
    await asyncio.sleep(0.5)
    shown = await notifications(bob.page)
    assert [(n["title"], n["closed"]) for n in shown] == [("carol", False)]
    await carol.hang_up()
    await until(bob.page, lambda n: n[-1]["title"] == "Missed call from carol", "told of the missed call")
