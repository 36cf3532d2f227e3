"""Call statistics: bitrate, frame rate, RTT, loss and the ICE path, from aiortc's stats.

Figures follow W3C webrtc-stats: ``roundTripTime`` and ``fractionLost`` come from the far end's
RTCP receiver reports (``remote-inbound-rtp``, RFC 3550 §6.4.1), packet counts from
``inbound-rtp`` / ``outbound-rtp``, bytes from ``transport``; rates are differences between two
samples. The candidate pair comes from :func:`facecall.client.ice.selected_candidate_pair`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCPeerConnection

from facecall.client.ice import CandidatePairInfo, selected_candidate_pair
from facecall.client.tracks import RemoteTrack
from facecall.media.engine import MediaEngine
from facecall.media.engine.adaptation import QualityState
from facecall.media.engine.sender import scaled_size


@dataclass(frozen=True, slots=True)
class CallStats:
    """One sample of a call's media figures (rates over the interval since the previous sample)."""

    at: float
    """``time.monotonic()`` of the sample."""
    interval_s: float
    send_bitrate_bps: float
    recv_bitrate_bps: float
    recv_video_fps: float
    frames_received: int
    """Remote video frames decoded since the call connected (across ICE restarts)."""
    rtt_ms: float
    """Round-trip time from RTCP (NaN until the far end reported)."""
    packets_lost: int
    """Packets lost on the way to us (cumulative, current peer connection)."""
    fraction_lost: float
    """The far end's last reported fraction of our packets lost (0..1, NaN until reported)."""
    path: str | None
    """``host``, ``srflx`` or ``relay``; ``None`` before ICE completes."""
    candidate_pair: CandidatePairInfo | None = field(default=None)
    engine: dict[str, Any] | None = field(default=None)
    """The media engine's figures: current ``quality`` (rung, bitrate, why), RTT, receive
    buffers, send pacing (``None`` with ``Device(media_engine=False)``)."""


@dataclass
class _Totals:
    at: float
    sent: int
    received: int
    frames: int


class StatsSampler:
    """Turns successive ``getStats()`` reports into :class:`CallStats` samples."""

    def __init__(self, remote_video: RemoteTrack | None) -> None:
        self.remote_video = remote_video
        self._last: _Totals | None = None
        self._base_sent = 0
        self._base_received = 0
        self._pc: RTCPeerConnection | None = None
        self.received_bytes = 0
        """Bytes received over the call so far (all peer connections), as of the last sample."""

    def rebase(self, pc: RTCPeerConnection) -> None:
        """A new peer connection (ICE restart) starts its byte counters from zero."""
        if self._pc is not None and self._last is not None:
            self._base_sent, self._base_received = self._last.sent, self._last.received
        self._pc = pc

    async def sample(self, pc: RTCPeerConnection) -> CallStats:
        if pc is not self._pc:
            self.rebase(pc)
        report = await pc.getStats()
        sent = received = lost = 0
        rtts: list[float] = []
        fractions: list[float] = []
        for stats in report.values():
            if stats.type == "transport":
                sent, received = stats.bytesSent, stats.bytesReceived
            elif stats.type == "inbound-rtp":
                lost += max(stats.packetsLost, 0)
            elif stats.type == "remote-inbound-rtp":
                if stats.roundTripTime is not None:  # None until a report answers our SR
                    rtts.append(stats.roundTripTime)
                if stats.fractionLost is not None:
                    fractions.append(stats.fractionLost)
        now = time.monotonic()
        frames = self.remote_video.frames if self.remote_video is not None else 0
        totals = _Totals(now, self._base_sent + sent, self._base_received + received, frames)
        last = self._last or totals
        dt = totals.at - last.at
        self._last = totals
        self.received_bytes = totals.received
        pair = selected_candidate_pair(pc)

        def rate(a: int, b: int) -> float:
            return (b - a) / dt if dt > 0 else math.nan

        return CallStats(
            at=now, interval_s=dt,
            send_bitrate_bps=8 * rate(last.sent, totals.sent),
            recv_bitrate_bps=8 * rate(last.received, totals.received),
            recv_video_fps=rate(last.frames, totals.frames),
            frames_received=frames,
            rtt_ms=1000 * sum(rtts) / len(rtts) if rtts else math.nan,
            packets_lost=lost,
            fraction_lost=max(fractions) if fractions else math.nan,
            path=pair.path if pair else None,
            candidate_pair=pair,
        )


def sent_quality(engine: MediaEngine, state: QualityState, source_fps: float | None) -> dict[str, Any]:
    """``state`` as the video is sent: ``resolution`` and ``fps`` are the ladder rung's
    (``rung``) capped by the source's, since the engine scales down, never up, and cannot send
    more frames than the source gives (``source_fps``: known for the synthetic source)."""
    figures = state.as_dict()
    if engine.controller.source is not None:
        width, height = scaled_size(*engine.controller.source[:2], state.rung)
        figures["resolution"] = f"{width}x{height}"
    if source_fps is not None and source_fps < state.fps:
        figures["fps"] = int(source_fps) if source_fps == int(source_fps) else round(source_fps, 2)
    return figures
