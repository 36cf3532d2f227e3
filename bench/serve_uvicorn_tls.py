"""``facecall serve`` with uvicorn's own TLS, as before ``f85449f``: the anchor of
``bench/https_connections.py``, never a server to run.

uvicorn hands the certificate to ``loop.create_server(ssl=...)``, so the event loop runs each
handshake before the node's protocol exists (uncounted, up to 60 s). Everything after the
handshake is the node's own :class:`~facecall.api.http_transport.GuardedHttpProtocol`, as in
``facecall serve``.

    .venv/bin/python bench/serve_uvicorn_tls.py serve --no-turn --port 8443 --tls-cert C --tls-key K
"""

from __future__ import annotations

import sys

import uvicorn

from facecall import server
from facecall.api.http_transport import GuardedHttpProtocol
from facecall.cli import main
from facecall.config import Settings
from facecall.store import Store

build_uvicorn = server.build_uvicorn


def build_uvicorn_with_its_tls(settings: Settings, turn_uris: list[str] | None = None,
                               store: Store | None = None) -> uvicorn.Server:
    """:func:`facecall.server.build_uvicorn` as it was: the certificate given to uvicorn
    (read when uvicorn loads its config, as the server starts)."""
    node = build_uvicorn(settings, turn_uris, store=store)
    node.config.http = GuardedHttpProtocol
    node.config.ssl_certfile, node.config.ssl_keyfile = settings.tls_cert, settings.tls_key
    return node


if __name__ == "__main__":
    print("facecall: TLS handshakes run by uvicorn's event loop (a benchmark anchor)", file=sys.stderr)
    server.build_uvicorn = build_uvicorn_with_its_tls
    sys.exit(main(sys.argv[1:]))
