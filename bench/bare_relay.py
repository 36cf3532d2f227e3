"""The floor for bench/signaling.py: a bare `websockets` relay with no auth, state or storage.

Each client connects with ``?id=NAME``; a message ``{"to": [names], "re": ID, ...}`` is parsed,
forwarded as is to each named client, and answered with ``{"type": "ok", "re": ID}`` — the same
message pattern our signaling server produces, minus everything that makes it a product.

Frames go uncompressed, as facecall's do: permessage-deflate (RFC 7692, websockets' default) would
make the relay compress and inflate every frame, work facecall does not do, and so raise the floor
(by ~37 % per message on this machine). ``deflate`` as a second argument turns it on, to reproduce
the floor of the figures measured before that was noticed. ``--tls CERT KEY`` serves WSS (the
TLS of ``websockets.serve(ssl=...)``, that is the event loop's), as ``facecall serve --tls-cert``
does for the signaling node.
Run: ``python bench/bare_relay.py PORT [deflate] [--tls CERT KEY]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
from urllib.parse import parse_qs, urlsplit

import uvloop
from websockets.asyncio.server import ServerConnection, serve

clients: dict[str, ServerConnection] = {}


async def handler(ws: ServerConnection) -> None:
    assert ws.request is not None
    name = parse_qs(urlsplit(ws.request.path).query)["id"][0]
    clients[name] = ws
    try:
        async for raw in ws:
            message = json.loads(raw)
            for target in message.get("to", ()):
                peer = clients.get(target)
                if peer is not None:
                    await peer.send(raw)
            if "re" in message:
                await ws.send(json.dumps({"type": "ok", "re": message["re"]}))
    finally:
        clients.pop(name, None)


async def main(port: int, compression: str | None, context: ssl.SSLContext | None) -> None:
    async with serve(handler, "127.0.0.1", port, max_size=2**20, compression=compression,
                     ssl=context):
        print("ready", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("port", type=int)
    parser.add_argument("deflate", nargs="?", choices=["deflate"])
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    args = parser.parse_args()
    tls: ssl.SSLContext | None = None
    if args.tls:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(*args.tls)
    uvloop.run(main(args.port, args.deflate, tls))
