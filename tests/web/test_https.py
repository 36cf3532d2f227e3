"""The web client from a node serving HTTPS itself: a secure context on a LAN address, so the
camera works, and signaling over WSS."""

from __future__ import annotations

import asyncio
from pathlib import Path

from playwright.async_api import Browser, expect

from facecall.turn.tls import write_self_signed
from tests.web.conftest import ServerFactory
from tests.web.people import PASSWORD


async def test_sign_up_and_connect_over_https(browser: Browser, web_server: ServerFactory,
                                              tmp_path: Path) -> None:
    cert, key = write_self_signed(tmp_path / "tls", ["127.0.0.1"])
    async with web_server(tls_cert=str(cert), tls_key=str(key)) as live:
        assert live.base_url.startswith("https://")
        context = await browser.new_context(ignore_https_errors=True)  # a self-signed test CA
        try:
            page = await context.new_page()
            await page.goto(live.base_url + "/")
            await expect(page.locator("body[data-ready=true]")).to_be_attached()
            assert await page.evaluate("window.isSecureContext") is True
            form = page.locator("#auth-view")
            await form.get_by_role("tab", name="Create account").click()
            await form.get_by_label("Username").fill("alice")
            await form.get_by_label("Password", exact=True).fill(PASSWORD)
            await form.get_by_role("button", name="Create account").click()
            await expect(page.locator("#devices li")).to_contain_text("this device · online")
            # (wait_for_function polls with eval, which the page's CSP forbids)
            for _ in range(150):
                if await page.evaluate("window.facecall.signaling") == "open":
                    break
                await asyncio.sleep(0.1)
            assert await page.evaluate("window.facecall.signaling") == "open"
            devices = await page.evaluate("navigator.mediaDevices.enumerateDevices()")
            assert any(d["kind"] == "videoinput" for d in devices)
        finally:
            await context.close()
