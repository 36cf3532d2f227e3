"""Run facecall processes: the all-in-one node (`facecall serve`) and its parts."""

from __future__ import annotations

import asyncio
import contextlib

import uvicorn

from facecall.api.app import create_app
from facecall.config import Settings
from facecall.logs import get_logger

log = get_logger(__name__)

WS_MAX_FRAME = 1024 * 1024  # frames above Settings.max_message_bytes get `too_large`; above this, 1009


def build_uvicorn(settings: Settings, turn_uris: list[str] | None = None) -> uvicorn.Server:
    """A uvicorn server for the API + signaling app, not started yet."""
    app = create_app(settings, turn_uris=turn_uris)
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, ws_max_size=WS_MAX_FRAME,
        log_config=None, access_log=False, lifespan="on", ws_ping_interval=20.0,
        ws_ping_timeout=20.0,
    )
    return uvicorn.Server(config)


async def serve(settings: Settings, *, with_turn: bool = True) -> None:
    """Serve HTTP + WebSocket (and STUN/TURN when ``with_turn``) until cancelled or signalled."""
    turn = None
    turn_uris: list[str] = []
    if with_turn and settings.turn_enabled:
        from facecall.turn.embedded import start_embedded_turn

        turn, turn_uris = await start_embedded_turn(settings)
    server = build_uvicorn(settings, turn_uris)
    log.info("facecall.serving", url=settings.base_url, database=settings.database_url,
             turn=turn_uris or None)
    try:
        await server.serve()
    finally:
        if turn is not None:
            with contextlib.suppress(Exception):
                await turn.stop()


def run(settings: Settings, *, with_turn: bool = True) -> None:
    """Blocking entry point with uvloop."""
    try:
        import uvloop

        uvloop.run(serve(settings, with_turn=with_turn))
    except ImportError:  # pragma: no cover - uvloop is a dependency; keep a clear fallback
        asyncio.run(serve(settings, with_turn=with_turn))
