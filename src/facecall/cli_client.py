"""`facecall demo`, `facecall call` and `facecall answer`: the SDK from the command line.

``facecall demo`` needs nothing but this package: it starts an all-in-one server in-process
(API, signaling, STUN/TURN on loopback) unless ``--server URL`` is given, signs up two users,
registers two devices for the callee, places a call that rings on both, answers on one (the other
hears ``answered_elsewhere``), streams synthetic stamped video and audio both ways, hangs up,
and prints what it measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import secrets
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facecall.client import Call, CallState, Device, EndReason, FacecallError
from facecall.client.measure import CallProbe
from facecall.media.sources import MediaSourceError

LOOPBACK = "127.0.0.1"


# ---------------------------------------------------------------------------- in-process server


@dataclass
class LocalServer:
    """An all-in-one server running in this process (for the demo and the benchmarks)."""

    base_url: str
    turn: Any
    uvicorn: Any


@contextlib.asynccontextmanager
async def local_server(database_url: str | None = None, *, ring_timeout: float = 30.0,
                       turn: bool = True,
                       external_turn: tuple[list[str], str] | None = None) -> AsyncIterator[LocalServer]:
    """API + signaling + STUN/TURN on free loopback ports (TURN may relay to loopback peers).

    ``external_turn=(uris, secret)`` hands out credentials for a TURN server running elsewhere
    instead of starting one in this process.
    """
    import socket

    from facecall.config import Settings
    from facecall.server import build_uvicorn, turn_uris
    from facecall.turn.config import TurnConfig
    from facecall.turn.server import TurnServer

    with tempfile.TemporaryDirectory(prefix="facecall-demo-") as tmp:
        secret = external_turn[1] if external_turn else secrets.token_urlsafe(24)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((LOOPBACK, 0))
        settings = Settings(host=LOOPBACK, port=sock.getsockname()[1],
                            database_url=database_url or f"sqlite:///{tmp}/facecall.db",
                            ring_timeout=ring_timeout, turn_secrets=[secret], log_level="warning")
        turn_server = None
        uris: list[str] = []
        if external_turn:
            uris = list(external_turn[0])
        elif turn:
            turn_server = TurnServer(TurnConfig(udp_listen=[(LOOPBACK, 0)], tcp_listen=[(LOOPBACK, 0)],
                                                rest_secrets=[secret], allowed_peers=["127.0.0.0/8"]))
            await turn_server.start()
            uris = turn_uris(turn_server)
        server = build_uvicorn(settings, uris)
        # Ctrl-C is the program's, not the embedded server's (uvicorn would take SIGINT, shut
        # down under the devices, and raise it again only once it has stopped)
        server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
        task = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
            yield LocalServer(settings.base_url, turn_server, server)
        finally:
            server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 10)
            if turn_server is not None:
                await turn_server.stop()
            sock.close()


def _quiet_logs() -> None:
    from facecall.logs import configure_logging

    configure_logging("error")


# ---------------------------------------------------------------------------- demo


@dataclass
class DemoOptions:
    server: str | None
    seconds: float
    width: int
    height: int
    fps: float
    relay: bool
    codec: str | None
    json: bool


async def run_demo(options: DemoOptions, step: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Run the demo call and return what it measured (the ``--json`` object)."""
    async with contextlib.AsyncExitStack() as stack:
        host_addresses: list[str] | None = None
        if options.server is None:
            step("starting an all-in-one server in-process (API, signaling, STUN/TURN)")
            server = await stack.enter_async_context(local_server())
            base_url = server.base_url
            host_addresses = [LOOPBACK]  # everything is on this machine
        else:
            base_url = options.server
        suffix = secrets.token_hex(3)
        password = secrets.token_urlsafe(16)
        common: dict[str, Any] = dict(ice_host_addresses=host_addresses, relay_only=options.relay,
                                      video_codec=options.codec, kind="cli",
                                      synthetic_video=(options.width, options.height, options.fps))

        async def device(user: str, name: str) -> Device:
            d = Device(base_url, user, password, sign_up=True, device_name=name, **common)
            await d.connect()
            stack.push_async_callback(d.close)
            return d

        alice_name, bob_name = f"alice-{suffix}", f"bob-{suffix}"
        step(f"signing up {alice_name} and {bob_name} (two devices)")
        alice = await device(alice_name, "alice-laptop")
        bob_phone = await device(bob_name, "bob-phone")
        bob_laptop = await device(bob_name, "bob-laptop")

        step(f"{alice_name} calls {bob_name}")
        outgoing = await alice.call(bob_name, video=True)
        rung = await asyncio.gather(bob_phone.next_call(30), bob_laptop.next_call(30))
        step(f"ringing on {len(rung)} devices; bob-laptop answers")
        on_phone, incoming = rung
        started = time.monotonic()
        await incoming.answer()
        phone_reason = await on_phone.wait_ended(10)
        step(f"bob-phone: {phone_reason}")
        await asyncio.gather(outgoing.wait_connected(60), incoming.wait_connected(60))
        connect_ms = 1000 * (time.monotonic() - started)

        warmup = int(options.fps // 2)  # the first half second: keyframe, buffers filling
        probes = {name: CallProbe(warmup_frames=warmup) for name in ("alice_to_bob", "bob_to_alice")}
        probes["alice_to_bob"].attach(incoming.remote_video, incoming.remote_audio)
        probes["bob_to_alice"].attach(outgoing.remote_video, outgoing.remote_audio)
        for probe in probes.values():
            await probe.start()
        step(f"media connected over {outgoing.path}"
             f"{', SFrame end to end' if outgoing.sframe else ''}; streaming {options.seconds:g} s both ways")
        deadline = time.monotonic() + options.seconds
        while time.monotonic() < deadline and outgoing.state is CallState.CONNECTED:
            await asyncio.sleep(min(0.5, max(deadline - time.monotonic(), 0)))
            step(f"streaming: {probes['alice_to_bob'].video.frames} / "
                 f"{probes['bob_to_alice'].video.frames} frames")
        stats, sframe = await outgoing.get_stats(), outgoing.sframe
        for probe in probes.values():
            await probe.stop()
        step("alice hangs up")
        await outgoing.hangup()
        bob_reason = await incoming.wait_ended(10)

        return {
            "server": base_url,
            "in_process_server": options.server is None,
            "relay_only": options.relay,
            "video": {"width": options.width, "height": options.height, "fps": options.fps,
                      "codec": options.codec or "negotiated"},
            "ring": {"devices_rung": len(rung), "other_device": str(phone_reason)},
            "connect_ms": round(connect_ms, 1),
            "path": outgoing.path or stats.path,
            "sframe": sframe,  # the media SFrame-encrypted end to end (docs/sframe.md)
            "candidate_pair": None if stats.candidate_pair is None else {
                "local": stats.candidate_pair.local_type, "remote": stats.candidate_pair.remote_type},
            "rtt_ms": None if math.isnan(stats.rtt_ms) else round(stats.rtt_ms, 1),
            "send_kbps": round(stats.send_bitrate_bps / 1000, 1),
            "quality": (stats.engine or {}).get("quality"),  # what the media engine sends now
            "directions": {name: probe.figures().as_dict() for name, probe in probes.items()},
            "ended": {"caller": str(outgoing.end_reason), "callee": str(bob_reason)},
        }


def _print_demo(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="facecall demo", show_header=True)
    table.add_column("")
    table.add_column("alice → bob", justify="right")
    table.add_column("bob → alice", justify="right")

    def fmt(value: Any, unit: str = "") -> str:
        if value is None:
            return "-"
        return f"{value:.1f}{unit}" if isinstance(value, float) else f"{value}{unit}"

    a, b = result["directions"]["alice_to_bob"], result["directions"]["bob_to_alice"]
    table.add_row("frames received", fmt(a["frames"]), fmt(b["frames"]))
    table.add_row("fps", fmt(a["fps"]), fmt(b["fps"]))
    table.add_row("glass-to-glass p50", fmt(a["video_p50_ms"], " ms"), fmt(b["video_p50_ms"], " ms"))
    table.add_row("glass-to-glass p95", fmt(a["video_p95_ms"], " ms"), fmt(b["video_p95_ms"], " ms"))
    table.add_row("audio latency p50", fmt(a["audio_p50_ms"], " ms"), fmt(b["audio_p50_ms"], " ms"))
    table.add_row("frames missing", fmt(a["missing"]), fmt(b["missing"]))
    console.print(table)
    console.print(f"connect time [bold]{result['connect_ms']:.0f} ms[/] (answer → media), "
                  f"path [bold]{result['path']}[/], RTT {fmt(result['rtt_ms'], ' ms')}, "
                  f"other device: {result['ring']['other_device']}, "
                  f"ended: {result['ended']['caller']}/{result['ended']['callee']}")
    if quality := result.get("quality"):
        console.print(f"sending {quality['resolution']}@{quality['fps']} at "
                      f"{quality['video_bitrate'] / 1000:.0f} kbit/s ({quality['reason']})")


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 640x360, not {text!r}") from None
    if width <= 0 or height <= 0 or width % 2 or height % 2:
        raise argparse.ArgumentTypeError("width and height must be positive and even")
    return width, height


def cmd_demo(args: argparse.Namespace) -> int:
    return _exit_code(lambda: _demo(args))


def _demo(args: argparse.Namespace) -> int:
    import uvloop

    width, height = args.size
    options = DemoOptions(server=args.server, seconds=args.seconds, width=width, height=height,
                          fps=args.fps, relay=args.relay, codec=args.codec, json=args.json)
    if args.json:
        result = uvloop.run(run_demo(options))
        print(json.dumps(result, indent=2))
        return 0
    from rich.console import Console

    console = Console(log_path=False)
    with console.status("facecall demo") as status:
        def step(text: str) -> None:
            if not text.startswith("streaming:"):
                console.log(text)
            status.update(text)

        result = uvloop.run(run_demo(options, step))
    _print_demo(result)
    return 0


# ---------------------------------------------------------------------------- call / answer


def _device_from_args(args: argparse.Namespace) -> Device:
    password = args.password or os.environ.get("FACECALL_PASSWORD")
    state = args.state_file
    if state is None and args.user:
        state = Path.home() / ".facecall" / f"{args.user}.json"
    return Device(args.server, args.user, password, sign_up=args.sign_up, state_file=state,
                  kind="cli", relay_only=getattr(args, "relay", False),
                  ice_host_addresses=getattr(args, "ice_host", None) or None)


def _output_file(text: str) -> str:
    """``--record``: a file this user can create (missing folders are made), checked before the
    call rather than failing in its middle."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; name a file, e.g. {path / 'call.mp4'}")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"cannot write {text}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise argparse.ArgumentTypeError(f"cannot write {text}: permission denied")
    return text


def _sources(args: argparse.Namespace) -> tuple[Any, Any]:
    if not args.video:
        return None, None
    from facecall.media.sources import open_file_source

    player = open_file_source(args.video, loop=True)
    return player.audio, player.video


async def _stay(call: Call, seconds: float | None, record: str | None) -> EndReason:
    recorder = call.record(record) if record else None
    await call.wait_connected(60)
    print(f"connected over {call.path}", file=sys.stderr)
    # the other side shows the same digits exactly when nobody is in the middle (docs/security.md)
    print(f"security code {call.security_code}", file=sys.stderr)
    print("media end-to-end encrypted (SFrame)" if call.sframe else
          "media encrypted between the two devices (DTLS-SRTP); the other device does not use SFrame",
          file=sys.stderr)
    try:
        if seconds is None:
            return await call.wait_ended()
        try:
            return await call.wait_ended(seconds)
        except TimeoutError:
            await call.hangup()
            return EndReason.HUNG_UP
    finally:
        if recorder is not None and call.state is not CallState.ENDED:
            await call.hangup()


async def _call(args: argparse.Namespace) -> int:
    audio, video = _sources(args)
    async with _device_from_args(args) as device:
        call = await device.call(args.callee, video=not args.audio_only, audio_source=audio,
                                 video_source=video)
        print(f"calling {args.callee} ({call.id})", file=sys.stderr)
        # as long as it rings: the server ends an unanswered call at its ring timeout
        state = await call.wait_state(CallState.CONNECTING)
        if state is CallState.ENDED:
            print(f"call ended: {call.end_reason}", file=sys.stderr)
            return 1
        reason = await _stay(call, args.seconds, args.record)
        print(f"call ended: {reason}", file=sys.stderr)
    return 0


async def _answer(args: argparse.Namespace) -> int:
    audio, video = _sources(args)
    async with _device_from_args(args) as device:
        print(f"waiting for a call as {device.username} ({device.device_id})", file=sys.stderr)
        for _ in range(args.count):
            call = await device.next_call(timeout=None)
            print(f"{call.remote_name or call.remote_user} is calling ({call.media}); answering",
                  file=sys.stderr)
            await call.answer(audio_source=audio, video_source=video)
            reason = await _stay(call, args.seconds, args.record)
            print(f"call ended: {reason}", file=sys.stderr)
    return 0


async def _safety_number(args: argparse.Namespace) -> int:
    """Print the safety number with a user (docs/security.md, "Safety numbers"); with
    ``--mark-verified``, remember it as compared."""
    async with _device_from_args(args) as device:
        number = await device.safety_number(args.other)
        if args.mark_verified:
            await device.mark_verified(number)
        status = "verified" if args.mark_verified else number.status
        print(f"safety number with {args.other} ({status}):")
        digits = number.number.split(" ")
        print(" ".join(digits[:6]))
        print(" ".join(digits[6:]))
        if args.mark_verified:
            print("marked as compared: a change will show here and in calls", file=sys.stderr)
        elif number.status == "changed":
            print(f"CHANGED since you compared it: {args.other} has a new or removed device, or "
                  "someone is in the middle. Compare it again before you trust it.", file=sys.stderr)
        elif number.status == "unverified":
            print(f"compare it with {args.other} (side by side, or read it out); if it matches, "
                  "run this again with --mark-verified", file=sys.stderr)
    return 0


def _exit_code(main: Callable[[], int]) -> int:
    """Run a command: an error is one line on stderr and exit code 1, Ctrl-C exit code 130."""
    _quiet_logs()
    try:
        return main()
    except (FacecallError, MediaSourceError, ValueError, FileNotFoundError) as exc:
        print(f"facecall: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _run(coro_fn: Callable[[argparse.Namespace], Any]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        import uvloop

        return _exit_code(lambda: int(uvloop.run(coro_fn(args))))

    return run


def _add_account_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", required=True, help="server URL, e.g. http://127.0.0.1:8080")
    parser.add_argument("--user", help="your username (with --password, or a saved --state-file)")
    parser.add_argument("--password", help="your password (or FACECALL_PASSWORD)")
    parser.add_argument("--sign-up", action="store_true", help="create the account if needed")
    parser.add_argument("--state-file", type=Path,
                        help="where this device's token and keys are kept "
                             "(default ~/.facecall/USER.json)")


def _add_media_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--relay", action="store_true", help="media through the TURN relay only")
    parser.add_argument("--ice-host", action="append", metavar="ADDRESS",
                        help="gather host candidates on this address (repeatable; "
                             "FACECALL_ICE_HOST_ADDRESSES)")
    parser.add_argument("--video", metavar="FILE", help="send this media file (looped) instead of "
                                                        "synthetic audio and video")
    parser.add_argument("--record", metavar="OUT", type=_output_file,
                        help="record what the other side sends")
    parser.add_argument("--seconds", type=float, help="hang up after this long (default: until the "
                                                      "other side hangs up)")


def add_client_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``demo``, ``call``, ``answer`` and ``safety-number``; each sets
    ``args.run(args) -> exit code``."""
    demo = commands.add_parser("demo", help="a measured two-user video call, server included")
    demo.add_argument("--server", help="use this server instead of one started in-process")
    demo.add_argument("--seconds", type=float, default=5.0, help="media time (default 5)")
    demo.add_argument("--size", type=_size, default=(640, 360), help="video size (default 640x360)")
    demo.add_argument("--fps", type=float, default=30.0, help="frame rate (default 30)")
    demo.add_argument("--codec", choices=["VP8", "H264"], help="video codec (default: negotiated)")
    demo.add_argument("--relay", action="store_true", help="force the TURN relay path")
    demo.add_argument("--json", action="store_true", help="print the results as one JSON object")
    demo.set_defaults(run=cmd_demo)

    call = commands.add_parser("call", help="call a user")
    call.add_argument("callee", metavar="USER")
    _add_account_arguments(call)
    _add_media_arguments(call)
    call.add_argument("--audio-only", action="store_true", help="an audio call")
    call.set_defaults(run=_run(_call))

    answer = commands.add_parser("answer", help="wait for a call and answer it")
    _add_account_arguments(answer)
    _add_media_arguments(answer)
    answer.add_argument("--count", type=int, default=1, help="calls to answer before exiting")
    answer.set_defaults(run=_run(_answer))

    safety = commands.add_parser("safety-number",
                                 help="the safety number to compare once with a user")
    safety.add_argument("other", metavar="USER")
    _add_account_arguments(safety)
    safety.add_argument("--mark-verified", action="store_true",
                        help="you compared it with them and it matched: remember it")
    safety.set_defaults(run=_run(_safety_number))
