"""Media sinks: a per-frame callback, stamp statistics, recording and discarding.

Recording and discarding are aiortc's own :class:`~aiortc.contrib.media.MediaRecorder`
and :class:`~aiortc.contrib.media.MediaBlackhole`, re-exported here so SDK code
takes every sink from one place; :class:`CallRecorder` is ``MediaRecorder`` with
the video's first picture written before any audio (see there).
:class:`FrameCallbackSink` has the same shape (``addTrack`` / ``start`` / ``stop``).

:class:`StampStats` turns the stamps read from received pictures into
glass-to-glass latency, frame rate, lost and repeated frames and freezes.  It
computes figures; it never judges them.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import av
from aiortc import MediaStreamTrack
from aiortc.contrib.media import MediaBlackhole, MediaRecorder
from aiortc.mediastreams import MediaStreamError

from facecall.media.sources import now_us
from facecall.media.stamp import Stamp, read_stamp

__all__ = [
    "CallRecorder",
    "FrameCallback",
    "FrameCallbackSink",
    "MediaBlackhole",
    "MediaRecorder",
    "StampStats",
    "StampSummary",
    "percentile",
]

FrameCallback = Callable[[av.VideoFrame | av.AudioFrame, Stamp | None, int], Awaitable[None] | None]
"""``callback(frame, stamp, received_us)``; ``stamp`` is ``None`` for audio and
for pictures without a readable stamp.  May be a coroutine function."""


class _HeldTrack(MediaStreamTrack):
    """``source``'s frames; the first one waits for ``hold`` (until ``deadline``, loop time), and
    ``passed`` is set when a first frame has been handed on."""

    def __init__(self, source: MediaStreamTrack, hold: asyncio.Event | None = None,
                 passed: asyncio.Event | None = None) -> None:
        super().__init__()
        self.kind = source.kind
        self.source = source
        self.hold = hold
        self.passed = passed
        self.deadline = 0.0

    async def recv(self) -> av.VideoFrame | av.AudioFrame:
        if self.hold is not None and not self.hold.is_set():
            wait = self.deadline - asyncio.get_running_loop().time()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.hold.wait(), max(0.0, wait))
            self.hold = None
        frame = await self.source.recv()
        if self.passed is not None:
            self.passed.set()
        return frame


class CallRecorder:
    """Record a call's remote tracks to a file (any container FFmpeg writes, by extension) with
    aiortc's :class:`~aiortc.contrib.media.MediaRecorder`, the video's first picture first.

    ``MediaRecorder`` sizes its video stream from the first picture, but FFmpeg opens every stream
    of a file when the first packet of any of them is written: when audio was encoded before the
    first picture arrived — a receiver waits for a key frame, and with H.264 that took long enough —
    the video stream was opened without a size, the first picture failed ("Cannot change width
    after codec is open") and the file held no video. Audio now waits (in its track's queue,
    nothing is dropped) until the first picture has been handed to the recorder, at most
    ``video_wait`` seconds from :meth:`start`; a picture arriving later than that is not recorded.
    """

    def __init__(self, path: str, *, video_wait: float = 10.0, **options: object) -> None:
        self.recorder = MediaRecorder(path, **options)
        self.video_wait = video_wait
        self._tracks: list[MediaStreamTrack] = []
        self._held: list[_HeldTrack] = []

    def addTrack(self, track: MediaStreamTrack) -> None:
        self._tracks.append(track)

    async def start(self) -> None:
        first_picture = asyncio.Event()
        has_video = any(t.kind == "video" for t in self._tracks)
        deadline = asyncio.get_running_loop().time() + self.video_wait
        for track in self._tracks:
            if track.kind == "video":
                held = _HeldTrack(track, passed=first_picture)
            else:
                held = _HeldTrack(track, hold=first_picture if has_video else None)
            held.deadline = deadline
            self._held.append(held)
            self.recorder.addTrack(held)
        await self.recorder.start()

    async def stop(self) -> None:
        await self.recorder.stop()


class FrameCallbackSink:
    """Consume tracks and call ``callback`` for every frame received.

    For video the stamp drawn by :mod:`facecall.media.stamp` is read (unless
    ``read_stamps`` is false) and passed along with the receive time (µs since
    the epoch, taken when ``recv()`` returns).  A callback that raises stops
    that track's consumption; the exception is re-raised by :meth:`stop`.
    """

    def __init__(self, callback: FrameCallback, *, read_stamps: bool = True) -> None:
        self.callback = callback
        self.read_stamps = read_stamps
        self.frames = 0
        self._tracks: list[MediaStreamTrack] = []
        self._tasks: list[asyncio.Task[None]] = []

    def addTrack(self, track: MediaStreamTrack) -> None:
        """Add a track to consume once :meth:`start` is called."""
        self._tracks.append(track)

    async def start(self) -> None:
        """Start consuming every added track."""
        for track in self._tracks[len(self._tasks) :]:
            self._tasks.append(asyncio.create_task(self._run(track)))

    async def _run(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            received = now_us()
            stamp = None
            if self.read_stamps and isinstance(frame, av.VideoFrame):
                stamp = read_stamp(frame)
            self.frames += 1
            result = self.callback(frame, stamp, received)
            if inspect.isawaitable(result):
                await result

    async def wait(self) -> None:
        """Wait until every track has ended (re-raises a callback's exception)."""
        await asyncio.gather(*self._tasks)

    async def stop(self) -> None:
        """Stop consuming; re-raise the first exception a callback raised."""
        for task in self._tasks:
            task.cancel()
        results = await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for result in results:
            if isinstance(result, Exception):
                raise result


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values`` by linear interpolation; NaN if empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True, slots=True)
class StampSummary:
    """Figures for a run of received pictures (milliseconds unless named otherwise)."""

    frames: int
    """Pictures received."""
    stamped: int
    """Pictures whose stamp was read."""
    unreadable: int
    """Pictures without a readable stamp."""
    repeated: int
    """Pictures whose counter did not advance (a re-shown picture or stamp)."""
    missing: int
    """Counter values skipped: pictures sent but never received."""
    fps: float
    """Received pictures per second over the run."""
    latency_p50_ms: float
    latency_p95_ms: float
    latency_max_ms: float
    latency_mean_ms: float
    max_gap_ms: float
    """Longest time between two received pictures."""
    freezes: int
    """Gaps longer than the freeze threshold."""
    frozen_ms: float
    """Total time spent in those gaps."""


