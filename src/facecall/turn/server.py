"""The STUN/TURN server: UDP, TCP and TLS listeners around :class:`TurnCore`.

Client transports per RFC 8656 §3.1 (UDP, TCP, TLS over TCP; no DTLS, no TCP relay). On UDP
each datagram is one message; on streams messages are framed by their own length fields
(RFC 8489 §6.2.2, RFC 8656 §12.5). ChannelData (first byte 0x40-0x7F, RFC 8656 §12) goes
straight to the allocation without the codec.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import os
import resource
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any, cast

from facecall.descriptors import raise_descriptor_limit
from facecall.logs import get_logger
from facecall.turn import batched, metrics, mmsg, stun
from facecall.turn.allocation import Allocation, FiveTuple, set_buffers
from facecall.turn.config import TurnConfig
from facecall.turn.core import ClientContext, TurnCore, asyncio_relay
from facecall.turn.stun import Address
from facecall.turn.tls import ServerTls, TlsClosed

log = get_logger(__name__)

STREAM_HIGH_WATER = 256 * 1024  # bytes queued for a TCP/TLS client before relayed data drops
UDP_IO = ("auto", "batched", "asyncio")


def _address(sockname: Any) -> Address:
    return (sockname[0], sockname[1])


def udp_io_path(requested: str) -> str:
    """The UDP data path to use: "batched" or "asyncio". "auto" takes the batched path where
    :func:`facecall.turn.mmsg.available`; asking for "batched" where it is not is an error."""
    if requested not in UDP_IO:
        raise ValueError(f"udp_io must be one of {UDP_IO}, not {requested!r}")
    if requested == "asyncio":
        return "asyncio"
    if mmsg.available():
        return "batched"
    if requested == "batched":
        raise OSError("batched UDP I/O (recvmmsg/sendmmsg) is not available here")
    return "asyncio"


def reserve_descriptors(count: int) -> None:
    """Grow this process's file descriptor table to ``count`` entries now (capped by
    RLIMIT_NOFILE). The kernel doubles the table when a new descriptor does not fit, and in a
    multi-threaded process that waits for an RCU grace period (fs/file.c, expand_fdtable):
    measured here as 8-25 ms stalls of the whole loop when the 256th and 512th relay sockets
    were opened. F_DUPFD (fcntl(2)) takes the lowest free descriptor >= ``count - 1``, so nothing
    open is touched; the table is never shrunk, so closing it again keeps the room."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(count, soft) - 1
    if target < 3:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe, contextlib.suppress(OSError):
        os.close(fcntl.fcntl(probe.fileno(), fcntl.F_DUPFD_CLOEXEC, target))


