"""Browser ↔ Python SDK calls, both ways: real Chromium, real aiortc, our server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from playwright.async_api import expect

from facecall.client import Call, CallState, Device, EndReason
from facecall.media.sinks import FrameCallbackSink
from tests.live import LiveServer, MakeDevice, sdk_devices
from tests.web.conftest import PersonFactory
from tests.web.people import STEP, Person


@pytest.fixture
async def sdk_device(server: LiveServer) -> AsyncIterator[MakeDevice]:
    async with sdk_devices(server.base_url) as make:
        yield make


async def browser_calls_sdk(person: Person, bot: Device, media: str = "video") -> Call:
    """``person``'s browser calls the SDK device ``bot``, which answers; returns the bot's Call
    once both sides are connected (and the browser decodes the bot's video)."""
    await person.call(bot.username or "", media)
    incoming = await bot.next_call(timeout=15)
    await incoming.answer()
    await incoming.wait_connected(30)
    await person.wait_connected()
    return incoming


async def sdk_calls_browser(bot: Device, person: Person, video: bool = True) -> Call:
    """The SDK device ``bot`` calls ``person``, whose browser accepts; returns the bot's Call
    once both sides are connected (and the browser decodes the bot's video)."""
    outgoing = await bot.call(person.username, video=video)
    await person.expect_ringing(bot.username or "")
    await person.accept()
    await outgoing.wait_connected(30)
    await person.wait_connected()
    return outgoing


async def browser_video_reaches(call: Call, count: int = 10) -> list[tuple[int, int]]:
    """Decode ``count`` frames of the browser's camera in the SDK; their sizes."""
    sizes: list[tuple[int, int]] = []
    enough = asyncio.Event()

    def on_frame(frame: Any, _stamp: object, _received_us: int) -> None:
        sizes.append((frame.width, frame.height))
        if len(sizes) >= count:
            enough.set()

    sink = FrameCallbackSink(on_frame, read_stamps=False)
    sink.addTrack(call.remote_video)
    await sink.start()
    try:
        await asyncio.wait_for(enough.wait(), STEP / 1000)
    finally:
        await sink.stop()
    return sizes


async def test_browser_calls_python(people: PersonFactory, sdk_device: MakeDevice) -> None:
    bot = await sdk_device("bot")
    alice = await people("alice")
    await alice.call("bot", "video")
    incoming = await bot.next_call(timeout=15)
    assert incoming.media == "video" and incoming.state is CallState.RINGING
    await incoming.answer()
    await incoming.wait_connected(30)
    diag = await alice.wait_connected()
    assert diag["stats"]["frameWidth"] == 320
    assert all(w > 0 and h > 0 for w, h in await browser_video_reaches(incoming))

    await alice.hang_up()
    assert await incoming.wait_ended(10) is EndReason.HUNG_UP


async def test_python_calls_browser(people: PersonFactory, sdk_device: MakeDevice) -> None:
    alice = await people("alice")
    bot = await sdk_device("bot")
    outgoing = await sdk_calls_browser(bot, alice)
    assert all(w > 0 and h > 0 for w, h in await browser_video_reaches(outgoing))

    await outgoing.hangup()
    await expect(alice.page.locator("#home-view")).to_be_visible(timeout=STEP)
    await alice.expect_notice("Call ended")
