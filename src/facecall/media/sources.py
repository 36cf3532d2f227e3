"""Media sources: synthetic tracks that can be measured, files and cameras.

* :class:`SyntheticVideoTrack` — a moving test pattern with a capture stamp
  (:mod:`facecall.media.stamp`) in every picture, paced in real time.
* :class:`SyntheticAudioTrack` — silence with a short marker tone burst at
  scheduled wall-clock instants; :class:`AudioLatencyProbe` finds the bursts in
  received (Opus-decoded) audio and gives back their capture times.
* :func:`open_file_source` / :func:`open_camera_source` — aiortc's
  :class:`~aiortc.contrib.media.MediaPlayer` with clear errors.

Both synthetic tracks follow aiortc's :class:`~aiortc.MediaStreamTrack`
contract: ``recv()`` raises :class:`~aiortc.mediastreams.MediaStreamError` once
the track is stopped, and ``stop()`` wakes a ``recv()`` that is waiting.
"""

from __future__ import annotations

import asyncio
import fractions
import math
import os
import sys
import time
from dataclasses import dataclass

import av
import numpy as np
import numpy.typing as npt
from aiortc import MediaStreamTrack
from aiortc.contrib.media import MediaPlayer
from aiortc.mediastreams import MediaStreamError

from facecall.media.stamp import stamp_frame

VIDEO_CLOCK_RATE = 90000
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK_RATE)
AUDIO_PTIME = 0.020
"""Duration of one synthetic audio frame (as aiortc's own tracks)."""


def now_us() -> int:
    """Wall-clock time in microseconds since the Unix epoch (the stamp clock)."""
    return time.time_ns() // 1000


class MediaSourceError(RuntimeError):
    """A media source could not be opened."""


class CameraNotFoundError(MediaSourceError, FileNotFoundError):
    """The requested camera device does not exist on this machine."""


class _PacedTrack(MediaStreamTrack):
    """Shared real-time pacing and clean stopping for the synthetic tracks."""

    def __init__(self) -> None:
        super().__init__()
        self._stopped = asyncio.Event()
        self._start_mono: float | None = None
        self._start_wall_us = 0

    async def _wait_until(self, offset_s: float) -> None:
        """Sleep until ``offset_s`` after the first frame; raise if stopped."""
        if self.readyState != "live":
            raise MediaStreamError
        if self._start_mono is None:
            self._start_mono = time.monotonic()
            self._start_wall_us = now_us()
            return
        delay = self._start_mono + offset_s - time.monotonic()
        if delay > 0:
            try:
                await asyncio.wait_for(self._stopped.wait(), delay)
            except TimeoutError:
                pass
        if self.readyState != "live":
            raise MediaStreamError

    def stop(self) -> None:
        """End the track; a pending or later ``recv()`` raises ``MediaStreamError``."""
        super().stop()
        self._stopped.set()


