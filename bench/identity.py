"""What signing and checking a call's SDP costs a device (docs/security.md, "Device identity
keys"), beside the anchor: the ``cryptography`` library's Ed25519 sign and verify of the same
bytes, measured in the same run.

Each description a device sends is signed once (``sign_description``), each one it gets is
checked once (``verify_description``, with a pinned key as text). The SDP is a real aiortc
offer (audio, video, the data channel), so the statement is as long as in a call.

    .venv/bin/python bench/identity.py [--seconds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable

from aiortc import RTCPeerConnection

from facecall.e2ee.identity import (
    new_private_key,
    public_key_text,
    sign_description,
    statement,
    verify_description,
)

IDS = ("01JE7Q3V2M6K9X8YH4C5T0B1RS", "01JE7Q3V2M6K9X8YH4C5T0B1AA", "01JE7Q3V2M6K9X8YH4C5T0B1BB",
       "01JE7Q3V2M6K9X8YH4C5T0B1CC")


async def real_offer() -> str:
    pc = RTCPeerConnection()
    pc.addTransceiver("audio")
    pc.addTransceiver("video")
    pc.createDataChannel("facecall", negotiated=True, id=0)
    await pc.setLocalDescription(await pc.createOffer())
    sdp: str = pc.localDescription.sdp
    await pc.close()
    return sdp


def per_call_us(work: Callable[[], object], seconds: float) -> float:
    """Microseconds per call of ``work``, over about ``seconds``."""
    calls, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        for _ in range(100):
            work()
        calls += 100
    return elapsed / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement (default 2)")
    args = parser.parse_args()
    sdp = asyncio.run(real_offer())
    key = new_private_key()
    public = key.public_key()
    text = public_key_text(key)
    call = (*IDS, "offer", sdp)
    signature = sign_description(key, *call)
    raw_signature = key.sign(statement(*call))
    message = statement(*call)

    rows = [
        ("sign", per_call_us(lambda: sign_description(key, *call), args.seconds),
         per_call_us(lambda: key.sign(message), args.seconds)),
        ("verify", per_call_us(lambda: verify_description(text, signature, *call), args.seconds),
         per_call_us(lambda: public.verify(raw_signature, message), args.seconds)),
    ]
    print(f"SDP: {len(sdp)} characters, statement {len(message)} bytes")
    print(f"{'':10}{'facecall µs':>14}{'cryptography µs':>18}{'ratio':>8}")
    for name, ours, anchor in rows:
        print(f"{name:10}{ours:14.1f}{anchor:18.1f}{ours / anchor:8.2f}")


if __name__ == "__main__":
    main()
