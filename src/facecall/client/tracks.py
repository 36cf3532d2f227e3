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
import contextlib

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


class RemoteTrack(MediaStreamTrack):
    """The far end's audio or video for the whole call, across peer connections."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.frames = 0
        self._current: MediaStreamTrack | None = None
        self._switch: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def _wake(self) -> None:
        if not self._switch.done():
            self._switch.set_result(None)
        self._switch = asyncio.get_running_loop().create_future()

    def attach(self, track: MediaStreamTrack) -> None:
        """Forward ``track`` from now on (the previous one is dropped)."""
        self._current = track
        self._wake()

    async def recv(self) -> av.VideoFrame | av.AudioFrame:
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            track, switch = self._current, self._switch
            if track is None:
                await switch
                continue
            getter = asyncio.ensure_future(track.recv())
            await asyncio.wait({getter, switch}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                try:
                    frame = getter.result()
                except MediaStreamError:
                    if self._current is track:
                        self._current = None
                    continue
                self.frames += 1
                return frame  # type: ignore[no-any-return]
            getter.cancel()
            with contextlib.suppress(asyncio.CancelledError, MediaStreamError):
                await getter

    def stop(self) -> None:
        """End the track: a waiting ``recv()`` raises ``MediaStreamError``."""
        super().stop()
        self._current = None
        self._wake()
