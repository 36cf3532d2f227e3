"""`DeviceSession`'s outbound queue: what one read of the transport produces goes out in one
write at the end of that read; frames queued at any other time are written by a callback of
the same loop iteration."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from facecall.config import Settings
from facecall.ratelimit import TokenBucket
from facecall.signaling.session import DeviceSession


class _Link:
    def __init__(self) -> None:
        self.reading = False
        self.writes: list[list[bytes]] = []

    def write_frames(self, texts: list[bytes]) -> None:
        self.writes.append(list(texts))

    def close(self, code: int, reason: str) -> None:
        raise AssertionError("not closed in these tests")


def _session(link: _Link) -> DeviceSession:
    settings = Settings()
    service = SimpleNamespace(settings=settings, message_bucket=lambda device_id: TokenBucket(
        settings.messages_per_second, settings.message_burst))
    return DeviceSession(service, "user", "device", link)  # type: ignore[arg-type]


async def test_frames_queued_during_a_read_are_written_once_when_the_read_ends() -> None:
    link = _Link()
    session = _session(link)
    link.reading = True
    session.enqueue(b"reply-1")
    session.enqueue(b"event-2")
    await asyncio.sleep(0)  # no callback of its own was scheduled
    assert link.writes == []
    link.reading = False
    session.end_of_read()
    assert link.writes == [[b"reply-1", b"event-2"]]
    session.end_of_read()  # nothing queued since: nothing written
    assert link.writes == [[b"reply-1", b"event-2"]]


async def test_frames_queued_outside_a_read_are_written_in_the_same_loop_iteration() -> None:
    link = _Link()
    session = _session(link)
    session.enqueue(b"event-1")
    session.enqueue(b"event-2")
    assert link.writes == []
    await asyncio.sleep(0)
    assert link.writes == [[b"event-1", b"event-2"]]


async def test_a_paused_session_holds_frames_until_resumed_even_at_the_end_of_a_read() -> None:
    link = _Link()
    session = _session(link)
    session.pause()
    link.reading = True
    session.enqueue(b"held")
    link.reading = False
    session.end_of_read()
    await asyncio.sleep(0)
    assert link.writes == []
    session.resume()
    assert link.writes == [[b"held"]]
