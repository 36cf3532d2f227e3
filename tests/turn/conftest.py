"""Fixtures for the STUN/TURN tests: servers on free loopback ports, a tiny raw client."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from facecall.turn import mmsg, stun
from facecall.turn.auth import long_term_key
from facecall.turn.config import TurnConfig
from facecall.turn.server import TurnServer

USER = "alice"
PASSWORD = "wonderland"
SECRET = "rest-secret-1"
OLD_SECRET = "rest-secret-0"


@dataclass
class FakeClock:
    """A clock the test moves by hand."""

    now: float = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def loopback_config(**overrides: object) -> TurnConfig:
    """A config on free loopback ports that allows loopback peers (tests only)."""
    config = TurnConfig(
        udp_listen=[("127.0.0.1", 0)],
        tcp_listen=[("127.0.0.1", 0)],
        static_users={USER: PASSWORD},
        rest_secrets=[SECRET, OLD_SECRET],
        allowed_peers=["127.0.0.0/8", "::1/128"],
    )
    for name, value in overrides.items():
        setattr(config, name, value)
    return config


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["batched", "asyncio"])
def udp_io(request: pytest.FixtureRequest) -> str:
    """Each server test runs on both UDP data paths: recvmmsg/sendmmsg and asyncio."""
    if request.param == "batched" and not mmsg.available():
        pytest.skip("recvmmsg/sendmmsg not available here")
    return str(request.param)


@pytest.fixture
async def server(clock: FakeClock, udp_io: str) -> AsyncIterator[TurnServer]:
    turn = TurnServer(loopback_config(udp_io=udp_io), clock=clock)
    await turn.start()
    try:
        yield turn
    finally:
        await turn.stop()


@pytest.fixture
async def make_server(
    clock: FakeClock, udp_io: str
) -> AsyncIterator[Callable[..., Awaitable[TurnServer]]]:
    """Factory for servers with config overrides (on the ``udp_io`` path unless overridden);
    all are stopped at teardown."""
    started: list[TurnServer] = []

    async def factory(**overrides: object) -> TurnServer:
        turn = TurnServer(loopback_config(**{"udp_io": udp_io, **overrides}), clock=clock)
        await turn.start()
        started.append(turn)
        return turn

    yield factory
    for turn in started:
        await turn.stop()


class _Queue(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait((data, addr))


@dataclass
class UdpEndpoint:
    """A UDP socket whose datagrams arrive in a queue."""

    transport: asyncio.DatagramTransport
    protocol: _Queue

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.transport.get_extra_info("sockname")[:2]
        return host, port

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)

    async def receive(self, timeout: float = 5.0) -> tuple[bytes, tuple[str, int]]:
        return await asyncio.wait_for(self.protocol.queue.get(), timeout)

    async def nothing(self, wait: float = 0.3) -> bool:
        """True if nothing arrives within ``wait`` seconds (absence checks only)."""
        try:
            await asyncio.wait_for(self.protocol.queue.get(), wait)
        except TimeoutError:
            return True
        return False

    def close(self) -> None:
        self.transport.close()


async def udp_endpoint(host: str = "127.0.0.1") -> UdpEndpoint:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(_Queue, local_addr=(host, 0))
    return UdpEndpoint(transport, protocol)


@pytest.fixture
async def peer() -> AsyncIterator[UdpEndpoint]:
    endpoint = await udp_endpoint()
    yield endpoint
    endpoint.close()


@dataclass
class RawClient:
    """A minimal TURN client over UDP written from the RFC, for precise protocol tests."""

    endpoint: UdpEndpoint
    server: tuple[str, int]
    username: str = USER
    password: str = PASSWORD
    realm: str = ""
    nonce: str = ""
    key: bytes = b""
    attributes: list[tuple[int, bytes]] = field(default_factory=list)

    async def transact(self, message: stun.Message, sign: bool = True) -> stun.Message:
        """Send a request and return the response (no retransmissions: loopback)."""
        if sign and self.nonce:
            message.add(stun.USERNAME, self.username.encode())
            message.add(stun.REALM, self.realm.encode())
            message.add(stun.NONCE, self.nonce.encode())
            data = message.encode(integrity_key=self.key, fingerprint=True)
        else:
            data = message.encode(fingerprint=True)
        self.endpoint.send(data, self.server)
        while True:
            raw, _ = await self.endpoint.receive()
            if stun.is_stun(raw):
                response = stun.parse_message(raw)
                if response.transaction_id == message.transaction_id:
                    return response

    async def request(
        self,
        method: int,
        attributes: list[tuple[int, bytes]] | None = None,
        transaction_id: bytes | None = None,
    ) -> stun.Message:
        """An authenticated request, learning REALM/NONCE from a 401/438 first if needed."""
        for _ in range(3):
            tid = transaction_id or os.urandom(12)
            message = stun.Message(method, stun.Class.REQUEST, tid, list(attributes or []))
            response = await self.transact(message)
            code = error_code(response)
            if code in (401, 438) and response.get(stun.NONCE) is not None:
                new_nonce = (response.get(stun.NONCE) or b"").decode()
                realm = (response.get(stun.REALM) or b"").decode()
                if self.nonce and code == 401 and new_nonce and self.realm == realm:
                    return response  # credentials refused, not a challenge
                self.nonce, self.realm = new_nonce, realm
                self.key = long_term_key(self.username, self.realm, self.password)
                continue
            return response
        return response

    async def allocate(self, *extra: tuple[int, bytes]) -> stun.Message:
        return await self.request(
            stun.Method.ALLOCATE,
            [(stun.REQUESTED_TRANSPORT, bytes([17, 0, 0, 0])), *extra],
        )

    def relayed(self, response: stun.Message) -> tuple[str, int]:
        value = response.get(stun.XOR_RELAYED_ADDRESS)
        assert value is not None, response
        return stun.decode_xor_address(value, response.transaction_id)

    async def permit(self, *peers: tuple[str, int]) -> stun.Message:
        tid = os.urandom(12)
        attrs = [(stun.XOR_PEER_ADDRESS, stun.encode_xor_address(p, tid)) for p in peers]
        message = stun.Message(stun.Method.CREATE_PERMISSION, stun.Class.REQUEST, tid, attrs)
        message.add(stun.USERNAME, self.username.encode())
        message.add(stun.REALM, self.realm.encode())
        message.add(stun.NONCE, self.nonce.encode())
        self.endpoint.send(message.encode(integrity_key=self.key), self.server)
        while True:
            raw, _ = await self.endpoint.receive()
            if stun.is_stun(raw) and raw[8:20] == tid:
                return stun.parse_message(raw)

    async def bind_channel(self, number: int, peer: tuple[str, int]) -> stun.Message:
        tid = os.urandom(12)
        message = stun.Message(
            stun.Method.CHANNEL_BIND,
            stun.Class.REQUEST,
            tid,
            [
                (stun.CHANNEL_NUMBER, stun.encode_channel_number(number)),
                (stun.XOR_PEER_ADDRESS, stun.encode_xor_address(peer, tid)),
                (stun.USERNAME, self.username.encode()),
                (stun.REALM, self.realm.encode()),
                (stun.NONCE, self.nonce.encode()),
            ],
        )
        self.endpoint.send(message.encode(integrity_key=self.key), self.server)
        while True:
            raw, _ = await self.endpoint.receive()
            if stun.is_stun(raw) and raw[8:20] == tid:
                return stun.parse_message(raw)

    def send_indication(self, peer: tuple[str, int], data: bytes) -> None:
        tid = os.urandom(12)
        message = stun.Message(
            stun.Method.SEND,
            stun.Class.INDICATION,
            tid,
            [(stun.XOR_PEER_ADDRESS, stun.encode_xor_address(peer, tid)), (stun.DATA, data)],
        )
        self.endpoint.send(message.encode(), self.server)


def error_code(response: stun.Message) -> int | None:
    """The ERROR-CODE of a response, None for a success response."""
    if response.message_class == stun.Class.SUCCESS:
        return None
    value = response.get(stun.ERROR_CODE)
    assert value is not None, "error response without ERROR-CODE"
    return stun.decode_error_code(value)[0]


@pytest.fixture
async def client(server: TurnServer) -> AsyncIterator[RawClient]:
    endpoint = await udp_endpoint()
    yield RawClient(endpoint, server.udp_addresses[0])
    endpoint.close()


def free_port(kind: int = socket.SOCK_DGRAM, host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
