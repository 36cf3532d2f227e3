"""Batched UDP I/O on Linux: ``recvmmsg(2)`` and ``sendmmsg(2)`` through ctypes.

Python's socket module reads and writes one datagram per system call. These wrappers move up
to ``slots`` datagrams per call between a non-blocking UDP socket and buffers allocated once:
an array of ``struct mmsghdr`` (recvmmsg(2), sendmmsg(2)), one ``struct iovec`` and one
``sockaddr`` slot per message (socket(7), ip(7), ipv6(7)), and one data slot per message in an
anonymous mmap (pages are only backed once written). Per datagram, Python only slices those
buffers; no address is formatted: peers are raw ``sockaddr`` bytes (:func:`sockaddr`,
:func:`address` translate to and from ``(host, port)`` where the protocol needs it).

:func:`available` says whether this works here (Linux with a libc that has both calls);
callers fall back to asyncio datagram transports otherwise.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import mmap
import os
import socket
import struct
import sys
from collections.abc import Callable
from typing import Any

from facecall.turn.stun import Address

MSG_DONTWAIT = 0x40  # recv(2)/send(2) flags, <bits/socket.h> on Linux
MSG_TRUNC = 0x20
NAME_SIZE = 28  # sizeof(struct sockaddr_in6), the largest name we receive or send
MAX_DATAGRAM = 65536  # a UDP payload never exceeds 65535 bytes (udp(7))

# errnos after which a receive simply has nothing (more) to give (recvmmsg(2), udp(7): an
# ICMP error queued for the socket is reported once, then datagrams flow again).
_NOTHING = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR, errno.ECONNREFUSED,
                      errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENOBUFS, errno.ENOMEM})
# errnos after which the rest of a send batch is dropped, as UDP drops (sendmmsg(2)).
_FULL = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS, errno.ENOMEM})


class _IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),  # socklen_t
        ("msg_iov", ctypes.c_void_p),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _MsgHdr), ("msg_len", ctypes.c_uint)]


_HDR = ctypes.sizeof(_MMsgHdr)
_IOV = ctypes.sizeof(_IoVec)
# Offsets of the fields the kernel writes, in units of 4 bytes (all are 4-byte aligned).
_NAMELEN = _MsgHdr.msg_namelen.offset // 4
_FLAGS = _MsgHdr.msg_flags.offset // 4
_LEN = _MMsgHdr.msg_len.offset // 4
_STRIDE = _HDR // 4

_Call = Callable[..., int]


def _load() -> tuple[_Call, _Call] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        # PyDLL: the calls keep the GIL (they never block: MSG_DONTWAIT), which saves the
        # release and re-acquire ctypes otherwise does around every call.
        libc = ctypes.PyDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        recvmmsg, sendmmsg = libc.recvmmsg, libc.sendmmsg
    except (OSError, AttributeError):
        return None
    # int recvmmsg(int sockfd, struct mmsghdr *msgvec, unsigned vlen, int flags,
    #              struct timespec *timeout);  int sendmmsg(int, struct mmsghdr *, unsigned, int)
    recvmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int,
                         ctypes.c_void_p]
    recvmmsg.restype = ctypes.c_int
    sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    sendmmsg.restype = ctypes.c_int
    return recvmmsg, sendmmsg


_CALLS = _load()


@functools.cache
def available() -> bool:
    """Whether batched I/O works here: Linux, a libc with recvmmsg/sendmmsg, and a probe
    (an empty non-blocking read of a fresh UDP socket) that answers EAGAIN, not ENOSYS."""
    if _CALLS is None:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind(("127.0.0.1", 0))
        except OSError:
            return False
        try:
            Receiver(1, 16).receive(sock.fileno(), lambda data, name: None)
        except OSError:
            return False
    return True


def sockaddr(addr: Address | tuple[Any, ...]) -> bytes:
    """The raw ``struct sockaddr_in`` (ip(7)) or ``sockaddr_in6`` (ipv6(7)) of ``(host, port)``
    with a numeric host, as the kernel writes it into ``msg_name``."""
    host, port = addr[0], addr[1]
    if ":" in host:
        scope = addr[3] if len(addr) > 3 else 0
        return struct.pack("=HHI16sI", socket.AF_INET6, socket.htons(port), 0,
                           socket.inet_pton(socket.AF_INET6, host), scope)
    return struct.pack("=HH4s8x", socket.AF_INET, socket.htons(port),
                       socket.inet_pton(socket.AF_INET, host))


def address(name: bytes) -> Address:
    """``(host, port)`` of a raw sockaddr (the inverse of :func:`sockaddr`); ValueError if it is
    neither AF_INET nor AF_INET6."""
    family = struct.unpack_from("=H", name)[0] if len(name) >= 2 else -1
    if family == socket.AF_INET and len(name) >= 8:
        return socket.inet_ntop(socket.AF_INET, name[4:8]), int.from_bytes(name[2:4], "big")
    if family == socket.AF_INET6 and len(name) >= 24:
        return socket.inet_ntop(socket.AF_INET6, name[8:24]), int.from_bytes(name[2:4], "big")
    raise ValueError("not an IPv4 or IPv6 socket address")


class _Buffers:
    """``slots`` mmsghdrs, each with one iovec over its own ``slot_size`` data slot and a
    NAME_SIZE name slot."""

    def __init__(self, slots: int, slot_size: int) -> None:
        if _CALLS is None:
            raise OSError(errno.ENOSYS, "recvmmsg/sendmmsg are not available")
        if slots < 1 or slot_size < 1:
            raise ValueError("slots and slot_size must be positive")
        self.slots = slots
        self.slot_size = slot_size
        self.names_at = slots * slot_size
        size = self.names_at + slots * NAME_SIZE
        self.memory = mmap.mmap(-1, size)  # anonymous, zero-filled, lazily backed
        base = ctypes.addressof(ctypes.c_char.from_buffer(self.memory))
        self.iovecs = (_IoVec * slots)()
        self.headers = (_MMsgHdr * slots)()
        for i in range(slots):
            self.iovecs[i].iov_base = base + i * slot_size
            self.iovecs[i].iov_len = slot_size
            header = self.headers[i].msg_hdr
            header.msg_name = base + self.names_at + i * NAME_SIZE
            header.msg_namelen = NAME_SIZE
            header.msg_iov = ctypes.addressof(self.iovecs[i])
            header.msg_iovlen = 1
        self.address = ctypes.addressof(self.headers)
        self.words = memoryview(self.headers).cast("B").cast("I")  # the headers as uint32s
        self.lengths = memoryview(self.iovecs).cast("B").cast("N")  # iov_base, iov_len, ...


class Receiver:
    """Reads up to ``slots`` datagrams per ``recvmmsg(2)`` call. One receiver can serve any
    number of sockets of one thread: every datagram is copied out before the next call, and
    the kernel sets ``msg_len`` and ``msg_flags`` on each call (only ``msg_namelen``, which it
    overwrites with the actual length, needs restoring)."""

    def __init__(self, slots: int = 32, slot_size: int = MAX_DATAGRAM) -> None:
        self._buffers = _Buffers(slots, slot_size)
        assert _CALLS is not None
        self._recvmmsg = _CALLS[0]
        self.truncated = 0  # datagrams dropped because they did not fit a slot (MSG_TRUNC)

    def receive(self, fd: int, on_datagram: Callable[[bytes, bytes], None]) -> int:
        """Call ``on_datagram(data, name)`` for each datagram one non-blocking call returns
        (``name`` is the raw sender sockaddr); returns how many were read (0: nothing was
        waiting). Datagrams larger than a slot are dropped and counted in ``truncated``.
        ``on_datagram`` must not call :meth:`receive` of this receiver (the slots are reused).
        If it raises, the datagrams after that one are dropped and the exception propagates.
        OSError for errors other than the transient ones of recvmmsg(2) (e.g. EBADF)."""
        b = self._buffers
        count = self._recvmmsg(fd, b.address, b.slots, MSG_DONTWAIT, None)
        if count <= 0:
            if count < 0:
                code = ctypes.get_errno()
                if code not in _NOTHING:
                    raise OSError(code, os.strerror(code))
            return 0
        words, memory, slot, names = b.words, b.memory, b.slot_size, b.names_at
        i = 0
        try:
            for i in range(count):
                at = i * _STRIDE
                name = names + i * NAME_SIZE
                name_end = name + words[at + _NAMELEN]
                words[at + _NAMELEN] = NAME_SIZE  # the kernel wrote the actual length: restore
                if words[at + _FLAGS] & MSG_TRUNC:
                    self.truncated += 1
                    continue
                start = i * slot
                on_datagram(memory[start : start + words[at + _LEN]], memory[name:name_end])
        finally:
            for rest in range(i + 1, count):  # the callback raised: restore the unread slots
                words[rest * _STRIDE + _NAMELEN] = NAME_SIZE
        return count


class Sender:
    """Queues datagrams for socket ``fd`` and writes them with as few ``sendmmsg(2)`` calls as
    possible. Datagrams the kernel will not take (send buffer full: EAGAIN/ENOBUFS) are
    dropped, as UDP may; a datagram it refuses (e.g. EINVAL for a bad address) is skipped."""

    def __init__(self, fd: int, slots: int = 32, slot_size: int = MAX_DATAGRAM) -> None:
        self._buffers = _Buffers(slots, slot_size)
        assert _CALLS is not None
        self._sendmmsg = _CALLS[1]
        self.fd = fd
        self.queued = 0
        self.sent = 0  # datagrams the kernel accepted
        self.dropped = 0  # datagrams dropped: too large for a slot, buffer full, refused

    def add(self, data: bytes | bytearray | memoryview, name: bytes) -> None:
        """Queue ``data`` for the raw sockaddr ``name``; flushes first when the queue is full."""
        b = self._buffers
        size = len(data)
        if size > b.slot_size or len(name) > NAME_SIZE:
            self.dropped += 1
            return
        if self.queued == b.slots:
            self.flush()
        i = self.queued
        start = i * b.slot_size
        b.memory[start : start + size] = data
        at = b.names_at + i * NAME_SIZE
        b.memory[at : at + len(name)] = name
        b.lengths[2 * i + 1] = size
        b.words[i * _STRIDE + _NAMELEN] = len(name)
        self.queued = i + 1

    def flush(self) -> int:
        """Write everything queued; returns how many datagrams the kernel accepted. OSError
        for errors that are not about one datagram or a full buffer (e.g. EBADF)."""
        count, self.queued = self.queued, 0
        position = accepted = 0
        address = self._buffers.address
        while position < count:
            sent = self._sendmmsg(self.fd, address + position * _HDR, count - position,
                                  MSG_DONTWAIT)
            if sent > 0:
                position += sent
                accepted += sent
                continue
            code = ctypes.get_errno() if sent < 0 else errno.EAGAIN
            if code in _FULL:
                break
            if code in (errno.EBADF, errno.ENOTSOCK):
                self.sent += accepted
                self.dropped += count - accepted
                raise OSError(code, os.strerror(code))
            position += 1  # this datagram was refused: skip it, send the rest
        self.sent += accepted
        self.dropped += count - accepted
        return accepted
