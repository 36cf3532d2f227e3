"""Capture stamps drawn into video pictures, readable after lossy coding.

A stamp carries a capture timestamp (µs since the Unix epoch, 64 bits) and a
frame counter (32 bits).  It is drawn into the top band of the luma plane as a
grid of :data:`GRID_COLUMNS` x :data:`GRID_ROWS` square cells, each cell either
dark (bit 0) or bright (bit 1).  Cells are ``width / GRID_COLUMNS`` pixels wide,
so the grid scales with the picture: at 320, 640, 1280 and 1920 pixels wide the
cells are 8, 16, 32 and 48 pixels, aligned to the codecs' transform blocks, and a
picture downscaled on the way (resolution adaptation) still reads back.

The 160 cells hold, most significant bit first::

    MAGIC (16) | ts_us (64) | counter (32) | CRC-32 (32) | ~MAGIC (16)

The reader samples the centre of each cell, derives its threshold from the
known MAGIC cells, and checks the CRC-32 (IEEE, :func:`zlib.crc32`) over
MAGIC, timestamp and counter.  Any misread — a picture without a stamp, a cell
smeared by the encoder — yields ``None``, never a wrong value (the chance that
a random misread passes both the magic and the CRC is below 2⁻⁴⁸).

One case a check code cannot catch: an encoder that *skips* the whole band
re-shows the previous frame's intact stamp.  Receivers see that as a repeated
counter; :class:`facecall.media.sinks.StampStats` counts such repeats.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import TypeVar

import av
import numpy as np
import numpy.typing as npt

GRID_COLUMNS = 40
GRID_ROWS = 4
MAGIC = 0xFACE
LUMA_LOW = 16
"""Luma of a 0 cell (video-range black)."""
LUMA_HIGH = 235
"""Luma of a 1 cell (video-range white)."""
MIN_SEPARATION = 48
"""Minimum luma difference between the magic's bright and dark cells for a read."""

_PAYLOAD = struct.Struct("!HQI")  # magic, ts_us, counter
_BITS = GRID_COLUMNS * GRID_ROWS
_YUV_PLANAR = {"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "nv12", "gray"}

FrameOrArray = TypeVar("FrameOrArray", av.VideoFrame, npt.NDArray[np.uint8])


@dataclass(frozen=True, slots=True)
class Stamp:
    """What a stamp carries: capture time and frame counter."""

    ts_us: int
    """Capture time, microseconds since the Unix epoch."""
    counter: int
    """Frame counter (wraps at 2³²)."""


def stamp_geometry(width: int, height: int) -> tuple[float, int]:
    """Return ``(cell size in pixels, band height in pixels)`` for a picture size.

    :raises ValueError: if the picture is too small to hold a readable stamp
        (cells narrower than 2 pixels or a band taller than the picture).
    """
    cell = width / GRID_COLUMNS
    band = round(cell * GRID_ROWS)
    if cell < 2 or band > height:
        raise ValueError(f"picture {width}x{height} is too small for a capture stamp")
    return cell, band


def _encode_bits(ts_us: int, counter: int) -> npt.NDArray[np.uint8]:
    if not 0 <= ts_us < 1 << 64:
        raise ValueError(f"ts_us must fit in 64 unsigned bits, got {ts_us}")
    if not 0 <= counter < 1 << 32:
        raise ValueError(f"counter must fit in 32 unsigned bits, got {counter}")
    payload = _PAYLOAD.pack(MAGIC, ts_us, counter)
    data = payload + struct.pack("!IH", zlib.crc32(payload), MAGIC ^ 0xFFFF)
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))
    assert bits.size == _BITS
    return bits


def _decode_bits(bits: npt.NDArray[np.uint8]) -> Stamp | None:
    data = np.packbits(bits).tobytes()
    payload, (crc, inverse) = data[: _PAYLOAD.size], struct.unpack("!IH", data[_PAYLOAD.size :])
    magic, ts_us, counter = _PAYLOAD.unpack(payload)
    if magic != MAGIC or inverse != MAGIC ^ 0xFFFF or crc != zlib.crc32(payload):
        return None
    return Stamp(ts_us=ts_us, counter=counter)


