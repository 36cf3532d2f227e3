"""A real facecall server on a free loopback port, for tests (uvicorn in the test's event loop)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import httpx
import pytest
import websockets

from facecall.client import Device
from facecall.client.signaling import SignalingConnection
from facecall.config import Settings
from facecall.server import build_uvicorn, turn_uris
from facecall.turn.config import TurnConfig
from facecall.turn.server import TurnServer

TEST_TURN_SECRET = "test-turn-secret"  # the TURN REST secret every test server and TURN share


@dataclass
class LiveServer:
    """A running server: its URLs and an HTTP client bound to it."""

    settings: Settings
    base_url: str
    ws_url: str
    http: httpx.AsyncClient
    app: Any

    async def sign_up(self, username: str, password: str = "correct horse battery") -> dict[str, Any]:
        r = await self.http.post("/v1/accounts", json={"username": username, "password": password})
        assert r.status_code == 201, r.text
        body: dict[str, Any] = r.json()
        return body

    async def register_device(self, account_token: str, name: str = "phone",
                              kind: str = "sdk") -> dict[str, Any]:
        r = await self.http.post("/v1/devices", json={"kind": kind, "name": name},
                                 headers={"Authorization": f"Bearer {account_token}"})
        assert r.status_code == 201, r.text
        body: dict[str, Any] = r.json()
        return body

    async def device(self, device_token: str) -> SignalingConnection:
        """A connected signaling connection for a device token."""
        conn = SignalingConnection(self.ws_url, device_token)
        await conn.connect()
        return conn

    async def user_with_devices(self, username: str, n: int = 1) -> tuple[dict[str, Any],
                                                                        list[SignalingConnection]]:
        account = await self.sign_up(username)
        return account, await self.connected_devices(account, n)

    async def connected_devices(self, account: dict[str, Any], n: int) -> list[SignalingConnection]:
        """``n`` new devices of the signed-in ``account``, connected (``.device_id`` set)."""
        username = account["user"]["username"]
        conns = []
        for i in range(n):
            reg = await self.register_device(account["token"], name=f"{username}-dev{i}")
            conn = await self.device(reg["token"])
            conn.device_id = reg["device"]["id"]  # type: ignore[attr-defined]
            conns.append(conn)
        return conns


async def reconnected(*devices: Device, timeout: float = 10.0) -> None:
    """Wait until every one of ``devices`` has reconnected at least once and is connected."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not all(device.reconnects and device.connected for device in devices):
        if loop.time() > deadline:
            raise AssertionError(f"not reconnected within {timeout} s: "
                                 f"{[(d.reconnects, d.connected) for d in devices]}")
        await asyncio.sleep(0.05)


async def through(proxy: SignalingProxy, device: Device) -> None:
    """Reconnect ``device``'s signaling through ``proxy`` (a resume: nothing is lost)."""
    assert device.signaling is not None
    device.signaling.ws_url = proxy.url
    await device.signaling.drop()
    await reconnected(device)


def facecall_process(*argv: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """The real `facecall` command, started: no ``FACECALL_*`` variable but those of ``env``,
    no terminal (a new session, standard input closed), text output piped."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FACECALL_")}
    return subprocess.Popen([sys.executable, "-m", "facecall", *argv], env={**clean, **(env or {})},
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def refused_start(*argv: str, env: dict[str, str] | None = None,
                  timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run `facecall ARGV`, which must refuse to start; the test fails if it runs on."""
    proc = facecall_process(*argv, env=env)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"`facecall {' '.join(argv)}` started instead of refusing")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def one_line(done: subprocess.CompletedProcess[str], status: int = 1) -> str:
    """The single `facecall: ...` line a refused start printed (with exit ``status``)."""
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("facecall: "), lines[0]
    assert done.returncode == status, done.stderr
    assert done.stdout == ""
    return lines[0]


