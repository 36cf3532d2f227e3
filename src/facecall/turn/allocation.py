"""TURN allocations: relayed transport address, permissions and channels (RFC 8656 §2.2, §5).

An :class:`Allocation` owns one relay UDP socket (through an asyncio datagram endpoint or the
batched path's :class:`facecall.turn.batched.RelayTransport`, see :class:`RelayTransport`) and relays
between it and the client: ChannelData and Send indications out to peers (§11.2, §12.6),
peer datagrams back as ChannelData or Data indications (§11.3, §12.7). The per-packet paths
avoid the STUN codec and keep plain integer counters; :mod:`facecall.turn.metrics` collects
them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from facecall.turn import stun
from facecall.turn.stun import Address

_BIND_ATTEMPTS = 64


@dataclass(frozen=True)
class FiveTuple:
    """Client and server transport addresses plus protocol (RFC 8656 §2.2)."""

    protocol: str  # "udp", "tcp" or "tls"
    client: Address
    server: Address


@dataclass
class Channel:
    """A channel binding (RFC 8656 §12)."""

    number: int
    peer: Address
    expires: float


class RelayTransport(Protocol):
    """What an allocation needs of its relay socket's transport: an
    :class:`asyncio.DatagramTransport`, or :class:`facecall.turn.batched.RelayTransport`."""

    def sendto(self, data: bytes, addr: Address) -> None: ...

    def close(self) -> None: ...

    def get_extra_info(self, name: str, default: Any = None) -> Any: ...


class FlowControl(Protocol):
    """Something whose ``paused`` is true while its transport's send buffer is too full."""

    paused: bool


class _NeverPaused:
    paused = False


NEVER_PAUSED: FlowControl = _NeverPaused()


class Ticker:
    """The server's notion of now for the data path: read per packet, advanced by every
    control message and by housekeeping, so per-packet expiry checks cost no clock call
    (their resolution is the housekeeping interval)."""

    __slots__ = ("clock", "now")

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.now = clock()

    def tick(self) -> float:
        self.now = self.clock()
        return self.now


