"""`facecall demo`, `facecall call` and `facecall answer`, as a user runs them (real processes)."""

from __future__ import annotations

import asyncio
import fractions
import http.server
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from facecall.cli import build_parser
from facecall.cli_client import DemoOptions, _call, run_demo
from facecall.client import Call, CallState, EndReason
from facecall.media.sinks import FrameCallbackSink
from tests.client.conftest import PASSWORD, MakeDevice
from tests.live import LiveServer

ENV = {**os.environ, "FACECALL_ICE_HOST_ADDRESSES": "127.0.0.1"}


def small(relay: bool = False) -> DemoOptions:
    return DemoOptions(server=None, seconds=1.5, width=320, height=240, fps=15, relay=relay,
                       codec=None, json=True)


@pytest.mark.parametrize("relay", [False, True])
async def test_demo_in_process(relay: bool) -> None:
    result = await run_demo(small(relay))
    assert result["in_process_server"] is True
    assert result["ring"] == {"devices_rung": 2, "other_device": "answered_elsewhere"}
    assert result["path"] == ("relay" if relay else "host")
    assert result["sframe"] is True  # through our TURN server too: it relays ciphertext
    assert result["ended"] == {"caller": "hung_up", "callee": "hung_up"}
    assert result["connect_ms"] > 0
    for direction in result["directions"].values():
        assert direction["frames"] > 0 and direction["video_p50_ms"] > 0


async def run(*args: str, timeout: float = 90) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "facecall", *args, env=ENV,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()  # not left behind
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_demo_command_json() -> None:
    code, out, err = await run("demo", "--json", "--seconds", "2", "--size", "320x240", "--fps", "15",
                               "--codec", "H264")
    assert code == 0, err
    result = json.loads(out)
    assert result["video"]["codec"] == "H264" and result["path"] == "host"
    assert result["sframe"] is False  # H.264 cannot carry SFrame here: DTLS-SRTP only
    assert result["directions"]["alice_to_bob"]["frames"] > 0


async def test_demo_rejects_bad_size() -> None:
    code, _, err = await run("demo", "--size", "big")
    assert code == 2 and "640x360" in err


async def test_call_command_reports_an_unreachable_server(tmp_path: Path) -> None:
    code, _, err = await run("call", "bob", "--server", "http://127.0.0.1:9", "--user", "alice",
                             "--password", PASSWORD, "--state-file", str(tmp_path / "a.json"))
    assert code == 1 and "cannot reach http://127.0.0.1:9" in err


@pytest.fixture
def other_server() -> Iterator[str]:
    """The URL of an HTTP server that is not facecall (it answers POST with an HTML page)."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def one_line(err: str) -> str:
    """The only line of ``err`` (a command's error must be one clear line, no traceback)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


async def test_call_command_without_a_password_or_saved_device(call_server: LiveServer,
                                                               tmp_path: Path) -> None:
    code, _, err = await run("call", "bob", "--server", call_server.base_url, "--user", "alice",
                             "--state-file", str(tmp_path / "a.json"))
    assert code == 1 and "password" in one_line(err)


async def test_demo_command_reports_bad_servers(other_server: str) -> None:
    for server, says in (("http://127.0.0.1:9", "cannot reach http://127.0.0.1:9"),
                         ("127.0.0.1:9", "http://"),
                         (other_server, "(not a facecall server?)")):
        code, _, err = await run("demo", "--server", server, "--seconds", "1")
        assert code == 1 and says in one_line(err), (server, err)


async def test_demo_command_stops_at_ctrl_c() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "facecall", "demo", "--seconds", "60", "--size", "320x240",
        "--fps", "15", env=ENV, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert process.stdout is not None
    try:
        seen = b""
        while b"streaming" not in seen:
            seen += await asyncio.wait_for(process.stdout.read(200), 60)
        process.send_signal(signal.SIGINT)
        interrupted = time.monotonic()
        out, err = await asyncio.wait_for(process.communicate(), 30)
        took = time.monotonic() - interrupted
    finally:
        if process.returncode is None:
            process.kill()  # not left behind
            await process.wait()
    assert process.returncode == 130, err
    assert b"Traceback" not in out + err
    assert took < 3, took


async def test_call_command_waits_as_long_as_the_call_rings(
        call_server: LiveServer, make_device: MakeDevice, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """No limit of its own: the server ends an unanswered call at its ring timeout (3 s here)."""
    await make_device("bob")
    limits: list[float | None] = []
    wait_state = Call.wait_state

    async def recorded(call: Call, *states: CallState, timeout: float | None = None) -> CallState:
        limits.append(timeout)
        return await wait_state(call, *states, timeout=timeout)

    monkeypatch.setattr(Call, "wait_state", recorded)
    args = build_parser().parse_args([
        "call", "bob", "--server", call_server.base_url, "--user", "alice", "--password", PASSWORD,
        "--sign-up", "--state-file", str(tmp_path / "a.json"), "--ice-host", "127.0.0.1"])
    assert await _call(args) == 1  # nobody answered
    assert limits == [None]


async def test_call_command_reports_an_unknown_user(call_server: LiveServer, tmp_path: Path) -> None:
    code, _, err = await run("call", "nobody", "--server", call_server.base_url, "--user", "alice",
                             "--password", PASSWORD, "--sign-up", "--state-file", str(tmp_path / "a.json"))
    assert code == 1 and "no such user: 'nobody'" in err


def write_clip(path: Path, frames: int = 30) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=15)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((240, 320, 3), i * 8 % 256, np.uint8), format="rgb24")
            frame.pts, frame.time_base = i, fractions.Fraction(1, 15)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