class MovingPattern:
    """A moving pattern in I420 (``yuv420p``) layout, cheap to produce.

    Diagonal colour bars scroll sideways and a bright square bounces, so every
    picture differs from the last the way camera video does; the top band is
    left for the stamp.
    """

    def __init__(self, width: int, height: int) -> None:
        if width <= 0 or height <= 0 or width % 2 or height % 2:
            raise ValueError(f"width and height must be positive and even, got {width}x{height}")
        self.width, self.height = width, height
        y, x = np.mgrid[0:height, 0 : 2 * width]
        self._luma = ((x + y) * 256 // max(width // 4, 1) % 256).astype(np.uint8)
        cy, cx = np.mgrid[0 : height // 2, 0 : width]
        self._u = (128 + 60 * np.sin(cx * 2 * math.pi / width)).astype(np.uint8)
        self._v = (128 + 60 * np.cos(cy * 2 * math.pi / max(height // 2, 1))).astype(np.uint8)

    def render(self, index: int) -> npt.NDArray[np.uint8]:
        """Picture ``index`` as a ``(H*3/2, W)`` I420 array."""
        w, h = self.width, self.height
        shift = (index * max(w // 160, 1)) % w
        out = np.empty((h * 3 // 2, w), dtype=np.uint8)
        out[:h] = self._luma[:, shift : shift + w]
        side = max(h // 6, 2)
        period = max(w - side, 1)
        left = abs((index * max(w // 100, 1)) % (2 * period) - period)
        top = h // 2 - side // 2
        out[top : top + side, left : left + side] = 235
        quarter = (w // 2) * (h // 2)
        out[h:].reshape(-1)[:quarter] = self._u[:, ::2].reshape(-1)
        out[h:].reshape(-1)[quarter:] = self._v[:, ::2].reshape(-1)
        return out


class SyntheticVideoTrack(_PacedTrack):
    """A video track of a moving pattern stamped with capture time and counter.

    Each picture carries :func:`now_us` at the moment it is made and a counter
    starting at 0 (see :mod:`facecall.media.stamp`); pictures are paced at
    ``fps`` in real time, with 90 kHz timestamps like aiortc's
    :class:`~aiortc.VideoStreamTrack`.
    """

    kind = "video"

    def __init__(self, width: int = 640, height: int = 360, fps: float = 30) -> None:
        super().__init__()
        if not 0 < fps <= 240:
            raise ValueError(f"fps must be in (0, 240], got {fps}")
        self.fps = fps
        self.pattern = MovingPattern(width, height)
        self.frames_sent = 0

    async def recv(self) -> av.VideoFrame:
        """Wait for the next capture instant and return a stamped ``yuv420p`` frame."""
        index = self.frames_sent
        await self._wait_until(index / self.fps)
        frame = av.VideoFrame.from_ndarray(self.pattern.render(index), format="yuv420p")
        stamp_frame(frame, now_us(), index % (1 << 32))
        frame.pts = round(index * VIDEO_CLOCK_RATE / self.fps)
        frame.time_base = VIDEO_TIME_BASE
        self.frames_sent += 1
        return frame


class MarkerTone:
    """Silence with a tone burst at every multiple of ``period_s`` of the wall clock.

    A burst starts at the first sample whose capture time is at or after
    ``k * period_s`` seconds since the Unix epoch, so a receiver that knows
    ``period_s`` recovers the capture time of each burst it hears (as long as
    the latency stays below one period).
    """

    def __init__(
        self,
        sample_rate: int = 48000,
        period_s: float = 0.5,
        tone_hz: float = 1000.0,
        burst_s: float = 0.030,
        amplitude: float = 0.5,
    ) -> None:
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        if not 0 < burst_s < period_s / 2:
            raise ValueError("burst_s must be positive and shorter than half of period_s")
        if not 0 < amplitude <= 1:
            raise ValueError(f"amplitude must be in (0, 1], got {amplitude}")
        self.sample_rate = sample_rate
        self.period_us = round(period_s * 1_000_000)
        self.tone_hz = tone_hz
        self.burst_samples = round(burst_s * sample_rate)
        self.amplitude = amplitude

    def render(self, start_us: int, first: int, count: int) -> tuple[npt.NDArray[np.int16], list[int]]:
        """Samples ``first .. first+count`` of a stream whose sample 0 was captured at ``start_us``.

        Returns the mono ``int16`` samples and the scheduled capture times (µs)
        of the bursts that begin in this block.
        """
        rate = self.sample_rate
        out = np.zeros(count, dtype=np.float64)
        onsets: list[int] = []
        block_start_us = start_us + first * 1_000_000 // rate
        # Bursts that began before this block may still be sounding.
        k = (block_start_us - self.burst_samples * 1_000_000 // rate) // self.period_us
        while True:
            scheduled = k * self.period_us
            k += 1
            onset = -(-(scheduled - start_us) * rate // 1_000_000)  # first sample at/after
            if onset >= first + count:
                break
            begin, end = max(onset, first), min(onset + self.burst_samples, first + count)
            if onset < 0 or end <= begin:
                continue
            n = np.arange(begin - onset, end - onset)
            out[begin - first : end - first] = self.amplitude * np.sin(
                2 * math.pi * self.tone_hz * n / rate
            )
            if onset >= first:
                onsets.append(scheduled)
        return (out * 32767).astype(np.int16), onsets


class SyntheticAudioTrack(_PacedTrack):
    """An audio track of marker tone bursts at known capture times (see :class:`MarkerTone`).

    Produces 20 ms frames of ``s16`` mono at ``sample_rate``, paced in real time;
    sample ``n`` has capture time ``start + n / sample_rate`` on the wall clock.
    ``onsets`` lists the scheduled capture times (µs) of the bursts sent so far.
    """

    kind = "audio"

    def __init__(self, sample_rate: int = 48000, period_s: float = 0.5) -> None:
        super().__init__()
        self.tone = MarkerTone(sample_rate=sample_rate, period_s=period_s)
        self.sample_rate = sample_rate
        self.samples_per_frame = round(AUDIO_PTIME * sample_rate)
        self.samples_sent = 0
        self.onsets: list[int] = []

    async def recv(self) -> av.AudioFrame:
        """Wait for the next 20 ms and return it as an ``s16`` mono frame."""
        first = self.samples_sent
        await self._wait_until(first / self.sample_rate)
        samples, onsets = self.tone.render(self._start_wall_us, first, self.samples_per_frame)
        self.onsets.extend(onsets)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.sample_rate
        frame.pts = first
        frame.time_base = fractions.Fraction(1, self.sample_rate)
        self.samples_sent += self.samples_per_frame
        return frame


def audio_to_mono(frame: av.AudioFrame) -> npt.NDArray[np.float64]:
    """Samples of ``frame`` as mono floats in [-1, 1], for any PyAV sample format."""
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if not frame.format.is_planar:
        data = data.reshape(-1, channels).T
    data = data.astype(np.float64)
    if frame.format.name.startswith("s16"):
        data /= 32768.0
    elif frame.format.name.startswith("s32"):
        data /= 2147483648.0
    return data.mean(axis=0)


@dataclass(frozen=True, slots=True)
class AudioMarker:
    """One marker burst heard by :class:`AudioLatencyProbe`."""

    capture_us: int
    """Scheduled capture time of the burst (µs since the epoch)."""
    heard_us: int
    """Receive time of the burst's first sample (µs since the epoch)."""

    @property
    def latency_us(self) -> int:
        """Capture-to-receive latency of this burst."""
        return self.heard_us - self.capture_us


class AudioLatencyProbe:
    """Finds :class:`MarkerTone` bursts in received audio and measures their latency.

    Feed every received frame with its receive time (the time its first sample
    is handed over, :func:`now_us` by default).  A burst is heard where the
    level rises above ``threshold`` after at least ``quiet_s`` of quiet; its
    capture time is the latest scheduled instant (a multiple of ``period_s``)
    not after the moment it was heard, so latencies must stay below one period.
    """

    def __init__(self, period_s: float = 0.5, threshold: float = 0.15, quiet_s: float = 0.1) -> None:
        if period_s <= 0 or not 0 < threshold < 1 or quiet_s <= 0:
            raise ValueError("period_s and quiet_s must be positive and threshold in (0, 1)")
        self.period_us = round(period_s * 1_000_000)
        self.threshold = threshold
        self.quiet_us = round(quiet_s * 1_000_000)
        self.markers: list[AudioMarker] = []
        self._last_loud_us: int | None = None

    def feed(self, frame: av.AudioFrame, received_us: int | None = None) -> list[AudioMarker]:
        """Examine one received frame; return the markers that begin in it."""
        received_us = now_us() if received_us is None else received_us
        level = np.abs(audio_to_mono(frame))
        found: list[AudioMarker] = []
        loud = np.flatnonzero(level > self.threshold)
        rate = frame.sample_rate
        for index in loud:
            heard = received_us + int(index) * 1_000_000 // rate
            if self._last_loud_us is None or heard - self._last_loud_us >= self.quiet_us:
                marker = AudioMarker(heard // self.period_us * self.period_us, heard)
                found.append(marker)
            self._last_loud_us = heard
        self.markers.extend(found)
        return found


def open_file_source(path: str | os.PathLike[str], *, loop: bool = False) -> MediaPlayer:
    """Open a media file (anything PyAV reads) as aiortc's ``MediaPlayer``.

    Use ``player.video`` / ``player.audio`` as tracks (``None`` when the file
    has no such stream).

    :raises FileNotFoundError: if ``path`` does not exist.
    :raises MediaSourceError: if PyAV cannot read it.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"media file not found: {os.fspath(path)}")
    try:
        return MediaPlayer(os.fspath(path), loop=loop)
    except (av.FFmpegError, ValueError) as exc:
        raise MediaSourceError(f"cannot read media file {os.fspath(path)}: {exc}") from exc


def default_camera() -> tuple[str, str]:
    """The usual camera ``(device, format)`` for this platform."""
    if sys.platform == "darwin":
        return "default:none", "avfoundation"
    if sys.platform == "win32":
        return "video=Integrated Camera", "dshow"
    return "/dev/video0", "v4l2"


def open_camera_source(
    device: str | None = None,
    *,
    format: str | None = None,
    width: int = 640,
    height: int = 480,
    fps: int = 30,
) -> MediaPlayer:
    """Open a camera as aiortc's ``MediaPlayer`` (use ``player.video``).

    :raises CameraNotFoundError: if the device does not exist (Linux device
        nodes are checked first) or cannot be opened.
    """
    default_device, default_format = default_camera()
    device = device or default_device
    format = format or default_format
    if format == "v4l2" and not os.path.exists(device):
        raise CameraNotFoundError(f"no camera at {device} (this machine has no such device)")
    options = {"video_size": f"{width}x{height}", "framerate": str(fps)}
    try:
        return MediaPlayer(device, format=format, options=options)
    except (av.FFmpegError, ValueError) as exc:
        raise CameraNotFoundError(f"cannot open camera {device} ({format}): {exc}") from exc
