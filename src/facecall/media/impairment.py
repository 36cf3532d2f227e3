"""A user-space UDP impairment relay for tests and benchmarks.

``tc netem`` does not exist on the kernels we test on, so this relay stands
between two peers on loopback and does what netem would: one-way delay,
jitter (without reordering unless asked), random loss, bursty loss
(Gilbert-Elliott), and a rate limit (token bucket feeding a drop-tail queue).

Each direction (``a_to_b``, ``b_to_a``) has its own :class:`ImpairmentProfile`
and its own random generator seeded from the relay's seed, so a run with the
same seed and the same packets drops and delays the same packets.  Profiles can
be changed while running (:meth:`ImpairmentRelay.set_profile`).

Peers: with ``to`` given, side B is that address and side A is whoever else
sends to the relay (the latest such sender).  Without ``to``, the first two
distinct senders become A and B.  Datagrams from a third address, or towards a
side not yet known, are dropped and counted (``no_peer``).

Per packet the relay applies, in order: loss (random, then Gilbert-Elliott),
the rate limiter (the packet leaves the bucket when enough tokens have
accumulated; if the bytes waiting would exceed the queue limit, it is dropped),
then delay + jitter.  Every decision is kept in :attr:`ImpairmentRelay.records`
(times on the event loop's clock) so tests check the schedule, not the wall clock.
Held datagrams leave at their departure time to within :data:`TIMER_SLACK`.

Command line::

    python -m facecall.media.impairment --listen 127.0.0.1:PORT --to 127.0.0.1:PORT \\
        --delay-ms 75 --jitter-ms 30 --loss 0.03 --seed 1
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import enum
import heapq
import random
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

Address = tuple[str, int]

TIMER_SLACK = 0.001
"""Held datagrams go out up to this early (s): uvloop's timers tick in milliseconds."""


class Direction(enum.StrEnum):
    """Which way a datagram travels through the relay."""

    A_TO_B = "a_to_b"
    B_TO_A = "b_to_a"


class DropReason(enum.StrEnum):
    """Why the relay dropped a datagram."""

    LOSS = "loss"
    """Random (Bernoulli) loss."""
    BURST = "burst"
    """Gilbert-Elliott bursty loss."""
    QUEUE = "queue"
    """The rate limiter's queue was full (drop tail)."""
    NO_PEER = "no_peer"
    """No known destination, or a sender that is neither side."""


@dataclass(frozen=True, slots=True)
class GilbertElliott:
    """Two-state bursty loss: a good and a bad state with their own loss rates.

    Per packet the state changes first (good → bad with ``p``, bad → good with
    ``r``), then the packet is lost with the current state's loss probability.
    The mean burst length in the bad state is ``1 / r`` packets.
    """

    p: float
    """Probability of moving from good to bad, per packet."""
    r: float
    """Probability of moving from bad to good, per packet."""
    loss_bad: float = 1.0
    loss_good: float = 0.0

    def __post_init__(self) -> None:
        for name in ("p", "r", "loss_bad", "loss_good"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"Gilbert-Elliott {name} must be in [0, 1], got {value}")
        if self.r == 0.0 and self.p > 0.0:
            raise ValueError("Gilbert-Elliott r must be > 0, or the bad state never ends")

    @property
    def mean_loss(self) -> float:
        """Long-run loss rate (stationary probability of each state times its loss)."""
        if self.p == 0.0:
            return self.loss_good
        bad = self.p / (self.p + self.r)
        return bad * self.loss_bad + (1 - bad) * self.loss_good


