"""Measure what a call delivers: glass-to-glass video latency, audio latency, frame rate.

:class:`CallProbe` attaches to a :class:`~facecall.client.call.Call`'s remote tracks and reads the
capture stamps drawn by :class:`~facecall.media.sources.SyntheticVideoTrack` and the marker
bursts of :class:`~facecall.media.sources.SyntheticAudioTrack` (sender and receiver must share
the clock: same machine). Used by ``facecall demo`` and ``bench/latency.py``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import av
from aiortc import MediaStreamTrack

from facecall.media.sinks import FrameCallbackSink, StampStats, percentile
from facecall.media.sources import AudioLatencyProbe
from facecall.media.stamp import Stamp


@dataclass(frozen=True, slots=True)
class MediaFigures:
    """What one direction of a call delivered (milliseconds unless named otherwise)."""

    frames: int
    fps: float
    video_p50_ms: float
    video_p95_ms: float
    video_max_ms: float
    missing: int
    freezes: int
    audio_markers: int
    audio_p50_ms: float
    audio_p95_ms: float

    def as_dict(self) -> dict[str, Any]:
        def clean(value: Any) -> Any:
            if isinstance(value, float):
                return None if math.isnan(value) else round(value, 2)
            return value

        return {k: clean(v) for k, v in asdict(self).items()}


class CallProbe:
    """Stamp and audio-marker statistics for remote tracks (a frame-callback sink).

    ``warmup_frames`` first pictures are left out of the latency figures (the first keyframe and
    the jitter buffer filling are not the steady state).
    """

    def __init__(self, *, warmup_frames: int = 15, audio_period_s: float = 0.5) -> None:
        self.video = StampStats()
        self.audio = AudioLatencyProbe(period_s=audio_period_s)
        self.warmup_frames = warmup_frames
        self._seen = 0
        self.sink = FrameCallbackSink(self._on_frame)

    def _on_frame(self, frame: av.VideoFrame | av.AudioFrame, stamp: Stamp | None, received_us: int) -> None:
        if isinstance(frame, av.AudioFrame):
            self.audio.feed(frame, received_us)
            return
        self._seen += 1
        if self._seen > self.warmup_frames:
            self.video.add(stamp, received_us)

    def attach(self, video: MediaStreamTrack | None, audio: MediaStreamTrack | None) -> None:
        for track in (video, audio):
            if track is not None:
                self.sink.addTrack(track)

    async def start(self) -> None:
        await self.sink.start()

    async def stop(self) -> None:
        await self.sink.stop()

    def figures(self) -> MediaFigures:
        video = self.video.summary()
        audio = [m.latency_us / 1000 for m in self.audio.markers[1:]]  # the first may be partial
        return MediaFigures(
            frames=video.frames, fps=video.fps, video_p50_ms=video.latency_p50_ms,
            video_p95_ms=video.latency_p95_ms, video_max_ms=video.latency_max_ms,
            missing=video.missing, freezes=video.freezes, audio_markers=len(audio),
            audio_p50_ms=percentile(audio, 50), audio_p95_ms=percentile(audio, 95),
        )
