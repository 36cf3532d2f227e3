"""Media engine vs stock aiortc, side by side in one run, through the impairment relay.

Run (as root, inside a loopback-only namespace, like the tests)::

    unshare -n sh -c 'ip link set lo up && exec .venv/bin/python bench/media.py'
    .venv/bin/python bench/media.py --scenarios clean,loss --seconds 10 --json

Two aiortc peers in this process, A sending synthetic 720p30 video (capture stamp in every
picture, :mod:`facecall.media.stamp`) and marker-tone audio to B, every packet through an
:class:`~facecall.media.impairment.ImpairmentRelay` on 127.0.0.1. Each scenario runs twice:
``stock`` (aiortc 1.16 as shipped) and ``engine`` (:class:`facecall.media.engine.MediaEngine`
on both peers, plus the SDK's real-time encoder tuning, 2-thread VP8 at 720p). Figures:

* video glass-to-glass latency p50/p95 (receive time minus the stamped capture time), frames
  per second received, the longest gap between two pictures and the time spent in gaps over
  300 ms ("freezes");
* audio latency p50/p95 (:class:`~facecall.media.sources.AudioLatencyProbe`: tone onset sent
  to onset heard) and the share of markers heard;
* bandwidth drop (2 Mbit/s, then 500 kbit/s, then 2 Mbit/s again): the same per phase, plus
  (engine) when the sender stepped down after the drop and when it was back at 720p30 after
  the limit lifted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import resource
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import av
from aiortc.codecs.h264 import H264Encoder

from facecall.client.encoders import REALTIME, encoder_tuning
from facecall.media.engine import MediaEngine
from facecall.media.engine.adaptation import Reason
from facecall.media.engine.codecs import video_codec_preferences
from facecall.media.engine.loopback import connect, new_peer_connection
from facecall.media.impairment import ImpairmentProfile, ImpairmentRelay
from facecall.media.sinks import FrameCallbackSink, percentile
from facecall.media.sources import (
    AudioLatencyProbe,
    SyntheticAudioTrack,
    SyntheticVideoTrack,
    now_us,
)

FREEZE_MS = 300.0


@dataclass
class Phase:
    name: str
    seconds: float
    profile: ImpairmentProfile


@dataclass
class Recorder:
    video: list[tuple[int, float | None]] = field(default_factory=list)
    """(received_us, latency_ms or None) per decoded picture."""
    audio: list[tuple[int, float]] = field(default_factory=list)
    """(heard_us, latency_ms) per marker."""
    onsets: int = 0


def video_figures(samples: list[tuple[int, float | None]], start_us: int, end_us: int) -> dict[str, Any]:
    inside = [(t, lat) for t, lat in samples if start_us <= t < end_us]
    times = [start_us] + [t for t, _ in inside] + [end_us]
    gaps = [(b - a) / 1000 for a, b in itertools.pairwise(times)]
    lat = [lat for _, lat in inside if lat is not None]
    span = (end_us - start_us) / 1e6
    return {
        "fps": round(len(inside) / span, 1) if span > 0 else math.nan,
        "p50_ms": round(percentile(lat, 50), 1) if lat else None,
        "p95_ms": round(percentile(lat, 95), 1) if lat else None,
        "max_gap_ms": round(max(gaps), 0) if gaps else None,
        "max_gap_at_s": round((times[gaps.index(max(gaps))] - start_us) / 1e6, 2) if gaps else None,
        "frozen_ms": round(sum(g for g in gaps if g > FREEZE_MS), 0),
        "freezes": sum(1 for g in gaps if g > FREEZE_MS),
    }


def audio_figures(samples: list[tuple[int, float]], start_us: int, end_us: int,
                  period_s: float) -> dict[str, Any]:
    lat = [lat for t, lat in samples if start_us <= t < end_us]
    expected = max(1, int((end_us - start_us) / 1e6 / period_s))
    return {"p50_ms": round(percentile(lat, 50), 1) if lat else None,
            "p95_ms": round(percentile(lat, 95), 1) if lat else None,
            "heard": round(min(1.0, len(lat) / expected), 2)}


@contextlib.contextmanager
def nothing() -> Iterator[None]:
    yield


async def run_call(engine_on: bool, phases: list[Phase], width: int, height: int, fps: int,
                   seed: int, warmup: float) -> dict[str, Any]:
    relay = ImpairmentRelay(to=("127.0.0.1", 9), profile=phases[0].profile, seed=seed, keep_records=0)
    await relay.start()
    a, b = new_peer_connection(), new_peer_connection()
    engines = {id(a): MediaEngine(), id(b): MediaEngine()} if engine_on else {}
    rec = Recorder()
    probe = AudioLatencyProbe()

    def on_frame(frame: Any, stamp: Any, received_us: int) -> None:
        if isinstance(frame, av.VideoFrame):
            rec.video.append((received_us, (received_us - stamp.ts_us) / 1000 if stamp else None))
        else:
            rec.audio.extend((m.heard_us, m.latency_us / 1000) for m in probe.feed(frame, received_us))

    sink = FrameCallbackSink(on_frame)
    b.on("track", sink.addTrack)

    @contextlib.contextmanager
    def around(pc: Any) -> Iterator[None]:
        engine = engines.get(id(pc))
        with (engine.activate() if engine else nothing()), encoder_tuning(REALTIME if engine_on else None):
            yield

    video, audio = SyntheticVideoTrack(width, height, fps), SyntheticAudioTrack()
    changes: list[tuple[int, Any]] = []
    if engine_on:
        engines[id(a)].on_quality_change(lambda c: changes.append((now_us(), c)))
    with around(a):
        video_transceiver = a.addTransceiver(video, direction="sendonly")
        a.addTransceiver(audio, direction="sendonly")
        if engine_on:  # the engine's codec first, as the SDK offers it
            video_transceiver.setCodecPreferences(
                video_codec_preferences(engines[id(a)].config.video_codec))
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    result: dict[str, Any] = {"mode": "engine" if engine_on else "stock", "phases": []}
    try:
        t0 = now_us()
        await connect(a, b, relay, around)
        for _ in range(300):
            if a.connectionState == "connected" and b.connectionState == "connected":
                break
            await asyncio.sleep(0.05)
        else:
            result["error"] = f"not connected after 15 s ({a.connectionState}/{b.connectionState})"
            return result
        result["connect_ms"] = round((now_us() - t0) / 1000)
        await sink.start()
        await asyncio.sleep(warmup)
        encoder = video_transceiver.sender._RTCRtpSender__encoder  # the negotiated codec's encoder
        result["codec"] = "H264" if isinstance(encoder, H264Encoder) else "VP8" if encoder else None
        for phase in phases:
            relay.set_profile(phase.profile)
            start = now_us()
            await asyncio.sleep(phase.seconds)
            end = now_us()
            figures = {"phase": phase.name, "video": video_figures(rec.video, start, end),
                       "audio": audio_figures(rec.audio, start, end, 0.5)}
            if engine_on:
                inside = [(t, c) for t, c in changes if start <= t < end]
                down = [t for t, c in inside if c.after.reason == Reason.CONGESTION]
                top = [t for t, c in inside if c.after.rung.height >= min(height, 720)
                       and c.after.rung.fps >= 30 and c.rung_changed]
                figures["first_step_down_s"] = round((down[0] - start) / 1e6, 2) if down else None
                figures["back_to_full_s"] = round((top[-1] - start) / 1e6, 2) if top else None
                figures["rungs"] = sorted({c.after.rung.name for _, c in inside})
                state = engines[id(a)].quality
                figures["end_rung"] = state.rung.name if state else None
            result["phases"].append(figures)
        if engine_on:
            result["engine_receive"] = engines[id(b)].stats()["receive"]
            result["engine_send"] = engines[id(a)].stats()["send"]
    finally:
        video.stop()
        audio.stop()
        with contextlib.suppress(Exception):
            await sink.stop()
        await a.close()
        await b.close()
        relay.close()
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    result["cpu_s"] = round(cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime, 1)
    return result


def scenarios(seconds: float) -> dict[str, list[Phase]]:
    return {
        "clean": [Phase("clean", seconds, ImpairmentProfile())],
        "loss": [Phase("3% loss", seconds, ImpairmentProfile(loss=0.03))],
        "drop": [Phase("2 Mbit/s", max(5.0, seconds / 2), ImpairmentProfile(rate_kbps=2000)),
                 Phase("500 kbit/s", seconds, ImpairmentProfile(rate_kbps=500)),
                 Phase("2 Mbit/s again", max(12.0, seconds), ImpairmentProfile(rate_kbps=2000))],
        "rtt": [Phase("150 ms RTT +-30 ms", seconds, ImpairmentProfile(delay_ms=75, jitter_ms=30))],
    }


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| scenario | phase | mode | codec | video p50/p95 ms | fps | max gap ms | frozen ms (>300) "
             "| audio p50/p95 ms | heard | adaptation |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if r.get("error"):
            lines.append(f"| {r['scenario']} | - | {r['mode']} | - | {r['error']} | | | | | | |")
        for p in r["phases"]:
            v, a = p["video"], p["audio"]
            adapt = ""
            if r["mode"] == "engine":
                bits = []
                if p.get("first_step_down_s") is not None:
                    bits.append(f"down after {p['first_step_down_s']} s")
                if p.get("back_to_full_s") is not None:
                    bits.append(f"720p30 after {p['back_to_full_s']} s")
                bits.append(f"ends {p.get('end_rung')}")
                adapt = ", ".join(bits)
            lines.append(f"| {r['scenario']} | {p['phase']} | {r['mode']} | {r.get('codec')} "
                         f"| {v['p50_ms']}/{v['p95_ms']} "
                         f"| {v['fps']} | {v['max_gap_ms']} | {v['frozen_ms']} | {a['p50_ms']}/{a['p95_ms']} "
                         f"| {a['heard']} | {adapt} |")
    return "\n".join(lines)


async def drop_samples(count: int, args: argparse.Namespace) -> list[float]:
    """The engine's longest gap right after a drop to 500 kbit/s, for seeds 1..count (the drop
    scenario's first phase, or ``--drop-at`` seconds of it, then 4 s at 500 kbit/s): the figure
    that differs most between runs."""
    gaps = []
    for seed in range(1, count + 1):
        before, during, _ = scenarios(args.seconds)["drop"]
        if args.drop_at is not None:
            before = Phase(before.name, args.drop_at, before.profile)
        phases = [before, Phase(during.name, 4.0, during.profile)]
        result = await run_call(True, phases, args.width, args.height, args.fps, seed, 2.0)
        video = result["phases"][1]["video"]
        gaps.append(video["max_gap_ms"])
        print(f"seed {seed}: longest gap {video['max_gap_ms']} ms at {video['max_gap_at_s']} s",
              file=sys.stderr, flush=True)
    return gaps


async def main(args: argparse.Namespace) -> list[dict[str, Any]]:
    chosen = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    all_scenarios = scenarios(args.seconds)
    results = []
    for name in chosen:
        for engine_on in (False, True):
            result = await run_call(engine_on, all_scenarios[name], args.width, args.height, args.fps,
                                    args.seed, args.warmup)
            result["scenario"] = name
            results.append(result)
            print(json.dumps(result) if args.json else f"{name}/{result['mode']}: {result['phases']}",
                  file=sys.stderr, flush=True)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenarios", default="clean,loss,drop,rtt")
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--drop-samples", type=int, default=0, metavar="N",
                        help="instead of the table: the engine's longest gap after a drop, N seeds")
    parser.add_argument("--drop-at", type=float, default=None, metavar="S",
                        help="with --drop-samples: seconds at 2 Mbit/s (after 2 s of warm-up) before "
                             "the drop (default: the drop scenario's first phase, 6 s)")
    args = parser.parse_args()
    import uvloop

    if args.drop_samples:
        gaps = sorted(uvloop.run(drop_samples(args.drop_samples, args)))
        over = sum(1 for g in gaps if g > 500)
        print(f"longest gap after the drop (ms): {gaps}; median {gaps[len(gaps) // 2]}; "
              f"over 500 ms: {over} of {len(gaps)}")
        sys.exit(0)

    out = uvloop.run(main(args))
    print(json.dumps([{k: v for k, v in r.items()} for r in out]) if args.json else table(out))