class TokenBucket:
    """A byte-rate limiter with one second of burst."""

    __slots__ = ("rate", "stamp", "ticker", "tokens")

    def __init__(self, rate: int, ticker: Ticker) -> None:
        self.rate = rate
        self.tokens = float(rate)
        self.ticker = ticker
        self.stamp = ticker.now

    def take(self, size: int) -> bool:
        """Whether ``size`` bytes may pass now."""
        now = self.ticker.now
        if now != self.stamp:
            self.tokens = min(float(self.rate), self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
        if self.tokens < size:
            return False
        self.tokens -= size
        return True


@dataclass
class Usage:
    """Traffic counters of an allocation, logged when it ends."""

    packets_to_peer: int = 0
    bytes_to_peer: int = 0
    packets_from_peer: int = 0
    bytes_from_peer: int = 0
    dropped: int = 0


class Allocation(asyncio.DatagramProtocol):
    """One allocation (RFC 8656 §2.2), created after a successful Allocate (§7.2). It is also
    the protocol of its relay socket, so a peer datagram costs one Python call."""

    __slots__ = (
        "allocate_response",
        "allocate_transaction_id",
        "bucket_in",
        "bucket_out",
        "bytes_from_peer",
        "bytes_to_peer",
        "channels",
        "created",
        "dropped",
        "expires",
        "family",
        "five_tuple",
        "flow",
        "index",
        "index_key",
        "key",
        "packets_from_peer",
        "packets_to_peer",
        "paused",
        "peer_channels",
        "permissions",
        "relayed_address",
        "reported",
        "send_to_client",
        "stream",
        "ticker",
        "transport",
        "username",
    )

    def __init__(
        self,
        five_tuple: FiveTuple,
        username: str,
        key: bytes,
        lifetime: int,
        send_to_client: Callable[[bytes], None],
        stream: bool,
        ticker: Ticker,
        family: int = stun.FAMILY_IPV4,
        index: dict[Any, Allocation] | None = None,
        index_key: Any = None,
        bandwidth_cap: int = 0,
        flow: FlowControl = NEVER_PAUSED,
    ) -> None:
        self.five_tuple = five_tuple
        self.username = username
        self.key = key
        self.ticker = ticker
        self.created = ticker.now
        self.expires = ticker.now + lifetime
        self.send_to_client = send_to_client
        self.flow = flow  # the client transport's flow control
        self.stream = stream
        self.family = family
        self.index: dict[Any, Allocation] = {} if index is None else index
        self.index_key = index_key
        self.allocate_transaction_id = b""
        self.allocate_response = b""
        self.relayed_address: Address = ("", 0)
        self.permissions: dict[str, float] = {}
        self.channels: dict[int, Channel] = {}
        self.peer_channels: dict[Address, bytes] = {}  # peer -> channel number, 2 bytes
        self.transport: RelayTransport | None = None
        self.packets_to_peer = self.bytes_to_peer = 0
        self.packets_from_peer = self.bytes_from_peer = 0
        self.dropped = 0
        self.paused = False  # the relay socket's send buffer is full: drop, do not queue
        self.reported = Usage()
        self.bucket_out = TokenBucket(bandwidth_cap, ticker) if bandwidth_cap else None
        self.bucket_in = TokenBucket(bandwidth_cap, ticker) if bandwidth_cap else None

    @property
    def usage(self) -> Usage:
        """A snapshot of the traffic counters."""
        return Usage(
            self.packets_to_peer,
            self.bytes_to_peer,
            self.packets_from_peer,
            self.bytes_from_peer,
            self.dropped,
        )

    # --- permissions and channels (RFC 8656 §9, §12) ---

    def install_permission(self, host: str, lifetime: int) -> None:
        """Install or refresh the permission for ``host`` (§9.2)."""
        self.permissions[host] = self.ticker.now + lifetime

    def new_permissions(self, hosts: set[str]) -> int:
        """How many of ``hosts`` have no permission entry yet, i.e. how many more entries
        installing them all would take (§9.2)."""
        return sum(1 for host in hosts if host not in self.permissions)

    def has_permission(self, host: str) -> bool:
        expiry = self.permissions.get(host)
        return expiry is not None and expiry >= self.ticker.now

    def channel_conflict(self, number: int, peer: Address) -> bool:
        """Whether binding ``number`` to ``peer`` conflicts with a live binding (§11.2)."""
        now = self.ticker.now
        bound = self.channels.get(number)
        if bound is not None and bound.expires >= now and bound.peer != peer:
            return True
        other = self.peer_channels.get(peer)
        if other is not None and other != number.to_bytes(2, "big"):
            channel = self.channels.get(int.from_bytes(other, "big"))
            return channel is not None and channel.expires >= now
        return False

    def bind_channel(self, number: int, peer: Address, lifetime: int) -> None:
        """Bind or refresh channel ``number`` to ``peer`` (§11.2); the caller checked
        :meth:`channel_conflict`."""
        old = self.channels.get(number)
        if old is not None and old.peer != peer:
            self.peer_channels.pop(old.peer, None)
        prefix = number.to_bytes(2, "big")
        stale = self.peer_channels.get(peer)
        if stale is not None and stale != prefix:
            self.channels.pop(int.from_bytes(stale, "big"), None)
        self.channels[number] = Channel(number, peer, self.ticker.now + lifetime)
        self.peer_channels[peer] = prefix

    def expire(self, now: float) -> None:
        """Drop expired permissions and channels (§9, §12)."""
        for host in [h for h, t in self.permissions.items() if t < now]:
            del self.permissions[host]
        for number in [n for n, c in self.channels.items() if c.expires < now]:
            channel = self.channels.pop(number)
            self.peer_channels.pop(channel.peer, None)

    # --- data path ---

    def send_to_peer(self, data: bytes, peer: Address) -> None:
        """Relay application data to ``peer`` if a permission allows it (§11.2, §12.6)."""
        expiry = self.permissions.get(peer[0])
        if expiry is None or expiry < self.ticker.now or self.transport is None or self.paused:
            self.dropped += 1
            return
        if self.bucket_out is not None and not self.bucket_out.take(len(data)):
            self.dropped += 1
            return
        self.transport.sendto(data, peer)
        self.packets_to_peer += 1
        self.bytes_to_peer += len(data)

    def on_channel_data(self, data: bytes) -> None:
        """A ChannelData message from the client (§12.6), read without the codec; the
        checks of :meth:`send_to_peer` are inlined (this is the hottest path)."""
        size = len(data)
        channel = self.channels.get((data[0] << 8) | data[1]) if size >= 4 else None
        if channel is None:
            self.dropped += 1
            return
        length = (data[2] << 8) | data[3]
        now = self.ticker.now
        peer = channel.peer
        expiry = self.permissions.get(peer[0])
        if (
            4 + length > size
            or channel.expires < now
            or expiry is None
            or expiry < now
            or self.transport is None
            or self.paused
            or (self.bucket_out is not None and not self.bucket_out.take(length))
        ):
            self.dropped += 1
            return
        self.transport.sendto(data[4 : 4 + length], peer)
        self.packets_to_peer += 1
        self.bytes_to_peer += length

    def datagram_received(self, data: bytes, addr: Any) -> None:
        """A datagram arrived on the relayed address from a peer (§11.3, §12.7)."""
        peer = addr[:2]
        expiry = self.permissions.get(peer[0])
        if expiry is None or expiry < self.ticker.now or self.flow.paused:
            self.dropped += 1
            return
        if self.bucket_in is not None and not self.bucket_in.take(len(data)):
            self.dropped += 1
            return
        header = self.peer_channels.get(peer)
        if header is not None:
            frame = header + len(data).to_bytes(2, "big") + data
            if self.stream and len(data) % 4:
                frame += bytes(-len(data) % 4)
        else:
            frame = data_indication(peer, data)
        self.send_to_client(frame)
        self.packets_from_peer += 1
        self.bytes_from_peer += len(data)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False

    def error_received(self, exc: Exception) -> None:
        # ICMP errors from peers (e.g. port unreachable) do not end the allocation.
        pass

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None


def set_buffers(sock: socket.socket, size: int) -> None:
    """Ask for ``size``-byte SO_RCVBUF and SO_SNDBUF (socket(7)); the kernel caps them at
    net.core.rmem_max / wmem_max, and a refusal leaves its default."""
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, option, size)


