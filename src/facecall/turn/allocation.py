"""TURN allocations: relayed transport address, permissions and channels (RFC 8656 §2.2, §5).

An :class:`Allocation` owns one relay UDP socket (an asyncio datagram endpoint) and relays
between it and the client: ChannelData and Send indications out to peers (§11.2, §12.6),
peer datagrams back as ChannelData or Data indications (§11.3, §12.7). The per-packet paths
avoid the STUN codec and keep plain integer counters; :mod:`facecall.turn.metrics` collects
them.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from facecall.turn import stun
from facecall.turn.stun import Address

_CHANNEL_HEADER = struct.Struct("!HH")
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


class TokenBucket:
    """A byte-rate limiter with one second of burst."""

    def __init__(self, rate: int, clock: Callable[[], float]) -> None:
        self.rate = rate
        self.tokens = float(rate)
        self.stamp = clock()
        self._clock = clock

    def take(self, size: int) -> bool:
        """Whether ``size`` bytes may pass now."""
        now = self._clock()
        self.tokens = min(float(self.rate), self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < size:
            return False
        self.tokens -= size
        return True


@dataclass
class Usage:
    """Per-allocation traffic counters, logged when the allocation ends."""

    packets_to_peer: int = 0
    bytes_to_peer: int = 0
    packets_from_peer: int = 0
    bytes_from_peer: int = 0
    dropped: int = 0


@dataclass
class Allocation:
    """State of one allocation; created by the server after a successful Allocate (§7.2)."""

    five_tuple: FiveTuple
    username: str
    key: bytes
    expires: float
    send_to_client: Callable[[bytes], None]
    stream: bool
    clock: Callable[[], float]
    allocate_transaction_id: bytes = b""
    allocate_response: bytes = b""
    relayed_address: Address = ("", 0)
    family: int = stun.FAMILY_IPV4
    permissions: dict[str, float] = field(default_factory=dict)
    channels: dict[int, Channel] = field(default_factory=dict)
    peer_channels: dict[Address, int] = field(default_factory=dict)
    usage: Usage = field(default_factory=Usage)
    reported: Usage = field(default_factory=Usage)  # part of usage already in the metrics
    bucket_out: TokenBucket | None = None
    bucket_in: TokenBucket | None = None
    created: float = 0.0
    transport: asyncio.DatagramTransport | None = None
    index: dict[Any, Allocation] = field(default_factory=dict)  # the listener's fast lookup
    index_key: Any = None

    # --- permissions and channels (RFC 8656 §9, §12) ---

    def install_permission(self, host: str, lifetime: int) -> None:
        """Install or refresh the permission for ``host`` (§9.2)."""
        self.permissions[host] = self.clock() + lifetime

    def has_permission(self, host: str) -> bool:
        expiry = self.permissions.get(host)
        return expiry is not None and expiry >= self.clock()

    def channel_conflict(self, number: int, peer: Address) -> bool:
        """Whether binding ``number`` to ``peer`` conflicts with a live binding (§11.2)."""
        now = self.clock()
        bound = self.channels.get(number)
        if bound is not None and bound.expires >= now and bound.peer != peer:
            return True
        other = self.peer_channels.get(peer)
        if other is not None and other != number:
            channel = self.channels.get(other)
            return channel is not None and channel.expires >= now
        return False

    def bind_channel(self, number: int, peer: Address, lifetime: int) -> None:
        """Bind or refresh channel ``number`` to ``peer`` (§11.2); the caller checked
        :meth:`channel_conflict`."""
        old = self.channels.get(number)
        if old is not None and old.peer != peer:
            self.peer_channels.pop(old.peer, None)
        stale = self.peer_channels.get(peer)
        if stale is not None and stale != number:
            self.channels.pop(stale, None)
        self.channels[number] = Channel(number, peer, self.clock() + lifetime)
        self.peer_channels[peer] = number

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
        if self.transport is None or not self.has_permission(peer[0]):
            self.usage.dropped += 1
            return
        if self.bucket_out is not None and not self.bucket_out.take(len(data)):
            self.usage.dropped += 1
            return
        self.transport.sendto(data, peer)
        self.usage.packets_to_peer += 1
        self.usage.bytes_to_peer += len(data)

    def on_channel_data(self, data: bytes) -> None:
        """A ChannelData message from the client (§12.6), read without the codec."""
        if len(data) < 4:
            return
        number, length = _CHANNEL_HEADER.unpack_from(data)
        channel = self.channels.get(number)
        if channel is None or 4 + length > len(data) or channel.expires < self.clock():
            self.usage.dropped += 1
            return
        self.send_to_peer(data[4 : 4 + length], channel.peer)

    def on_peer_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        """A datagram arrived on the relayed address from a peer (§11.3, §12.7)."""
        peer = (addr[0], addr[1])
        if not self.has_permission(peer[0]):
            self.usage.dropped += 1
            return
        if self.bucket_in is not None and not self.bucket_in.take(len(data)):
            self.usage.dropped += 1
            return
        number = self.peer_channels.get(peer)
        if number is not None:
            frame = _CHANNEL_HEADER.pack(number, len(data)) + data
            if self.stream and len(data) % 4:
                frame += bytes(-len(data) % 4)
        else:
            frame = data_indication(peer, data)
        self.send_to_client(frame)
        self.usage.packets_from_peer += 1
        self.usage.bytes_from_peer += len(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None


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


class RelayProtocol(asyncio.DatagramProtocol):
    """The relay socket of one allocation."""

    def __init__(self, allocation: Allocation) -> None:
        self.allocation = allocation

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.allocation.on_peer_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors from peers (e.g. port unreachable) do not end the allocation.
        pass


class RelayPortPool:
    """Hands out relay ports in ``[low, high]`` that the kernel agrees are free (§7.2)."""

    def __init__(self, low: int, high: int) -> None:
        self.low = low
        self.high = high

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
                sock.bind((host, port))
            except OSError as exc:
                sock.close()
                last_error = exc
                continue
            return sock
        raise last_error or OSError("no relay port available")
