"""The media engine of one call: configuration, hooks into aiortc, stats and quality events.

aiortc builds a transceiver's ``RTCRtpSender`` and ``RTCRtpReceiver`` from the names
``aiortc.rtcpeerconnection.RTCRtpSender`` / ``RTCRtpReceiver`` (in ``addTrack``,
``addTransceiver`` and ``setRemoteDescription``). :func:`install_hooks` replaces those two names,
once, by factories that build an :class:`~.sender.EngineSender` / :class:`~.receiver.EngineReceiver`
when a :class:`MediaEngine` is active in the calling context (:meth:`MediaEngine.activate`, a
context variable), and aiortc's own classes otherwise — so stock peers in the same process (the
benchmarks' anchor) stay stock.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import aiortc.rtcpeerconnection
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtcrtpsender import RTCRtpSender

from .adaptation import AdaptationConfig, AdaptationController, QualityChange, QualityState
from .audio_buffer import AudioBufferConfig
from .queue_delay import QueueDelayConfig
from .receiver import EngineReceiver
from .sender import EngineSender
from .video_buffer import VideoBufferConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Everything tunable in the engine; the defaults are what the benchmarks ran."""

    video: VideoBufferConfig = field(default_factory=VideoBufferConfig)
    audio: AudioBufferConfig = field(default_factory=lambda: AudioBufferConfig(fec=True))
    adaptation: AdaptationConfig = field(default_factory=AdaptationConfig)
    queue_delay: QueueDelayConfig = field(default_factory=QueueDelayConfig)
    opus_fec: bool = True
    """Send Opus in-band FEC (RFC 6716 §2.1.7); any Opus decoder can ignore it."""
    opus_expected_loss: int = 10
    """libopus ``packet_loss`` hint (%), which sizes the FEC data."""
    loss_window: float = 0.25
    """Seconds of sent packets per NACK-based loss measurement."""
    pacing_factor: float = 2.5
    """Media leaves at up to this times the video target rate."""
    pacing_burst: float = 0.06
    """Pacer bucket: this many seconds of the available rate may leave back to back."""
    video_codec: str = "video/VP8"
    """Offered first (the peer may still choose another). ``"video/H264"`` changes its rate on the
    open encoder (no key frame per rate step) and encodes 720p in about half of libvpx's time
    here, but is not the default yet: a CLI recording test received no video with it (see
    docs/media-engine.md, "Codec"); VP8 rate changes reopen the encoder."""


QualityListener = Callable[[QualityChange], Any]

_active: ContextVar[MediaEngine | None] = ContextVar("facecall_media_engine", default=None)
_installed: dict[str, Any] = {}


def _make_sender(trackOrKind: Any, transport: Any) -> RTCRtpSender:
    engine = _active.get()
    if engine is None:
        return _installed["sender"](trackOrKind, transport)
    return EngineSender(trackOrKind, transport, engine)


def _make_receiver(kind: str, transport: Any) -> RTCRtpReceiver:
    engine = _active.get()
    if engine is None:
        return _installed["receiver"](kind, transport)
    return EngineReceiver(kind, transport, engine)


def install_hooks() -> None:
    """Replace aiortc's sender/receiver constructors in ``aiortc.rtcpeerconnection`` (once)."""
    if not _installed:
        _installed["sender"] = aiortc.rtcpeerconnection.RTCRtpSender
        _installed["receiver"] = aiortc.rtcpeerconnection.RTCRtpReceiver
        aiortc.rtcpeerconnection.RTCRtpSender = _make_sender  # type: ignore[assignment,misc]
        aiortc.rtcpeerconnection.RTCRtpReceiver = _make_receiver  # type: ignore[assignment,misc]


class MediaEngine:
    """The engine of one peer connection.

    Use::

        engine = MediaEngine()
        with engine.activate():             # around addTrack/addTransceiver/setRemoteDescription
            pc.addTrack(video); pc.addTrack(audio)
            await pc.setRemoteDescription(offer) ...
        engine.on_quality_change(callback)  # QualityChange events
        engine.stats()                      # dict for call.stats
    """

    def __init__(self, config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig()
        self.controller = AdaptationController(self.config.adaptation)
        self.rtt = 0.1
        """Round-trip estimate (s) from the receiver reports our senders get; until one comes (or on
        a receive-only connection), a cautious 100 ms, so retransmissions still fit the budget."""
        self.rtt_measured = False
        """Whether :attr:`rtt` comes from a receiver report (else the NACK round trips are used)."""
        self._senders: list[EngineSender] = []
        self._receivers: list[EngineReceiver] = []
        self._listeners: list[QualityListener] = []
        self.changes: list[QualityChange] = []

    @contextlib.contextmanager
    def activate(self) -> Iterator[MediaEngine]:
        """Senders and receivers aiortc creates inside this block (this context) are the engine's."""
        install_hooks()
        token = _active.set(self)
        try:
            yield self
        finally:
            _active.reset(token)

    def attach(self, pc: aiortc.RTCPeerConnection) -> list[Any]:
        """The engine's senders and receivers among ``pc``'s transceivers (to check activation)."""
        out: list[Any] = []
        for transceiver in pc.getTransceivers():
            out += [x for x in (transceiver.sender, transceiver.receiver)
                    if isinstance(x, EngineSender | EngineReceiver)]
        return out

    @property
    def quality(self) -> QualityState | None:
        """What the video sender does now (rung, rate, why)."""
        return self.controller.state

    def on_quality_change(self, listener: QualityListener) -> Callable[[], None]:
        """Call ``listener(change)`` on every quality change; returns an unsubscribe function."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _source_seen(self, width: int, height: int, fps: int = 30) -> None:
        self.controller.set_source(width, height, fps)

    def _update(self, now: float) -> None:
        change = self.controller.update(now)
        if change is None:
            return
        self.changes.append(change)
        del self.changes[:-200]
        for sender in self._senders:
            sender.apply(change.after)
        for listener in list(self._listeners):
            try:
                listener(change)
            except Exception:  # a listener's bug must not stop the media
                logger.exception("quality listener failed")

    def stats(self) -> dict[str, Any]:
        """Engine figures for ``call.stats``: quality, RTT, receive and send counters."""
        state = self.controller.state
        sending = {}
        for sender in self._senders:
            track = sender.adapting_track
            if track is not None:
                sending = {"frames_in": track.frames_in, "frames_dropped_for_fps": track.frames_dropped,
                           "paced_packets": sender.pacer.delayed,
                           "stale_packets_dropped": sender.stale_packets_dropped,
                           "stale_retransmissions_refused": sender.stale_retransmissions_refused}
        return {
            "quality": state.as_dict() if state else None,
            "rtt": self.rtt,
            "quality_changes": len(self.changes),
            "send": sending,
            "receive": [r.stats() for r in self._receivers],
        }
