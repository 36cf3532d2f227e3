"""Fixtures shared by the whole suite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from facecall.turn.server import TurnServer
from tests.live import LiveServer, live_server, loopback_turn


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[LiveServer]:
    """A real server on a free loopback port with a fresh SQLite database."""
    async with live_server(f"sqlite+aiosqlite:///{tmp_path / 'facecall.db'}",
                           ring_timeout=3.0, resume_grace=2.0) as live:
        yield live


@pytest.fixture
async def turn() -> AsyncIterator[TurnServer]:
    """Our STUN/TURN server on free loopback ports (loopback peers allowed: tests only)."""
    async with loopback_turn() as server:
        yield server
