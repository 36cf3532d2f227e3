"""The signaling WebSocket endpoint: authenticate a device, then hand frames to its session."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, HTTPException, WebSocket, WebSocketDisconnect

from facecall.api.auth import resolve_bearer
from facecall.logs import get_logger
from facecall.signaling.session import DeviceSession

router = APIRouter()
log = get_logger(__name__)

CLOSE_UNAUTHORIZED = 4401  # the token is missing, wrong, expired or revoked
CLOSE_NOT_A_DEVICE = 4403  # an account token: signaling needs a device token
CLOSE_TOO_LARGE = 1009  # RFC 6455 §7.4.1: message too big to process


def _bearer_from(websocket: WebSocket) -> str | None:
    header = websocket.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return websocket.query_params.get("token")


@router.websocket("/v1/signaling")
async def signaling(websocket: WebSocket) -> None:
    """One connection per device; see docs/protocol.md for what flows over it."""
    app = websocket.app
    await websocket.accept()
    try:
        principal = await resolve_bearer(app.state.store, _bearer_from(websocket))
    except HTTPException as exc:
        await websocket.close(code=CLOSE_UNAUTHORIZED, reason=str(exc.detail))
        return
    if principal.device_id is None:
        await websocket.close(code=CLOSE_NOT_A_DEVICE, reason="a device token is required")
        return

    session = DeviceSession(
        app.state.signaling, principal.user_id, principal.device_id, websocket.send_text,
        close=websocket.close,
    )
    writer = asyncio.create_task(session.run_writer())
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            raw = message.get("text")
            if raw is None:
                raw = message.get("bytes") or b""
            await session.handle_frame(raw)
    except WebSocketDisconnect:
        pass
    except RuntimeError as exc:  # receive after a close we initiated
        log.debug("ws.receive_after_close", error=str(exc))
    finally:
        writer.cancel()
        await session.detach()
