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

Every run has two processes, as two devices would: the sender (caller) in this process, with the
in-process signaling server, and the receiver (callee) in a child process (``--role``); our TURN
server runs in a third process (``facecall turn``; ``--turn-in-process`` to keep it here); stock
peers exchange their SDP over the child's stdin/stdout. Video goes one way (caller → callee; the
callee answers audio-only), at 30 fps from
:class:`~facecall.media.sources.SyntheticVideoTrack`; audio goes both ways. Figures: received
fps, glass-to-glass p50/p95 (capture stamp → decoded picture, first half second left out),
audio latency p50 (marker bursts), luma PSNR of every 10th received picture against the
picture that was sent (below the stamp band), and CPU of both processes over the measured
seconds (all threads: encode, decode, signaling server, TURN) in % of one core.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import secrets
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from typing import Any

import av
import numpy as np
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription

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


class CpuMeter:
    def __enter__(self) -> CpuMeter:
        self.cpu, self.wall = time.process_time(), time.monotonic()
        return self

    def __exit__(self, *_: object) -> None:
        self.cpu_s = time.process_time() - self.cpu


def _figures(probe: PsnrProbe, cpu_s: float) -> dict[str, Any]:
    f = probe.figures()
    psnr = sum(probe.psnr) / len(probe.psnr) if probe.psnr else math.nan
    return {"fps": f.fps, "video_p50_ms": f.video_p50_ms, "video_p95_ms": f.video_p95_ms,
            "audio_p50_ms": f.audio_p50_ms, "psnr_db": psnr, "frames": f.frames, "freezes": f.freezes,
            "cpu_s": cpu_s}


async def _child(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, __file__, *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)


async def _line(process: asyncio.subprocess.Process, timeout: float = 60) -> Any:
    assert process.stdout is not None
    raw = await asyncio.wait_for(process.stdout.readline(), timeout)
    if not raw:
        raise RuntimeError("the receiver process exited early")
    return json.loads(raw)


def _send(process: asyncio.subprocess.Process, value: Any) -> None:
    assert process.stdin is not None
    process.stdin.write((json.dumps(value) + "\n").encode())


def _combine(size: str, codec: str, mode: str, figures: dict[str, Any], cpu_s: float, seconds: float,
             path: str, connect_ms: float) -> Result:
    cpu = 100 * (cpu_s + figures["cpu_s"]) / seconds
    return Result(size, codec, mode, figures["fps"], figures["video_p50_ms"], figures["video_p95_ms"],
                  figures["audio_p50_ms"], figures["psnr_db"], cpu, figures["frames"], figures["freezes"],
                  path, connect_ms)


def _prefer(transceiver: Any, codec: str) -> None:
    transceiver.setCodecPreferences(
        [c for c in RTCRtpSender.getCapabilities("video").codecs
         if c.mimeType.lower() in (f"video/{codec.lower()}", "video/rtx")])


async def stock(size: str, codec: str, seconds: float) -> Result:
    """The anchor: stock aiortc peers connected directly (sender here, receiver in a child)."""
    width, height = SIZES[size]
    child = await _child("--role", "stock-receiver", "--sizes", size, "--seconds", str(seconds))
    sender = RTCPeerConnection()
    video, audio = SyntheticVideoTrack(width, height, FPS), SyntheticAudioTrack()
    _prefer(sender.addTransceiver(video, direction="sendonly"), codec)
    sender.addTransceiver(audio, direction="sendonly")
    connected = asyncio.Event()

    @sender.on("connectionstatechange")
    def on_state() -> None:
        if sender.connectionState == "connected":
            connected.set()

    await _line(child)  # the receiver process is up
    started = time.monotonic()
    with host_addresses([LOOPBACK]):  # only where to gather: aioice skips loopback otherwise
        await sender.setLocalDescription(await sender.createOffer())
        _send(child, {"sdp": sender.localDescription.sdp, "type": "offer"})
        answer = await _line(child)
        await sender.setRemoteDescription(RTCSessionDescription(**answer))
    await asyncio.wait_for(connected.wait(), 30)
    connect_ms = 1000 * (time.monotonic() - started)
    with CpuMeter() as cpu:
        figures = await _line(child, seconds + 60)
    await sender.close()
    video.stop()
    audio.stop()
    await child.wait()
    return _combine(size, codec, "stock", figures, cpu.cpu_s, seconds, "host", connect_ms)


async def stock_receiver(size: str, seconds: float) -> None:
    """Child: answer the offer read from stdin, measure, print the figures."""
    width, height = SIZES[size]
    receiver = RTCPeerConnection()
    probe = PsnrProbe(width, height)
    connected = asyncio.Event()

    @receiver.on("track")
    def on_track(track: Any) -> None:
        probe.sink.addTrack(track)

    @receiver.on("connectionstatechange")
    def on_state() -> None:
        if receiver.connectionState == "connected":
            connected.set()

    print(json.dumps({"ready": True}), flush=True)
    offer = json.loads(await asyncio.to_thread(sys.stdin.readline))
    with host_addresses([LOOPBACK]):
        await receiver.setRemoteDescription(RTCSessionDescription(**offer))
        await receiver.setLocalDescription(await receiver.createAnswer())
    print(json.dumps({"sdp": receiver.localDescription.sdp, "type": "answer"}), flush=True)
    await asyncio.wait_for(connected.wait(), 30)
    await probe.start()
    with CpuMeter() as cpu:
        await asyncio.sleep(seconds)
    await probe.stop()
    print(json.dumps(_figures(probe, cpu.cpu_s)), flush=True)
    await receiver.close()


