"""The account panel in a real Chromium: my display name, my password, and what a password
change does to my other browsers."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, expect

from tests.live import LiveServer
from tests.web.conftest import PersonFactory, ServerFactory
from tests.web.people import PASSWORD, Person

NEW_PASSWORD = "a brand new secret"


async def change_password(person: Person, current: str, new: str, *, sign_out_others: bool) -> None:
    panel = person.page.locator("#password-form")
    await panel.get_by_label("Current password").fill(current)
    await panel.get_by_label("New password").fill(new)
    if sign_out_others:
        await panel.get_by_label("Sign out my other devices").check()
    await panel.get_by_role("button", name="Change password").click()


async def test_rename_then_ring_with_the_new_name(people: PersonFactory) -> None:
    alice = await people("alice")
    bob = await people("bob")
    page = alice.page
    name = page.locator("#name-form").get_by_label("Display name")
    await expect(name).to_have_value("alice")
    await name.fill("   ")
    await page.locator("#name-form").get_by_role("button", name="Save").click()
    await expect(page.locator("#account-error")).to_have_text("Enter a display name.")
    await name.fill("Alice \u202eLiddell")
    await page.locator("#name-form").get_by_role("button", name="Save").click()
    await expect(page.locator("#account-error")).to_contain_text(
        "Display name: must not contain the character U+202E")
    await name.fill("  Alice Liddell ")
    await page.locator("#name-form").get_by_role("button", name="Save").click()
    await expect(page.locator("#account-done")).to_have_text("Display name saved.")
    await expect(page.locator("#account-error")).to_have_text("")
    await expect(page.locator("#me-name")).to_have_text("Alice Liddell (@alice)")
    await page.reload()  # stored as well
    await expect(page.locator("#me-name")).to_have_text("Alice Liddell (@alice)")
    await expect(name).to_have_value("Alice Liddell")
    await alice.call("bob", "audio")
    await bob.expect_ringing("Alice Liddell")


async def test_password_change_signs_out_my_other_browsers(browser: Browser, server: LiveServer,
                                                          people: PersonFactory) -> None:
    alice = await people("alice")
    laptop = await people("alice", signup=False, device_name="laptop")
    await expect(laptop.page.locator("#devices li")).to_have_count(2)

    await change_password(alice, "not my password", NEW_PASSWORD, sign_out_others=False)
    await expect(alice.page.locator("#account-error")).to_have_text("The current password is wrong.")
    await expect(alice.page.locator("#current-password")).to_have_attribute("aria-invalid", "true")
    await expect(alice.page.locator("#current-password")).to_be_focused()
    await change_password(alice, PASSWORD, "short", sign_out_others=False)
    await expect(alice.page.locator("#account-error")).to_have_text(
        "Choose a new password of at least 8 characters.")
    await change_password(alice, PASSWORD, NEW_PASSWORD, sign_out_others=False)
    await expect(alice.page.locator("#account-done")).to_contain_text("Password changed.")
    await expect(alice.page.locator("#current-password")).to_have_value("")

    # The laptop's sign-in used the old password: the next thing it asks of its account tells
    # it to sign in again. Its device stays registered and comes back with the new password.
    await laptop.call("bob")
    await expect(laptop.page.locator("#auth-view")).to_be_visible()
    await laptop.expect_alert("your password was changed")
    form = laptop.page.locator("#auth-view")
    await form.get_by_label("Username").fill("alice")
    await form.get_by_label("Password").fill(NEW_PASSWORD)
    await form.get_by_role("button", name="Sign in").click()
    await expect(laptop.page.locator("#home-view")).to_be_visible()
    await expect(laptop.page.locator("#devices li")).to_have_count(2)

    # Signing out the other devices removes the laptop's: it stops ringing and says so.
    await change_password(alice, NEW_PASSWORD, PASSWORD, sign_out_others=True)
    await expect(alice.page.locator("#account-done")).to_have_text(
        "Password changed. Your other devices are signed out.")
    await expect(alice.page.locator("#devices li")).to_have_count(1)
    await expect(alice.page.locator("#devices li")).to_contain_text("this device")
    await expect(laptop.page.locator("#auth-view")).to_be_visible()
    await laptop.expect_alert("This device was removed or signed out")
    r = await server.http.post("/v1/sessions", json={"username": "alice", "password": PASSWORD})
    assert r.status_code == 200


async def test_delete_my_account(people: PersonFactory, server: LiveServer) -> None:
    bob = await people("bob")
    alice = await people("alice")
    laptop = await people("alice", signup=False, device_name="laptop")
    await alice.call("bob", "audio")
    await bob.expect_ringing("alice")
    await bob.decline()
    await expect(bob.page.locator("#recents li")).to_have_count(1)
    await expect(bob.page.locator("#recents li .callback")).to_have_count(1)

    page = alice.page
    await page.get_by_text("Delete my account").first.click()  # the disclosure
    form = page.locator("#delete-form")
    await form.get_by_label("Password").fill("not my password")
    await form.get_by_role("button", name="Delete my account").click()
    await expect(page.locator("#account-error")).to_have_text("The password is wrong.")
    await form.get_by_label("Password").fill(PASSWORD)
    await form.get_by_role("button", name="Delete my account").click()
    await expect(page.locator("#auth-view")).to_be_visible()
    await alice.expect_notice("Your account was deleted.")
    assert await page.evaluate("localStorage.getItem('facecall.device')") is None
    # alice's other browser is told what happened, and forgets the account too
    await expect(laptop.page.locator("#auth-view")).to_be_visible()
    await laptop.expect_alert("This account was deleted")
    assert await laptop.page.evaluate("localStorage.getItem('facecall.device')") is None
    r = await server.http.post("/v1/sessions", json={"username": "alice", "password": PASSWORD})
    assert r.status_code == 401

    # bob's page still lists the old call; its name now belongs to a newcomer, whom the
    # call-back button must not ring
    newcomer = await server.sign_up("alice")
    newcomer_device = await server.register_device(newcomer["token"])
    ringing = await server.device(newcomer_device["token"])
    await bob.page.locator("#recents li .callback").click()
    await bob.expect_alert("The account “alice” in your recents was deleted")
    with pytest.raises(TimeoutError):
        await ringing.next_event("call.ring", timeout=1.0)
    await bob.page.reload()
    await expect(bob.page.locator("#recents li")).to_have_count(1)
    await expect(bob.page.locator("#recents li .name")).to_have_text("Deleted account")
    await expect(bob.page.locator("#recents li .callback")).to_have_count(0)


async def test_closed_sign_up_says_so(browser: Browser, web_server: ServerFactory) -> None:
    async with web_server(sign_up="closed") as live:
        person = await Person.open(browser, live.base_url, "alice")
        try:
            form = person.page.locator("#auth-view")
            await expect(form.get_by_text("Accounts on this server are made by its administrator.")) \
                .to_be_visible()
            await expect(form.get_by_role("tab", name="Create account")).to_be_hidden()
            await form.get_by_role("tab", name="Sign in").press("ArrowRight")
            await expect(form.get_by_role("tab", name="Sign in")).to_have_attribute("aria-selected", "true")
            await expect(form.get_by_role("button", name="Sign in")).to_be_visible()
        finally:
            await person.close()
