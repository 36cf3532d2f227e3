"""Glass-to-glass latency of facecall SDK calls against stock aiortc peers, in the same run.

Run (loopback only, as root):

    unshare -n sh -c 'ip link set lo up && exec .venv/bin/python bench/latency.py'
    ... bench/latency.py --sizes 360p,720p,1080p --codecs VP8,H264 --modes stock,direct,turn --seconds 8

For each size and codec, one after the other:

* ``stock`` — the anchor: two plain aiortc ``RTCPeerConnection``s in this process, host
  candidates on 127.0.0.1, aiortc's own encoders (x264 ``medium``, VP8 threads by aiortc's rule),
  no facecall code on the media path;
* ``direct`` — a facecall call between two SDK devices through an in-process server (signaling,
  TURN REST credentials), P2P host path, the SDK's encoder tuning (x264 ``veryfast``, 2-thread
  VP8 from 720p);
* ``turn`` — the same call forced through our TURN server (``relay_only``).

Video goes one way (caller → callee; the callee answers audio-only), at 30 fps from
:class:`~facecall.media.sources.SyntheticVideoTrack`; audio goes both ways. Figures: received
fps, glass-to-glass p50/p95 (capture stamp → decoded picture, first half second left out),
audio latency p50 (marker bursts), luma PSNR of every 10th received picture against the
picture that was sent (below the stamp band), and this process's CPU (all threads: both peers'
encode and decode, the server and TURN) in % of one core.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import secrets
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import av
import numpy as np
from aiortc import RTCPeerConnection, RTCRtpSender

from facecall.cli_client import LOOPBACK, local_server
from facecall.client import Device
from facecall.client.ice import host_addresses
from facecall.client.measure import CallProbe
from facecall.logs import configure_logging
from facecall.media.sources import MovingPattern, SyntheticAudioTrack, SyntheticVideoTrack
from facecall.media.stamp import Stamp, stamp_geometry

SIZES = {"360p": (640, 360), "720p": (1280, 720), "1080p": (1920, 1080)}
FPS = 30


class PsnrProbe(CallProbe):
    """A :class:`CallProbe` that also compares every ``every``-th picture with what was sent."""

    def __init__(self, width: int, height: int, every: int = 10) -> None:
        super().__init__(warmup_frames=FPS // 2)
        self.pattern = MovingPattern(width, height)
        self.top = stamp_geometry(width, height)[1] + 2
        self.every = every
        self.psnr: list[float] = []

    def _on_frame(self, frame: av.VideoFrame | av.AudioFrame, stamp: Stamp | None, received_us: int) -> None:
        super()._on_frame(frame, stamp, received_us)
        if isinstance(frame, av.VideoFrame) and stamp is not None and stamp.counter % self.every == 0:
            h, w = self.pattern.height, self.pattern.width
            if (frame.width, frame.height) != (w, h):
                return
            got = frame.to_ndarray(format="yuv420p")[self.top:h].astype(np.float64)
            sent = self.pattern.render(stamp.counter)[self.top:h].astype(np.float64)
            mse = float(np.mean((got - sent) ** 2))
            self.psnr.append(99.0 if mse == 0 else 10 * math.log10(255**2 / mse))


@dataclass
class Result:
    size: str
    codec: str
    mode: str
    fps: float
    video_p50_ms: float
    video_p95_ms: float
    audio_p50_ms: float
    psnr_db: float
    cpu_pct: float
    frames: int
    freezes: int
    path: str
    connect_ms: float


def _result(size: str, codec: str, mode: str, probe: PsnrProbe, cpu: float, path: str,
            connect_ms: float) -> Result:
    f = probe.figures()
    psnr = sum(probe.psnr) / len(probe.psnr) if probe.psnr else math.nan
    return Result(size, codec, mode, f.fps, f.video_p50_ms, f.video_p95_ms, f.audio_p50_ms, psnr,
                  cpu, f.frames, f.freezes, path, connect_ms)


class CpuMeter:
    def __enter__(self) -> CpuMeter:
        self.cpu, self.wall = time.process_time(), time.monotonic()
        return self

    def __exit__(self, *_: object) -> None:
        self.pct = 100 * (time.process_time() - self.cpu) / max(time.monotonic() - self.wall, 1e-9)


async def stock(size: str, codec: str, seconds: float) -> Result:
    """The anchor: stock aiortc peers connected directly."""
    width, height = SIZES[size]
    sender, receiver = RTCPeerConnection(), RTCPeerConnection()
    video, audio = SyntheticVideoTrack(width, height, FPS), SyntheticAudioTrack()
    probe = PsnrProbe(width, height)
    sender.addTransceiver(video, direction="sendonly").setCodecPreferences(
        [c for c in RTCRtpSender.getCapabilities("video").codecs
         if c.mimeType.lower() in (f"video/{codec.lower()}", "video/rtx")])
    sender.addTransceiver(audio, direction="sendonly")
    connected = asyncio.Event()

    @receiver.on("track")
    def on_track(track: Any) -> None:
        probe.sink.addTrack(track)

    @receiver.on("connectionstatechange")
    def on_state() -> None:
        if receiver.connectionState == "connected":
            connected.set()

    started = time.monotonic()
    with host_addresses([LOOPBACK]):  # only where to gather: aioice skips loopback otherwise
        await sender.setLocalDescription(await sender.createOffer())
        await receiver.setRemoteDescription(sender.localDescription)
        await receiver.setLocalDescription(await receiver.createAnswer())
        await sender.setRemoteDescription(receiver.localDescription)
    await asyncio.wait_for(connected.wait(), 30)
    connect_ms = 1000 * (time.monotonic() - started)
    await probe.start()
    with CpuMeter() as cpu:
        await asyncio.sleep(seconds)
    await probe.stop()
    await sender.close()
    await receiver.close()
    video.stop()
    audio.stop()
    return _result(size, codec, "stock", probe, cpu.pct, "host", connect_ms)


async def sdk(base_url: str, size: str, codec: str, mode: str, seconds: float) -> Result:
    """A facecall call, caller → callee video, through the in-process server."""
    width, height = SIZES[size]
    password = secrets.token_urlsafe(12)
    suffix = secrets.token_hex(3)
    options: dict[str, Any] = dict(ice_host_addresses=[LOOPBACK], relay_only=mode == "turn",
                                   video_codec=codec, synthetic_video=(width, height, FPS))
    caller = Device(base_url, f"caller-{suffix}", password, sign_up=True, **options)
    callee = Device(base_url, f"callee-{suffix}", password, sign_up=True, **options)
    await caller.connect()
    await callee.connect()
    try:
        call = await caller.call(callee.username or "", video=True)
        incoming = await callee.next_call(30)
        probe = PsnrProbe(width, height)
        probe.attach(incoming.remote_video, incoming.remote_audio)
        await incoming.answer(video=False)
        await asyncio.gather(call.wait_connected(60), incoming.wait_connected(60))
        await probe.start()
        with CpuMeter() as cpu:
            await asyncio.sleep(seconds)
        await probe.stop()
        path = call.path or "?"
        connect_ms = call.timings.connect_ms
        await call.hangup()
    finally:
        await caller.close()
        await callee.close()
    return _result(size, codec, mode, probe, cpu.pct, path, connect_ms)


def fmt(value: float, digits: int = 1) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


async def main(args: argparse.Namespace) -> list[Result]:
    configure_logging("error")
    results: list[Result] = []
    print("| size | codec | mode | path | fps | video p50 ms | video p95 ms | audio p50 ms | PSNR dB | "
          "CPU % | freezes | connect ms |", file=sys.stderr)
    print("|---|---|---|---|---|---|---|---|---|---|---|---|", file=sys.stderr)
    async with local_server() as server:
        for size in args.sizes:
            for codec in args.codecs:
                for mode in args.modes:
                    if mode == "stock":
                        result = await stock(size, codec, args.seconds)
                    else:
                        result = await sdk(server.base_url, size, codec, mode, args.seconds)
                    results.append(result)
                    print(f"| {size} | {codec} | {mode} | {result.path} | {fmt(result.fps)} | "
                          f"{fmt(result.video_p50_ms)} | {fmt(result.video_p95_ms)} | "
                          f"{fmt(result.audio_p50_ms)} | {fmt(result.psnr_db)} | {fmt(result.cpu_pct, 0)} | "
                          f"{result.freezes} | {fmt(result.connect_ms, 0)} |", file=sys.stderr, flush=True)
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="360p,720p,1080p", type=lambda s: s.split(","))
    parser.add_argument("--codecs", default="VP8,H264", type=lambda s: s.split(","))
    parser.add_argument("--modes", default="stock,direct,turn", type=lambda s: s.split(","))
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per run")
    parser.add_argument("--json", action="store_true", help="print every result as JSON on stdout")
    args = parser.parse_args(argv)
    for size in args.sizes:
        if size not in SIZES:
            parser.error(f"unknown size {size!r} (one of {', '.join(SIZES)})")
    for codec in args.codecs:
        if codec not in ("VP8", "H264"):
            parser.error(f"unknown codec {codec!r} (VP8 or H264)")
    for mode in args.modes:
        if mode not in ("stock", "direct", "turn"):
            parser.error(f"unknown mode {mode!r} (stock, direct or turn)")
    return args


if __name__ == "__main__":
    import uvloop

    arguments = parse_args()
    figures = uvloop.run(main(arguments))
    if arguments.json:
        print(json.dumps([asdict(r) for r in figures], indent=2))
