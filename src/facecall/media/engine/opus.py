"""Opus decoding with packet-loss concealment and in-band FEC, through libopus itself.

PyAV's (FFmpeg's) Opus decoder has no way to ask for concealment of a missing packet or for the
FEC copy inside the next one: an empty packet means end of stream. libopus does both
(RFC 6716 §4.4 and §2.1.7): ``opus_decode(st, NULL, 0, pcm, frame_size, 0)`` conceals
``frame_size`` samples, ``opus_decode(st, next_packet, len, pcm, frame_size, 1)`` decodes the
redundant copy of the lost packet carried in ``next_packet``. :class:`OpusPlcDecoder` calls
libopus through :mod:`ctypes` — the copy bundled in PyAV's wheel (``av.libs``) or the system's —
and hands out ``av.AudioFrame`` in the layout aiortc's own decoder uses (``s16``, stereo,
48 kHz), so sinks see no difference.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fractions
import glob
import os
from functools import cache

import av
import numpy as np

SAMPLE_RATE = 48000
CHANNELS = 2
TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)
MAX_FRAME = 5760
"""120 ms at 48 kHz, the longest Opus frame."""


@cache
def load_libopus() -> ctypes.CDLL | None:
    """libopus from PyAV's bundled libraries or the system; ``None`` when there is none."""
    here = os.path.dirname(av.__file__)
    candidates = sorted(glob.glob(os.path.join(here, "..", "av.libs", "libopus*.so*")))
    system = ctypes.util.find_library("opus")
    if system:
        candidates.append(system)
    for path in candidates:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        lib.opus_decoder_create.restype = ctypes.c_void_p
        lib.opus_decoder_create.argtypes = [ctypes.c_int32, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
        lib.opus_decode.restype = ctypes.c_int
        lib.opus_decode.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int32,
                                    ctypes.POINTER(ctypes.c_int16), ctypes.c_int, ctypes.c_int]
        lib.opus_decoder_destroy.restype = None
        lib.opus_decoder_destroy.argtypes = [ctypes.c_void_p]
        return lib
    return None


class OpusPlcDecoder:
    """A libopus decoder (48 kHz stereo) that can also conceal and use FEC."""

    def __init__(self) -> None:
        lib = load_libopus()
        if lib is None:
            raise RuntimeError("libopus not found (neither in PyAV's wheel nor on the system)")
        self._lib = lib
        error = ctypes.c_int(0)
        self._state = lib.opus_decoder_create(SAMPLE_RATE, CHANNELS, ctypes.byref(error))
        if error.value != 0 or not self._state:
            raise RuntimeError(f"opus_decoder_create failed ({error.value})")
        self._pcm = np.zeros(MAX_FRAME * CHANNELS, dtype=np.int16)
        self._ptr = self._pcm.ctypes.data_as(ctypes.POINTER(ctypes.c_int16))

    def close(self) -> None:
        if self._state:
            self._lib.opus_decoder_destroy(self._state)
            self._state = None

    def __del__(self) -> None:
        self.close()

    def _run(self, data: bytes | None, samples: int, fec: bool, pts: int) -> av.AudioFrame | None:
        if not self._state:
            return None
        n = self._lib.opus_decode(self._state, data, len(data) if data else 0, self._ptr,
                                  samples if (fec or data is None) else MAX_FRAME, int(fec))
        if n <= 0:
            return None
        frame = av.AudioFrame.from_ndarray(self._pcm[: n * CHANNELS].reshape(1, -1).copy(),
                                           format="s16", layout="stereo")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = pts
        frame.time_base = TIME_BASE
        return frame

    def decode(self, packet: bytes, pts: int) -> av.AudioFrame | None:
        """Decode one packet (``None`` for a corrupt one)."""
        return self._run(packet, MAX_FRAME, False, pts)

    def conceal(self, samples: int, pts: int) -> av.AudioFrame | None:
        """Opus packet-loss concealment for ``samples`` (a multiple of 2.5 ms)."""
        return self._run(None, samples, False, pts)

    def decode_fec(self, next_packet: bytes, samples: int, pts: int) -> av.AudioFrame | None:
        """The lost packet before ``next_packet``, from its in-band FEC data (else concealment)."""
        return self._run(next_packet, samples, True, pts)
