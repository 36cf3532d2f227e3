"""The signaling WebSocket endpoint: authenticate a device, then hand frames to its session.

Served as a small ASGI middleware rather than a FastAPI route: a signaling connection lives for
hours and carries many small messages, and skipping the router, the dependency machinery and
Starlette's WebSocket wrapper makes each message cheaper and each idle connection smaller
(docs/benchmarks.md, "Signaling").
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qs

from fastapi import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from facecall.api.auth import resolve_bearer
from facecall.signaling.session import DeviceSession

SIGNALING_PATH = "/v1/signaling"
CLOSE_UNAUTHORIZED = 4401  # the token is missing, wrong, expired or revoked
CLOSE_NOT_A_DEVICE = 4403  # an account token: signaling needs a device token


def bearer_token(scope: Scope) -> str | None:
    """The token from ``Authorization: Bearer``, else from ``?token=`` (browsers cannot set
    headers on a WebSocket)."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            return value[7:].decode("latin-1").strip()
    tokens = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
    return tokens[0] if tokens else None


class SignalingEndpoint:
    """ASGI middleware: ``/v1/signaling`` WebSockets here, everything else to ``app``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"] == SIGNALING_PATH:
            await serve_signaling(scope["app"], receive, send, bearer_token(scope))
        else:
            await self.app(scope, receive, send)


async def serve_signaling(app: Any, receive: Receive, send: Send, token: str | None) -> None:
    """One device connection (ASGI WebSocket protocol); see docs/protocol.md."""
    if (await receive())["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})

    async def close(code: int, reason: str) -> None:
        await send({"type": "websocket.close", "code": code, "reason": reason})

    try:
        principal = await resolve_bearer(app.state.store, token)
    except HTTPException as exc:
        await close(CLOSE_UNAUTHORIZED, str(exc.detail))
        return
    if principal.device_id is None:
        await close(CLOSE_NOT_A_DEVICE, "a device token is required")
        return

    async def send_text(text: str) -> None:
        await send({"type": "websocket.send", "text": text})

    session = DeviceSession(app.state.signaling, principal.user_id, principal.device_id,
                            send_text, close)
    writer = asyncio.create_task(session.run_writer())
    try:
        while True:
            message = await receive()
            kind = message["type"]
            if kind == "websocket.disconnect":
                break
            if kind == "websocket.receive":
                raw = message.get("text")
                await session.handle_frame(raw if raw is not None else message.get("bytes") or b"")
    finally:
        writer.cancel()
        await session.detach()