class StampStats:
    """Collect per-picture glass-to-glass latency: receive time minus stamped capture time.

    Call :meth:`add` for every received picture (its stamp or ``None``);
    :meth:`summary` computes the figures.  A gap between two received pictures
    longer than ``freeze_ms`` counts as a freeze.  Sender and receiver must
    share a clock (same machine), as the stamp holds wall-clock time.
    """

    def __init__(self, freeze_ms: float = 200.0) -> None:
        if freeze_ms <= 0:
            raise ValueError(f"freeze_ms must be positive, got {freeze_ms}")
        self.freeze_ms = freeze_ms
        self.latencies_ms: list[float] = []
        self.frames = 0
        self.unreadable = 0
        self.repeated = 0
        self.missing = 0
        self._arrivals: list[int] = []
        self._last_counter: int | None = None

    def add(self, stamp: Stamp | None, received_us: int | None = None) -> float | None:
        """Record one received picture; return its latency in ms (``None`` if unstamped)."""
        received_us = now_us() if received_us is None else received_us
        self.frames += 1
        self._arrivals.append(received_us)
        if stamp is None:
            self.unreadable += 1
            return None
        if self._last_counter is not None:
            step = (stamp.counter - self._last_counter) % (1 << 32)
            if step == 0 or step > 1 << 31:
                self.repeated += 1
                return None
            self.missing += step - 1
        self._last_counter = stamp.counter
        latency = (received_us - stamp.ts_us) / 1000
        self.latencies_ms.append(latency)
        return latency

    def on_frame(self, frame: av.VideoFrame | av.AudioFrame, stamp: Stamp | None, received_us: int) -> None:
        """A :data:`FrameCallback`: feed a :class:`FrameCallbackSink` straight into these stats."""
        if isinstance(frame, av.VideoFrame):
            self.add(stamp, received_us)

    def summary(self) -> StampSummary:
        """Compute the figures so far (NaN where there is nothing to compute)."""
        arrivals = self._arrivals
        gaps = [(b - a) / 1000 for a, b in itertools.pairwise(arrivals)]
        span_s = (arrivals[-1] - arrivals[0]) / 1e6 if len(arrivals) > 1 else 0.0
        frozen = [gap for gap in gaps if gap > self.freeze_ms]
        lat = self.latencies_ms
        return StampSummary(
            frames=self.frames,
            stamped=len(lat),
            unreadable=self.unreadable,
            repeated=self.repeated,
            missing=self.missing,
            fps=(len(arrivals) - 1) / span_s if span_s > 0 else math.nan,
            latency_p50_ms=percentile(lat, 50),
            latency_p95_ms=percentile(lat, 95),
            latency_max_ms=max(lat) if lat else math.nan,
            latency_mean_ms=sum(lat) / len(lat) if lat else math.nan,
            max_gap_ms=max(gaps) if gaps else math.nan,
            freezes=len(frozen),
            frozen_ms=sum(frozen),
        )
