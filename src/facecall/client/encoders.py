"""Real-time encoder settings through aiortc's codec factory hook.

aiortc 1.16 runs x264 on its default ``medium`` preset and VP8 on one thread on 2-CPU machines,
which cannot sustain 1080p30 here. :func:`encoder_tuning` makes the senders started inside it use
x264 ``veryfast`` (and, when asked, more VP8 threads), without editing or copying aiortc:

* ``aiortc.rtcrtpsender.get_encoder`` (the name the sender calls) is wrapped once; it returns
  aiortc's own :class:`~aiortc.codecs.h264.H264Encoder` / :class:`~aiortc.codecs.vpx.Vp8Encoder`
  subclassed only to wrap their ``codec`` attribute (the PyAV context aiortc creates and
  configures) in a proxy that adds our options just before the context opens, on its first
  ``encode``.
* the tuning is a context variable: senders inherit it from the task that set the description
  (aiortc starts them in tasks created by ``setRemoteDescription``/``setLocalDescription``), so
  stock aiortc peers in the same process keep stock encoders (the benchmarks' anchor).

Rate changes (issue 6): aiortc closes and reopens its encoder — a key frame — whenever the target
rate moves by more than 10 %. :class:`TunedH264Encoder` changes x264's rate on the open encoder
instead: FFmpeg's libx264 wrapper passes a changed ``bit_rate`` to ``x264_encoder_reconfig`` before
each frame (``reconfig_encoder`` in ``libavcodec/libx264.c``), and x264 follows it when the encoder
was opened in ABR mode with a VBV whose max rate equals the opening rate (measured here: opened at
3 Mbit/s, a change to 400 kbit/s gives ~390 kbit/s within a second; opened below its VBV max rate,
x264 ignored the same change). So the encoder opens at :data:`X264_RATE_CEILING` with that VBV and
is set to the real target before its first frame; only a target above the ceiling (or a new
picture size) reopens it. VP8 keeps aiortc's rebuild: FFmpeg's libvpx wrapper sets libvpx's
``rc_target_bitrate`` only when it opens (``vpx_init``), and a ``bit_rate`` changed on the open
context is ignored (measured: the output rate did not move).

Private names used (aiortc==1.16.*, tested in ``tests/client/test_hooks.py``):
``aiortc.rtcrtpsender.get_encoder``, the encoders' ``codec`` attribute and
``H264Encoder._encode_frame``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import aiortc.rtcrtpsender
import av
from aiortc.codecs.base import Encoder
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.rtcrtpparameters import RTCRtpCodecParameters


@dataclass(frozen=True, slots=True)
class EncoderTuning:
    """Encoder settings for real time (applied when an encoder context opens)."""

    x264_preset: str | None = "veryfast"
    """x264 ``preset`` (aiortc keeps ``tune=zerolatency``); ``None`` keeps x264's ``medium``."""
    vp8_threads: int | None = None
    """libvpx threads; ``None`` keeps aiortc's rule (2 threads above 640x480 from 3 CPUs, else 1).

    On the shared 2-CPU machines here 2 threads cost 3.4x the CPU per 1080p frame (libvpx's row
    threads wait actively for each other), so the default does not force them (docs/sdk.md)."""

    def threads_for(self, pixels: int) -> int | None:
        return self.vp8_threads


X264_RATE_CEILING = 3_000_000
"""bit/s at which x264 opens (VBV max rate); targets up to here change without reopening."""
X264_VBV_BITS = 250_000
"""x264's largest VBV buffer (bits): bounds a key frame (~17 kB at 720p here) and keeps rate
changes quick."""
X264_VBV_SECONDS = 0.25
"""Below that, the buffer holds this much of the target rate the encoder opens at, at least
:data:`X264_VBV_MIN_BITS`: the encoder opens at its ceiling rate, and its first IDR was sized for
that — ~8 kB at 180p / 130 kbit/s after a bandwidth drop, half a second of the link."""
X264_VBV_MIN_BITS = 50_000

def x264_vbv_bits(target: int) -> int:
    """x264's VBV buffer for an encoder opened for ``target`` bit/s (see :data:`X264_VBV_SECONDS`)."""
    return int(min(X264_VBV_BITS, max(X264_VBV_MIN_BITS, target * X264_VBV_SECONDS)))


REALTIME = EncoderTuning()
"""The SDK's default: x264 ``veryfast`` (about half of ``medium``'s CPU per frame)."""

_tuning: ContextVar[EncoderTuning | None] = ContextVar("facecall_encoder_tuning", default=None)
_original_get_encoder: Callable[[RTCRtpCodecParameters], Encoder] | None = None
EncoderWrapper = Callable[[Encoder, RTCRtpCodecParameters], Encoder]
_wrapper: ContextVar[EncoderWrapper | None] = ContextVar("facecall_encoder_wrapper", default=None)


