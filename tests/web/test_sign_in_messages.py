"""Sign-in refusals in plain words: too many devices, too many failed sign-ins; focus after it."""

from __future__ import annotations

from playwright.async_api import Browser, expect

from tests.live import LiveServer
from tests.web.conftest import PersonFactory, ServerFactory
from tests.web.people import PASSWORD, STEP, Person


async def test_device_limit_says_so_and_what_to_do(server: LiveServer, browser: Browser,
                                                   people: PersonFactory) -> None:
    await people("alice")  # one browser of hers
    signed_in = await server.http.post("/v1/sessions", json={"username": "alice", "password": PASSWORD})
    account = signed_in.json()
    for i in range(31):  # forgotten browsers, up to the server's limit of 32
        await server.register_device(account["token"], f"old browser {i}", "browser")

    one_more = await Person.open(browser, server.base_url, "alice")
    try:
        page = one_more.page
        await page.locator("#auth-view").get_by_label("Username").fill("alice")
        await page.locator("#auth-view").get_by_label("Password").fill(PASSWORD)
        await page.locator("#auth-view").get_by_role("button", name="Sign in").click()
        error = page.locator("#auth-error")
        await expect(error).to_contain_text("already has 32 devices", timeout=STEP)
        await expect(error).to_contain_text("remove one you no longer use")
        await expect(error).not_to_contain_text("taken")
        await expect(page.locator("#auth-view")).to_be_visible()
    finally:
        await one_more.close()


async def test_sign_in_lockout_is_a_plain_sentence(web_server: ServerFactory, browser: Browser) -> None:
    async with web_server(sign_in_failure_burst=2) as live:
        await live.sign_up("alice")
        person = await Person.open(browser, live.base_url, "alice")
        try:
            page = person.page
            error = page.locator("#auth-error")
            await page.locator("#auth-view").get_by_label("Username").fill("alice")
            for _ in range(3):
                await page.locator("#auth-view").get_by_label("Password").fill("not the password")
                await page.locator("#auth-view").get_by_role("button", name="Sign in").click()
                await expect(page.locator("#auth-submit")).to_be_enabled()
            # 30 failures an hour, so the next one is allowed in 2 minutes (Retry-After: 120)
            await expect(error).to_have_text(
                "Too many failed sign-ins for this account. Try again in 2 minutes. If you forgot "
                "your password, ask the server's administrator to reset it.", timeout=STEP)
        finally:
            await person.close()


async def test_focus_after_sign_in_is_on_the_home_heading(people: PersonFactory) -> None:
    alice = await people("alice")
    await expect(alice.page.get_by_role("heading", name="facecall", exact=True, level=1)).to_be_focused()
    # the decorative glyph is not read out
    assert await alice.page.locator("#home-title .glyph").get_attribute("aria-hidden") == "true"