async def test_call_command_sends_a_file(call_server: LiveServer, make_device: MakeDevice,
                                         tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    write_clip(clip)
    bob = await make_device("bob")
    frames = 0

    def count(*_: object) -> None:
        nonlocal frames
        frames += 1

    codes: list[str | None] = []

    async def answer() -> EndReason:
        call = await bob.next_call(60)
        sink = FrameCallbackSink(count, read_stamps=False)
        sink.addTrack(call.remote_video)
        await sink.start()
        await call.answer()
        await call.wait_connected(60)
        codes.append(call.security_code)
        reason = await call.wait_ended(60)
        await sink.stop()
        return reason

    answering = asyncio.create_task(answer())
    code, _, err = await run("call", "bob", "--server", call_server.base_url, "--user", "alice",
                             "--password", PASSWORD, "--sign-up", "--state-file", str(tmp_path / "a.json"),
                             "--video", str(clip), "--seconds", "2")
    assert code == 0, err
    assert "connected over host" in err
    assert await answering is EndReason.HUNG_UP
    assert codes[0] is not None and f"security code {codes[0]}" in err  # bob sees the same
    assert frames > 5


async def test_call_command_refuses_media_it_cannot_read_or_write(call_server: LiveServer,
                                                                 tmp_path: Path) -> None:
    """One line and exit 1 for a --video that is not media, a usage error for a --record that
    cannot be written -- before any call is placed."""
    not_media = tmp_path / "notes.txt"
    not_media.write_text("not a video\n")
    account = ("--server", call_server.base_url, "--user", "alice", "--password", PASSWORD,
               "--sign-up", "--state-file", str(tmp_path / "a.json"))
    code, _, err = await run("call", "bob", *account, "--video", str(not_media))
    assert code == 1 and "Traceback" not in err
    (line,) = [x for x in err.splitlines() if x.startswith("facecall:")]
    assert str(not_media) in line
    blocker = tmp_path / "file"
    blocker.write_text("")
    for target, why in ((blocker / "rec.mp4", "is not a folder"), (tmp_path, "is a folder")):
        code, _, err = await run("call", "bob", *account, "--record", str(target))
        assert code == 2 and why in err and "Traceback" not in err
    assert (await call_server.http.post("/v1/sessions", json={"username": "alice", "password": PASSWORD}
                                        )).status_code == 401  # nothing ran: not even the sign-up


async def test_answer_command_records(call_server: LiveServer, make_device: MakeDevice,
                                      tmp_path: Path) -> None:
    out = tmp_path / "received.mp4"
    await make_device("bob")  # the account exists; the CLI registers its own device
    answering = asyncio.create_task(run(
        "answer", "--server", call_server.base_url, "--user", "bob", "--password", PASSWORD,
        "--state-file", str(tmp_path / "b.json"), "--record", str(out)))
    alice = await make_device("alice")
    for _ in range(100):  # wait for the CLI's device to register and connect
        devices = await call_server.http.get("/v1/devices", headers={
            "Authorization": f"Bearer {json.loads((tmp_path / 'b.json').read_text())['token']}"}) \
            if (tmp_path / "b.json").exists() else None
        if devices is not None and sum(d["online"] for d in devices.json()) >= 2:
            break
        await asyncio.sleep(0.1)
    call = await alice.call("bob")
    await call.wait_state(CallState.CONNECTED, timeout=60)
    await asyncio.sleep(4)  # the recorder encodes in the CLI's event loop: give a loaded machine time
    await call.hangup()
    code, _, err = await answering
    assert code == 0, err
    assert "alice is calling (video)" in err  # the caller's name, not a user id
    assert "call ended: hung_up" in err
    with av.open(str(out)) as container:
        assert container.streams.video, (list(container.streams), err)
        decoded = sum(1 for _ in container.decode(video=0))
    assert decoded > 5


async def test_answer_command_exits_when_its_device_is_removed(call_server: LiveServer,
                                                               tmp_path: Path) -> None:
    state = tmp_path / "b.json"
    account = await call_server.sign_up("bob", PASSWORD)
    answering = asyncio.create_task(run(
        "answer", "--server", call_server.base_url, "--user", "bob", "--password", PASSWORD,
        "--state-file", str(state), timeout=30))
    headers = {"Authorization": f"Bearer {account['token']}"}
    online: list[str] = []
    for _ in range(100):  # wait for the CLI's device to register and connect
        online = [d["id"] for d in (await call_server.http.get("/v1/devices", headers=headers)).json()
                  if d["online"]]
        if online:
            break
        await asyncio.sleep(0.1)
    assert (await call_server.http.delete(f"/v1/devices/{online[0]}", headers=headers)).status_code == 204
    code, _, err = await answering
    assert code == 1 and err.strip().splitlines()[-1] == "facecall: the device was removed", err


async def test_safety_number_command(call_server: LiveServer, make_device: MakeDevice,
                                     tmp_path: Path) -> None:
    """``facecall safety-number bob``: the digits bob's device computes too, and how to mark
    them compared; ``--mark-verified`` remembers them, so the next run says ``verified``."""
    bob = await make_device("bob")
    state = str(tmp_path / "a.json")
    account = ("--server", call_server.base_url, "--user", "alice", "--password", PASSWORD,
               "--sign-up", "--state-file", state)
    code, out, err = await run("safety-number", "bob", *account)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "safety number with bob (unverified):"
    number = await bob.safety_number("alice")
    assert " ".join(lines[1:3]) == number.number
    assert "--mark-verified" in err
    code, out, err = await run("safety-number", "bob", *account, "--mark-verified")
    assert code == 0 and out.splitlines()[0] == "safety number with bob (verified):", err
    code, out, _ = await run("safety-number", "bob", *account)
    assert out.splitlines()[0] == "safety number with bob (verified):"
    code, _, err = await run("safety-number", "nobody", *account)
    assert code == 1 and "no such user: 'nobody'" in err