class _ContextProxy:
    """Stands in for a PyAV encoder context; adds options right before the context opens."""

    def __init__(self, context: Any, configure: Callable[[Any, Any], None]) -> None:
        object.__setattr__(self, "_context", context)
        object.__setattr__(self, "_configure", configure)
        object.__setattr__(self, "_configured", False)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._context, name, value)

    def encode(self, frame: Any = None) -> Any:
        if not self._configured:
            object.__setattr__(self, "_configured", True)
            if not self._context.is_open:
                self._configure(self._context, frame)
        return self._context.encode(frame)


class _ProxiedCodec:
    """Mixin: store aiortc's ``self.codec = <context>`` as a :class:`_ContextProxy`."""

    _tuning_value: EncoderTuning

    @property
    def codec(self) -> Any:
        return self.__dict__.get("_proxied_codec")

    @codec.setter
    def codec(self, context: Any) -> None:
        self.__dict__["_proxied_codec"] = (
            None if context is None else _ContextProxy(context, self._configure_context))

    def _configure_context(self, context: Any, frame: Any) -> None:
        raise NotImplementedError


class TunedH264Encoder(_ProxiedCodec, H264Encoder):
    """aiortc's H.264 encoder with the x264 preset of an :class:`EncoderTuning`, whose rate changes
    without reopening x264 (see the module docstring)."""

    def __init__(self, tuning: EncoderTuning) -> None:
        self._tuning_value = tuning
        self._ceiling = 0
        self.reopened = 0
        """How many times the x264 context was (re)opened (a new picture size, a rate above the
        ceiling): each one starts with a key frame."""
        super().__init__()

    def _configure_context(self, context: Any, frame: Any) -> None:
        options = dict(context.options)
        if self._tuning_value.x264_preset:
            options["preset"] = self._tuning_value.x264_preset
        self._ceiling = max(X264_RATE_CEILING, int(context.bit_rate))
        options["maxrate"] = str(self._ceiling)
        target = int(context.bit_rate)
        options["bufsize"] = str(x264_vbv_bits(target))
        context.options = options
        context.bit_rate = self._ceiling  # opened at its VBV max rate, x264 follows later changes
        context.open()
        context.bit_rate = target  # from the first frame on (reconfigured before each frame)
        self.reopened += 1

    def _encode_frame(self, frame: av.VideoFrame, force_keyframe: bool) -> Iterator[bytes]:
        context = self.codec
        if (context is not None and context.is_open and self.target_bitrate <= self._ceiling
                and (frame.width, frame.height) == (context.width, context.height)):
            # equal rates: aiortc keeps the context; FFmpeg reconfigures x264 before this frame
            context.bit_rate = self.target_bitrate
        return super()._encode_frame(frame, force_keyframe)


class TunedVp8Encoder(_ProxiedCodec, Vp8Encoder):
    """aiortc's VP8 encoder with the thread count of an :class:`EncoderTuning`."""

    def __init__(self, tuning: EncoderTuning) -> None:
        self._tuning_value = tuning
        super().__init__()

    def _configure_context(self, context: Any, frame: Any) -> None:
        threads = self._tuning_value.threads_for(context.width * context.height)
        if threads is not None:
            context.thread_count = threads


def _get_encoder(codec: RTCRtpCodecParameters) -> Encoder:
    encoder = _tuned_encoder(codec)
    wrapper = _wrapper.get()
    return encoder if wrapper is None else wrapper(encoder, codec)


def _tuned_encoder(codec: RTCRtpCodecParameters) -> Encoder:
    assert _original_get_encoder is not None
    tuning = _tuning.get()
    if tuning is not None:
        mime = codec.mimeType.lower()
        if mime == "video/h264":
            return TunedH264Encoder(tuning)
        if mime == "video/vp8":
            return TunedVp8Encoder(tuning)
    return _original_get_encoder(codec)


def install_encoder_hook() -> None:
    """Wrap ``aiortc.rtcrtpsender.get_encoder`` once (a no-op outside :func:`encoder_tuning`
    and :func:`encoder_wrapper`)."""
    global _original_get_encoder
    if _original_get_encoder is None:
        _original_get_encoder = aiortc.rtcrtpsender.get_encoder
        aiortc.rtcrtpsender.get_encoder = _get_encoder  # type: ignore[assignment]


@contextlib.contextmanager
def encoder_tuning(tuning: EncoderTuning | None) -> Iterator[None]:
    """Senders started inside this block (and tasks it creates) use ``tuning`` (``None``: stock)."""
    install_encoder_hook()
    token = _tuning.set(tuning)
    try:
        yield
    finally:
        _tuning.reset(token)


@contextlib.contextmanager
def encoder_wrapper(wrapper: EncoderWrapper | None) -> Iterator[None]:
    """Senders started inside this block (and tasks it creates) pass each encoder they get
    (tuned or stock) through ``wrapper(encoder, codec)`` and use what it returns: group media's
    SFrame encryption (facecall.client.sframe_media). ``None``: no wrapper."""
    install_encoder_hook()
    token = _wrapper.set(wrapper)
    try:
        yield
    finally:
        _wrapper.reset(token)
