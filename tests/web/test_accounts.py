"""Sign up, sign in, this browser as a device, and managing my devices."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

from playwright.async_api import Browser, expect

from tests.live import LiveServer
from tests.web.conftest import PersonFactory, ServerFactory
from tests.web.people import PASSWORD, Person


async def test_sign_in_errors_sign_out_and_device_reuse(browser: Browser, server: LiveServer,
                                                        screenshots: Path) -> None:
    await server.sign_up("alice")
    person = await Person.open(browser, server.base_url, "alice")
    try:
        page = person.page
        form = page.locator("#auth-view")
        await expect(form.get_by_role("tab", name="Sign in")).to_have_attribute("aria-selected", "true")
        await expect(form.get_by_label("Name this device")).to_have_value("Chromium on Linux")
        await page.screenshot(path=screenshots / "sign-in.png")

        await form.get_by_label("Username").fill("alice")
        await form.get_by_label("Password").fill("not the password")
        await form.get_by_role("button", name="Sign in").click()
        await expect(page.locator("#auth-error")).to_have_text("Wrong username or password.")

        await form.get_by_role("tab", name="Create account").click()
        await form.get_by_label("Username").fill("alice")
        await form.get_by_label("Password", exact=True).fill(PASSWORD)
        await form.get_by_role("button", name="Create account").click()
        await expect(page.locator("#auth-error")).to_have_text("The username “alice” is taken.")

        await form.get_by_role("tab", name="Sign in").click()
        await person.sign_in(signup=False, device_name="work laptop")
        await expect(page.locator("#devices li")).to_have_count(1)
        await expect(page.locator("#devices li")).to_contain_text("work laptop")
        await expect(page.locator("#devices li")).to_contain_text("this device · online")
        await expect(page.locator("#me-name")).to_have_text("@alice")

        # A reload keeps me signed in. Signing out removes this browser's device: its token no
        # longer works (on a shared computer nobody can take my calls with it); signing in again
        # registers the browser anew.
        await page.reload()
        await expect(page.locator("#home-view")).to_be_visible()
        device = await page.evaluate("JSON.parse(localStorage.getItem('facecall.device'))")
        await page.get_by_role("button", name="Sign out").click()
        await expect(form).to_be_visible()
        for _ in range(50):
            me = await server.http.get("/v1/me", headers={"Authorization": f"Bearer {device['token']}"})
            if me.status_code == 401:
                break
            await asyncio.sleep(0.1)
        assert me.status_code == 401
        await person.sign_in(signup=False)
        await expect(page.locator("#devices li")).to_have_count(1)
        again = await page.evaluate("JSON.parse(localStorage.getItem('facecall.device'))")
        assert again["id"] != device["id"]
    finally:
        await person.close()


async def test_remove_another_device_signs_it_out(people: PersonFactory) -> None:
    laptop = await people("bob", device_name="laptop")
    phone = await people("bob", signup=False, device_name="phone")
    await laptop.page.reload()  # the device list as it is now
    devices = laptop.page.locator("#devices li")
    await expect(devices).to_have_count(2)
    await expect(devices.filter(has_text="phone")).to_contain_text("online")
    await laptop.page.get_by_role("button", name="Remove device phone").click()  # confirm() accepted
    await expect(devices).to_have_count(1)
    await expect(devices).to_contain_text("laptop")
    await expect(devices).to_contain_text("this device")

    # The removed device's signaling is closed by the server: it goes back to sign in.
    await phone.expect_alert("This device was removed")
    await expect(phone.page.locator("#auth-view")).to_be_visible()


async def test_rename_devices(people: PersonFactory, server: LiveServer) -> None:
    laptop = await people("bob", device_name="laptop")
    phone = await people("bob", signup=False, device_name="phone")
    page = laptop.page
    await page.reload()  # the device list as it is now
    devices = page.locator("#devices")
    await expect(devices.locator("li")).to_have_count(2)

    # Escape puts the line back as it was, focus on its Rename button
    await devices.get_by_role("button", name="Rename device phone").click()
    field = devices.get_by_role("textbox", name="New name for device phone")
    await expect(field).to_be_focused()
    await expect(field).to_have_value("phone")
    await field.fill("something else")
    await field.press("Escape")
    await expect(field).to_have_count(0)
    await expect(devices.get_by_role("button", name="Rename device phone")).to_be_focused()

    # a name the server refuses says why, and the form stays for another try
    await devices.get_by_role("button", name="Rename device phone").click()
    await field.fill("phone ‮reversed")
    await field.press("Enter")
    await expect(devices.get_by_role("alert")).to_have_text(
        "Could not rename the device: Device name: must not contain the character U+202E")
    await expect(field).to_have_attribute("aria-invalid", "true")
    await field.fill("   ")
    await field.press("Enter")
    await expect(devices.get_by_role("alert")).to_have_text("Enter a device name.")
    await field.fill("  Kitchen iPad ")
    await field.press("Enter")
    await expect(devices.locator(".name")).to_have_text(["laptop", "Kitchen iPad"])
    await expect(devices.get_by_role("button", name="Rename device Kitchen iPad")).to_be_focused()

    # this browser's own device, with the Save button: the sign-in form's name follows
    await devices.get_by_role("button", name="Rename device laptop").click()
    await devices.get_by_role("textbox", name="New name for device laptop").fill("Work laptop")
    await devices.get_by_role("button", name="Save").click()
    await expect(devices.locator(".name")).to_have_text(["Work laptop", "Kitchen iPad"])
    await expect(devices.locator("li").first).to_contain_text("this device")
    await expect(page.locator("#auth-device-name")).to_have_value("Work laptop")
    stored = await page.evaluate("JSON.parse(localStorage.getItem('facecall.device'))")
    assert stored["name"] == "Work laptop"

    await page.reload()  # kept by the server (and this browser)
    await expect(devices.locator(".name")).to_have_text(["Work laptop", "Kitchen iPad"])
    await expect(page.locator("#auth-device-name")).to_have_value("Work laptop")
    await phone.page.reload()  # the renamed browser lists it too, and still runs
    await expect(phone.page.locator("#devices .name")).to_have_text(["Work laptop", "Kitchen iPad"])
    assert laptop.errors == [] and phone.errors == []


async def test_small_screen_layout(browser: Browser, server: LiveServer, screenshots: Path) -> None:
    person = await Person.open(browser, server.base_url, "alice", viewport={"width": 390, "height": 780})
    try:
        await person.sign_in(signup=True)
        panels = person.page.locator(".panel")
        boxes = [await panels.nth(i).bounding_box() for i in range(await panels.count())]
        assert all(box is not None and box["width"] <= 390 for box in boxes)
        # One column: each panel is below the previous one.
        assert all(a is not None and b is not None and b["y"] > a["y"] for a, b in itertools.pairwise(boxes))
        await person.page.screenshot(path=screenshots / "home-phone.png")
    finally:
        await person.close()


async def test_a_sign_up_whose_device_is_refused_leaves_a_usable_account(
        browser: Browser, server: LiveServer) -> None:
    """The account is created but the device name is refused (a right-to-left override): the
    form says so in words, switches to "Sign in" (creating the account again would say "taken"),
    and signing in with a corrected name works."""
    person = await Person.open(browser, server.base_url, "carol")
    try:
        page = person.page
        form = page.locator("#auth-view")
        await form.get_by_role("tab", name="Create account").click()
        await form.get_by_label("Username").fill("carol")
        await form.get_by_label("Password", exact=True).fill(PASSWORD)
        await form.get_by_label("Name this device").fill("laptop\u202e")
        await form.get_by_role("button", name="Create account").click()
        error = page.locator("#auth-error")
        await expect(error).to_contain_text("Your account “carol” was created")
        await expect(error).to_contain_text("Device name: must not contain the character U+202E.")
        await expect(error).not_to_contain_text("Value error")
        await expect(form.get_by_role("tab", name="Sign in")).to_have_attribute("aria-selected", "true")
        await form.get_by_label("Name this device").fill("laptop")
        await form.get_by_role("button", name="Sign in").click()
        await expect(page.locator("#home-view")).to_be_visible()
        await expect(page.locator("#devices li")).to_contain_text("laptop")
    finally:
        await person.close()


async def test_a_long_display_name_fits_a_phone_screen(browser: Browser, server: LiveServer) -> None:
    """A long display name is cut with an ellipsis: the page never gets wider than the phone,
    and "Sign out" stays on screen."""
    name = "Maximilian Alexander Wolfeschlegelsteinhausenbergerdorff"
    r = await server.http.post("/v1/accounts", json={"username": "max", "password": PASSWORD,
                                                     "display_name": name})
    assert r.status_code == 201, r.text
    person = await Person.open(browser, server.base_url, "max", viewport={"width": 360, "height": 740})
    try:
        await person.sign_in(signup=False)
        page = person.page
        await expect(page.locator("#me-name")).to_contain_text("Maximilian")
        assert await page.evaluate("document.documentElement.scrollWidth") <= 360
        box = await page.get_by_role("button", name="Sign out").bounding_box()
        assert box is not None and box["x"] + box["width"] <= 360
    finally:
        await person.close()


async def test_guessers_elsewhere_do_not_lock_the_owner_out_of_this_browser(
        browser: Browser, web_server: ServerFactory) -> None:
    """The account's allowance of failed sign-ins is spent by guesses from other addresses;
    this browser, which runs a device of the account, still signs in (it shows that device)."""
    async with web_server(user_token_ttl=2.0, account_sign_in_failures_per_hour=1.0,
                          account_sign_in_failure_burst=3) as live:
        owner = await Person.open(browser, live.base_url, "owner")
        await owner.sign_in(signup=True, device_name="laptop")
        await asyncio.sleep(2.5)  # the account token expires; the device stays
        await owner.page.reload()
        await expect(owner.page.locator("#auth-view")).to_be_visible()
        for i in range(3):
            r = await live.http.post("/v1/sessions", json={"username": "owner", "password": "guess-guess"},
                                     headers={"X-Forwarded-For": f"127.0.1.{i}"})
            assert r.status_code == 401
        r = await live.http.post("/v1/sessions", json={"username": "owner", "password": PASSWORD})
        assert r.status_code == 429  # elsewhere: locked
        await owner.sign_in(signup=False)
        await expect(owner.page.locator("#devices li")).to_have_count(1)  # the same device, reused
        await owner.close()
