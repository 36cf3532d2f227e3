"""The API docs page works from this server alone: no request leaves for a CDN."""

from __future__ import annotations

from urllib.parse import urlsplit

from playwright.async_api import Browser, expect

from tests.live import LiveServer
from tests.web.people import STEP


async def test_api_docs_render_with_no_third_party_request(browser: Browser,
                                                           server: LiveServer) -> None:
    context = await browser.new_context()
    try:
        page = await context.new_page()
        origins: set[str] = set()
        page.on("request", lambda request: origins.add(
            "{0.scheme}://{0.netloc}".format(urlsplit(request.url))))
        await page.goto(server.base_url + "/docs")
        path = page.locator('.swagger-ui .opblock-summary-path[data-path="/v1/accounts"]')
        await expect(path.first).to_be_visible(timeout=STEP)
        assert origins == {server.base_url}
    finally:
        await context.close()