def data_indication(peer: Address, data: bytes) -> bytes:
    """A Data indication carrying ``data`` from ``peer`` (RFC 8656 §11.3)."""
    transaction_id = os.urandom(12)
    return stun.Message(
        stun.Method.DATA,
        stun.Class.INDICATION,
        transaction_id,
        [
            (stun.XOR_PEER_ADDRESS, stun.encode_xor_address(peer, transaction_id)),
            (stun.DATA, data),
        ],
    ).encode()


class RelayPortPool:
    """Hands out relay ports in ``[low, high]`` that the kernel agrees are free (§7.2)."""

    def __init__(self, low: int, high: int, buffer: int = 0) -> None:
        self.low = low
        self.high = high
        self.buffer = buffer  # SO_RCVBUF/SO_SNDBUF of relay sockets; 0: the kernel's default

    def bind(self, host: str, family: int, even: bool = False) -> socket.socket:
        """A UDP socket bound to ``host`` on a random free port of the range; OSError if
        none could be found."""
        af = socket.AF_INET if family == stun.FAMILY_IPV4 else socket.AF_INET6
        span = self.high - self.low + 1
        start = int.from_bytes(os.urandom(4), "big") % span
        last_error: OSError | None = None
        for attempt in range(min(span, _BIND_ATTEMPTS)):
            port = self.low + (start + attempt * 7919) % span
            if even and port % 2:
                port = port - 1 if port > self.low else port + 1
            sock = socket.socket(af, socket.SOCK_DGRAM)
            try:
                if af == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.setblocking(False)
                if self.buffer:
                    set_buffers(sock, self.buffer)
                sock.bind((host, port))
            except OSError as exc:
                sock.close()
                last_error = exc
                continue
            return sock
        raise last_error or OSError("no relay port available")
