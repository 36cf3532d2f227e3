"""The UDP impairment relay, over real loopback sockets."""

from __future__ import annotations

import asyncio
import math
import struct
import subprocess
import sys
import time

import pytest

from facecall.media.impairment import (
    TIMER_SLACK,
    Direction,
    DirectionPipe,
    DropReason,
    GilbertElliott,
    ImpairmentProfile,
    ImpairmentRelay,
    PacketRecord,
    parse_address,
)

Address = tuple[str, int]


class Peer(asyncio.DatagramProtocol):
    """A loopback UDP endpoint that keeps what it receives with the loop time."""

    def __init__(self) -> None:
        self.received: list[tuple[int, float]] = []
        self.transport: asyncio.DatagramTransport | None = None
        self.arrived = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.received.append((struct.unpack_from("!I", data)[0], asyncio.get_running_loop().time()))
        self.arrived.set()

    @property
    def address(self) -> Address:
        assert self.transport is not None
        return self.transport.get_extra_info("sockname")[:2]

    def send(self, seq: int, to: Address, size: int = 200) -> None:
        assert self.transport is not None
        self.transport.sendto(struct.pack("!I", seq) + bytes(size - 4), to)

    def close(self) -> None:
        assert self.transport is not None
        self.transport.close()


async def peer() -> Peer:
    _, protocol = await asyncio.get_running_loop().create_datagram_endpoint(
        Peer, local_addr=("127.0.0.1", 0)
    )
    return protocol


async def until(condition: object, timeout: float = 10.0) -> None:
    """Poll ``condition()`` until true (bounded, so a broken relay fails, not hangs)."""
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.002)


async def send_through(
    relay: ImpairmentRelay, src: Peer, count: int, size: int = 200, batch: int = 20
) -> None:
    """Send ``count`` datagrams from ``src`` to the relay, in batches the relay has read."""
    counters = relay.counters(Direction.A_TO_B)
    start = counters.received_packets
    for first in range(0, count, batch):
        last = min(first + batch, count)
        for seq in range(first, last):
            src.send(seq, relay.address, size)
        await until(lambda n=last: counters.received_packets - start >= n)


def dropped_seqs(relay: ImpairmentRelay) -> list[int]:
    return [r.seq for r in relay.records if r.dropped is not None]


async def run_loss(seed: int, profile: ImpairmentProfile, count: int) -> tuple[ImpairmentRelay, Peer]:
    a, b = await peer(), await peer()
    relay = ImpairmentRelay(to=b.address, profile=profile, seed=seed)
    await relay.start()
    try:
        await send_through(relay, a, count)
        forwarded = relay.counters(Direction.A_TO_B).forwarded_packets
        await until(lambda: len(b.received) >= forwarded)
    finally:
        relay.close()
        a.close()
        b.close()
    return relay, b


async def test_random_loss_is_within_bound_and_repeats_with_the_seed() -> None:
    profile = ImpairmentProfile(loss=0.1)
    n = 1000
    first, b = await run_loss(7, profile, n)
    counters = first.counters(Direction.A_TO_B)
    lost = counters.dropped_packets.get(DropReason.LOSS, 0)
    sigma = math.sqrt(n * 0.1 * 0.9)
    assert abs(lost - 100) < 5 * sigma
    assert counters.forwarded_packets + lost == n == counters.received_packets
    assert sorted(seq for seq, _ in b.received) == [
        r.seq for r in first.records if r.dropped is None
    ]
    again, _ = await run_loss(7, profile, n)
    assert dropped_seqs(again) == dropped_seqs(first)
    other, _ = await run_loss(8, profile, n)
    assert dropped_seqs(other) != dropped_seqs(first)


async def test_delay_and_jitter_hold_packets_without_reordering() -> None:
    a, b = await peer(), await peer()
    profile = ImpairmentProfile(delay_ms=250, jitter_ms=50)
    async with ImpairmentRelay(to=b.address, profile=profile, seed=3) as relay:
        await send_through(relay, a, 40, batch=5)
        assert relay.held > 0  # still holding packets right after they arrived
        await until(lambda: len(b.received) == 40)
    a.close()
    b.close()
    records = list(relay.records)
    delays = [r.departure - r.arrived for r in records]  # type: ignore[operator]
    assert all(d >= 0.200 - 1e-9 for d in delays)
    assert max(delays) - min(delays) > 0.005  # jitter varies the delay
    departures = [r.departure for r in records]
    assert departures == sorted(departures)
    assert [seq for seq, _ in b.received] == list(range(40))  # order kept
    resolution = time.get_clock_info("monotonic").resolution
    for (seq, received_at), record in zip(b.received, records, strict=True):
        assert record.seq == seq
        assert received_at >= record.departure - resolution - TIMER_SLACK  # held, never early


