"""The in-call screen: a duration past an hour, readable pressed buttons, messages that leave
the name and the controls in view, focus after the call, names in recents."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from playwright.async_api import Locator, Page, expect

from tests.web.conftest import PersonFactory
from tests.web.people import STEP, Person


async def box(locator: Locator) -> dict[str, float]:
    b = await locator.bounding_box()
    assert b is not None, locator
    return b


def overlap(a: dict[str, float], b: dict[str, float]) -> bool:
    return (a["x"] < b["x"] + b["width"] and b["x"] < a["x"] + a["width"]
            and a["y"] < b["y"] + b["height"] and b["y"] < a["y"] + a["height"])


def luminance(css_color: str) -> float:
    r, g, b = (int(v) / 255 for v in re.findall(r"\d+", css_color)[:3])
    lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in (r, g, b)]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


async def rename(person: Person, name: str) -> None:
    await person.page.locator("#account-display-name").fill(name)
    await person.page.get_by_role("button", name="Save").click()
    await expect(person.page.locator("#account-done")).to_have_text("Display name saved.")


async def show_messages(page: Page) -> None:
    """A notice and the connection banner on screen at once (as while the signaling reconnects)."""
    await page.evaluate("""() => {
        document.getElementById('notice-text').textContent = 'Missed call from carol';
        document.getElementById('notice').hidden = false;
        const c = document.getElementById('connection');
        c.textContent = 'Connection lost. Reconnecting…'; c.hidden = false; }""")


async def assert_messages_clear_of_call_screen(page: Page) -> None:
    keep_clear = [page.locator("#call-peer"), page.locator("#call-state")]
    for label in await page.locator(".controls button:visible .label").all():
        keep_clear.append(label)
    for message in (page.locator("#notice"), page.locator("#connection")):
        for other in keep_clear:
            assert not overlap(await box(message), await box(other)), (
                await message.inner_text(), await other.inner_text())


async def test_call_screen_duration_buttons_messages_and_after(people: PersonFactory) -> None:
    bob = await people("bob")
    await rename(bob, "Bob Builder")
    alice = await people("alice")
    page = alice.page
    await page.clock.install()  # a clock the test moves
    await page.reload()
    await expect(page.locator("#home-view")).to_be_visible(timeout=STEP)

    await page.locator("#call-username").fill("bob")
    await page.locator("#video-call").focus()
    await page.keyboard.press("Enter")
    await bob.expect_ringing("alice")
    await bob.accept()
    await alice.wait_connected()

    # 61 min 2 s later: hours, then minutes within the hour
    now_ms = await page.evaluate("Date.now()")
    await page.clock.set_system_time(datetime.fromtimestamp(now_ms / 1000) + timedelta(seconds=3662))
    await expect(page.locator("#call-state")).to_have_text(re.compile(r"^1:01:0\d$"), timeout=STEP)

    # pressed Mute / Camera: the label stays light on the dark screen, the icon is struck through
    for button, name in (("#mute", "Mute"), ("#camera", "Camera off")):
        control = page.locator(button)
        slash = control.locator(".slash:not(.gap)")
        await expect(slash).to_be_hidden()
        await page.get_by_role("button", name=name, exact=True).click()
        await expect(control).to_have_attribute("aria-pressed", "true")
        await expect(slash).to_be_visible()
        color = await control.locator(".label").evaluate("el => getComputedStyle(el).color")
        assert luminance(color) > 0.6, color  # on black: a contrast ratio above 10
    await page.get_by_role("button", name="Unmute").click()
    await expect(page.locator("#mute .slash:not(.gap)")).to_be_hidden()

    await show_messages(page)
    await assert_messages_clear_of_call_screen(page)
    await page.evaluate("document.getElementById('notice').hidden = true; "
                        "document.getElementById('connection').hidden = true")

    await alice.hang_up()
    await expect(page.locator("#home-view")).to_be_visible()
    assert await page.evaluate("document.activeElement.id") == "video-call"  # what placed the call
    await bob.expect_notice("Call ended")
    await expect(bob.page.locator("#home-view")).to_be_visible()
    assert await bob.page.evaluate("document.activeElement !== document.body")

    # recents name people as everything else does: display name, with the username beside it
    first = page.locator("#recents li").first
    await expect(first.locator(".name")).to_have_text("Bob Builder", timeout=STEP)
    await expect(first.locator(".name")).to_have_attribute("title", "@bob")
    await expect(first.locator(".meta")).to_contain_text("@bob")


async def test_phone_layout_long_names_and_labels(people: PersonFactory) -> None:
    long_name = "X" * 64
    bob = await people("bob")
    alice = await people("alice")
    await rename(alice, long_name)
    size: Any = {"width": 390, "height": 844}
    await bob.page.set_viewport_size(size)
    page = bob.page

    await alice.call("bob", "video")
    name = page.locator("#incoming-name")
    await expect(name).to_be_visible(timeout=STEP)
    b = await box(name)
    assert b["x"] >= 0 and b["x"] + b["width"] <= 390, b  # wrapped, not clipped on both sides
    assert await name.evaluate("el => el.scrollWidth <= el.clientWidth")

    await bob.accept()
    await bob.wait_connected()
    labels = {key: await box(page.locator(f"#{key} .label"))
              for key in ("mute", "camera", "switch-camera", "hangup")}
    keys = list(labels)
    for i, a in enumerate(keys):
        assert 0 <= labels[a]["x"] and labels[a]["x"] + labels[a]["width"] <= 390, (a, labels[a])
        for other in keys[i + 1:]:
            assert not overlap(labels[a], labels[other]), (a, other)
    await show_messages(page)
    await assert_messages_clear_of_call_screen(page)
    await page.evaluate("document.getElementById('notice').hidden = true; "
                        "document.getElementById('connection').hidden = true")
    await bob.hang_up()

    # a message with a long word keeps its ✕ on screen
    await page.evaluate(f"""() => {{
        document.getElementById('alert-text').textContent = 'The account “{'y' * 60}” was deleted';
        document.getElementById('alert').hidden = false; }}""")
    close = await box(page.get_by_role("button", name="Dismiss message"))
    assert close["x"] + close["width"] <= 390, close
