"""The ctypes layer over recvmmsg(2)/sendmmsg(2) (facecall.turn.mmsg) on real loopback sockets."""

from __future__ import annotations

import ctypes
import errno
import socket
from collections.abc import Iterator

import pytest

from facecall.turn import mmsg
from facecall.turn.server import udp_io_path

pytestmark = pytest.mark.skipif(not mmsg.available(), reason="recvmmsg/sendmmsg not available")


def _udp(host: str = "127.0.0.1") -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.setblocking(False)
    return sock


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    receiver, sender = _udp(), _udp()
    yield receiver, sender
    receiver.close()
    sender.close()


def _collect(receiver: mmsg.Receiver, sock: socket.socket) -> list[tuple[bytes, bytes]]:
    got: list[tuple[bytes, bytes]] = []
    receiver.receive(sock.fileno(), lambda data, name: got.append((data, name)))
    return got


def test_sockaddr_round_trip() -> None:
    assert mmsg.address(mmsg.sockaddr(("192.0.2.7", 3478))) == ("192.0.2.7", 3478)
    assert mmsg.address(mmsg.sockaddr(("2001:db8::1", 65535))) == ("2001:db8::1", 65535)
    assert len(mmsg.sockaddr(("192.0.2.7", 1))) == 16
    assert len(mmsg.sockaddr(("::1", 1))) == mmsg.NAME_SIZE
    for bad in (b"", b"\x00", b"\x07\x00" + bytes(14), bytes(16)):
        with pytest.raises(ValueError):
            mmsg.address(bad)