def test_jitter_reorders_only_when_asked() -> None:
    def departures(reorder: bool) -> list[float]:
        pipe = DirectionPipe(
            Direction.A_TO_B, ImpairmentProfile(delay_ms=50, jitter_ms=40, reorder=reorder), 1
        )
        return [pipe.admit(100, i * 0.002).departure for i in range(200)]  # type: ignore[misc]

    assert departures(False) == sorted(departures(False))
    assert departures(True) != sorted(departures(True))


async def test_rate_limit_drops_the_excess_and_paces_the_rest() -> None:
    a, b = await peer(), await peer()
    profile = ImpairmentProfile(rate_kbps=400, bucket_bytes=2000, queue_bytes=10_000)
    async with ImpairmentRelay(to=b.address, profile=profile, seed=1) as relay:
        await send_through(relay, a, 150, size=1000, batch=50)
        counters = relay.counters(Direction.A_TO_B)
        await until(lambda: len(b.received) == counters.forwarded_packets)
    a.close()
    b.close()
    assert counters.dropped_packets.get(DropReason.QUEUE, 0) > 0
    assert counters.forwarded_packets + counters.dropped == 150
    kept = [r for r in relay.records if r.dropped is None]
    # Token bucket: what leaves in any interval is at most the bucket plus rate x interval.
    for i, first in enumerate(kept):
        sent = 0
        for last in kept[i:]:
            sent += last.size
            assert sent <= 2000 + 50_000 * (last.released - first.released) + 1e-6  # type: ignore[operator]
    assert any(r.released > r.arrived for r in kept)  # packets did wait in the queue
    # The queue never holds more than its limit: arrival to release <= limit / rate.
    assert all(r.released - r.arrived <= 10_000 / 50_000 + 1e-9 for r in kept)  # type: ignore[operator]


def test_rate_can_change_at_runtime() -> None:
    pipe = DirectionPipe(Direction.A_TO_B, ImpairmentProfile(rate_kbps=2000, queue_bytes=10**9), 0)
    fast = [pipe.admit(1250, 0.0).released for _ in range(100)]
    pipe.set_profile(ImpairmentProfile(rate_kbps=500, queue_bytes=10**9))
    slow = [pipe.admit(1250, 0.0).released for _ in range(100)]
    pipe.set_profile(ImpairmentProfile(rate_kbps=2000, queue_bytes=10**9))
    fast_again = [pipe.admit(1250, 0.0).released for _ in range(100)]
    step = lambda xs: (xs[-1] - xs[-51]) / 50  # noqa: E731
    assert step(fast) == pytest.approx(0.005)
    assert step(slow) == pytest.approx(0.020)
    assert step(fast_again) == pytest.approx(0.005)


def test_gilbert_elliott_losses_come_in_bursts() -> None:
    burst = GilbertElliott(p=0.01, r=0.25)
    pipe = DirectionPipe(Direction.A_TO_B, ImpairmentProfile(burst=burst), 11)
    lost = [pipe.admit(100, i * 0.001).dropped is DropReason.BURST for i in range(40_000)]
    runs, current = [], 0
    for flag in lost:
        if flag:
            current += 1
        elif current:
            runs.append(current)
            current = 0
    rate = sum(lost) / len(lost)
    assert abs(rate - burst.mean_loss) < 0.25 * burst.mean_loss
    assert 3.0 < sum(runs) / len(runs) < 5.0  # mean burst 1 / r = 4 packets


async def test_learns_both_sides_and_relays_both_ways() -> None:
    a, b, c = await peer(), await peer(), await peer()
    async with ImpairmentRelay(seed=0) as relay:
        a.send(0, relay.address)  # A is learned, B unknown yet: dropped
        await until(lambda: relay.counters("a_to_b").received_packets == 1)
        b.send(100, relay.address)  # B learned, A known: forwarded to A
        await until(lambda: len(a.received) == 1)
        a.send(1, relay.address)
        await until(lambda: len(b.received) == 1)
        c.send(7, relay.address)  # a third party is refused
        await until(lambda: relay.counters("a_to_b").received_packets == 3)
        assert relay.side_a == a.address and relay.side_b == b.address
    for p in (a, b, c):
        p.close()
    assert [s for s, _ in a.received] == [100] and [s for s, _ in b.received] == [1]
    assert not c.received
    assert relay.counters("a_to_b").dropped_packets == {DropReason.NO_PEER: 2}