def free_socket(host: str = "127.0.0.1") -> socket.socket:
    """A bound TCP socket on a free port (``IPPROTO_TCP`` named, so that asyncio's loop turns
    Nagle's algorithm off on the connections it accepts, as uvloop does: see ``bind_http``)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    return sock


@asynccontextmanager
async def live_server(database_url: str, **overrides: Any) -> AsyncIterator[LiveServer]:
    """Start the API + signaling app on a free port; stop it on exit."""
    sock = free_socket()
    port = sock.getsockname()[1]
    defaults: dict[str, Any] = {
        "turn_urls": ["stun:127.0.0.1:3478", "turn:127.0.0.1:3478?transport=udp"],
        "turn_secrets": [TEST_TURN_SECRET],
    }
    settings = Settings(host="127.0.0.1", port=port, database_url=database_url,
                        **{**defaults, **overrides})
    server = build_uvicorn(settings)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    tls = settings.tls_cert != ""  # HTTPS and WSS: trust the node's own certificate
    base = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=settings.tls_cert) if tls else True
    async with httpx.AsyncClient(base_url=base, timeout=10, verify=verify) as http:
        try:
            yield LiveServer(settings, base, f"{'wss' if tls else 'ws'}://127.0.0.1:{port}/v1/signaling",
                             http, server.config.loaded_app)
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, 15)
            sock.close()


def loopback_turn_config(**overrides: Any) -> TurnConfig:
    """Our STUN/TURN server on free loopback ports, relaying to loopback peers (tests only)."""
    config = TurnConfig(udp_listen=[("127.0.0.1", 0)], tcp_listen=[("127.0.0.1", 0)],
                        rest_secrets=[TEST_TURN_SECRET], allowed_peers=["127.0.0.0/8"])
    for name, value in overrides.items():
        setattr(config, name, value)
    return config


@asynccontextmanager
async def loopback_turn(**overrides: Any) -> AsyncIterator[TurnServer]:
    """A running :func:`loopback_turn_config` server; stopped on exit."""
    turn = TurnServer(loopback_turn_config(**overrides))
    await turn.start()
    try:
        yield turn
    finally:
        await turn.stop()


def ice_settings(turn: TurnServer) -> dict[str, Any]:
    """`live_server` settings that hand clients ``turn``'s URIs and credentials."""
    return {"turn_urls": turn_uris(turn), "turn_secrets": [TEST_TURN_SECRET]}


TEST_PASSWORD = "correct horse battery"

MakeDevice = Callable[..., Awaitable[Device]]


@asynccontextmanager
async def sdk_devices(base_url: str) -> AsyncIterator[MakeDevice]:
    """``make(username, **options)``: signed-up, connected SDK devices on loopback with small
    synthetic media (320x240 @ 15 fps); all closed on exit."""
    devices: list[Device] = []

    async def make(username: str, **options: Any) -> Device:
        options.setdefault("ice_host_addresses", ["127.0.0.1"])
        options.setdefault("synthetic_video", (320, 240, 15))
        options.setdefault("device_name", f"{username}-{len(devices)}")
        device = Device(base_url, username, TEST_PASSWORD, sign_up=True, **options)
        await device.connect()
        devices.append(device)
        return device

    try:
        yield make
    finally:
        for device in devices:
            await device.close()