async def sdk(base_url: str, size: str, codec: str, mode: str, seconds: float) -> Result:
    """A facecall call, caller (here) → callee (a child process), through the in-process server."""
    width, height = SIZES[size]
    password = secrets.token_urlsafe(12)
    suffix = secrets.token_hex(3)
    callee_name = f"callee-{suffix}"
    child = await _child("--role", "sdk-callee", "--server", base_url, "--user", callee_name,
                         "--password", password, "--sizes", size, "--codecs", codec,
                         "--modes", mode, "--seconds", str(seconds))
    await _line(child)  # the callee is signed in and connected
    caller = Device(base_url, f"caller-{suffix}", password, sign_up=True, ice_host_addresses=[LOOPBACK],
                    relay_only=mode == "turn", video_codec=codec, synthetic_video=(width, height, FPS))
    await caller.connect()
    try:
        call = await caller.call(callee_name, video=True)
        await call.wait_connected(60)
        with CpuMeter() as cpu:
            figures = await _line(child, seconds + 60)
        path = call.path or "?"
        connect_ms = call.timings.connect_ms
        await call.hangup()
    finally:
        await caller.close()
    await child.wait()
    return _combine(size, codec, mode, figures, cpu.cpu_s, seconds, path, connect_ms)


async def sdk_callee(args: argparse.Namespace) -> None:
    """Child: sign in, answer the call (receiving video, sending audio), measure, print."""
    width, height = SIZES[args.sizes[0]]
    callee = Device(args.server, args.user, args.password, sign_up=True, ice_host_addresses=[LOOPBACK],
                    relay_only=args.modes[0] == "turn", video_codec=args.codecs[0])
    await callee.connect()
    print(json.dumps({"ready": callee.device_id}), flush=True)
    try:
        call = await callee.next_call(60)
        probe = PsnrProbe(width, height)
        probe.attach(call.remote_video, call.remote_audio)
        await call.answer(video=False)
        await call.wait_connected(60)
        await probe.start()
        with CpuMeter() as cpu:
            await asyncio.sleep(args.seconds)
        await probe.stop()
        print(json.dumps(_figures(probe, cpu.cpu_s)), flush=True)
        await call.wait_ended(60)
    finally:
        await callee.close()


def fmt(value: float, digits: int = 1) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


@contextlib.asynccontextmanager
async def turn_process() -> AsyncIterator[tuple[list[str], str]]:
    """Our STUN/TURN server in its own process (``facecall turn``), as in a deployment."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind((LOOPBACK, 0))
    port = probe.getsockname()[1]
    probe.close()
    secret = secrets.token_urlsafe(16)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "facecall", "turn", "--turn-listen", f"{LOOPBACK}:{port}",
        "--turn-secret", secret, "--turn-allow-peer", "127.0.0.0/8", stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL)
    try:
        for _ in range(200):  # listening once its UDP port is taken
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as check:
                try:
                    check.bind((LOOPBACK, port))
                except OSError:
                    break
            await asyncio.sleep(0.05)
        else:
            raise RuntimeError("the TURN server process did not start")
        yield [f"stun:{LOOPBACK}:{port}", f"turn:{LOOPBACK}:{port}?transport=udp"], secret
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()


async def main(args: argparse.Namespace) -> list[Result]:
    configure_logging("error")
    results: list[Result] = []
    print("| size | codec | mode | path | fps | video p50 ms | video p95 ms | audio p50 ms | PSNR dB | "
          "CPU % | freezes | connect ms |", file=sys.stderr)
    print("|---|---|---|---|---|---|---|---|---|---|---|---|", file=sys.stderr)
    async with contextlib.AsyncExitStack() as stack:
        external = await stack.enter_async_context(turn_process()) if args.turn_process else None
        server = await stack.enter_async_context(local_server(external_turn=external))
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
    parser.add_argument("--turn-in-process", dest="turn_process", action="store_false",
                        help="run TURN in this (the sender's) process instead of its own")
    parser.add_argument("--role", choices=["stock-receiver", "sdk-callee"], help=argparse.SUPPRESS)
    parser.add_argument("--server", help=argparse.SUPPRESS)
    parser.add_argument("--user", help=argparse.SUPPRESS)
    parser.add_argument("--password", help=argparse.SUPPRESS)
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

    from procstat import exit_on_sigterm

    exit_on_sigterm()
    arguments = parse_args()
    if arguments.role == "stock-receiver":
        configure_logging("error")
        uvloop.run(stock_receiver(arguments.sizes[0], arguments.seconds))
        sys.exit(0)
    if arguments.role == "sdk-callee":
        configure_logging("error")
        uvloop.run(sdk_callee(arguments))
        sys.exit(0)
    figures = uvloop.run(main(arguments))
    if arguments.json:
        print(json.dumps([asdict(r) for r in figures], indent=2))