@dataclass(frozen=True, slots=True)
class ImpairmentProfile:
    """What the relay does to one direction.  All fields default to "nothing"."""

    delay_ms: float = 0.0
    """Fixed one-way delay."""
    jitter_ms: float = 0.0
    """Each packet's delay varies uniformly within ``delay_ms ± jitter_ms`` (not below 0)."""
    loss: float = 0.0
    """Random loss probability per packet."""
    burst: GilbertElliott | None = None
    """Bursty loss on top of ``loss``."""
    rate_kbps: float | None = None
    """Rate limit in kbit/s (IP payload bytes); ``None`` for unlimited."""
    bucket_bytes: int = 3000
    """Token bucket depth: how many bytes may pass back to back at full speed."""
    queue_bytes: int | None = None
    """Bytes allowed to wait for tokens; default: 100 ms at ``rate_kbps`` (at least 1500)."""
    reorder: bool = False
    """Let jitter reorder packets (otherwise a packet never overtakes the previous one)."""

    def __post_init__(self) -> None:
        if self.delay_ms < 0:
            raise ValueError(f"delay_ms must be >= 0, got {self.delay_ms}")
        if self.jitter_ms < 0:
            raise ValueError(f"jitter_ms must be >= 0, got {self.jitter_ms}")
        if not 0.0 <= self.loss <= 1.0:
            raise ValueError(f"loss must be a probability in [0, 1], got {self.loss}")
        if self.rate_kbps is not None and self.rate_kbps <= 0:
            raise ValueError(f"rate_kbps must be > 0 (or None for unlimited), got {self.rate_kbps}")
        if self.bucket_bytes < 1:
            raise ValueError(f"bucket_bytes must be >= 1, got {self.bucket_bytes}")
        if self.queue_bytes is not None and self.queue_bytes < 0:
            raise ValueError(f"queue_bytes must be >= 0, got {self.queue_bytes}")

    @property
    def queue_limit(self) -> int | None:
        """Effective queue limit in bytes (``None`` when there is no rate limit)."""
        if self.rate_kbps is None:
            return None
        if self.queue_bytes is not None:
            return self.queue_bytes
        return max(1500, round(self.rate_kbps * 1000 / 8 * 0.1))


@dataclass(slots=True)
class Counters:
    """Packets and bytes seen, forwarded and dropped in one direction."""

    received_packets: int = 0
    received_bytes: int = 0
    forwarded_packets: int = 0
    forwarded_bytes: int = 0
    dropped_packets: dict[DropReason, int] = field(default_factory=dict)
    dropped_bytes: dict[DropReason, int] = field(default_factory=dict)

    @property
    def dropped(self) -> int:
        """All dropped packets, whatever the reason."""
        return sum(self.dropped_packets.values())


@dataclass(frozen=True, slots=True)
class PacketRecord:
    """What the relay decided for one datagram (times on the loop's clock, seconds)."""

    direction: Direction
    seq: int
    """Index of the datagram in its direction, from 0."""
    size: int
    arrived: float
    dropped: DropReason | None = None
    released: float | None = None
    """When the rate limiter let it go (= ``arrived`` without a limit)."""
    departure: float | None = None
    """When it was scheduled to be sent on."""