class ServerProcess:
    """`facecall serve` as a child process (so that it can be killed for real)."""

    def __init__(self, db: Path | str, port: int, ring_timeout: float, resume_grace: float = 60.0,
                 turn_urls: list[str] | None = None, env: dict[str, str] | None = None) -> None:
        """``facecall serve --no-turn`` on ``127.0.0.1:port`` with the SQLite database ``db``
        (a path), or the database URL ``db``; TURN credentials are signed with the tests'
        secret and list ``turn_urls`` (none: no ICE server); ``env`` adds settings
        (``FACECALL_TLS_CERT``: HTTPS, trusting that certificate; ``FACECALL_REDIS_URL``: a
        node sharing that bus)."""
        self.db, self.port, self.ring_timeout = db, port, ring_timeout
        self.resume_grace = resume_grace
        self.turn_urls = turn_urls or []
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "FACECALL_RESUME_GRACE": str(self.resume_grace),
               "FACECALL_TURN_SECRETS": TEST_TURN_SECRET,
               "FACECALL_TURN_URLS": ",".join(self.turn_urls), **self.env}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "facecall", "serve", "--no-turn", "--port", str(self.port),
             "--database-url", self.db if isinstance(self.db, str) else f"sqlite:///{self.db}",
             "--ring-timeout", str(self.ring_timeout),
             "--log-level", "warning"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )

    async def ready(self) -> None:
        async with httpx.AsyncClient(verify=self.verify) as http:
            for _ in range(200):
                try:
                    if (await http.get(f"{self.base_url}/healthz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                assert self.proc is not None and self.proc.poll() is None, self.proc.stderr
                await asyncio.sleep(0.05)
        raise TimeoutError("server did not start")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    async def crash_and_restart(self) -> None:
        """SIGKILL the node (no shutdown code runs; its in-memory mailboxes die with it), start
        it again on the same database and port, and wait until it serves."""
        self.kill()
        self.start()
        await self.ready()

    @property
    def base_url(self) -> str:
        return f"{'https' if 'FACECALL_TLS_CERT' in self.env else 'http'}://127.0.0.1:{self.port}"

    @property
    def verify(self) -> ssl.SSLContext | bool:
        """What a client of this node trusts: its own certificate when it serves HTTPS."""
        cert = self.env.get("FACECALL_TLS_CERT")
        return ssl.create_default_context(cafile=cert) if cert else True


class SignalingProxy:
    """A WebSocket proxy in front of ``/v1/signaling``, used as a device's ``ws_url``: it
    forwards every frame both ways, through :meth:`from_device` and :meth:`from_node`, which
    subclasses override to drop or change frames (a broken connection, a server in the middle)."""

    def __init__(self, upstream_ws_url: str) -> None:
        self.upstream = upstream_ws_url
        self._server: Any = None
        self.url = ""

    async def __aenter__(self) -> Self:
        self._server = await websockets.serve(self._pipe, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/v1/signaling"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        await self._server.wait_closed()

    def from_device(self, message: dict[str, Any]) -> bool:
        """Whether a frame the device sent goes on to the node."""
        return True

    def from_node(self, message: dict[str, Any]) -> dict[str, Any] | None:
        """The frame the device gets for one the node sent; None: it gets none."""
        return message

    async def _pipe(self, client: Any) -> None:
        headers = {"Authorization": client.request.headers.get("Authorization", "")}
        try:
            async with websockets.connect(self.upstream, additional_headers=headers) as server:
                async def up() -> None:
                    async for raw in client:
                        if self.from_device(json.loads(raw)):
                            await server.send(raw)

                async def down() -> None:
                    async for raw in server:
                        message = json.loads(raw)
                        changed = self.from_node(message)
                        if changed is not None:
                            await client.send(raw if changed is message else json.dumps(changed))

                tasks = [asyncio.create_task(up()), asyncio.create_task(down())]
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in tasks:
                    task.cancel()
        except (OSError, websockets.WebSocketException):
            pass  # the node is down: the device sees its connection close and retries


class ReplyEater(SignalingProxy):
    """A signaling proxy that forwards everything both ways, except the replies to the first
    request of each type in ``eat`` (the connection broke before they arrived). ``eaten`` is
    set once one was eaten."""

    def __init__(self, upstream_ws_url: str, eat: set[str]) -> None:
        super().__init__(upstream_ws_url)
        self.eat = set(eat)
        self.eaten = asyncio.Event()
        self._eaten_ids: set[str] = set()

    def from_device(self, message: dict[str, Any]) -> bool:
        if message.get("type") in self.eat:
            self.eat.discard(message["type"])
            self._eaten_ids.add(message["id"])
        return True

    def from_node(self, message: dict[str, Any]) -> dict[str, Any] | None:
        if (re := message.get("re")) in self._eaten_ids:
            self._eaten_ids.discard(re)  # a resend (same id) is answered
            self.eaten.set()
            return None
        return message
