"""The batched UDP data path: the client-facing listener on ``recvmmsg(2)``/``sendmmsg(2)``
(:mod:`facecall.turn.mmsg`) and relay sockets read straight from the event loop.

Same roles as :class:`facecall.turn.server.UdpListener` and the asyncio datagram transports of
relay sockets (RFC 8656 §3.1: every UDP datagram is one STUN message or one ChannelData
message, §12.4), with fewer system calls and no per-datagram address formatting:

- :class:`BatchUdpListener` is a non-blocking socket watched with ``loop.add_reader``. One
  readiness event drains up to ``slots`` datagrams per ``recvmmsg`` call. Clients are keyed by
  their raw ``sockaddr`` bytes; ``(host, port)`` is only decoded for STUN messages, which need
  it (XOR-MAPPED-ADDRESS, the 5-tuple). Everything sent to clients during one loop iteration
  (responses, ChannelData and Data indications from peers) is queued and written with
  ``sendmmsg`` once the iteration's I/O callbacks have run.
- :class:`RelayTransport` is an allocation's relay socket, also on ``add_reader``. A relay
  socket carries one peer flow at a few hundred packets per second, so a readiness event almost
  always finds a single datagram: it is read with one ``recvfrom`` (measured cheaper than a
  ``recvmmsg`` call for one datagram) and, the poller being level-triggered, without the extra
  read that meets EAGAIN. Datagrams to peers leave with one ``sendto`` each (different relay
  sockets cannot share a ``sendmmsg`` call).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
from typing import Any

from facecall.turn import mmsg
from facecall.turn.allocation import Allocation, FiveTuple
from facecall.turn.core import ClientContext, TurnCore
from facecall.turn.stun import Address

DRAIN_CALLS = 8  # recvmmsg calls per readiness event at most, so other sockets get their turn


class BatchUdpListener:
    """One UDP listening socket on batched I/O (RFC 8656 §3.1)."""

    def __init__(self, core: TurnCore, sock: socket.socket, slots: int = 32) -> None:
        self.core = core
        self.sock = sock
        self.fd = sock.fileno()
        self.local: Address = sock.getsockname()[:2]
        self.allocations: dict[Any, Allocation] = {}  # raw client sockaddr -> allocation
        self.paused = False  # flow control: a full send buffer drops datagrams, never queues
        self._receiver = mmsg.Receiver(slots)
        self._sender = mmsg.Sender(self.fd, slots)
        self._slots = slots
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flush_pending = False

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        loop.add_reader(self.fd, self._on_readable)

    def close(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self.fd)
            self._loop = None
        with contextlib.suppress(OSError):
            self._flush()
        self.sock.close()

    def _on_readable(self) -> None:
        try:
            for _ in range(DRAIN_CALLS):
                if self._receiver.receive(self.fd, self._on_datagram) < self._slots:
                    break
        except OSError:  # the socket is gone (closed under us): stop watching it
            if self._loop is not None:
                self._loop.remove_reader(self.fd)

    def _on_datagram(self, data: bytes, name: bytes) -> None:
        if data and data[0] & 0xC0 == 0x40:  # ChannelData (RFC 8656 §12.4): the hot path
            allocation = self.allocations.get(name)
            if allocation is not None:
                allocation.on_channel_data(data)
            return
        try:
            client = mmsg.address(name)
        except ValueError:
            return
        ctx = ClientContext(
            FiveTuple("udp", client, self.local),
            functools.partial(self.send, name),
            stream=False,
            index=self.allocations,
            index_key=name,
            flow=self,
        )
        self.core.handle_stun(data, ctx)

    def send(self, name: bytes, data: bytes) -> None:
        """Queue ``data`` for the client at raw sockaddr ``name``; written with the next flush
        (after this loop iteration's callbacks), or at once when the queue is full."""
        self._sender.add(data, name)
        if not self._flush_pending and self._loop is not None:
            self._flush_pending = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        if self._sender.queued:
            self._sender.flush()


class RelayTransport:
    """An allocation's relay socket driven by ``loop.add_reader`` (RFC 8656 §2.2): peer
    datagrams go to ``protocol.datagram_received``, :meth:`sendto` writes to a peer. It offers
    the parts of :class:`asyncio.DatagramTransport` that an :class:`Allocation` uses."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket, protocol: Allocation
    ) -> None:
        self._loop: asyncio.AbstractEventLoop | None = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._protocol = protocol
        sock.setblocking(False)
        loop.add_reader(self._fd, self._on_readable)

    def _on_readable(self) -> None:
        try:
            data, addr = self._sock.recvfrom(mmsg.MAX_DATAGRAM)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # an ICMP error for an earlier datagram (udp(7))
            self._protocol.error_received(exc)
            return
        self._protocol.datagram_received(data, addr)

    def sendto(self, data: bytes, addr: Address) -> None:
        """Send ``data`` to ``addr`` now; a full send buffer drops it (counted as dropped)."""
        try:
            self._sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            self._protocol.dropped += 1
        except OSError as exc:
            self._protocol.error_received(exc)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "sockname":
            return self._sock.getsockname()
        if name == "socket":
            return self._sock
        return default

    def is_closing(self) -> bool:
        return self._loop is None

    def close(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self._fd)
            self._loop = None
            self._sock.close()


async def open_relay(sock: socket.socket, allocation: Allocation) -> RelayTransport:
    """The relay transport factory of the batched path (see :class:`TurnCore`)."""
    return RelayTransport(asyncio.get_running_loop(), sock, allocation)
