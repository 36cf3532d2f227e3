"""Synthetic tracks, file/camera sources, callback sink, stamp stats, recording."""

from __future__ import annotations

import asyncio
import fractions
import os
from pathlib import Path

import av
import numpy as np
import pytest
from aiortc.codecs.opus import OpusDecoder, OpusEncoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamError

from facecall.media.sinks import (
    CallRecorder,
    FrameCallbackSink,
    MediaBlackhole,
    MediaRecorder,
    StampStats,
    percentile,
)
from facecall.media.sources import (
    AudioLatencyProbe,
    CameraNotFoundError,
    MarkerTone,
    MediaSourceError,
    MovingPattern,
    SyntheticAudioTrack,
    SyntheticVideoTrack,
    audio_to_mono,
    now_us,
    open_camera_source,
    open_file_source,
)
from facecall.media.stamp import Stamp, read_stamp

T0 = 1_763_942_400_000_000 + 123_457  # an arbitrary capture start, µs


async def test_video_track_stamps_counts_and_paces() -> None:
    track = SyntheticVideoTrack(320, 240, fps=60)
    frames = [await track.recv() for _ in range(6)]
    track.stop()
    stamps = [read_stamp(f) for f in frames]
    assert [s.counter for s in stamps if s] == [0, 1, 2, 3, 4, 5]
    times = [s.ts_us for s in stamps if s]
    assert times == sorted(times)
    assert [f.pts for f in frames] == [0, 1500, 3000, 4500, 6000, 7500]
    assert all(f.time_base == fractions.Fraction(1, 90000) for f in frames)
    assert not np.array_equal(frames[0].to_ndarray()[120:], frames[1].to_ndarray()[120:])
    with pytest.raises(MediaStreamError):
        await track.recv()


async def test_stop_wakes_a_waiting_recv() -> None:
    for track in (SyntheticVideoTrack(160, 120, fps=0.1), SyntheticAudioTrack(period_s=0.5)):
        await track.recv()  # the first frame comes at once; the next waits
        if isinstance(track, SyntheticAudioTrack):
            track.samples_per_frame = 48000 * 60  # make the next one a minute away
        pending = asyncio.create_task(track.recv())
        await asyncio.sleep(0)
        track.stop()
        with pytest.raises(MediaStreamError):
            await asyncio.wait_for(pending, 30)
        assert track.readyState == "ended"


def test_bad_track_parameters() -> None:
    with pytest.raises(ValueError, match="fps"):
        SyntheticVideoTrack(320, 240, fps=0)
    with pytest.raises(ValueError, match="even"):
        MovingPattern(321, 240)
    with pytest.raises(ValueError, match="burst_s"):
        MarkerTone(period_s=0.01)
    with pytest.raises(ValueError, match="threshold"):
        AudioLatencyProbe(threshold=2)


def _opus_round_trip(tone: MarkerTone, probe: AudioLatencyProbe, delay_us: int) -> list[int]:
    """Encode 2 s of marker audio with aiortc's Opus codec, decode, and probe it."""
    encoder, decoder = OpusEncoder(), OpusDecoder()
    onsets: list[int] = []
    for i in range(100):
        samples, begun = tone.render(T0, i * 960, 960)
        onsets += begun
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts = 48000, i * 960
        frame.time_base = fractions.Fraction(1, 48000)
        payloads, timestamp = encoder.encode(frame)
        for payload in payloads:
            for decoded in decoder.decode(JitterFrame(data=payload, timestamp=timestamp)):
                probe.feed(decoded, T0 + i * 20_000 + delay_us)
    return onsets


def test_audio_markers_survive_opus_and_give_their_capture_times() -> None:
    probe = AudioLatencyProbe(period_s=0.2)
    onsets = _opus_round_trip(MarkerTone(period_s=0.2), probe, delay_us=50_000)
    assert len(onsets) == 10
    assert [m.capture_us for m in probe.markers] == onsets
    # Known 50 ms "network" delay plus Opus' algorithmic delay (6.5 ms), to the sample.
    assert all(50_000 <= m.latency_us <= 60_000 for m in probe.markers)


