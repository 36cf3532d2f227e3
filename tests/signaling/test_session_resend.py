"""A request resent on a device's new connection while its old connection still handles it
(docs/protocol.md, "Requests across a drop"): the resend gets the original reply, and the
request takes effect once."""

from __future__ import annotations

import asyncio
import time
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


async def test_a_resend_during_the_first_handling_gets_its_reply_and_acts_once(tmp_path: Path) -> None:
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

        old_link, new_link = _Link(), _Link()
        old = DeviceSession(service, alice.id, phone.id, old_link)  # type: ignore[arg-type]
        await old.handle_frame(b'{"v":1,"id":"h1","type":"hello"}')
        first = asyncio.create_task(old.handle_frame(start))
        await service.held.wait()  # the old connection is in the middle of call.start

        new = DeviceSession(service, alice.id, phone.id, new_link)  # type: ignore[arg-type]
        await new.handle_frame(b'{"v":1,"id":"h2","type":"hello","resume_from":0}')
        resend = asyncio.create_task(new.handle_frame(start))  # the SDK resends unanswered ids
        await asyncio.sleep(0.05)
        assert not resend.done()  # it waits for the first handling
        service.gate.set()
        await asyncio.gather(first, resend)
        old.flush()
        new.flush()

        assert service.requests == 1  # acted once
        reply = _reply(new_link, "start-1")
        assert reply["type"] == "ok"
        assert (await store.live_calls_of_user(bob.id)) == [reply["call_id"]]
        # the request is answered from the reply cache from now on
        again = asyncio.create_task(new.handle_frame(start))
        await again
        new.flush()
        assert [f["call_id"] for f in new_link.frames if f.get("re") == "start-1"] == [reply["call_id"]] * 2
        assert service.requests == 1
    finally:
        await service.stop()
        await store.close()


async def test_a_resend_of_a_request_cancelled_midway_is_not_left_waiting(tmp_path: Path) -> None:
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'f.db'}")
    service = _HeldService(store, InProcessBus(), Settings(resume_grace=60.0))
    try:
        now = time.time()
        alice = await store.create_user("alice", "Alice", "-", now)
        bob = await store.create_user("bob", "Bob", "-", now)
        phone = await store.create_device(alice.id, "sdk", "phone", now)
        start = orjson.dumps({"v": 1, "id": "start-1", "type": "call.start", "to": [bob.id],
                              "media": "audio"})
        old = DeviceSession(service, alice.id, phone.id, _Link())  # type: ignore[arg-type]
        await old.handle_frame(b'{"v":1,"id":"h1","type":"hello"}')
        first = asyncio.create_task(old.handle_frame(start))
        await service.held.wait()
        new_link = _Link()
        new = DeviceSession(service, alice.id, phone.id, new_link)  # type: ignore[arg-type]
        await new.handle_frame(b'{"v":1,"id":"h2","type":"hello","resume_from":0}')
        resend = asyncio.create_task(new.handle_frame(start))
        await asyncio.sleep(0.05)
        first.cancel()  # a node shutting down
        await asyncio.wait_for(resend, 5)
        new.flush()
        assert _reply(new_link, "start-1")["code"] == "internal"  # "retry": nothing was answered
        assert (await store.live_calls_of_user(bob.id)) == []
    finally:
        await service.stop()
        await store.close()
