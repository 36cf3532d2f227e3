"""The call's tracks: local tracks that can be muted, remote tracks that outlive an ICE restart.

* :class:`LocalTrack` wraps a source (synthetic, file, camera — any aiortc
  :class:`~aiortc.MediaStreamTrack`). Disabled, it sends black pictures or silence in place of the
  source's frames, as a disabled ``MediaStreamTrack`` does (W3C Media Capture and Streams §4.3.1,
  ``enabled``): the stream keeps its timing and the far end keeps decoding.
* :class:`RemoteTrack` is what the application attaches sinks to. It forwards the frames of the
  current peer connection's remote track and switches to the new one after an ICE restart (which
  builds a new peer connection in aiortc), so a recorder or frame callback sees one continuous
  track for the whole call.
"""

from __future__ import annotations

import asyncio

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError


def _blank_like(frame: av.VideoFrame | av.AudioFrame) -> av.VideoFrame | av.AudioFrame:
    if isinstance(frame, av.VideoFrame):
        w, h = frame.width, frame.height
        data = np.empty((h * 3 // 2, w), dtype=np.uint8)
        data[:h] = 16
        data[h:] = 128
        blank: av.VideoFrame | av.AudioFrame = av.VideoFrame.from_ndarray(data, format="yuv420p")
    else:
        blank = av.AudioFrame.from_ndarray(np.zeros_like(frame.to_ndarray()), format=frame.format.name,
                                           layout=frame.layout.name)
        blank.sample_rate = frame.sample_rate
    blank.pts = frame.pts
    blank.time_base = frame.time_base
    return blank


class LocalTrack(MediaStreamTrack):
    """A source with an ``enabled`` switch (mute / camera off)."""

    def __init__(self, source: MediaStreamTrack) -> None:
        super().__init__()
        if source.kind not in ("audio", "video"):
            raise ValueError(f"a source must be an audio or video track, not {source.kind!r}")
        self.kind = source.kind
        self.source = source
        self.enabled = True
        """``False``: black pictures / silence are sent instead of the source's frames."""

    async def recv(self) -> av.VideoFrame | av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        frame = await self.source.recv()
        if self.enabled:
            return frame
        return _blank_like(frame)

    def stop(self) -> None:
        """Stop this track and its source."""
        super().stop()
        self.source.stop()

    def feed(self) -> MediaStreamTrack:
        """A track for one peer connection's sender.

        aiortc stops a sender's track when the sender stops; an ICE restart replaces the peer
        connection, so each one gets its own feed and the source outlives it.
        """
        return _Feed(self)


class _Feed(MediaStreamTrack):
    def __init__(self, local: LocalTrack) -> None:
        super().__init__()
        self.kind = local.kind
        self._local = local

    async def recv(self) -> av.VideoFrame | av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        return await self._local.recv()


class RemoteTrack(MediaStreamTrack):
    """The far end's audio or video for the whole call, across peer connections.

    A pump reads the current peer connection's remote track all the time, so nothing piles up
    in aiortc's unbounded track queue when no sink is attached; frames wait here in a short
    queue (``max_frames``) whose oldest frame is dropped when a slow consumer lets it fill.
    """

    def __init__(self, kind: str, max_frames: int | None = None) -> None:
        super().__init__()
        self.kind = kind
        self.frames = 0
        """Frames received so far (across peer connections)."""
        self.dropped = 0
        """Frames dropped because nobody read them in time."""
        size = max_frames if max_frames is not None else (8 if kind == "video" else 25)
        self._queue: asyncio.Queue[av.VideoFrame | av.AudioFrame | None] = asyncio.Queue(size)
        self._pump: asyncio.Task[None] | None = None

    def attach(self, track: MediaStreamTrack) -> None:
        """Forward ``track`` from now on (the previous one is dropped)."""
        if self._pump is not None:
            self._pump.cancel()
        if self.readyState == "live":
            self._pump = asyncio.create_task(self._run(track))

    async def _run(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            self.frames += 1
            if self._queue.full():
                self._queue.get_nowait()
                self.dropped += 1
            self._queue.put_nowait(frame)

    async def recv(self) -> av.VideoFrame | av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        frame = await self._queue.get()
        if frame is None:
            raise MediaStreamError
        return frame

    def stop(self) -> None:
        """End the track: a waiting ``recv()`` raises ``MediaStreamError``."""
        super().stop()
        if self._pump is not None:
            self._pump.cancel()
            self._pump = None
        if self._queue.full():
            self._queue.get_nowait()
        self._queue.put_nowait(None)