def test_silence_gives_no_markers() -> None:
    probe = AudioLatencyProbe()
    frame = av.AudioFrame.from_ndarray(np.zeros((1, 1920), np.int16), format="s16", layout="stereo")
    frame.sample_rate = 48000
    assert probe.feed(frame, T0) == []
    planar = av.AudioFrame.from_ndarray(np.full((2, 480), 0.25, np.float32), format="fltp", layout="stereo")
    planar.sample_rate = 48000
    assert audio_to_mono(planar) == pytest.approx(np.full(480, 0.25))


async def test_audio_track_in_real_time_lines_up_with_the_probe() -> None:
    track = SyntheticAudioTrack(period_s=0.5)
    probe = AudioLatencyProbe(period_s=0.5)
    for _ in range(60):  # 1.2 s
        frame = await track.recv()
        assert frame.samples == 960 and frame.format.name == "s16"
        probe.feed(frame, now_us())
    track.stop()
    assert len(track.onsets) >= 2
    assert [m.capture_us for m in probe.markers] == track.onsets


async def test_callback_sink_and_stamp_stats() -> None:
    stats = StampStats(freeze_ms=500)
    seen: list[Stamp | None] = []
    enough = asyncio.Event()

    async def callback(frame: av.VideoFrame, stamp: Stamp | None, received_us: int) -> None:
        seen.append(stamp)
        stats.on_frame(frame, stamp, received_us)
        if len(seen) >= 10:
            enough.set()

    track = SyntheticVideoTrack(160, 120, fps=50)
    sink = FrameCallbackSink(callback)
    sink.addTrack(track)
    await sink.start()
    await asyncio.wait_for(enough.wait(), 30)
    track.stop()
    await asyncio.wait_for(sink.wait(), 30)
    await sink.stop()
    summary = stats.summary()
    assert summary.frames == len(seen) >= 10
    assert summary.stamped == summary.frames and summary.unreadable == 0
    assert summary.missing == 0 and summary.repeated == 0
    assert [s.counter for s in seen if s] == list(range(len(seen)))
    assert summary.latency_p50_ms >= 0 and summary.fps > 0


async def test_callback_errors_reach_the_caller() -> None:
    def callback(frame: object, stamp: object, received_us: int) -> None:
        raise RuntimeError("boom")

    track = SyntheticVideoTrack(160, 120)
    sink = FrameCallbackSink(callback)
    sink.addTrack(track)
    await sink.start()
    with pytest.raises(RuntimeError, match="boom"):
        await asyncio.wait_for(sink.wait(), 30)
    with pytest.raises(RuntimeError, match="boom"):
        await sink.stop()
    track.stop()


def test_stamp_stats_counts_losses_repeats_and_freezes() -> None:
    stats = StampStats(freeze_ms=100)
    base = T0
    stats.add(Stamp(base, 0), base + 40_000)
    stats.add(Stamp(base + 33_000, 1), base + 73_000)
    stats.add(Stamp(base + 33_000, 1), base + 106_000)  # re-shown picture
    stats.add(None, base + 139_000)  # unreadable
    stats.add(Stamp(base + 132_000, 4), base + 400_000)  # 2 lost, then a 261 ms freeze
    s = stats.summary()
    assert (s.frames, s.stamped, s.unreadable, s.repeated, s.missing) == (5, 3, 1, 1, 2)
    assert s.freezes == 1 and s.max_gap_ms == pytest.approx(261)
    assert s.latency_p50_ms == pytest.approx(40)
    assert s.latency_max_ms == pytest.approx(268)
    assert s.fps == pytest.approx(4 / 0.36)
    assert np.isnan(StampStats().summary().latency_p95_ms)
    assert percentile([1, 2, 3, 4], 50) == pytest.approx(2.5)
    with pytest.raises(ValueError):
        StampStats(freeze_ms=0)