def _udp_socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    """A bound non-blocking UDP socket for a batched listener, set up like the asyncio path's
    (``create_datagram_endpoint``): SO_REUSEPORT on request, the system's IPV6_V6ONLY."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setblocking(False)
        sock.bind((host, port))  # IPV6_V6ONLY left to the system, as the asyncio path does
    except BaseException:
        sock.close()
        raise
    return sock


class UdpListener(asyncio.DatagramProtocol):
    """One UDP listening socket (RFC 8656 §3.1)."""

    def __init__(self, core: TurnCore) -> None:
        self.core = core
        self.allocations: dict[Any, Allocation] = {}
        self.transport: asyncio.DatagramTransport | None = None
        self.local: Address = ("", 0)
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.local = _address(transport.get_extra_info("sockname"))

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if data[:1] and data[0] & 0xC0 == 0x40:  # ChannelData: the hot path
            allocation = self.allocations.get(addr)
            if allocation is not None:
                allocation.on_channel_data(data)
            return
        if self.transport is None:
            return
        ctx = ClientContext(
            FiveTuple("udp", (addr[0], addr[1]), self.local),
            functools.partial(self.transport.sendto, addr=addr),
            stream=False,
            index=self.allocations,
            index_key=addr,
            flow=self,
        )
        self.core.handle_stun(data, ctx)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False

    def error_received(self, exc: Exception) -> None:
        pass


class StreamConnection(asyncio.Protocol):
    """One TCP or TLS client connection; its allocation ends with it (RFC 8656 §3.1).

    It is counted against ``max_tcp_connections`` and ``max_tcp_connections_per_address``
    from the moment it is accepted. TLS clients are accepted as plain TCP too and their TLS
    session runs here (:class:`facecall.turn.tls.ServerTls`); one that has not finished its
    handshake within ``tls_handshake_timeout`` is closed."""

    def __init__(
        self, server: TurnServer, protocol: str, tls: ssl.SSLContext | None = None
    ) -> None:
        self.server = server
        self.core = server.core
        self.protocol = protocol
        self.tls_context = tls
        self.tls: ServerTls | None = None
        self.buffer = bytearray()
        self.allocations: dict[Any, Allocation] = {}
        self.transport: asyncio.Transport | None = None
        self.ctx: ClientContext | None = None
        self.client_host = ""
        self._idle: asyncio.TimerHandle | None = None
        self._handshake: asyncio.TimerHandle | None = None
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        client = _address(transport.get_extra_info("peername"))
        self.client_host = client[0]
        refusal = self.server.admit(self)
        if refusal is not None:
            metrics.CONNECTIONS_REFUSED.labels(refusal).inc()
            self.transport = None
            transport.abort()
            return
        loop = asyncio.get_running_loop()
        send = transport.write
        if self.tls_context is not None:
            self.tls = ServerTls(self.tls_context, transport.write)
            send = self.tls.send
            self._handshake = loop.call_later(
                self.server.config.tls_handshake_timeout, self._check_handshake
            )
        self.ctx = ClientContext(
            FiveTuple(self.protocol, client, _address(transport.get_extra_info("sockname"))),
            send,
            stream=True,
            index=self.allocations,
            index_key=None,
            alive=lambda: self.transport is not None,
            flow=self,
        )
        transport.set_write_buffer_limits(high=STREAM_HIGH_WATER)
        self._idle = loop.call_later(self.server.config.idle_timeout, self._check_idle)

    def _check_handshake(self) -> None:
        """Close a TLS connection whose handshake has not finished in time."""
        if self.tls is not None and not self.tls.established:
            self._abort()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False

    def _check_idle(self) -> None:
        """Close a connection that holds no allocation (checked every ``idle_timeout``)."""
        if self.transport is None:
            return
        if not self.allocations:
            self.transport.close()
            return
        loop = asyncio.get_running_loop()
        self._idle = loop.call_later(self.server.config.idle_timeout, self._check_idle)

    def data_received(self, data: bytes) -> None:
        if self.ctx is None:
            return
        if self.tls is not None:
            try:
                data = self.tls.receive(data)
            except TlsClosed:
                self._abort()
                return
        self.buffer += data
        self._take_frames(self.ctx)

    def _take_frames(self, ctx: ClientContext) -> None:
        """Handle every complete frame in the buffer (RFC 8489 §6.2.2, RFC 8656 §12.5)."""
        buffer = self.buffer
        pos = 0
        end = len(buffer)
        while end - pos >= 4:
            length = stun.frame_length(buffer[pos : pos + 4])
            if length is None:
                self._abort()
                return
            if end - pos < length:
                break
            frame = bytes(buffer[pos : pos + length])
            pos += length
            if frame[0] < 0x40:
                self.core.handle_stun(frame, ctx)
            else:
                allocation = self.allocations.get(None)
                if allocation is not None:
                    allocation.on_channel_data(frame)
            if self.transport is None:
                return
        del buffer[:pos]

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle is not None:
            self._idle.cancel()
        if self._handshake is not None:
            self._handshake.cancel()
        self.server.release(self)
        self.transport = None
        for allocation in list(self.allocations.values()):
            self.core.delete(allocation, "connection closed")


def _tls_context(config: TurnConfig) -> ssl.SSLContext:
    if not config.tls_cert or not config.tls_key:
        raise ValueError("TLS listeners need tls_cert and tls_key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(config.tls_cert, config.tls_key)
    return context


class TurnServer:
    """A STUN/TURN server (RFC 8489, RFC 8656) listening on the configured addresses."""

    def __init__(self, config: TurnConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.udp_io = udp_io_path(config.udp_io)
        self.core = TurnCore(
            config,
            clock,
            batched.open_relay if self.udp_io == "batched" else asyncio_relay,
        )
        self.connections: set[StreamConnection] = set()
        self.connections_per_address: dict[str, int] = {}
        self._udp: list[UdpListener | batched.BatchUdpListener] = []
        self._servers: list[tuple[str, asyncio.Server]] = []
        self._housekeeping: asyncio.Task[None] | None = None

    @property
    def udp_addresses(self) -> list[Address]:
        """The bound UDP listening addresses (port 0 in the config resolved)."""
        return [listener.local for listener in self._udp]

    @property
    def tcp_addresses(self) -> list[Address]:
        return self._stream_addresses("tcp")

    @property
    def tls_addresses(self) -> list[Address]:
        return self._stream_addresses("tls")

    def _stream_addresses(self, protocol: str) -> list[Address]:
        return [
            _address(sock.getsockname())
            for kind, server in self._servers
            if kind == protocol
            for sock in server.sockets
        ]

    @property
    def allocations(self) -> dict[FiveTuple, Allocation]:
        return self.core.allocations

    def admit(self, connection: StreamConnection) -> str | None:
        """Count a new TCP/TLS connection, or say which cap refuses it: "total"
        (``max_tcp_connections``) or "per_address" (``max_tcp_connections_per_address``)."""
        if len(self.connections) >= self.config.max_tcp_connections:
            return "total"
        host = connection.client_host
        held = self.connections_per_address.get(host, 0)
        if held >= self.config.max_tcp_connections_per_address:
            return "per_address"
        self.connections.add(connection)
        self.connections_per_address[host] = held + 1
        metrics.CONNECTIONS.inc()
        return None

    def release(self, connection: StreamConnection) -> None:
        """Undo :meth:`admit` for a connection that has ended (once, however often called)."""
        if connection not in self.connections:
            return
        self.connections.discard(connection)
        host = connection.client_host
        held = self.connections_per_address.get(host, 1) - 1
        if held > 0:
            self.connections_per_address[host] = held
        else:
            self.connections_per_address.pop(host, None)
        metrics.CONNECTIONS.dec()

    async def start(self) -> None:
        """Bind every listener; raises OSError (and closes what was bound) on failure."""
        loop = asyncio.get_running_loop()
        # One relay socket per allocation, one connection per TCP/TLS client, a few spare.
        needed = self.config.max_allocations + self.config.max_tcp_connections + 64
        available = raise_descriptor_limit()
        if available < needed:
            log.warning(
                "turn descriptor limit below the configured caps",
                rlimit_nofile=available,
                needed=needed,
            )
        reserve_descriptors(needed)
        try:
            for host, port in self.config.udp_listen:
                if self.udp_io == "batched":
                    sock = _udp_socket(host, port, self.config.reuse_port)
                    set_buffers(sock, self.config.socket_buffer)
                    batch_listener = batched.BatchUdpListener(self.core, sock)
                    batch_listener.start(loop)
                    self._udp.append(batch_listener)
                    continue
                transport, listener = await loop.create_datagram_endpoint(
                    lambda: UdpListener(self.core),
                    local_addr=(host, port),
                    reuse_port=self.config.reuse_port or None,
                )
                sock = transport.get_extra_info("socket")
                if sock is not None:
                    set_buffers(sock, self.config.socket_buffer)
                self._udp.append(listener)
            for protocol, addresses, context in (
                ("tcp", self.config.tcp_listen, None),
                ("tls", self.config.tls_listen, None),
            ):
                if addresses and protocol == "tls":
                    context = _tls_context(self.config)
                for host, port in addresses:
                    # TLS runs in each StreamConnection (tls.ServerTls), so that a connection
                    # counts against the caps from accept, not from the end of its handshake.
                    server = await loop.create_server(
                        lambda p=protocol, c=context: StreamConnection(self, p, c),  # type: ignore[misc]
                        host,
                        port,
                        reuse_address=True,
                        reuse_port=self.config.reuse_port or None,
                    )
                    self._servers.append((protocol, server))
        except BaseException:
            await self.stop()
            raise
        self._housekeeping = asyncio.ensure_future(self._run_housekeeping())

    async def _run_housekeeping(self) -> None:
        while True:
            await asyncio.sleep(self.config.housekeeping_interval)
            self.core.expire()

    async def stop(self) -> None:
        """Close listeners, connections and allocations."""
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeping
            self._housekeeping = None
        for _, server in self._servers:
            server.close()
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.abort()
        for _, server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self._servers.clear()
        await self.core.close()
        for listener in self._udp:
            if isinstance(listener, batched.BatchUdpListener):
                listener.close()
            elif listener.transport is not None:
                listener.transport.close()
        self._udp.clear()

    async def __aenter__(self) -> TurnServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
