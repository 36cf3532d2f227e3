"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import settings

from facecall.turn.server import TurnServer
from tests.live import LiveServer, live_server, loopback_turn

# No per-example deadline: the suite never judges speed, and a loaded 2-core CI box is slow.
# In CI (CI=true) the examples are derandomized so that a run is reproducible; locally each run
# explores new ones.
settings.register_profile("facecall", deadline=None, derandomize=bool(os.environ.get("CI")))
settings.load_profile("facecall")


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