class DirectionPipe:
    """The impairment state of one direction; pure scheduling, no sockets.

    :meth:`admit` decides for a datagram arriving at ``now`` whether it is
    dropped or when it departs.  The relay calls it; tests may call it directly.
    """

    def __init__(self, direction: Direction, profile: ImpairmentProfile, seed: int) -> None:
        self.direction = direction
        self.profile = profile
        self.counters = Counters()
        self._rng = random.Random(f"{seed}:{direction.value}")
        self._bad = False
        self._seq = 0
        self._tokens = float(profile.bucket_bytes)
        self._tokens_at = float("-inf")
        self._last_release = float("-inf")
        self._waiting: collections.deque[tuple[float, int]] = collections.deque()
        self._waiting_bytes = 0
        self._last_departure = float("-inf")

    def set_profile(self, profile: ImpairmentProfile) -> None:
        """Apply ``profile`` to datagrams arriving from now on."""
        self.profile = profile
        self._tokens = min(self._tokens, float(profile.bucket_bytes))

    def _drop(self, record: PacketRecord, reason: DropReason) -> PacketRecord:
        c = self.counters
        c.dropped_packets[reason] = c.dropped_packets.get(reason, 0) + 1
        c.dropped_bytes[reason] = c.dropped_bytes.get(reason, 0) + record.size
        return dataclasses.replace(record, dropped=reason)

    def _lost(self) -> DropReason | None:
        profile = self.profile
        # Draw every random number for every packet, so the sequence of
        # decisions depends only on the seed and the packet index.
        draw_loss, draw_state, draw_burst = self._rng.random(), self._rng.random(), self._rng.random()
        lost: DropReason | None = DropReason.LOSS if draw_loss < profile.loss else None
        burst = profile.burst
        if burst is not None:
            self._bad = draw_state >= burst.r if self._bad else draw_state < burst.p
            if draw_burst < (burst.loss_bad if self._bad else burst.loss_good) and lost is None:
                lost = DropReason.BURST
        return lost

    def _release_time(self, now: float, size: int) -> float | None:
        """Token bucket with a drop-tail queue: when the packet may leave, or None."""
        profile = self.profile
        limit = profile.queue_limit
        if profile.rate_kbps is None or limit is None:
            return now
        while self._waiting and self._waiting[0][0] <= now:
            self._waiting_bytes -= self._waiting.popleft()[1]
        rate = profile.rate_kbps * 1000 / 8  # bytes per second
        start = max(now, self._last_release)
        tokens = min(float(profile.bucket_bytes), self._tokens + (start - self._tokens_at) * rate)
        release = start if tokens >= size else start + (size - tokens) / rate
        if release > now and self._waiting_bytes + size > limit:
            return None
        self._tokens = min(float(profile.bucket_bytes), tokens + (release - start) * rate) - size
        self._tokens_at = release
        self._last_release = release
        if release > now:
            self._waiting.append((release, size))
            self._waiting_bytes += size
        return release

    def admit(self, size: int, now: float) -> PacketRecord:
        """Decide the fate of a datagram of ``size`` bytes arriving at ``now``."""
        record = PacketRecord(self.direction, self._seq, size, now)
        self._seq += 1
        self.counters.received_packets += 1
        self.counters.received_bytes += size
        jitter_draw = self._rng.random()
        lost = self._lost()
        if lost is not None:
            return self._drop(record, lost)
        release = self._release_time(now, size)
        if release is None:
            return self._drop(record, DropReason.QUEUE)
        profile = self.profile
        delay = profile.delay_ms + profile.jitter_ms * (2 * jitter_draw - 1)
        departure = release + max(0.0, delay) / 1000
        if not profile.reorder:
            departure = max(departure, self._last_departure)
        self._last_departure = max(self._last_departure, departure)
        self.counters.forwarded_packets += 1
        self.counters.forwarded_bytes += size
        return dataclasses.replace(record, released=release, departure=departure)

    def count_no_peer(self, size: int, now: float) -> PacketRecord:
        """Count a datagram that has nowhere to go."""
        record = PacketRecord(self.direction, self._seq, size, now)
        self._seq += 1
        self.counters.received_packets += 1
        self.counters.received_bytes += size
        return self._drop(record, DropReason.NO_PEER)


