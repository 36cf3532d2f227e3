"""Fixtures for SDK tests: a real server with our own STUN/TURN server, devices on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from facecall.turn.server import TurnServer
from tests.live import TEST_PASSWORD, LiveServer, MakeDevice, ice_settings, live_server, sdk_devices

PASSWORD = TEST_PASSWORD


@pytest.fixture
async def call_server(tmp_path: Path, turn: TurnServer) -> AsyncIterator[LiveServer]:
    """API + signaling, with ICE servers pointing at our TURN server."""
    async with live_server(f"sqlite+aiosqlite:///{tmp_path / 'facecall.db'}", ring_timeout=3.0,
                           resume_grace=5.0, **ice_settings(turn)) as live:
        yield live


@pytest.fixture
async def make_device(call_server: LiveServer) -> AsyncIterator[MakeDevice]:
    """Connected SDK devices on loopback with small synthetic media (320x240 @ 15 fps)."""
    async with sdk_devices(call_server.base_url) as make:
        yield make
