"""A session's hello (facecall.signaling.session): the welcome and the replay come before any
event that arrives meanwhile, and a connection that drops mid-hello does not stay online."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson

from facecall.bus.base import Replay
from facecall.bus.memory import InProcessBus
from facecall.config import Settings
from facecall.ratelimit import TokenBucket
from facecall.signaling.replies import Replies
from facecall.signaling.service import CallService
from facecall.signaling.session import DeviceSession
from facecall.store import Store


class _Link:
    def __init__(self) -> None:
        self.reading = False
        self.frames: list[dict[str, Any]] = []
        self.closed: tuple[int, str] | None = None

    def write_frames(self, texts: list[bytes]) -> None:
        self.frames.extend(orjson.loads(t) for t in texts)

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


class _Bus:
    async def replay(self, device_id: str, after_seq: int | None, carry: Any = None) -> Replay:
        return Replay(complete=True, last_seq=2, messages=[(2, b'{"type":"e","seq":2}')])


class _Service:
    """Events reach the session while its hello is attaching (a slow store write)."""

    def __init__(self) -> None:
        self.settings = Settings()
        self.bus = _Bus()
        self.fresh_starts = 0
        self.replies = Replies()

    def message_bucket(self, device_id: str) -> TokenBucket:
        return TokenBucket(100.0, 100.0)

    async def device_attached(self, user_id: str, device_id: str, session: DeviceSession,
                              listener: Any) -> bool:
        session.attached = True
        await listener(2, b'{"type":"e","seq":2}')  # also in the replay
        await listener(3, b'{"type":"e","seq":3}')  # new
        return True

    async def calls_elsewhere(self, user_id: str, device_id: str) -> list[dict[str, Any]]:
        return []

    async def held_calls(self, user_id: str, device_id: str, declared: list[str]
                         ) -> list[dict[str, Any]]:
        raise AssertionError("a complete resume needs no list of the calls it holds")

    async def fresh_start(self, user_id: str, device_id: str, kept: set[str],
                          already_rung: Any) -> None:
        self.fresh_starts += 1

    @contextlib.asynccontextmanager
    async def hello_turn(self, device_id: str) -> AsyncIterator[None]:
        yield


async def test_events_during_hello_come_after_the_welcome_and_the_replay() -> None:
    link = _Link()
    service = _Service()
    session = DeviceSession(service, "u", "d", link)  # type: ignore[arg-type]
    await session.handle_frame(b'{"v":1,"id":"h","type":"hello","resume_from":1}')
    session.flush()
    assert [(f["type"], f.get("seq")) for f in link.frames] == [
        ("welcome", None), ("e", 2), ("e", 3)]
    assert link.frames[0]["resumed"] is True
    assert service.fresh_starts == 0  # a complete resume: the device has its calls
    await session.handle_frame(b'{"v":1,"id":"h2","type":"hello"}')
    session.flush()
    assert link.frames[-1]["code"] == "invalid_state"


async def test_a_connection_that_drops_during_hello_is_not_left_online(tmp_path: Path) -> None:
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'f.db'}")
    bus = InProcessBus()
    service = CallService(store, bus, Settings(resume_grace=60.0))
    try:
        now = time.time()
        user = await store.create_user("dora", "Dora", "-", now)
        device = await store.create_device(user.id, "sdk", "phone", now)
        dropped = DeviceSession(service, user.id, device.id, _Link())
        dropped.closed = True  # the transport went away while the hello's store write ran
        assert await service.device_attached(user.id, device.id, dropped, dropped._on_event) is False
        assert await bus.online([device.id]) == set()
        assert not dropped.attached
        # attached, then dropped before the welcome: detaching starts the grace as usual
        session = DeviceSession(service, user.id, device.id, _Link())
        assert await service.device_attached(user.id, device.id, session, session._on_event)
        assert await bus.online([device.id]) == {device.id}
        await session.detach()
        assert await bus.online([device.id]) == set()
    finally:
        await service.stop()
        await store.close()
