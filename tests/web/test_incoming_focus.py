"""A ringing call never takes the key being typed: focus goes to the dialog, not to Accept."""

from __future__ import annotations

import asyncio

from playwright.async_api import expect

from tests.web.conftest import PersonFactory


async def test_typing_enter_and_space_do_not_answer_a_ring(people: PersonFactory) -> None:
    alice = await people("alice")
    bob = await people("bob")
    page = alice.page
    field = page.locator("#call-username")
    await field.click()
    await page.keyboard.type("som")

    await bob.call("alice", "video")
    await alice.expect_ringing("bob")
    dialog = page.get_by_role("dialog", name="bob")
    await expect(dialog).to_be_focused()  # the dialog itself, not Accept
    assert await page.evaluate("document.getElementById('main').inert")  # modal: the page behind is inert

    # the person goes on typing and presses Enter, Space and Escape: none of them answers
    await page.keyboard.type("eone")
    for key in ("Enter", "Space", "Escape"):
        await page.keyboard.press(key)
    await asyncio.sleep(1)
    diag = await alice.diagnostics()
    assert diag["phase"] == "idle" and len(diag["rings"]) == 1, diag
    await expect(dialog).to_be_visible()
    await expect(page.locator("#home-view")).to_be_visible()

    # Tab stays in the dialog, on its buttons; answering is a deliberate action
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("button", name="Decline")).to_be_focused()
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("button", name="Accept")).to_be_focused()
    await page.keyboard.press("Shift+Tab")
    await page.keyboard.press("Enter")  # on Decline

    await expect(dialog).to_be_hidden()
    assert not await page.evaluate("document.getElementById('main').inert")
    await expect(field).to_be_focused()  # back where the person was typing
    await expect(field).to_have_value("som")
    assert (await alice.diagnostics())["phase"] == "idle"
    await bob.expect_notice("alice declined the call")
