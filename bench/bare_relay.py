"""The floor for bench/signaling.py: a bare `websockets` relay with no auth, state or storage.

Each client connects with ``?id=NAME``; a message ``{"to": [names], "re": ID, ...}`` is parsed,
forwarded as is to each named client, and answered with ``{"type": "ok", "re": ID}`` — the same
message pattern our signaling server produces, minus everything that makes it a product.

Frames go uncompressed, as facecall's do: permessage-deflate (RFC 7692, websockets' default) would
make the relay compress and inflate every frame, work facecall does not do, and so raise the floor
(by ~37 % per message on this machine). ``deflate`` as a second argument turns it on, to reproduce
the floor of the figures measured before that was noticed.
Run: ``python bench/bare_relay.py PORT [deflate]``.
"""

from __future__ import annotations

import asyncio
import json
import sys
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


async def main(port: int, compression: str | None) -> None:
    async with serve(handler, "127.0.0.1", port, max_size=2**20, compression=compression):
        print("ready", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]), "deflate" if sys.argv[2:] == ["deflate"] else None))
