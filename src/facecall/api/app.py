"""The FastAPI application: HTTP API and the web client, in one ASGI app.

The signaling WebSocket (``/v1/signaling``) is not an ASGI route: uvicorn serves it with
:class:`facecall.api.ws_transport.SignalingWebSocket` (see :func:`facecall.server.build_uvicorn`),
which reaches the store and the call service through this app's ``state``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request, status
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Mount
from starlette.types import Scope

from facecall import __version__
from facecall.api import (
    routes_accounts,
    routes_admin,
    routes_calls,
    routes_devices,
    routes_invites,
    routes_ops,
)
from facecall.api.limits import BodySizeLimit
from facecall.api.throttle import AuthThrottle
from facecall.bus import Bus, InProcessBus
from facecall.bus.redis_bus import RedisBus
from facecall.config import Settings
from facecall.sfu.control import InProcessSfu
from facecall.sfu.placement import ClusterSfu
from facecall.sfu.rooms import RoomRegistry
from facecall.signaling.service import CallService
from facecall.store import Store
from facecall.store.errors import InvalidInput

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
#: the methods a 405's ``Allow`` may name
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
#: where the API docs page (/docs) loads Swagger UI from: this server, never
#: a public CDN (a self-hosted server's visitors are not announced to a third party)
DOCS_ASSETS = "/api-docs-assets"


#: paths that belong to the API: a wrong method there is 405 and an unknown path 404 from the
#: router, never a miss of the web client's static files
API_PATHS = ("/v1/", "/healthz", "/metrics", "/openapi.json", "/docs", DOCS_ASSETS)


class WebClientMount(Mount):
    """The web client's files at ``/``, for every path that is not the API's."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] == "http" and scope["path"].startswith(API_PATHS):
            return Match.NONE, {}
        return super().matches(scope)


def _printable(value: object) -> object:
    """``value``, with any lone surrogate of a string escaped (JSON text must be UTF-8)."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def create_app(settings: Settings, *, turn_uris: list[str] | None = None,
               bus: Bus | None = None, store: Store | None = None) -> FastAPI:
    """Build the app; the store, bus and call service start in its lifespan. ``store`` and
    ``bus``: ones already open and started (``facecall serve`` opens them before it says it
    serves, so that a database or Redis it cannot use stops it in one line); their caller
    closes them. Else the lifespan opens ``settings.database_url`` and an in-process bus, and
    closes them again."""
    given_store, given_bus = store, bus

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = given_store or await Store.open(settings.database_url)
        the_bus = given_bus or InProcessBus(limit=settings.outbox_limit,
                                            ttl=settings.resume_grace * 4)
        if given_bus is None:
            await the_bus.start()
        sfu: InProcessSfu | ClusterSfu | None = InProcessSfu(RoomRegistry(
            # group media: the rooms of this node (docs/sfu.md)
            max_rooms=settings.sfu_max_rooms, max_participants=settings.sfu_max_participants,
            host_addresses=settings.sfu_host_addresses or None)) \
            if settings.sfu_max_rooms else None
        if sfu is not None and isinstance(the_bus, RedisBus):  # several nodes: one room a call
            sfu = ClusterSfu(sfu, the_bus)
            await sfu.start()
        service = CallService(store, the_bus, settings, sfu=sfu)
        app.state.store, app.state.bus, app.state.signaling = store, the_bus, service
        app.state.sfu = sfu
        await service.start()
        try:
            yield
        finally:
            await service.stop()
            if sfu is not None:
                await sfu.shutdown()
            if given_bus is None:
                await the_bus.close()
            if given_store is None:
                await store.close()

    app = FastAPIOffline(  # ReDoc is left out: its bundle fetches its logo from cdn.redoc.ly
        static_url=DOCS_ASSETS, redoc_url=None, title="facecall", version=__version__,
        lifespan=lifespan,
        description="Self-hosted, end-to-end encrypted video calling. "
        "Signaling runs over the WebSocket at /v1/signaling (see docs/protocol.md).",
    )
    app.state.settings = settings
    app.state.auth_throttle = AuthThrottle(
        settings.auth_attempts_per_minute, settings.auth_attempt_burst,
        settings.sign_in_failures_per_hour, settings.sign_in_failure_burst,
        settings.account_sign_in_failures_per_hour, settings.account_sign_in_failure_burst,
    )
    app.state.turn_uris = list(settings.turn_urls or turn_uris or [])

    @app.exception_handler(InvalidInput)
    async def _invalid_input(_: Request, exc: InvalidInput) -> JSONResponse:
        """A value the store refuses (its schema's limits): the client's error."""
        return JSONResponse(status_code=400, content={"detail": str(exc)})

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        """422 naming each field and what is wrong with it. FastAPI's own answer echoes the
        offending input, which cannot be rendered when it is NaN or holds a lone surrogate;
        the input is the client's own, so it is left out."""
        return JSONResponse(status_code=422, content={"detail": [
            {"loc": [_printable(part) for part in error["loc"]], "msg": _printable(error["msg"]),
             "type": error["type"]}
            for error in exc.errors()
        ]})

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        """As FastAPI answers, except that a 405's ``Allow`` lists the methods of every API
        route at that path (RFC 9110 §15.5.6), not only those of the first route that matched
        it; the static files (web client, docs assets) allow ``GET, HEAD``."""
        if exc.status_code == status.HTTP_405_METHOD_NOT_ALLOWED:
            api_routes = [route for route in app.router.routes if not isinstance(route, Mount)]
            allowed = [method for method in HTTP_METHODS if any(
                route.matches({**request.scope, "method": method})[0] is Match.FULL
                for route in api_routes)]
            exc.headers = {**(exc.headers or {}), "Allow": ", ".join(allowed or ("GET", "HEAD"))}
        return await http_exception_handler(request, exc)

    app.add_middleware(BodySizeLimit)
    for module in (routes_ops, routes_accounts, routes_devices, routes_calls, routes_admin,
                   routes_invites):
        app.include_router(module.router)
    if (WEB_DIR / "index.html").exists():
        app.router.routes.append(WebClientMount("/", StaticFiles(directory=WEB_DIR, html=True),
                                                name="web"))
    return app