async def test_a_destination_set_later_makes_the_other_sender_side_a() -> None:
    """The relay's address goes out before B's is known (an SDP offer); B then sends first."""
    a, b = await peer(), await peer()
    async with ImpairmentRelay(seed=0) as relay:
        b.send(100, relay.address)  # learnt as A in learning mode: it was first
        await until(lambda: relay.counters("a_to_b").received_packets == 1)
        relay.set_destination(b.address)
        a.send(0, relay.address)  # now a is A, whatever came before
        await until(lambda: len(b.received) == 1)
        b.send(101, relay.address)
        await until(lambda: len(a.received) == 1)
        assert (relay.side_a, relay.side_b) == (a.address, b.address)
    a.close()
    b.close()
    assert [s for s, _ in a.received] == [101] and [s for s, _ in b.received] == [0]


async def test_profiles_per_direction() -> None:
    a, b = await peer(), await peer()
    relay = ImpairmentRelay(
        to=b.address,
        profile=ImpairmentProfile(loss=1.0),
        reverse_profile=ImpairmentProfile(),
        seed=0,
    )
    async with relay:
        a.send(0, relay.address)
        await until(lambda: relay.counters("a_to_b").received_packets == 1)
        b.send(1, relay.address)
        await until(lambda: len(a.received) == 1)
        relay.set_profile(ImpairmentProfile(), "a_to_b")
        a.send(2, relay.address)
        await until(lambda: len(b.received) == 1)
    a.close()
    b.close()
    assert relay.counters("a_to_b").dropped_packets == {DropReason.LOSS: 1}
    assert [s for s, _ in b.received] == [2]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"delay_ms": -1}, "delay_ms"),
        ({"jitter_ms": -5}, "jitter_ms"),
        ({"loss": 1.5}, "loss"),
        ({"rate_kbps": 0}, "rate_kbps"),
        ({"bucket_bytes": 0}, "bucket_bytes"),
        ({"queue_bytes": -1}, "queue_bytes"),
    ],
)
def test_bad_profiles_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ImpairmentProfile(**kwargs)  # type: ignore[arg-type]


def test_bad_burst_and_addresses_are_refused() -> None:
    with pytest.raises(ValueError, match="never ends"):
        GilbertElliott(p=0.1, r=0.0)
    with pytest.raises(ValueError, match="loss_bad"):
        GilbertElliott(p=0.1, r=0.5, loss_bad=2)
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_address("127.0.0.1")
    assert parse_address("[::1]:5000") == ("::1", 5000)


def test_command_line_rejects_bad_parameters() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "facecall.media.impairment", "--listen", "127.0.0.1:0",
         "--loss", "3"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 2
    assert "loss must be a probability" in result.stderr


async def test_command_line_relays_with_impairment() -> None:
    b = await peer()
    probe = await peer()  # find a free port for the relay: bind, note, release
    port = probe.address[1]
    probe.close()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "facecall.media.impairment", "--listen", f"127.0.0.1:{port}",
        "--to", f"127.0.0.1:{b.address[1]}", "--delay-ms", "5", "--loss", "0.5", "--seed", "1",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        banner = await asyncio.wait_for(process.stdout.readline(), 30)
        assert b"impairment relay on 127.0.0.1" in banner
        a = await peer()
        for seq in range(200):
            a.send(seq, ("127.0.0.1", port))
            await asyncio.sleep(0.001)
        await until(lambda: len(b.received) > 50)
        assert len(b.received) < 200
    finally:
        process.terminate()
        out, _ = await asyncio.wait_for(process.communicate(), 30)
    assert b"a_to_b: in=200" in out
    assert process.returncode == 0
    a.close()
    b.close()


def test_records_are_plain_data() -> None:
    record = DirectionPipe(Direction.B_TO_A, ImpairmentProfile(delay_ms=10), 0).admit(10, 1.0)
    assert record == PacketRecord(Direction.B_TO_A, 0, 10, 1.0, None, 1.0, pytest.approx(1.01))


def test_runs_on_uvloop() -> None:
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> tuple[list[int], list[PacketRecord]]:
        a, b = await peer(), await peer()
        profile = ImpairmentProfile(delay_ms=30, jitter_ms=10, loss=0.1)
        async with ImpairmentRelay(to=b.address, profile=profile, seed=4) as relay:
            await send_through(relay, a, 100, batch=10)
            forwarded = relay.counters("a_to_b").forwarded_packets
            await until(lambda: len(b.received) == forwarded)
        a.close()
        b.close()
        return [seq for seq, _ in b.received], list(relay.records)

    received, records = uvloop.run(scenario())
    assert received == [r.seq for r in records if r.dropped is None]  # in order, none extra
    assert 0 < len(received) < 100
