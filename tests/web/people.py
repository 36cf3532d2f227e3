"""A person using the web client in one browser context: what they click and what they see."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    WebSocket,
    WebSocketRoute,
    expect,
)

PASSWORD = "correct horse battery"
#: what a server in the middle does to a signaling frame: the frame it passes on, or None
Tamper = Callable[[dict[str, Any]], dict[str, Any] | None]
STEP = 15_000  # ms: how long a UI expectation may take (ICE, decoding, ...)


@dataclass
class Person:
    """One browser context = one device of ``username``."""

    username: str
    context: BrowserContext
    page: Page
    base_url: str
    console: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # uncaught exceptions in the page
    sockets: list[str] = field(default_factory=list)  # the URLs of the WebSockets the page opened
    websockets: list[WebSocket] = field(default_factory=list)  # …and the WebSockets themselves

    @classmethod
    async def open(cls, browser: Browser, base_url: str, username: str, *, query: str = "",
                   viewport: dict[str, int] | None = None, permissions: list[str] | None = None) -> Person:
        """``permissions``: what the site is granted up front (say ``["microphone"]``: with
        ``launch(grant_media=False)`` the camera is then refused and the microphone allowed)."""
        context = await browser.new_context(viewport=viewport or {"width": 1100, "height": 720},  # type: ignore[arg-type]
                                            permissions=permissions)
        page = await context.new_page()
        person = cls(username, context, page, base_url)
        page.on("console", person._log)
        page.on("pageerror", lambda error: person.errors.append(str(error)))
        page.on("websocket", person._opened)
        page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
        await page.goto(f"{base_url}/{query}")
        await expect(page.locator("body[data-ready=true]")).to_be_attached()
        return person

    def _log(self, message: ConsoleMessage) -> None:
        self.console.append(f"{message.type}: {message.text}")

    def _opened(self, ws: WebSocket) -> None:
        self.sockets.append(ws.url)
        self.websockets.append(ws)

    def record_signaling(self) -> list[tuple[str, dict[str, Any]]]:
        """From now on, the frames of the page's current signaling connection (not one routed
        through the test): ``("sent" | "received", frame)``, as they go."""
        frames: list[tuple[str, dict[str, Any]]] = []
        ws = self.websockets[-1]
        ws.on("framesent", lambda payload: frames.append(("sent", json.loads(payload))))
        ws.on("framereceived", lambda payload: frames.append(("received", json.loads(payload))))
        return frames

    async def sign_in(self, *, signup: bool = True, device_name: str | None = None) -> None:
        page = self.page
        form = page.locator("#auth-view")
        if signup:
            await form.get_by_role("tab", name="Create account").click()
        await form.get_by_label("Username").fill(self.username)
        await form.get_by_label("Password").fill(PASSWORD)
        if device_name is not None:
            await form.get_by_label("Name this device").fill(device_name)
        await form.get_by_role("button", name="Create account" if signup else "Sign in").click()
        await expect(page.locator("#home-view")).to_be_visible()
        await expect(page.locator("#devices li")).not_to_have_count(0)

    async def intercept_signaling(self, from_page: Callable[[WebSocketRoute, dict[str, Any]], bool]
                                  ) -> list[WebSocketRoute]:
        """Reload the page with its signaling passing through the test: ``from_page(ws, frame)``
        sees each frame the page sends and returns whether it goes on to the node (it may
        answer the page itself through ``ws``); the node's frames reach the page as they are.
        Returns the node side of each connection, as they open (to send the node a frame
        held back earlier)."""
        servers: list[WebSocketRoute] = []

        async def route(ws: WebSocketRoute) -> None:
            server = ws.connect_to_server()
            servers.append(server)

            def on_message(message: str | bytes) -> None:
                if from_page(ws, json.loads(message)):
                    server.send(message)

            ws.on_message(on_message)
            server.on_message(lambda message: ws.send(message))

        await self.page.route_web_socket(re.compile(r".*/v1/signaling.*"), route)
        await self.page.reload()  # the route applies to connections opened from now on
        await expect(self.page.locator("#home-view")).to_be_visible(timeout=STEP)
        return servers

    async def tamper_signaling(self, *, to_node: Tamper | None = None, to_page: Tamper | None = None
                               ) -> None:
        """Reload the page with its signaling passing through the test, as a server in the
        middle would run it: each frame the page sends reaches the node as ``to_node(frame)``
        returns it, and each frame of the node reaches the page as ``to_page(frame)`` returns it
        (None: dropped; no function: as it is)."""

        async def route(ws: WebSocketRoute) -> None:
            server = ws.connect_to_server()

            def through(change: Tamper | None, send: Callable[[str], None]) -> Callable[[str | bytes], None]:
                def on_message(message: str | bytes) -> None:
                    if change is None:
                        send(message)  # type: ignore[arg-type]
                        return
                    frame = change(json.loads(message))
                    if frame is not None:
                        send(json.dumps(frame))
                return on_message

            ws.on_message(through(to_node, server.send))
            server.on_message(through(to_page, ws.send))

        await self.page.route_web_socket(re.compile(r".*/v1/signaling.*"), route)
        await self.page.reload()
        await expect(self.page.locator("#home-view")).to_be_visible(timeout=STEP)

    async def local_storage(self, key: str) -> Any:
        """A value the page keeps in ``localStorage`` (JSON), or None."""
        return await self.page.evaluate("(key) => JSON.parse(localStorage.getItem(key))", key)

    async def call(self, username: str, media: str = "video") -> None:
        await self.page.locator("#call-username").fill(username)
        await self.page.locator("#video-call" if media == "video" else "#audio-call").click()

    async def in_call_with(self, callee: Person, media: str = "video") -> dict[str, Any]:
        """Call ``callee``, who accepts; returns this side's diagnostics once both sides are
        connected and decoding."""
        await self.call(callee.username, media)
        await callee.expect_ringing(self.username)
        await callee.accept()
        await callee.wait_connected()
        return await self.wait_connected()

    async def expect_ringing(self, caller: str) -> None:
        dialog = self.page.get_by_role("dialog", name=caller)
        await expect(dialog).to_be_visible(timeout=STEP)

    async def accept(self) -> None:
        await self.page.get_by_role("button", name="Accept").click()

    async def decline(self) -> None:
        await self.page.get_by_role("button", name="Decline").click()

    async def hang_up(self) -> None:
        await self.page.get_by_role("button", name="End", exact=True).click()

    async def expect_alert(self, text: str, timeout: float = STEP) -> None:
        await expect(self.page.get_by_role("alert").filter(has_text=text)).to_be_visible(timeout=timeout)

    async def expect_notice(self, text: str, timeout: float = STEP) -> None:
        """An informational message ("Call ended", "Missed call from …"): polite, not an alert."""
        notice = self.page.locator("#notice").filter(has_text=text)
        await expect(notice).to_be_visible(timeout=timeout)
        await expect(notice).to_have_attribute("role", "status")

    async def diagnostics(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.page.evaluate("window.facecall.diagnostics()")
        return result

    async def ring_state(self) -> dict[str, Any]:
        """The diagnostics' phase, rings and ringtone: what a device that is not in a call shows."""
        diag = await self.diagnostics()
        return {key: diag.get(key) for key in ("phase", "rings", "ringtone")}

    async def wait_connected(self) -> dict[str, Any]:
        """Wait until the call is up and the remote video is decoding; returns the stats."""
        await expect(self.page.locator("#call-state")).to_have_text(re.compile(r"^\d\d:\d\d$"), timeout=STEP)
        return await self.wait_for(lambda d: (d.get("stats") or {}).get("framesDecoded", 0) > 0,
                                   "remote video decoding")

    async def wait_for(self, predicate: Any, what: str, timeout: float = STEP / 1000) -> dict[str, Any]:
        """Poll the diagnostics until ``predicate`` holds (the suite asserts states, not times)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        diag = await self.diagnostics()
        while not predicate(diag):
            if loop.time() > deadline:
                raise AssertionError(f"{self.username}: not {what}: {diag}\n" + "\n".join(self.console[-20:]))
            await asyncio.sleep(0.2)
            diag = await self.diagnostics()
        return diag

    async def watch_together(self, url: str, title: str = "") -> None:
        """Share a video in the call: "Watch together", its address (and a title), Start."""
        await self.page.get_by_role("button", name="Watch together").click()
        await self.page.get_by_label("Video address").fill(url)
        await self.page.get_by_label("Title").fill(title)
        await self.page.get_by_role("button", name="Start", exact=True).click()

    async def shareplay(self) -> dict[str, Any]:
        """The call's shared playback as this page has it (js/watch-together.js diagnostics):
        the activity, the shared position, the <video>'s, the clock, the channel."""
        result: dict[str, Any] = (await self.diagnostics())["shareplay"]
        return result

    async def close(self) -> None:
        await self.context.close()