def test_a_batch_of_datagrams_arrives_in_order_with_the_sender(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    sock, peer = pair
    payloads = [bytes([i]) * (i + 1) for i in range(10)]
    for payload in payloads:
        peer.sendto(payload, sock.getsockname())
    receiver = mmsg.Receiver(slots=4, slot_size=64)
    got: list[tuple[bytes, bytes]] = []
    counts = []
    while True:
        count = receiver.receive(sock.fileno(), lambda d, n: got.append((d, n)))
        if not count:
            break
        counts.append(count)
    assert counts == [4, 4, 2]  # at most ``slots`` per call
    assert [data for data, _ in got] == payloads
    assert {mmsg.address(name) for _, name in got} == {peer.getsockname()}
    assert {name for _, name in got} == {mmsg.sockaddr(peer.getsockname())}


def test_empty_socket_is_eagain_not_an_error(pair: tuple[socket.socket, socket.socket]) -> None:
    sock, _ = pair
    receiver = mmsg.Receiver(slots=2, slot_size=64)
    assert _collect(receiver, sock) == []
    assert receiver.receive(sock.fileno(), lambda d, n: None) == 0


def test_datagram_larger_than_a_slot_is_dropped_and_counted(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    sock, peer = pair
    for payload in (b"small", b"x" * 100, b"fits exactly 16!"):
        peer.sendto(payload, sock.getsockname())
    receiver = mmsg.Receiver(slots=8, slot_size=16)
    assert [data for data, _ in _collect(receiver, sock)] == [b"small", b"fits exactly 16!"]
    assert receiver.truncated == 1
    # The slot that held the truncated datagram is usable again, at its full length.
    peer.sendto(b"y" * 16, sock.getsockname())
    assert [data for data, _ in _collect(receiver, sock)] == [b"y" * 16]


def test_names_of_different_lengths_in_one_batch() -> None:
    """msg_namelen is restored between calls: an IPv6 name after IPv4 ones is not cut."""
    sock6, peer6 = _udp("::1"), _udp("::1")
    sock4, peer4 = _udp(), _udp()
    try:
        receiver = mmsg.Receiver(slots=4, slot_size=64)
        peer4.sendto(b"four", sock4.getsockname())
        assert [mmsg.address(n) for _, n in _collect(receiver, sock4)] == [peer4.getsockname()]
        peer6.sendto(b"six", sock6.getsockname())
        got = _collect(receiver, sock6)
        assert [(d, mmsg.address(n)) for d, n in got] == [(b"six", peer6.getsockname()[:2])]
        assert len(got[0][1]) == mmsg.NAME_SIZE
    finally:
        for sock in (sock6, peer6, sock4, peer4):
            sock.close()


def test_a_raising_callback_drops_the_rest_and_leaves_the_receiver_usable() -> None:
    """The slots after the raising callback get msg_namelen restored too: an IPv6 name read
    into them later is not cut to the 16 bytes an IPv4 sender left there."""
    sock4, peer4, sock6, peer6 = _udp(), _udp(), _udp("::1"), _udp("::1")
    try:
        for payload in (b"one", b"two", b"three"):
            peer4.sendto(payload, sock4.getsockname())
        receiver = mmsg.Receiver(slots=4, slot_size=64)

        def explode(data: bytes, name: bytes) -> None:
            raise RuntimeError(data)

        with pytest.raises(RuntimeError):
            receiver.receive(sock4.fileno(), explode)
        assert _collect(receiver, sock4) == []  # the other two were dropped with the batch
        for _ in range(3):
            peer6.sendto(b"six", sock6.getsockname())
        got = _collect(receiver, sock6)
        assert [len(n) for _, n in got] == [mmsg.NAME_SIZE] * 3
        assert {mmsg.address(n) for _, n in got} == {peer6.getsockname()[:2]}
    finally:
        for sock in (sock4, peer4, sock6, peer6):
            sock.close()


def test_sender_batches_to_several_destinations_ipv4() -> None:
    source = _udp()
    sinks = [_udp() for _ in range(5)]
    try:
        sender = mmsg.Sender(source.fileno(), slots=3, slot_size=64)
        for i, sink in enumerate(sinks):
            sender.add(b"to %d" % i, mmsg.sockaddr(sink.getsockname()))
        assert sender.queued == 2  # three went out when the queue was full
        assert sender.flush() == 2
        assert (sender.sent, sender.dropped, sender.queued) == (5, 0, 0)
        for i, sink in enumerate(sinks):
            data, addr = sink.recvfrom(64)
            assert (data, addr) == (b"to %d" % i, source.getsockname())
        assert sender.flush() == 0  # nothing queued
    finally:
        for sock in (source, *sinks):
            sock.close()


def test_sender_ipv6_and_receiver_round_trip() -> None:
    source, sink = _udp("::1"), _udp("::1")
    try:
        sender = mmsg.Sender(source.fileno(), slots=4, slot_size=2048)
        for i in range(3):
            sender.add(bytes([i]) * 1000, mmsg.sockaddr(sink.getsockname()))
        assert sender.flush() == 3
        got = _collect(mmsg.Receiver(slots=4, slot_size=2048), sink)
        assert [d for d, _ in got] == [bytes([i]) * 1000 for i in range(3)]
        assert {mmsg.address(n) for _, n in got} == {source.getsockname()[:2]}
    finally:
        source.close()
        sink.close()


def test_sender_drops_what_does_not_fit_and_skips_refused_datagrams(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    sink, source = pair
    sender = mmsg.Sender(source.fileno(), slots=4, slot_size=32)
    sender.add(b"z" * 33, mmsg.sockaddr(sink.getsockname()))  # larger than a slot
    sender.add(b"name too long", bytes(mmsg.NAME_SIZE + 1))
    assert (sender.queued, sender.dropped) == (0, 2)
    # An IPv6 destination on an IPv4 socket is refused (EAFNOSUPPORT/EINVAL); the rest go.
    sender.add(b"first", mmsg.sockaddr(sink.getsockname()))
    sender.add(b"refused", mmsg.sockaddr(("::1", 9)))
    sender.add(b"third", mmsg.sockaddr(sink.getsockname()))
    assert sender.flush() == 2
    assert (sender.sent, sender.dropped) == (2, 3)
    assert [d for d, _ in _collect(mmsg.Receiver(4, 32), sink)] == [b"first", b"third"]


def test_eagain_on_send_drops_the_rest_of_the_batch(
    pair: tuple[socket.socket, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full send buffer (sendmmsg(2) fails with EAGAIN after a partial batch) drops the
    unsent datagrams; UDP on loopback never fills up, so the second call is made to fail."""
    sink, source = pair
    sender = mmsg.Sender(source.fileno(), slots=8, slot_size=32)
    real = sender._sendmmsg
    calls: list[int] = []

    def partial_then_full(fd: int, address: int, count: int, flags: int) -> int:
        calls.append(count)
        if len(calls) == 1:
            return real(fd, address, 2, flags)  # the kernel took two
        ctypes.set_errno(errno.EAGAIN)
        return -1

    monkeypatch.setattr(sender, "_sendmmsg", partial_then_full)
    for i in range(5):
        sender.add(b"%d" % i, mmsg.sockaddr(sink.getsockname()))
    assert sender.flush() == 2
    assert calls == [5, 3]
    assert (sender.sent, sender.dropped, sender.queued) == (2, 3, 0)
    assert [d for d, _ in _collect(mmsg.Receiver(8, 32), sink)] == [b"0", b"1"]


def test_closed_socket_raises(pair: tuple[socket.socket, socket.socket]) -> None:
    sock, peer = pair
    fd = sock.fileno()
    name = mmsg.sockaddr(peer.getsockname())
    sock.close()
    with pytest.raises(OSError) as raised:
        mmsg.Receiver(2, 64).receive(fd, lambda d, n: None)
    assert raised.value.errno == errno.EBADF
    sender = mmsg.Sender(fd, 2, 64)
    sender.add(b"x", name)
    with pytest.raises(OSError) as raised:
        sender.flush()
    assert raised.value.errno == errno.EBADF
    assert (sender.sent, sender.dropped) == (0, 1)


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        mmsg.Receiver(0, 64)
    with pytest.raises(ValueError):
        mmsg.Sender(0, 4, 0)


def test_udp_io_choice() -> None:
    assert udp_io_path("asyncio") == "asyncio"
    assert udp_io_path("auto") == "batched"  # available here (module skip otherwise)
    assert udp_io_path("batched") == "batched"
    with pytest.raises(ValueError):
        udp_io_path("io_uring")
