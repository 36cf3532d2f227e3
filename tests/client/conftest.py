"""Fixtures for SDK tests: a real server with our own STUN/TURN server, devices on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from facecall.client import Device
from facecall.turn.server import TurnServer
from tests.live import LiveServer, ice_settings, live_server

PASSWORD = "correct horse battery"

MakeDevice = Callable[..., Awaitable[Device]]


@pytest.fixture
async def call_server(tmp_path: Path, turn: TurnServer) -> AsyncIterator[LiveServer]:
    """API + signaling, with ICE servers pointing at our TURN server."""
    async with live_server(f"sqlite+aiosqlite:///{tmp_path / 'facecall.db'}", ring_timeout=3.0,
                           resume_grace=5.0, **ice_settings(turn)) as live:
        yield live


@pytest.fixture
async def make_device(call_server: LiveServer) -> AsyncIterator[MakeDevice]:
    """Connected SDK devices on loopback with small synthetic media (320x240 @ 15 fps)."""
    devices: list[Device] = []

    async def make(username: str, **options: Any) -> Device:
        options.setdefault("ice_host_addresses", ["127.0.0.1"])
        options.setdefault("synthetic_video", (320, 240, 15))
        options.setdefault("device_name", f"{username}-{len(devices)}")
        device = Device(call_server.base_url, username, PASSWORD, sign_up=True, **options)
        await device.connect()
        devices.append(device)
        return device

    yield make
    for device in devices:
        await device.close()