class _RelayProtocol(asyncio.DatagramProtocol):
    def __init__(self, relay: ImpairmentRelay) -> None:
        self._relay = relay

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self._relay._datagram_received(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        self._relay.errors += 1


class ImpairmentRelay:
    """Forward UDP datagrams between two peers through two :class:`DirectionPipe` s.

    Use as ``async with ImpairmentRelay(...) as relay:`` or ``await relay.start()``
    / ``relay.close()``; :attr:`address` is the bound ``(host, port)``.
    """

    def __init__(
        self,
        listen: Address = ("127.0.0.1", 0),
        to: Address | None = None,
        profile: ImpairmentProfile | None = None,
        *,
        reverse_profile: ImpairmentProfile | None = None,
        seed: int = 0,
        keep_records: int = 100_000,
    ) -> None:
        """Prepare a relay; ``profile`` applies to both directions unless
        ``reverse_profile`` gives B → A its own.  ``keep_records`` bounds
        :attr:`records` (0 keeps none)."""
        profile = profile or ImpairmentProfile()
        self.listen = listen
        self.side_b: Address | None = _normalise(to) if to else None
        self.side_a: Address | None = None
        self._learn_b = to is None
        self.pipes = {
            Direction.A_TO_B: DirectionPipe(Direction.A_TO_B, profile, seed),
            Direction.B_TO_A: DirectionPipe(Direction.B_TO_A, reverse_profile or profile, seed),
        }
        self.records: collections.deque[PacketRecord] = collections.deque(maxlen=keep_records)
        self.errors = 0
        self._transport: asyncio.DatagramTransport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Held datagrams per direction: a heap ordered by (departure, seq), so
        # equal departure times keep arrival order; one timer per direction.
        self._held: dict[Direction, list[tuple[float, int, bytes, Address]]] = {
            d: [] for d in Direction
        }
        self._timers: dict[Direction, tuple[asyncio.TimerHandle, float] | None] = {
            d: None for d in Direction
        }

    async def start(self) -> Address:
        """Bind the listening socket; return its address."""
        self._loop = asyncio.get_running_loop()
        transport, _ = await self._loop.create_datagram_endpoint(
            lambda: _RelayProtocol(self), local_addr=self.listen
        )
        self._transport = transport
        return self.address

    @property
    def address(self) -> Address:
        """The relay's bound ``(host, port)``."""
        if self._transport is None:
            raise RuntimeError("relay is not started")
        host, port = self._transport.get_extra_info("sockname")[:2]
        return str(host), int(port)

    def close(self) -> None:
        """Stop relaying; datagrams still held are discarded."""
        for direction, timer in self._timers.items():
            if timer is not None:
                timer[0].cancel()
            self._timers[direction] = None
            self._held[direction].clear()
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    async def __aenter__(self) -> ImpairmentRelay:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()

    def set_destination(self, to: Address) -> None:
        """Make ``to`` side B from now on, and side A whoever else sends next: for a relay whose
        own address had to be handed out (in an SDP offer, say) before B's address was known.
        What the relay learnt until then is forgotten."""
        self.side_b = _normalise(to)
        self.side_a = None
        self._learn_b = False

    def set_profile(self, profile: ImpairmentProfile, direction: Direction | str = "both") -> None:
        """Change the impairment of one direction (or ``"both"``) at runtime."""
        if direction == "both":
            targets = list(self.pipes.values())
        else:
            targets = [self.pipes[Direction(direction)]]
        for pipe in targets:
            pipe.set_profile(profile)

    def counters(self, direction: Direction | str) -> Counters:
        """Counters of one direction."""
        return self.pipes[Direction(direction)].counters

    def _route(self, source: Address) -> tuple[Direction, Address | None] | None:
        if source == self.side_b:
            return Direction.B_TO_A, self.side_a
        if self._learn_b:
            if self.side_a is None or source == self.side_a:
                self.side_a = source
                return Direction.A_TO_B, self.side_b
            if self.side_b is None:
                self.side_b = source
                return Direction.B_TO_A, self.side_a
            return None
        self.side_a = source
        return Direction.A_TO_B, self.side_b

    def _datagram_received(self, data: bytes, source: Address) -> None:
        assert self._loop is not None
        now = self._loop.time()
        route = self._route(_normalise(source))
        if route is None or route[1] is None:
            pipe = self.pipes[route[0] if route else Direction.A_TO_B]
            self.records.append(pipe.count_no_peer(len(data), now))
            return
        direction, destination = route
        record = self.pipes[direction].admit(len(data), now)
        self.records.append(record)
        if record.departure is None:
            return
        if record.departure <= now:
            self._send(data, destination)
            return
        heapq.heappush(self._held[direction], (record.departure, record.seq, data, destination))
        self._arm(direction)

    @property
    def held(self) -> int:
        """Datagrams currently held back (delayed or queued), not yet sent on."""
        return sum(len(heap) for heap in self._held.values())

    def _arm(self, direction: Direction) -> None:
        """(Re)schedule the direction's timer for its earliest held datagram."""
        assert self._loop is not None
        heap, timer = self._held[direction], self._timers[direction]
        if not heap:
            return
        if timer is not None:
            if timer[1] <= heap[0][0]:
                return
            timer[0].cancel()
        when = heap[0][0]
        self._timers[direction] = (self._loop.call_at(when, self._release, direction), when)

    def _release(self, direction: Direction) -> None:
        """Send on every held datagram whose departure time has come, in order."""
        assert self._loop is not None
        self._timers[direction] = None
        heap, now = self._held[direction], self._loop.time()
        while heap and heap[0][0] <= now + TIMER_SLACK:
            _, _, data, destination = heapq.heappop(heap)
            self._send(data, destination)
        self._arm(direction)

    def _send(self, data: bytes, destination: Address) -> None:
        if self._transport is not None:
            self._transport.sendto(data, destination)


def _normalise(address: Sequence[str | int]) -> Address:
    return str(address[0]), int(address[1])


def parse_address(text: str) -> Address:
    """Parse ``HOST:PORT`` (``[::1]:PORT`` for IPv6) into an address tuple."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m facecall.media.impairment",
        description="UDP impairment relay: delay, jitter, loss, bursts, rate limit (seeded).",
    )
    parser.add_argument("--listen", required=True, help="HOST:PORT to listen on")
    parser.add_argument("--to", help="HOST:PORT of side B (default: learn both sides)")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="one-way delay, each way")
    parser.add_argument("--jitter-ms", type=float, default=0.0, help="uniform delay variation")
    parser.add_argument("--loss", type=float, default=0.0, help="random loss probability")
    parser.add_argument(
        "--burst", metavar="P,R", help="Gilbert-Elliott loss: P good->bad, R bad->good per packet"
    )
    parser.add_argument("--rate-kbps", type=float, help="rate limit in kbit/s, each way")
    parser.add_argument("--queue-bytes", type=int, help="rate limiter queue (drop tail)")
    parser.add_argument("--reorder", action="store_true", help="let jitter reorder packets")
    parser.add_argument("--seed", type=int, default=0, help="random seed (runs repeat)")
    parser.add_argument("--stats-interval", type=float, default=0.0, help="print counters every S s")
    return parser


def profile_from_args(args: argparse.Namespace) -> ImpairmentProfile:
    """Build the profile the command line asks for (raises ``ValueError`` when invalid)."""
    burst = None
    if args.burst:
        try:
            p, r = (float(x) for x in args.burst.split(","))
        except ValueError:
            raise ValueError(f"--burst expects P,R (two probabilities), got {args.burst!r}") from None
        burst = GilbertElliott(p=p, r=r)
    return ImpairmentProfile(
        delay_ms=args.delay_ms,
        jitter_ms=args.jitter_ms,
        loss=args.loss,
        burst=burst,
        rate_kbps=args.rate_kbps,
        queue_bytes=args.queue_bytes,
        reorder=args.reorder,
    )


def _format_counters(relay: ImpairmentRelay) -> str:
    parts = []
    for direction, pipe in relay.pipes.items():
        c = pipe.counters
        drops = ",".join(f"{k.value}={v}" for k, v in sorted(c.dropped_packets.items())) or "0"
        parts.append(
            f"{direction.value}: in={c.received_packets} out={c.forwarded_packets} "
            f"bytes_out={c.forwarded_bytes} dropped[{drops}]"
        )
    return " | ".join(parts)


async def _serve(listen: Address, to: Address | None, profile: ImpairmentProfile,
                 seed: int, stats_interval: float) -> None:
    relay = ImpairmentRelay(listen, to, profile, seed=seed, keep_records=0)
    host, port = await relay.start()
    print(f"impairment relay on {host}:{port} -> {to or 'learned peers'}: {profile}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), stats_interval or None)
            if stats_interval:
                print(_format_counters(relay), flush=True)
    finally:
        relay.close()
        print(_format_counters(relay), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        listen = parse_address(args.listen)
        to = parse_address(args.to) if args.to else None
        profile = profile_from_args(args)
        if args.stats_interval < 0:
            raise ValueError("--stats-interval must be >= 0")
    except ValueError as exc:
        parser.error(str(exc))
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        asyncio.run(_serve(listen, to, profile, args.seed, args.stats_interval))
    else:
        uvloop.run(_serve(listen, to, profile, args.seed, args.stats_interval))
    return 0


if __name__ == "__main__":
    sys.exit(main())
