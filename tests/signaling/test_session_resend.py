"""A request resent on a device's new connection while its old connection still handles it
(docs/protocol.md, "Requests across a drop"): the resend gets the original reply, and the
request takes effect once."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from facecall.bus.memory import InProcessBus
from facecall.config import Settings
from facecall.signaling.service import CallService
from facecall.signaling.session import DeviceSession
from facecall.store import Store


class _Link:
    def __init__(self) -> None:
        self.reading = False
        self.frames: list[dict[str, Any]] = []

    def write_frames(self, texts: list[bytes]) -> None:
        self.frames.extend(orjson.loads(t) for t in texts)

    def close(self, code: int, reason: str) -> None:
        pass


class _HeldService(CallService):
    """The real service; the first request it is given waits at a gate before it runs, as a
    request does behind a slow store write."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = asyncio.Event()
        self.held = asyncio.Event()
        self.requests = 0

    async def handle_request(self, user_id: str, device_id: str, message: Any) -> dict[str, Any]:
        self.requests += 1
        if self.requests == 1:
            self.held.set()
            await self.gate.wait()
        return await super().handle_request(user_id, device_id, message)


def _reply(link: _Link, msg_id: str) -> dict[str, Any]:
    return next(f for f in link.frames if f.get("re") == msg_id)


@dataclass
class _Resend:
    """alice's phone placed a call to bob on its old connection, which is still handling it;
    the phone's new connection said hello and resent the same request."""

    store: Store
    service: _HeldService
    bob: str
    start: bytes
    old: DeviceSession
    new: DeviceSession
    new_link: _Link
    first: asyncio.Task[None]
    resend: asyncio.Task[None]


@contextlib.asynccontextmanager
async def _resent_while_held(tmp_path: Path) -> AsyncIterator[_Resend]:
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'f.db'}")
    service = _HeldService(store, InProcessBus(), Settings(resume_grace=60.0))
    try:
        now = time.time()
        alice = await store.create_user("alice", "Alice", "-", now)
        bob = await store.create_user("bob", "Bob", "-", now)
        phone = await store.create_device(alice.id, "sdk", "phone", now)
        await store.create_device(bob.id, "sdk", "phone", now)
        start = orjson.dumps({"v": 1, "id": "start-1", "type": "call.start", "to": [bob.id],
                              "media": "audio"})
        old = DeviceSession(service, alice.id, phone.id, _Link())  # type: ignore[arg-type]
        await old.handle_frame(b'{"v":1,"id":"h1","type":"hello"}')
        first = asyncio.create_task(old.handle_frame(start))
        await service.held.wait()  # the old connection is in the middle of call.start
        new_link = _Link()
        new = DeviceSession(service, alice.id, phone.id, new_link)  # type: ignore[arg-type]
        await new.handle_frame(b'{"v":1,"id":"h2","type":"hello","resume_from":0}')
        resend = asyncio.create_task(new.handle_frame(start))  # the SDK resends unanswered ids
        await asyncio.sleep(0.05)
        assert not resend.done()  # it waits for the first handling
        yield _Resend(store, service, bob.id, start, old, new, new_link, first, resend)
    finally:
        await service.stop()
        await store.close()


async def test_a_resend_during_the_first_handling_gets_its_reply_and_acts_once(tmp_path: Path) -> None:
    async with _resent_while_held(tmp_path) as case:
        case.service.gate.set()
        await asyncio.gather(case.first, case.resend)
        case.new.flush()
        assert case.service.requests == 1  # acted once
        reply = _reply(case.new_link, "start-1")
        assert reply["type"] == "ok"
        assert (await case.store.live_calls_of_user(case.bob)) == [reply["call_id"]]
        await case.new.handle_frame(case.start)  # from now on, from the reply cache
        case.new.flush()
        replies = [f["call_id"] for f in case.new_link.frames if f.get("re") == "start-1"]
        assert replies == [reply["call_id"]] * 2 and case.service.requests == 1


async def test_a_resend_of_a_request_cancelled_midway_is_not_left_waiting(tmp_path: Path) -> None:
    async with _resent_while_held(tmp_path) as case:
        case.first.cancel()  # a node shutting down
        await asyncio.wait_for(case.resend, 5)
        case.new.flush()
        assert _reply(case.new_link, "start-1")["code"] == "internal"  # "retry": nothing answered
        assert (await case.store.live_calls_of_user(case.bob)) == []
