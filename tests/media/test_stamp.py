"""Capture stamps survive real VP8 / H.264 coding and never read back wrong."""

from __future__ import annotations

import fractions
import random

import av
import numpy as np
import pytest
from aiortc.codecs import h264, vpx
from aiortc.jitterbuffer import JitterFrame

from facecall.media.sources import MovingPattern
from facecall.media.stamp import (
    GRID_COLUMNS,
    LUMA_HIGH,
    LUMA_LOW,
    Stamp,
    read_stamp,
    stamp_frame,
    stamp_geometry,
)

BASE_US = 1_763_942_400_123_456  # a 2025 capture time, µs


def _encoder(codec: str, width: int, height: int, kbps: int) -> av.VideoCodecContext:
    enc = av.CodecContext.create(codec, "w")
    enc.width, enc.height, enc.pix_fmt = width, height, "yuv420p"
    enc.bit_rate = kbps * 1000
    enc.framerate = 30
    enc.time_base = fractions.Fraction(1, 30)
    if codec == "libx264":
        enc.options = {"preset": "veryfast", "tune": "zerolatency"}
    else:
        enc.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    return enc


@pytest.mark.parametrize(("codec", "decoder"), [("libvpx", "vp8"), ("libx264", "h264")])
@pytest.mark.parametrize(("width", "height"), [(320, 240), (1280, 720)])
def test_stamp_survives_lossy_coding_at_300_kbps(
    codec: str, decoder: str, width: int, height: int
) -> None:
    pattern = MovingPattern(width, height)
    enc = _encoder(codec, width, height, 300)
    dec = av.CodecContext.create(decoder, "r")
    sent: dict[int, Stamp] = {}
    read: dict[int, Stamp | None] = {}
    for i in range(30):
        frame = av.VideoFrame.from_ndarray(pattern.render(i), format="yuv420p")
        frame.pts = i
        ts = BASE_US + i * 33_333 + random.Random(i).randrange(1 << 20)
        counter = (0xFFFF_FFF0 + i) % (1 << 32)  # crosses the 32-bit wrap
        stamp_frame(frame, ts, counter)
        sent[i] = Stamp(ts, counter)
        packets = list(enc.encode(frame)) + (list(enc.encode(None)) if i == 29 else [])
        for packet in packets:
            for picture in dec.decode(packet):
                read[picture.pts] = read_stamp(picture)
    assert len(read) == 30
    assert read == sent


@pytest.mark.parametrize("kind", ["gray", "i420", "rgb"])
def test_arrays_round_trip(kind: str) -> None:
    shape = {"gray": (240, 320), "i420": (360, 320), "rgb": (240, 320, 3)}[kind]
    array = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    assert read_stamp(array) is None
    assert stamp_frame(array, BASE_US, 7) is array
    assert read_stamp(array) == Stamp(BASE_US, 7)
    if kind == "rgb":
        frame = av.VideoFrame.from_ndarray(array, format="rgb24")
        assert read_stamp(frame) == Stamp(BASE_US, 7)


def test_frames_round_trip_in_place_or_converted() -> None:
    frame = av.VideoFrame(640, 360, "yuv420p")
    assert stamp_frame(frame, BASE_US, 1) is frame
    assert read_stamp(frame) == Stamp(BASE_US, 1)

    rgb = av.VideoFrame(640, 360, "rgb24")
    rgb.pts = 42
    stamped = stamp_frame(rgb, BASE_US, 2)
    assert stamped.format.name == "yuv420p" and stamped.pts == 42
    assert read_stamp(stamped) == Stamp(BASE_US, 2)
    assert read_stamp(stamped.reformat(format="rgb24")) == Stamp(BASE_US, 2)


def test_downscaled_picture_still_reads() -> None:
    frame = av.VideoFrame.from_ndarray(MovingPattern(1280, 720).render(3), format="yuv420p")
    stamp_frame(frame, BASE_US, 3)
    for width, height in [(640, 360), (320, 180)]:
        small = frame.reformat(width=width, height=height)
        assert read_stamp(small) == Stamp(BASE_US, 3)


def test_misreads_give_none_never_a_wrong_value() -> None:
    rng = random.Random(5)
    array = np.zeros((240, 320), dtype=np.uint8)
    stamp_frame(array, BASE_US, 99)
    cell, _ = stamp_geometry(320, 240)
    size = round(cell)
    for _ in range(200):
        damaged = array.copy()
        for index in rng.sample(range(40 * 4), rng.randint(1, 3)):
            row, col = divmod(index, GRID_COLUMNS)
            block = damaged[row * size : (row + 1) * size, col * size : (col + 1) * size]
            block[:] = LUMA_LOW if block[size // 2, size // 2] == LUMA_HIGH else LUMA_HIGH
        assert read_stamp(damaged) is None


def test_unstamped_and_flat_pictures_read_none() -> None:
    assert read_stamp(np.zeros((240, 320), dtype=np.uint8)) is None
    assert read_stamp(np.full((240, 320), 255, dtype=np.uint8)) is None
    assert read_stamp(av.VideoFrame.from_ndarray(MovingPattern(320, 240).render(0), "yuv420p")) is None


def test_bad_input_is_refused_clearly() -> None:
    with pytest.raises(ValueError, match="too small"):
        stamp_frame(np.zeros((8, 40), dtype=np.uint8), BASE_US, 0)
    assert read_stamp(np.zeros((8, 40), dtype=np.uint8)) is None
    with pytest.raises(ValueError, match="ts_us"):
        stamp_frame(np.zeros((240, 320), dtype=np.uint8), -1, 0)
    with pytest.raises(ValueError, match="counter"):
        stamp_frame(np.zeros((240, 320), dtype=np.uint8), BASE_US, 1 << 32)
    with pytest.raises(ValueError, match="uint8"):
        stamp_frame(np.zeros((240, 320), dtype=np.float32), BASE_US, 0)  # type: ignore[type-var]


@pytest.mark.parametrize("codec", ["vp8", "h264"])
def test_stamp_survives_aiortcs_own_codecs_at_their_lowest_bitrate(codec: str) -> None:
    """The encoders, packetizers and decoders aiortc uses in a call, at their floor."""
    if codec == "vp8":
        encoder, decoder, depayload = vpx.Vp8Encoder(), vpx.Vp8Decoder(), vpx.vp8_depayload
    else:
        encoder, decoder, depayload = h264.H264Encoder(), h264.H264Decoder(), h264.h264_depayload
    encoder.target_bitrate = 1  # aiortc clamps to its minimum (250 / 500 kbit/s)
    pattern = MovingPattern(640, 360)
    sent, read = [], []
    for i in range(20):
        frame = av.VideoFrame.from_ndarray(pattern.render(i), format="yuv420p")
        frame.pts, frame.time_base = i * 3000, fractions.Fraction(1, 90000)
        stamp_frame(frame, BASE_US + i * 33_333, i)
        sent.append(Stamp(BASE_US + i * 33_333, i))
        payloads, timestamp = encoder.encode(frame)
        data = b"".join(depayload(payload) for payload in payloads)
        read += [read_stamp(p) for p in decoder.decode(JitterFrame(data=data, timestamp=timestamp))]
    assert read == sent
