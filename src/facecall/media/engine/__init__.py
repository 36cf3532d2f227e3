"""facecall's media engine on top of aiortc: lower latency, and calls that survive loss and drops.

One entry point for the SDK::

    from facecall.media.engine import MediaEngine
    engine = MediaEngine()                     # one per peer connection
    with engine.activate():
        pc.addTransceiver(track, "sendrecv")   # and setRemoteDescription / setLocalDescription
    engine.on_quality_change(cb)               # QualityChange(before, after)
    engine.stats()                             # for call.stats

See ``docs/media-engine.md``.
"""

from .adaptation import LADDER, AdaptationConfig, AdaptationController, QualityChange, QualityState, Rung
from .audio_buffer import AudioBufferConfig, AudioJitterBuffer
from .engine import EngineConfig, MediaEngine, install_hooks
from .nack import NackConfig, NackTracker
from .video_buffer import VideoBufferConfig, VideoReceiveBuffer

__all__ = [
    "LADDER",
    "AdaptationConfig",
    "AdaptationController",
    "AudioBufferConfig",
    "AudioJitterBuffer",
    "EngineConfig",
    "MediaEngine",
    "NackConfig",
    "NackTracker",
    "QualityChange",
    "QualityState",
    "Rung",
    "VideoBufferConfig",
    "VideoReceiveBuffer",
    "install_hooks",
]