def _cell_edges(cell: float, count: int) -> list[int]:
    return [round(i * cell) for i in range(count + 1)]


def _draw(luma: npt.NDArray[np.uint8], bits: npt.NDArray[np.uint8]) -> None:
    height, width = luma.shape[:2]
    cell, _ = stamp_geometry(width, height)
    xs, ys = _cell_edges(cell, GRID_COLUMNS), _cell_edges(cell, GRID_ROWS)
    for index, bit in enumerate(bits):
        row, col = divmod(index, GRID_COLUMNS)
        luma[ys[row] : ys[row + 1], xs[col] : xs[col + 1]] = LUMA_HIGH if bit else LUMA_LOW


def _sample(luma: npt.NDArray[np.uint8]) -> npt.NDArray[np.float64]:
    """Mean luma of the central half of every cell, in bit order."""
    height, width = luma.shape[:2]
    cell, _ = stamp_geometry(width, height)
    margin = cell / 4
    means = np.empty(_BITS, dtype=np.float64)
    for index in range(_BITS):
        row, col = divmod(index, GRID_COLUMNS)
        y0, x0 = row * cell, col * cell
        top, left = round(y0 + margin), round(x0 + margin)
        bottom = max(top + 1, round(y0 + cell - margin))
        right = max(left + 1, round(x0 + cell - margin))
        means[index] = luma[top:bottom, left:right].mean()
    return means


def _plane_array(frame: av.VideoFrame) -> npt.NDArray[np.uint8]:
    """A writable view of the frame's luma plane (no copy)."""
    plane = frame.planes[0]
    rows = np.frombuffer(plane, dtype=np.uint8).reshape(-1, plane.line_size)
    return rows[: frame.height, : frame.width]


def _array_luma(array: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    if array.dtype != np.uint8 or array.ndim not in (2, 3):
        raise ValueError("expected a uint8 array of shape (H, W), (H*3/2, W) or (H, W, C)")
    return array


def stamp_frame(frame: FrameOrArray, ts_us: int, counter: int) -> FrameOrArray:
    """Draw a stamp into ``frame`` in place and return it.

    ``frame`` is an :class:`av.VideoFrame` in a planar YUV or gray format (its
    luma plane is written), another :class:`av.VideoFrame` (a converted
    ``yuv420p`` copy is stamped and returned), or a ``uint8`` numpy array: a
    luma or gray ``(H, W)`` array, an ``I420`` ``(H*3/2, W)`` array as from
    ``VideoFrame.to_ndarray()``, or a packed ``(H, W, C)`` RGB/BGR array (all
    channels are written, giving gray cells).

    :raises ValueError: for a picture too small or values out of range.
    """
    bits = _encode_bits(ts_us, counter)
    if isinstance(frame, av.VideoFrame):
        if frame.format.name not in _YUV_PLANAR:
            converted = frame.reformat(format="yuv420p")
            converted.pts = frame.pts
            if frame.time_base is not None:
                converted.time_base = frame.time_base
            frame = converted
        _draw(_plane_array(frame), bits)
        return frame
    _draw(_array_luma(frame), bits)
    return frame


def read_stamp(frame: av.VideoFrame | npt.NDArray[np.uint8]) -> Stamp | None:
    """Read the stamp drawn by :func:`stamp_frame`, or ``None`` if there is none.

    Accepts what :func:`stamp_frame` accepts (for a packed ``(H, W, C)`` array
    the channels are averaged).  Returns ``None`` for a picture without a
    readable stamp, including one too small to hold it.
    """
    if isinstance(frame, av.VideoFrame):
        if frame.format.name in _YUV_PLANAR:
            luma = _plane_array(frame)
        else:
            luma = frame.to_ndarray(format="gray")
    else:
        luma = _array_luma(frame)
        if luma.ndim == 3:
            luma = luma.mean(axis=2)
    try:
        means = _sample(luma)
    except ValueError:
        return None
    reference = _encode_bits(0, 0)[:16].astype(bool)
    high, low = means[:16][reference].mean(), means[:16][~reference].mean()
    if high - low < MIN_SEPARATION:
        return None
    bits = (means > (high + low) / 2).astype(np.uint8)
    return _decode_bits(bits)