async def test_recorder_keeps_stamps_readable(tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    track = SyntheticVideoTrack(320, 240, fps=30)
    recorder = MediaRecorder(str(out))
    recorder.addTrack(track)
    await recorder.start()
    await asyncio.sleep(0.5)
    await recorder.stop()
    with av.open(str(out)) as container:
        stamps = [read_stamp(f) for f in container.decode(video=0)]
    assert stamps and all(stamps)
    counters = [s.counter for s in stamps if s]
    assert counters == list(range(counters[0], counters[0] + len(counters)))


class LateVideo(SyntheticVideoTrack):
    """Pictures only after ``delay`` seconds, like a receiver waiting for a key frame."""

    def __init__(self, delay: float) -> None:
        super().__init__(320, 240, fps=15)
        self.delay = delay

    async def recv(self) -> av.VideoFrame:
        if self.delay:
            await asyncio.sleep(self.delay)
            self.delay = 0.0
        return await super().recv()


@pytest.mark.parametrize("recorder_class", [MediaRecorder, CallRecorder])
async def test_recording_with_audio_before_the_first_picture(tmp_path: Path, recorder_class: type) -> None:
    """aiortc's recorder loses the video when audio is written first; CallRecorder keeps both."""
    out = tmp_path / "call.mp4"
    recorder = recorder_class(str(out))
    recorder.addTrack(SyntheticAudioTrack())
    recorder.addTrack(LateVideo(0.6))
    await recorder.start()
    await asyncio.sleep(1.2)
    await recorder.stop()
    with av.open(str(out)) as container:
        kinds = sorted(s.type for s in container.streams)
        pictures = sum(1 for _ in container.decode(video=0)) if container.streams.video else 0
    if recorder_class is MediaRecorder:
        assert kinds == ["audio"]            # the failure CallRecorder exists for
    else:
        assert kinds == ["audio", "video"] and pictures >= 3


async def test_call_recorder_gives_up_waiting_for_video(tmp_path: Path) -> None:
    out = tmp_path / "audio.mp4"
    recorder = CallRecorder(str(out), video_wait=0.3)
    recorder.addTrack(SyntheticAudioTrack())
    recorder.addTrack(LateVideo(30))                 # never comes within the test
    await recorder.start()
    await asyncio.sleep(1.0)
    await recorder.stop()
    with av.open(str(out)) as container:
        audio = sum(1 for _ in container.decode(audio=0))
    assert audio > 10                                # audio was recorded after the wait


async def test_blackhole_consumes_a_track() -> None:
    track = SyntheticVideoTrack(160, 120, fps=100)
    hole = MediaBlackhole()
    hole.addTrack(track)
    await hole.start()
    await asyncio.sleep(0.05)
    await hole.stop()
    track.stop()
    assert track.frames_sent >= 1  # the first frame is produced at once, so it was pulled


def _write_clip(path: Path, frames: int = 5) -> None:
    pattern = MovingPattern(160, 120)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libvpx", rate=30)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(pattern.render(i), format="yuv420p")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


async def test_file_source_plays_and_bad_files_fail_clearly(tmp_path: Path) -> None:
    clip = tmp_path / "clip.webm"
    _write_clip(clip)
    player = open_file_source(clip)
    assert player.audio is None and player.video is not None
    frame = await asyncio.wait_for(player.video.recv(), 30)
    assert (frame.width, frame.height) == (160, 120)
    player.video.stop()
    with pytest.raises(FileNotFoundError, match="not found"):
        open_file_source(tmp_path / "missing.webm")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a media file" * 10)
    with pytest.raises(MediaSourceError, match="cannot read"):
        open_file_source(garbage)


def test_missing_camera_is_a_clear_error() -> None:
    device = "/dev/video-facecall-missing"
    assert not os.path.exists(device)
    with pytest.raises(CameraNotFoundError, match="no camera"):
        open_camera_source(device)
