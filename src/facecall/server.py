"""Run facecall processes: the all-in-one node (`facecall serve`) and its parts."""

from __future__ import annotations

import contextlib
import secrets
import socket

import uvicorn
import uvloop

from facecall.api.app import create_app
from facecall.api.http_transport import GuardedHttpProtocol
from facecall.api.tls_transport import TlsHandshakeGuard
from facecall.api.ws_transport import SignalingWebSocket
from facecall.bus import Bus
from facecall.bus.redis_bus import BusUnavailable, RedisBus
from facecall.config import WS_MAX_FRAME, Settings
from facecall.descriptors import raise_descriptor_limit
from facecall.logs import get_logger
from facecall.store import Store
from facecall.store.db import shown_url
from facecall.store.migrate import database_problem
from facecall.turn.cli import TurnStartFailure, hostport, listen_failure, start_turn
from facecall.turn.config import TurnConfig
from facecall.turn.server import TurnServer

log = get_logger(__name__)


class StartupFailure(Exception):
    """The node cannot start: a port it cannot listen on, a database it cannot use. ``str()``
    is one line naming what failed (``facecall: ...`` on stderr, no traceback)."""


def build_uvicorn(settings: Settings, turn_uris: list[str] | None = None,
                  store: Store | None = None, bus: Bus | None = None) -> uvicorn.Server:
    """A uvicorn server for the API + signaling app, not started yet; ``store`` and ``bus``: an
    open store and a started bus for the app to use (their caller closes them), else the app
    opens ``settings.database_url`` and an in-process bus."""
    app = create_app(settings, turn_uris=turn_uris, store=store, bus=bus)
    tls = settings.tls_context()
    config = uvicorn.Config(
        # frames above Settings.max_message_bytes get `too_large`; above WS_MAX_FRAME, 1009
        app, host=settings.host, port=settings.port, ws_max_size=WS_MAX_FRAME,
        log_config=None, access_log=False, lifespan="on", ws_ping_interval=20.0,
        ws_ping_timeout=20.0, ws_per_message_deflate=False,  # zlib contexts cost ~100 KiB a device
        ws=SignalingWebSocket,  # /v1/signaling without ASGI (docs/benchmarks.md, "Signaling")
        # bounded heads, head/body deadlines, a connection cap; over TLS the handshake too
        http=GuardedHttpProtocol if tls is None else TlsHandshakeGuard.factory(tls),
    )
    return uvicorn.Server(config)


def turn_uris(server: TurnServer) -> list[str]:
    """The ICE server URIs (RFC 7064 / RFC 7065) clients use to reach ``server``."""

    uris = [f"stun:{hostport(*a)}" for a in server.udp_addresses[:1]]
    uris += [f"turn:{hostport(*a)}?transport=udp" for a in server.udp_addresses]
    uris += [f"turn:{hostport(*a)}?transport=tcp" for a in server.tcp_addresses]
    uris += [f"turns:{hostport(*a)}?transport=tcp" for a in server.tls_addresses]
    return uris


def bind_http(host: str, port: int) -> socket.socket:
    """The node's listening socket, bound as uvicorn binds it (SO_REUSEADDR, IPv4 or IPv6 by
    the host's form); :class:`StartupFailure` naming the address when it cannot be. Made with
    ``IPPROTO_TCP`` named: asyncio's own loop turns Nagle's algorithm off (``TCP_NODELAY``) only
    on accepted sockets whose protocol says TCP (uvloop does it anyway), and a signaling frame
    held for a delayed ACK costs ~40 ms."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise StartupFailure(f"cannot listen on {hostport(host, port)}: {listen_failure(exc)}") from None
    sock.set_inheritable(True)
    return sock


async def open_store(settings: Settings) -> Store:
    """The node's store, migrated; :class:`StartupFailure` (one line, the URL without its
    password) when the database cannot be opened or migrated."""
    try:
        return await Store.open(settings.database_url)
    except Exception as exc:
        problem = database_problem(exc, settings.database_url)
        if problem is None:
            raise
        raise StartupFailure(problem) from None


async def open_bus(settings: Settings) -> Bus | None:
    """The Redis bus of ``settings.redis_url``, started, or None for the in-process bus (the
    app makes it); :class:`StartupFailure` (one line, the URL without its password) when
    Redis cannot be reached."""
    if not settings.redis_url:
        return None
    bus = RedisBus(settings.redis_url, limit=settings.outbox_limit, ttl=settings.resume_grace * 4)
    try:
        await bus.start()
    except BusUnavailable as exc:
        raise StartupFailure(str(exc)) from None
    return bus


async def serve(settings: Settings, turn_config: TurnConfig | None = None) -> None:
    """Serve HTTP + WebSocket, and STUN/TURN in the same process when ``turn_config`` is given,
    until cancelled or signalled. Everything that can fail at start-up is done before the node
    says it serves: the HTTP port is bound, then the TURN server's, then the database opened
    and migrated; the first of them that fails raises :class:`StartupFailure`, with what was
    opened closed again."""
    raise_descriptor_limit()  # one socket per connected device
    turn: TurnServer | None = None
    store: Store | None = None
    bus: Bus | None = None
    uris: list[str] = []
    sock = bind_http(settings.host, settings.port)
    try:
        if turn_config is not None:
            if not settings.turn_secrets:
                settings.turn_secrets = [secrets.token_urlsafe(32)]
            turn_config.rest_secrets = list(dict.fromkeys(turn_config.rest_secrets
                                                          + settings.turn_secrets))
            try:
                turn = await start_turn(turn_config)
            except TurnStartFailure as exc:
                raise StartupFailure(str(exc)) from None
            uris = turn_uris(turn)
        store = await open_store(settings)
        bus = await open_bus(settings)
        server = build_uvicorn(settings, uris, store=store, bus=bus)
        log.info("facecall.serving", url=settings.base_url, database=shown_url(settings.database_url),
                 bus=shown_url(settings.redis_url) if settings.redis_url else "in-process",
                 turn=uris or None)
        await server.serve(sockets=[sock])
    finally:
        if bus is not None:
            await bus.close()
        if store is not None:
            await store.close()
        if turn is not None:
            await turn.stop()
        with contextlib.suppress(OSError):
            sock.close()


def run(settings: Settings, turn_config: TurnConfig | None = None) -> None:
    """Blocking entry point on uvloop."""
    uvloop.run(serve(settings, turn_config))
