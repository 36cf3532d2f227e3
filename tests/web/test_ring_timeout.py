"""An unanswered ring times out on every device and becomes a missed call."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import expect

from tests.live import LiveServer
from tests.web.conftest import PersonFactory, ServerFactory


@pytest.fixture
async def server(web_server: ServerFactory) -> AsyncIterator[LiveServer]:
    async with web_server(ring_timeout=3.0) as live:
        yield live


async def test_ring_timeout(people: PersonFactory) -> None:
    bob_laptop = await people("bob", device_name="laptop")
    bob_phone = await people("bob", signup=False, device_name="phone")
    alice = await people("alice")

    await alice.call("bob", "video")
    await bob_laptop.expect_ringing("alice")
    await bob_phone.expect_ringing("alice")

    await alice.expect_notice("No answer from bob")
    await expect(alice.page.locator("#home-view")).to_be_visible()
    for device in (bob_laptop, bob_phone):
        await device.expect_notice("Missed call from alice")
        await expect(device.page.locator("#incoming")).to_be_hidden()
        await expect(device.page.locator("#recents li.missed")).to_contain_text("Missed video call")
    await expect(alice.page.locator("#recents li").first).to_contain_text("Outgoing video · no answer")
