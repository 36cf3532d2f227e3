"""Helpers: a one-way call A → B through the impairment relay, with or without the engine."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

import av

from facecall.media.engine import EngineConfig, MediaEngine
from facecall.media.engine.loopback import connect, new_peer_connection
from facecall.media.impairment import ImpairmentProfile, ImpairmentRelay
from facecall.media.sinks import FrameCallbackSink, StampStats
from facecall.media.sources import AudioLatencyProbe, SyntheticAudioTrack, SyntheticVideoTrack


@dataclass
class Call:
    relay: ImpairmentRelay
    engine_a: MediaEngine | None
    engine_b: MediaEngine | None
    video: StampStats = field(default_factory=lambda: StampStats(freeze_ms=300))
    audio: list[Any] = field(default_factory=list)
    audio_frames: int = 0
    pcs: list[Any] = field(default_factory=list)
    sink: FrameCallbackSink | None = None
    sources: list[Any] = field(default_factory=list)


@contextlib.asynccontextmanager
async def one_way_call(*, engine: bool, width: int = 320, height: int = 240, fps: int = 15,
                       profile: ImpairmentProfile | None = None, seed: int = 1,
                       config: EngineConfig | None = None, audio: bool = True):
    relay = ImpairmentRelay(to=("127.0.0.1", 9), profile=profile or ImpairmentProfile(), seed=seed,
                            keep_records=0)
    await relay.start()
    a, b = new_peer_connection(), new_peer_connection()
    engine_a = MediaEngine(config) if engine else None
    engine_b = MediaEngine(config) if engine else None
    engines = {id(a): engine_a, id(b): engine_b}
    call = Call(relay, engine_a, engine_b, pcs=[a, b])
    probe = AudioLatencyProbe()

    def on_frame(frame: Any, stamp: Any, received_us: int) -> None:
        if isinstance(frame, av.VideoFrame):
            call.video.add(stamp, received_us)
        else:
            call.audio_frames += 1
            call.audio.extend(probe.feed(frame, received_us))

    call.sink = FrameCallbackSink(on_frame)
    b.on("track", call.sink.addTrack)

    def around(pc: Any) -> Any:
        e = engines[id(pc)]
        return e.activate() if e is not None else None

    video_track = SyntheticVideoTrack(width, height, fps)
    call.sources.append(video_track)
    with around(a) or contextlib.nullcontext():
        a.addTransceiver(video_track, direction="sendonly")
        if audio:
            audio_track = SyntheticAudioTrack()
            call.sources.append(audio_track)
            a.addTransceiver(audio_track, direction="sendonly")
    try:
        await connect(a, b, relay, around)
        await call.sink.start()
        yield call
    finally:
        for source in call.sources:
            source.stop()
        await call.sink.stop()
        await a.close()
        await b.close()
        relay.close()


async def wait_for(predicate: Any, timeout: float, step: float = 0.1) -> bool:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        if predicate():
            return True
        await asyncio.sleep(step)
    return predicate()
