"""Fixtures for the browser client tests: a real server with our TURN server, real Chromium.

Chromium is Debian's (``/usr/bin/chromium``) driven by Playwright's async API, with a fake camera
and microphone. One context per person (each context is its own device: its own localStorage,
its own device token). The tests here run in one event loop for the whole session, so that one
Playwright driver and one Chromium serve them all (starting and stopping them cost ~0.6 s a
test); each test still has its own server, TURN server and contexts (the ones it leaves open are
closed after it), and a test that needs other browser flags launches its own (``launch``).
"""

from __future__ import annotations

import inspect
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Playwright, async_playwright

from facecall.turn.server import TurnServer
from tests.live import LiveServer, ice_settings, live_server, loopback_turn
from tests.web.people import Person

CHROMIUM = os.environ.get("FACECALL_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"

BASE_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-device-for-media-stream=fps=30",
    "--allow-loopback-in-peer-connection", "--autoplay-policy=no-user-gesture-required",
]
# Grant camera and microphone without a prompt (the default); without it, prompts are denied.
GRANT_MEDIA = "--use-fake-ui-for-media-stream"
DENY_MEDIA = "--deny-permission-prompts"

if not shutil.which(CHROMIUM):  # a missing browser fails the suite; it never skips it
    raise RuntimeError(f"browser tests need Chromium at {CHROMIUM}: run `make system-deps` as root "
                       "(apt-get install chromium)")


WEB = Path(__file__).resolve().parent
LOOP = "session"  # the event loop of the browser tests and of their async fixtures


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if WEB in Path(str(item.path)).resolve().parents and inspect.iscoroutinefunction(
                getattr(item, "obj", None)):
            item.add_marker(pytest.mark.asyncio(loop_scope=LOOP), append=False)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_fixture_setup(fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest) -> Any:
    """The async fixtures of these tests run in the tests' loop (pytest-asyncio reads it here)."""
    func = fixturedef.func
    if (getattr(func, "__module__", "").startswith("tests.web.")
            and getattr(func, "_loop_scope", None) is None
            and (inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func))):
        func._loop_scope = LOOP  # type: ignore[attr-defined]
    return (yield)


ServerFactory = Callable[..., AbstractAsyncContextManager[LiveServer]]


@pytest.fixture
async def turn() -> AsyncIterator[TurnServer]:
    """As the suite's (tests/conftest.py), in the browser tests' loop."""
    async with loopback_turn() as server:
        yield server


@pytest.fixture
def web_server(tmp_path: Path, turn: TurnServer) -> ServerFactory:
    """``async with web_server(ring_timeout=...) as live``: the app (serving the web client),
    with TURN credentials for our TURN server."""

    @asynccontextmanager
    async def start(**settings: Any) -> AsyncIterator[LiveServer]:
        settings.setdefault("ring_timeout", 30.0)
        async with live_server(f"sqlite+aiosqlite:///{tmp_path / 'facecall.db'}",
                               **{**ice_settings(turn), **settings}) as live:
            yield live

    return start


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "server_settings(**settings): settings of the test's `server` "
                            "(a shorter product timeout, say)")


@pytest.fixture
async def server(web_server: ServerFactory, request: pytest.FixtureRequest) -> AsyncIterator[LiveServer]:
    """The app; ``@pytest.mark.server_settings(unload_grace=2.0)`` changes its settings."""
    marker = request.node.get_closest_marker("server_settings")
    async with web_server(**(marker.kwargs if marker else {})) as live:
        yield live


@pytest_asyncio.fixture(scope="session", loop_scope=LOOP)  # (the hook above sees no session fixture)
async def playwright() -> AsyncIterator[Playwright]:
    async with async_playwright() as pw:
        yield pw


async def launch(pw: Playwright, *, grant_media: bool = True, cameras: int = 1) -> Browser:
    """Chromium with fake media devices: ``cameras`` fake cameras (0: none) and a fake microphone."""
    flags = [*BASE_FLAGS, GRANT_MEDIA if grant_media else DENY_MEDIA]
    if cameras != 1:
        flags = [f for f in flags if not f.startswith("--use-fake-device-for-media-stream")]
        flags.append(f"--use-fake-device-for-media-stream=fps=30,device-count={cameras}")
    return await pw.chromium.launch(executable_path=CHROMIUM, args=flags, headless=True)


@pytest_asyncio.fixture(scope="session", loop_scope=LOOP)
async def chromium(playwright: Playwright) -> AsyncIterator[list[Browser]]:
    """The session's Chromium (``launch(playwright)``), once a test asks for it: the last one."""
    launched: list[Browser] = []
    try:
        yield launched
    finally:
        for b in launched:
            if b.is_connected():
                await b.close()


@pytest.fixture
async def browser(playwright: Playwright, chromium: list[Browser]) -> AsyncIterator[Browser]:
    """The session's Chromium (launched again if it died), with no context open; the contexts
    the test opens in it are closed after the test."""
    if not chromium or not chromium[-1].is_connected():
        chromium.append(await launch(playwright))
    b = chromium[-1]
    for context in b.contexts:  # a test that failed to close its own
        await context.close()
    try:
        yield b
    finally:
        if b.is_connected():
            for context in b.contexts:
                await context.close()


PersonFactory = Callable[..., Awaitable[Person]]


@pytest.fixture
async def people(browser: Browser, server: LiveServer) -> AsyncIterator[PersonFactory]:
    """``await people("alice")``: a new browser context signed up (or in) as that user."""
    opened: list[Person] = []

    async def open_person(username: str, *, signup: bool = True, device_name: str | None = None,
                          query: str = "", b: Browser | None = None,
                          permissions: list[str] | None = None) -> Person:
        person = await Person.open(b or browser, server.base_url, username, query=query,
                                   permissions=permissions)
        opened.append(person)
        await person.sign_in(signup=signup, device_name=device_name or f"{username}'s browser")
        return person

    try:
        yield open_person
    finally:
        for person in opened:
            await person.close()


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    """Where the tests save their screenshots: ``docs/screenshots/`` with ``FACECALL_SCREENSHOTS=1``
    (to refresh the pictures in the docs), else a temporary directory (so that a test run does not
    leave the checkout modified)."""
    if os.environ.get("FACECALL_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        return SCREENSHOTS
    return tmp_path
