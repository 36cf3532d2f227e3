"""Run facecall processes: the all-in-one node (`facecall serve`) and its parts."""

from __future__ import annotations

import logging
import secrets
import socket
from collections.abc import Sequence

import uvicorn
import uvloop

from facecall.api.app import create_app
from facecall.api.http_transport import GuardedHttpProtocol
from facecall.api.tls_transport import TlsHandshakeGuard
from facecall.api.ws_transport import SignalingWebSocket
from facecall.config import WS_MAX_FRAME, Settings
from facecall.descriptors import raise_descriptor_limit
from facecall.logs import get_logger
from facecall.turn.config import TurnConfig
from facecall.turn.server import TurnServer

log = get_logger(__name__)


def build_uvicorn(settings: Settings, turn_uris: list[str] | None = None) -> uvicorn.Server:
    """A uvicorn server for the API + signaling app, not started yet."""
    app = create_app(settings, turn_uris=turn_uris)
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
    return uvicorn.Server(config) if tls is None else TlsNodeServer(config)


class TlsNodeServer(uvicorn.Server):
    """uvicorn's server for a node that runs TLS itself (:mod:`facecall.api.tls_transport`):
    uvicorn, whose own ``ssl`` setting stays unset, would announce an ``http://`` URL."""

    def _log_started_message(self, listeners: Sequence[socket.socket]) -> None:
        for listener in listeners:
            host, port = listener.getsockname()[:2]
            logging.getLogger("uvicorn.error").info(
                "Uvicorn running on https://%s (Press CTRL+C to quit)",
                     f"[{host}]:{port}" if ":" in host else f"{host}:{port}")


def turn_uris(server: TurnServer) -> list[str]:
    """The ICE server URIs (RFC 7064 / RFC 7065) clients use to reach ``server``."""

    def hostport(address: tuple[str, int]) -> str:
        host, port = address
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    uris = [f"stun:{hostport(a)}" for a in server.udp_addresses[:1]]
    uris += [f"turn:{hostport(a)}?transport=udp" for a in server.udp_addresses]
    uris += [f"turn:{hostport(a)}?transport=tcp" for a in server.tcp_addresses]
    uris += [f"turns:{hostport(a)}?transport=tcp" for a in server.tls_addresses]
    return uris


async def serve(settings: Settings, turn_config: TurnConfig | None = None) -> None:
    """Serve HTTP + WebSocket, and STUN/TURN in the same process when ``turn_config`` is given,
    until cancelled or signalled."""
    raise_descriptor_limit()  # one socket per connected device
    turn: TurnServer | None = None
    uris: list[str] = []
    if turn_config is not None:
        if not settings.turn_secrets:
            settings.turn_secrets = [secrets.token_urlsafe(32)]
        turn_config.rest_secrets = list(dict.fromkeys(turn_config.rest_secrets
                                                      + settings.turn_secrets))
        turn = TurnServer(turn_config)
        await turn.start()
        uris = turn_uris(turn)
    server = build_uvicorn(settings, uris)
    log.info("facecall.serving", url=settings.base_url, database=settings.database_url_shown,
             turn=uris or None)
    try:
        await server.serve()
    finally:
        if turn is not None:
            await turn.stop()


def run(settings: Settings, turn_config: TurnConfig | None = None) -> None:
    """Blocking entry point on uvloop."""
    uvloop.run(serve(settings, turn_config))
