"""What the impairment relay itself costs: round trip and throughput, against direct UDP.

Run: ``.venv/bin/python bench/impair_relay.py [--count 2000] [--size 1200]``

A UDP echo peer on 127.0.0.1 answers pings (a) directly — the anchor — and (b)
through an :class:`~facecall.media.impairment.ImpairmentRelay` with an empty
profile, both in the same run on uvloop. Prints round-trip p50/p95 and the
forwarding rate of a one-way burst through the relay (relay in the same process).
"""

from __future__ import annotations

import argparse
import asyncio
import time

import uvloop

from facecall.media.impairment import ImpairmentProfile, ImpairmentRelay
from facecall.media.sinks import percentile

Address = tuple[str, int]


class Echo(asyncio.DatagramProtocol):
    """Send every datagram back to where it came from."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.DatagramTransport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.transport.sendto(data, addr)


class Pinger(asyncio.DatagramProtocol):
    """Send one datagram at a time and wait for it to come back."""

    def __init__(self) -> None:
        self.reply: asyncio.Future[None] | None = None
        self.count = 0
        self.target = 0
        self.reached = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.DatagramTransport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.count += 1
        if self.count >= self.target:
            self.reached.set()
        if self.reply is not None and not self.reply.done():
            self.reply.set_result(None)

    async def rtts(self, to: Address, count: int, size: int) -> list[float]:
        out = []
        payload = bytes(size)
        for _ in range(count):
            self.reply = asyncio.get_running_loop().create_future()
            start = time.perf_counter()
            self.transport.sendto(payload, to)
            await asyncio.wait_for(self.reply, 2)
            out.append((time.perf_counter() - start) * 1000)
        return out


async def main(count: int, size: int) -> None:
    loop = asyncio.get_running_loop()
    echo_t, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    echo: Address = echo_t.get_extra_info("sockname")[:2]
    ping_t, pinger = await loop.create_datagram_endpoint(Pinger, local_addr=("127.0.0.1", 0))
    direct = await pinger.rtts(echo, count, size)
    async with ImpairmentRelay(to=echo, profile=ImpairmentProfile(), keep_records=0) as relay:
        relayed = await pinger.rtts(relay.address, count, size)
        # Throughput: bursts of 50 through the relay, waiting for the echoes each time.
        pinger.count, sent, start = 0, 0, time.perf_counter()
        while time.perf_counter() - start < 2.0:
            for _ in range(50):
                ping_t.sendto(bytes(size), relay.address)
            sent += 50
            pinger.target = sent - 100
            pinger.reached.clear()
            if pinger.count < pinger.target:
                await asyncio.wait_for(pinger.reached.wait(), 2)
        elapsed = time.perf_counter() - start
        forwarded = relay.counters("a_to_b").forwarded_packets
    print(f"round trip, {size}-byte datagrams, n={count} (ms):")
    print(f"  direct UDP (anchor)  p50 {percentile(direct, 50):.3f}  p95 {percentile(direct, 95):.3f}")
    print(f"  through relay        p50 {percentile(relayed, 50):.3f}  p95 {percentile(relayed, 95):.3f}")
    print(f"relay forwarding: {forwarded / elapsed:,.0f} packets/s each way "
          f"({forwarded / elapsed * size * 8 / 1e6:,.0f} Mbit/s at {size} bytes), echo both ways")
    ping_t.close()
    echo_t.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--size", type=int, default=1200)
    args = parser.parse_args()
    uvloop.run(main(args.count, args.size))
