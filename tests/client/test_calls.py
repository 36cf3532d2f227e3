"""Two SDK devices call each other over a real server, with real aiortc media on loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from facecall.client import Call, CallState, Device, EndReason
from facecall.client.errors import CallError
from facecall.media.sinks import FrameCallbackSink, StampStats
from tests.client.conftest import MakeDevice
from tests.live import live_server, reconnected, sdk_devices


async def connected_call(make_device: MakeDevice, **options: object) -> tuple[Device, Device, Call, Call]:
    alice = await make_device("alice", **options)
    bob = await make_device("bob", **options)
    outgoing = await alice.call("bob", video=True)
    incoming = await bob.next_call(timeout=10)
    assert incoming.id == outgoing.id and incoming.state is CallState.RINGING
    assert incoming.remote_user == alice.user_id and incoming.media == "video"
    assert incoming.remote_name == "alice" and outgoing.remote_name == "bob"  # the ring's from_name
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
    # both ends show the same security code (facecall.e2ee.security_code)
    assert outgoing.security_code is not None and outgoing.security_code == incoming.security_code

    await outgoing.hangup()
    assert outgoing.state is CallState.ENDED and outgoing.end_reason is EndReason.HUNG_UP
    assert await incoming.wait_ended(10) is EndReason.HUNG_UP
    assert incoming.state is CallState.ENDED


async def test_decline_ends_both(make_device: MakeDevice) -> None:
    alice = await make_device("alice")
    bob = await make_device("bob")
    rung: list[Call] = []
    bob.on("call", rung.append)
    outgoing = await alice.call("bob", video=False)
    incoming = await bob.next_call()
    assert incoming.media == "audio" and rung == [incoming]
    await incoming.decline()
    assert incoming.end_reason is EndReason.DECLINED
    assert await outgoing.wait_ended(10) is EndReason.DECLINED


async def test_busy_decline(make_device: MakeDevice) -> None:
    alice = await make_device("alice")
    bob = await make_device("bob")
    outgoing = await alice.call("bob")
    await (await bob.next_call()).decline(busy=True)
    assert await outgoing.wait_ended(10) is EndReason.BUSY


async def test_cancel_before_answer_stops_the_ring(make_device: MakeDevice) -> None:
    alice = await make_device("alice")
    bob = await make_device("bob")
    outgoing = await alice.call("bob")
    incoming = await bob.next_call()
    events = []
    outgoing.on("ringing", events.append)
    await outgoing.hangup()
    assert outgoing.end_reason is EndReason.CANCELLED
    assert await incoming.wait_ended(10) is EndReason.CANCELLED
    with pytest.raises(Exception, match="ringing incoming"):
        await incoming.answer() if False else await incoming.decline()


async def test_ring_timeout_is_a_missed_call(make_device: MakeDevice) -> None:
    alice = await make_device("alice")
    bob = await make_device("bob")
    outgoing = await alice.call("bob")
    incoming = await bob.next_call()
    assert await incoming.wait_ended(15) is EndReason.RING_TIMEOUT
    assert await outgoing.wait_ended(5) is EndReason.RING_TIMEOUT


async def test_every_device_rings_one_answers_the_other_hears_answered_elsewhere(
        make_device: MakeDevice) -> None:
    alice = await make_device("alice")
    bob_phone = await make_device("bob")
    bob_laptop = await make_device("bob")
    assert bob_phone.device_id != bob_laptop.device_id and bob_phone.user_id == bob_laptop.user_id
    outgoing = await alice.call("bob")
    ringing = [event async for event in _first(outgoing.events(), "ringing")]
    assert ringing[0].data["devices"] == 2
    on_phone, on_laptop = await bob_phone.next_call(), await bob_laptop.next_call()
    await on_laptop.answer()
    assert await on_phone.wait_ended(10) is EndReason.ANSWERED_ELSEWHERE
    await asyncio.gather(outgoing.wait_connected(30), on_laptop.wait_connected(30))
    assert outgoing.remote_device == bob_laptop.device_id
    assert (await stamped_frames(outgoing, 5)).summary().stamped >= 5
    await on_laptop.hangup()
    assert await outgoing.wait_ended(10) is EndReason.HUNG_UP


async def _first(events: object, type_: str) -> object:
    async for event in events:  # type: ignore[attr-defined]
        if event.type == type_:
            yield event
            return


async def test_relay_only_goes_through_our_turn_server(make_device: MakeDevice) -> None:
    _alice, _bob, outgoing, incoming = await connected_call(make_device, relay_only=True)
    for call in (outgoing, incoming):
        assert (await stamped_frames(call, 5)).summary().stamped >= 5
        sample = await call.get_stats()
        assert sample.path == "relay"
        assert sample.candidate_pair is not None and sample.candidate_pair.local_type == "relay"
    await incoming.hangup()
    assert await outgoing.wait_ended(10) is EndReason.HUNG_UP


async def test_falls_back_to_the_relay_by_itself(make_device: MakeDevice) -> None:
    """Without a host path (bob gathers no host candidate) ICE settles on our TURN relay."""
    alice = await make_device("alice")
    bob = await make_device("bob", ice_host_addresses=[])
    outgoing = await alice.call("bob")
    incoming = await bob.next_call()
    await incoming.answer()
    await asyncio.gather(outgoing.wait_connected(30), incoming.wait_connected(30))
    assert outgoing.path == "relay" and incoming.path == "relay"
    assert (await stamped_frames(incoming, 5)).summary().stamped >= 5


async def test_device_that_reconnects_mid_call_keeps_the_call(make_device: MakeDevice) -> None:
    alice, _bob, outgoing, incoming = await connected_call(make_device)
    changes: list[str] = []
    alice.on("connection", changes.append)
    await alice.drop_connection()
    await reconnected(alice)
    assert alice.reconnects == 1
    assert changes == ["reconnecting", "connected"]
    assert outgoing.state is CallState.CONNECTED
    first = (await stamped_frames(outgoing, 3)).latencies_ms
    assert first
    await incoming.hangup()  # the resumed connection still carries the call's events
    assert await outgoing.wait_ended(10) is EndReason.HUNG_UP


async def test_mute_and_camera_off(make_device: MakeDevice) -> None:
    from facecall.media.sources import AudioLatencyProbe, now_us

    _alice, _bob, outgoing, incoming = await connected_call(make_device)

    async def told(audio: bool, video: bool) -> None:
        """The other side was told (``call.media``) what alice sends now."""
        for _ in range(100):
            if incoming.remote_media == {"audio": audio, "video": video, "screen": False}:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"bob was told {incoming.remote_media}")

    assert incoming.remote_media == {"audio": True, "video": True, "screen": False}
    outgoing.camera_off()
    assert not outgoing.camera_enabled
    await told(audio=True, video=False)
    black = asyncio.Event()
    frames: list[object] = []

    def on_video(frame: object, stamp: object, received_us: int) -> None:
        frames.append(stamp)
        if stamp is None and len(frames) > 3:
            black.set()

    sink = FrameCallbackSink(on_video)
    sink.addTrack(incoming.remote_video)
    await sink.start()
    await asyncio.wait_for(black.wait(), 10)
    await sink.stop()
    outgoing.camera_on()
    await told(audio=True, video=True)
    assert (await stamped_frames(incoming, 3)).summary().stamped >= 3

    async def markers_heard(seconds: float, after_us: int) -> int:
        """Bursts captured after ``after_us`` heard within ``seconds``."""
        probe = AudioLatencyProbe()

        def on_audio(frame: object, stamp: object, received_us: int) -> None:
            probe.feed(frame, received_us)  # type: ignore[arg-type]

        audio = FrameCallbackSink(on_audio)
        audio.addTrack(incoming.remote_audio)
        await audio.start()
        await asyncio.sleep(seconds)
        await audio.stop()
        return len([m for m in probe.markers if m.capture_us > after_us])

    outgoing.mute()
    assert outgoing.muted
    await told(audio=False, video=True)
    # a 20 ms frame taken from the source just before mute() carries samples captured up to
    # 20 ms after it: markers from a frame after that must not be heard
    assert await markers_heard(1.6, now_us() + 40_000) == 0
    outgoing.unmute()
    assert await markers_heard(1.6, now_us()) >= 1


async def test_calls_run_on_the_media_engine_and_report_its_quality(make_device: MakeDevice) -> None:
    from facecall.media.engine.receiver import EngineReceiver
    from facecall.media.engine.sender import EngineSender

    _alice, _bob, outgoing, incoming = await connected_call(make_device)
    for call in (outgoing, incoming):
        await stamped_frames(call, 5)
        peer = call._peer
        assert peer is not None and peer.engine is not None
        parts = peer.engine.attach(peer.pc)
        assert any(isinstance(p, EngineSender) for p in parts)
        assert any(isinstance(p, EngineReceiver) for p in parts)
        sample = await call.get_stats()
        assert sample.engine is not None and sample.engine["receive"]
    # what is sent: the starting rung (640x360 @ 30) capped by the 320x240 @ 15 source
    assert outgoing.quality is not None
    assert (outgoing.quality["resolution"], outgoing.quality["fps"]) == ("320x240", 15)
    sample = await outgoing.get_stats()
    assert sample.engine is not None and sample.engine["quality"]["resolution"] == "320x240"
    frame = await asyncio.wait_for(incoming.remote_video.recv(), 10)
    assert (frame.width, frame.height) == (320, 240)
    await outgoing.hangup()


async def test_stock_media_path_on_request(make_device: MakeDevice) -> None:
    _alice, _bob, outgoing, incoming = await connected_call(make_device, media_engine=False)
    await stamped_frames(incoming, 5)
    assert outgoing.quality is None and (await outgoing.get_stats()).engine is None
    await outgoing.hangup()


async def test_calls_connect_directly_on_a_server_without_turn(tmp_path: Path) -> None:
    """`facecall serve --no-turn` (no TURN secret: /v1/turn/credentials answers 503): media
    flows between host candidates; a relay-only device is told it cannot have media."""
    async with live_server(f"sqlite+aiosqlite:///{tmp_path / 'f.db'}", turn_urls=[],
                           turn_secrets=[]) as server, sdk_devices(server.base_url) as make:
        assert (await server.http.get("/healthz")).status_code == 200
        alice, bob = await make("alice"), await make("bob")
        outgoing = await alice.call("bob", video=False)
        incoming = await bob.next_call(timeout=10)
        await incoming.answer()
        await asyncio.gather(outgoing.wait_connected(30), incoming.wait_connected(30))
        assert (await outgoing.get_stats()).path == "host"
        await outgoing.hangup()
        carol = await make("carol", relay_only=True)
        with pytest.raises(CallError) as refused:
            await carol.ice_configuration()
        assert refused.value.code == "no_turn"
