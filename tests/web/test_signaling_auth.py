"""How a browser authenticates its signaling WebSocket, seen by real Chromium: the device token
in a ``facecall.token.`` subprotocol beside ``facecall.v1``, which the server selects
(docs/protocol.md, "Connection"; RFC 6455 §4.1: a browser fails a connection whose answer selects
none of its offers, or one it did not offer)."""

from __future__ import annotations

from typing import Any

from playwright.async_api import Browser, expect

from tests.live import LiveServer

# Open a WebSocket offering ``protocols``, say hello once it is open; what the page learns: the
# selected subprotocol and the first frame, or the close code and reason.
OPEN = """async ([url, protocols]) => await new Promise((resolve) => {
  const ws = new WebSocket(url, protocols);
  ws.onopen = () => ws.send(JSON.stringify({ v: 1, id: "h", type: "hello" }));
  ws.onmessage = (m) => { resolve({ protocol: ws.protocol, frame: JSON.parse(m.data) }); ws.close(); };
  ws.onclose = (e) => resolve({ protocol: ws.protocol, code: e.code, reason: e.reason });
})"""


async def test_chromium_authenticates_by_the_token_subprotocol(browser: Browser,
                                                               server: LiveServer) -> None:
    account = await server.sign_up("chromium")
    device = await server.register_device(account["token"], kind="browser")
    page = await browser.new_page()
    await page.goto(f"{server.base_url}/")
    await expect(page.locator("body[data-ready=true]")).to_be_attached()
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))

    async def offer(*protocols: str) -> dict[str, Any]:
        result: dict[str, Any] = await page.evaluate(OPEN, [server.ws_url, list(protocols)])
        return result

    token = device["token"]
    opened = await offer("facecall.v1", f"facecall.token.{token}")
    assert opened["protocol"] == "facecall.v1"
    assert opened["frame"]["type"] == "welcome"
    assert opened["frame"]["device_id"] == device["device"]["id"]
    # a wrong token and an account token: the close code reaches the page (the handshake selected
    # facecall.v1 all the same), so the web client stops instead of retrying for ever
    assert await offer("facecall.v1", "facecall.token.wrong") == {
        "protocol": "facecall.v1", "code": 4401, "reason": "invalid, expired or revoked token"}
    assert await offer("facecall.v1", f"facecall.token.{account['token']}") == {
        "protocol": "facecall.v1", "code": 4403, "reason": "a device token is required"}
    # without facecall.v1 the server refuses the handshake: Chromium fails the connection
    refused = await offer(f"facecall.token.{token}")
    assert refused["code"] == 1006 and refused["protocol"] == ""
    assert sockets == [server.ws_url] * 4  # never a token in the URL
    await page.close()
