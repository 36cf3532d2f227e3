"""Two SDK devices call each other over a real server, with real aiortc media on loopback."""

from __future__ import annotations

import asyncio

import pytest

from facecall.client import Call, CallState, Device, EndReason
from facecall.media.sinks import FrameCallbackSink, StampStats
from tests.client.conftest import MakeDevice


async def connected_call(make_device: MakeDevice, **options: object) -> tuple[Device, Device, Call, Call]:
    alice = await make_device("alice", **options)
    bob = await make_device("bob", **options)
    outgoing = await alice.call("bob", video=True)
    incoming = await bob.next_call(timeout=10)
    assert incoming.id == outgoing.id and incoming.state is CallState.RINGING
    assert incoming.remote_user == alice.user_id and incoming.media == "video"
    await incoming.answer()
    await asyncio.gather(outgoing.wait_connected(30), incoming.wait_connected(30))
    return alice, bob, outgoing, incoming


async def stamped_frames(call: Call, count: int, timeout: float = 20) -> StampStats:
    """Read ``count`` decoded remote pictures whose capture stamp reads back."""
    stats = StampStats()
    done = asyncio.Event()

    def on_frame(frame: object, stamp: object, received_us: int) -> None:
        stats.on_frame(frame, stamp, received_us)  # type: ignore[arg-type]
        if len(stats.latencies_ms) >= count:
            done.set()

    sink = FrameCallbackSink(on_frame)
    sink.addTrack(call.remote_video)
    await sink.start()
    try:
        await asyncio.wait_for(done.wait(), timeout)
    finally:
        await sink.stop()
    return stats


async def test_media_both_ways_and_hangup_ends_both(make_device: MakeDevice) -> None:
    _alice, _bob, outgoing, incoming = await connected_call(make_device)
    for call in (outgoing, incoming):
        stats = await stamped_frames(call, 10)
        summary = stats.summary()
        assert summary.stamped >= 10 and summary.latency_p50_ms > 0
        assert call.path == "host"
        sample = await call.get_stats()
        assert sample.path == "host" and sample.frames_received >= 10
        assert sample.candidate_pair is not None
        assert sample.candidate_pair.local_address[0] == "127.0.0.1"

    await outgoing.hangup()
    assert outgoing.state is CallState.ENDED and outgoing.end_reason is EndReason.HUNG_UP
    assert await incoming.wait_ended(10) is EndReason.HUNG_UP
    assert incoming.state is CallState.ENDED
