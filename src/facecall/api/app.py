"""The FastAPI application: HTTP API and the web client, in one ASGI app.

The signaling WebSocket (``/v1/signaling``) is not an ASGI route: uvicorn serves it with
:class:`facecall.api.ws_transport.SignalingWebSocket` (see :func:`facecall.server.build_uvicorn`),
which reaches the store and the call service through this app's ``state``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from facecall import __version__
from facecall.api import routes_accounts, routes_calls, routes_devices, routes_ops
from facecall.api.limits import BodySizeLimit
from facecall.api.throttle import AuthThrottle
from facecall.bus import Bus, InProcessBus
from facecall.config import Settings
from facecall.signaling.service import CallService
from facecall.store import Store

WEB_DIR = Path(__file__).resolve().parent.parent / "web"


def create_app(settings: Settings, *, turn_uris: list[str] | None = None,
               bus: Bus | None = None) -> FastAPI:
    """Build the app; the store, bus and call service start in its lifespan."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = await Store.open(settings.database_url)
        the_bus = bus or InProcessBus(limit=settings.outbox_limit, ttl=settings.resume_grace * 4)
        await the_bus.start()
        service = CallService(store, the_bus, settings)
        app.state.store, app.state.bus, app.state.signaling = store, the_bus, service
        await service.start()
        try:
            yield
        finally:
            await service.stop()
            await the_bus.close()
            await store.close()

    app = FastAPI(
        title="facecall", version=__version__, lifespan=lifespan,
        description="Self-hosted, end-to-end encrypted video calling. "
        "Signaling runs over the WebSocket at /v1/signaling (see docs/protocol.md).",
    )
    app.state.settings = settings
    app.state.auth_throttle = AuthThrottle(
        settings.auth_attempts_per_minute, settings.auth_attempt_burst,
        settings.sign_in_failures_per_hour, settings.sign_in_failure_burst,
    )
    app.state.turn_uris = list(settings.turn_urls or turn_uris or [])

    @app.exception_handler(ValueError)
    async def _value_error(_: Request, exc: ValueError) -> JSONResponse:
        return JSONResponse(status_code=400, content={"detail": str(exc)})

    app.add_middleware(BodySizeLimit)
    for module in (routes_ops, routes_accounts, routes_devices, routes_calls):
        app.include_router(module.router)
    if (WEB_DIR / "index.html").exists():
        app.mount("/", StaticFiles(directory=WEB_DIR, html=True), name="web")
    return app
