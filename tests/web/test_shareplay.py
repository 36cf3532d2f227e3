"""Watch together (docs/shareplay.md): two people in a call watch one video, each page playing
it from a loopback HTTP server, over the call's data channel — browser ↔ browser and browser ↔
Python SDK, both ways. A page asks before it loads a video the other side shares: what it
requests is recorded (``page.on("request")``) and the server counts what it is asked for.

How far apart two pages' videos are is read "at the same moment" without trusting the
protocol's own clock sync: each page gives its ``video.currentTime`` with
``performance.timeOrigin + performance.now()`` (Unix ms, one machine's clock for every page and
for the SDK's ``time.time()``), and the readings are carried to the later instant at the
video's rate."""

from __future__ import annotations

import asyncio
import fractions
import json
import re
import statistics
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import av
import numpy as np
import pytest
from playwright.async_api import Page, expect

from facecall.client import Call
from facecall.shareplay.playback import MAX_MESSAGE_BYTES, ShareplayError, parse_message
from tests.live import MakeDevice
from tests.web.conftest import PersonFactory
from tests.web.people import STEP, Person
from tests.web.test_python_peer import browser_calls_sdk, sdk_calls_browser, sdk_device  # noqa: F401 (fixture)

SECONDS = 20  # the clip's length
#: how far apart (ms) two videos may be, read at the same instant (measured: docs/shareplay.md)
APART_MS = 100


def write_clip(path: Path, seconds: int = SECONDS, fps: int = 24, width: int = 320,
               height: int = 180) -> None:
    """A WebM clip (VP8 video, Opus audio: a quiet 440 Hz tone) with a keyframe every second
    and a white bar that crosses the picture once over its length."""
    with av.open(str(path), "w", format="webm") as container:
        video = container.add_stream("libvpx", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.bit_rate = 300_000
        video.codec_context.gop_size = fps
        video.options = {"deadline": "realtime", "cpu-used": "8"}
        audio = container.add_stream("libopus", rate=48000, layout="mono")
        ys, xs = np.mgrid[0:height, 0:width]
        for i in range(seconds * fps):
            t = i / fps
            rgb = np.empty((height, width, 3), np.uint8)
            rgb[..., 0] = (xs * 255 // width + i * 4) % 256
            rgb[..., 1] = ys * 255 // height
            rgb[..., 2] = int(150 + 60 * np.sin(t))
            x = int(t / seconds * (width - 8))
            rgb[:, x:x + 8] = 255
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = i, fractions.Fraction(1, fps)
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        tone = (3000 * np.sin(2 * np.pi * 440 * np.arange(seconds * 48000) / 48000)).astype(np.int16)
        for start in range(0, len(tone), 960):
            frame = av.AudioFrame.from_ndarray(tone[None, start:start + 960], format="s16", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = 48000, start, fractions.Fraction(1, 48000)
            for packet in audio.encode(frame):
                container.mux(packet)
        for packet in audio.encode():
            container.mux(packet)


@dataclass
class Videos:
    clip: str  # the clip (also with any query: another address for the same file)
    missing: str  # 404
    host: str  # "127.0.0.1:port"
    requests: Counter[str]  # requests the server had, by path (query included)


@pytest.fixture(scope="module")
def clip_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("shareplay") / "clip.webm"
    write_clip(path)
    return path.read_bytes()


@pytest.fixture
def videos(clip_bytes: bytes) -> Iterator[Videos]:
    """A loopback HTTP server with the clip (byte ranges answered, so the pages can seek)."""
    requests: Counter[str] = Counter()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests[self.path] += 1
            if urlsplit(self.path).path != "/clip.webm":
                self.send_error(404)
                return
            body, status = clip_bytes, 200
            ranged = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
            if ranged:
                first = int(ranged[1])
                last = min(int(ranged[2] or len(clip_bytes) - 1), len(clip_bytes) - 1)
                body, status = clip_bytes[first:last + 1], 206
            self.send_response(status)
            self.send_header("Content-Type", "video/webm")
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(len(body)))
            if ranged:
                self.send_header("Content-Range", f"bytes {first}-{first + len(body) - 1}/{len(clip_bytes)}")
            self.end_headers()
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the page had enough

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    host = f"127.0.0.1:{httpd.server_address[1]}"
    try:
        yield Videos(clip=f"http://{host}/clip.webm", missing=f"http://{host}/missing.webm", host=host,
                     requests=requests)
    finally:
        httpd.shutdown()
        httpd.server_close()


READ = """() => { const v = document.getElementById('watch-video');
  const epoch = performance.timeOrigin + performance.now();
  return {time: v.currentTime, rate: v.paused ? 0 : v.playbackRate, epoch}; }"""


async def video_at(page: Page) -> dict[str, float]:
    reading: dict[str, float] = await page.evaluate(READ)
    return reading


def carried(reading: dict[str, float], epoch: float) -> float:
    """A reading's position carried to ``epoch`` (Unix ms) at the rate the video plays."""
    return reading["time"] + reading["rate"] * (epoch - reading["epoch"]) / 1000


async def apart_ms(one: Person, other: Person) -> float:
    """How far apart the two pages' videos are at one instant, in ms."""
    first, second = await asyncio.gather(video_at(one.page), video_at(other.page))
    epoch = max(first["epoch"], second["epoch"])
    return abs(carried(first, epoch) - carried(second, epoch)) * 1000


async def agreement(one: Person, other: Person, seconds: float = 2.0) -> list[float]:
    """``apart_ms`` every 100 ms for ``seconds``."""
    samples = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        samples.append(await apart_ms(one, other))
        await asyncio.sleep(0.1)
    return samples


async def playing(person: Person, *, paused: bool = False) -> dict[str, Any]:
    """Wait until ``person``'s page shows the shared video playing (or paused) where it should."""
    return await person.wait_for(
        lambda d: (s := d["shareplay"])["activity"] is not None and s["readyState"] >= 2
        and s["paused"] is paused and s["drift"] is not None and abs(s["drift"]) < 0.04,
        "paused in place" if paused else "playing in sync")


def recording(page: Page) -> list[str]:
    """The address of every request ``page`` makes from now on (a reload included)."""
    seen: list[str] = []
    page.on("request", lambda request: seen.append(request.url))
    return seen


def offer(person: Person) -> Any:
    """The question "alice wants to watch “Clip” together — Watch / Not now" on ``person``'s page."""
    return person.page.locator("#watch-offer")


async def asked(person: Person, by: str, title: str, videos: Videos) -> None:
    """``person``'s page asks about ``by``'s video ``title`` (from the test's server), and shows
    nothing of it: no video, no address given to the <video>."""
    question = offer(person)
    await expect(question.locator("#watch-offer-text")).to_have_text(
        f"{by} wants to watch “{title}” together", timeout=STEP)
    await expect(question.locator("#watch-offer-from")).to_have_text(
        f"from {videos.host} · http://, not encrypted")
    await expect(person.page.locator("#watch")).to_be_hidden()
    assert await person.page.locator("#watch-video").get_attribute("src") is None


async def until(check: Any, what: str, timeout: float = STEP / 1000) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what}")
        await asyncio.sleep(0.1)


def report(what: str, samples: list[float]) -> None:
    print(f"{what}: median {statistics.median(samples):.1f} ms, max {max(samples):.1f} ms "
          f"over {len(samples)} readings")


async def test_two_browsers_watch_together_in_sync(people: PersonFactory, videos: Videos,
                                                    screenshots: Path) -> None:
    bob = await people("bob")
    alice = await people("alice")
    await alice.in_call_with(bob)
    page = alice.page

    # a bad address is refused with a reason, and nothing is shared
    await page.get_by_role("button", name="Watch together").click()
    await page.get_by_label("Video address").fill("ftp://videos.example/clip.webm")
    await page.get_by_role("button", name="Start", exact=True).click()
    await expect(page.locator("#watch-ask-error")).to_have_text(re.compile("starts with http:// or https://"))
    await page.get_by_role("button", name="Cancel").click()
    assert (await alice.shareplay())["activity"] is None

    # alice shares a video: her page plays it at once (she chose it); bob's asks first, the
    # focus on the question, and loads nothing — while alice's plays and the state and clock
    # reach bob's page
    bob_requests = recording(bob.page)
    await alice.watch_together(videos.clip, "Clip")
    await expect(page.locator("#watch-by")).to_have_text("You shared this video", timeout=STEP)
    await asked(bob, "alice", "Clip", videos)
    await expect(offer(bob)).to_be_focused()
    await playing(alice)
    await expect(page.locator("#watch-offer")).to_be_hidden()
    await bob.wait_for(lambda d: d["shareplay"]["clock"] is not None and d["shareplay"]["asking"],
                       "following the state, asking")
    assert videos.clip not in bob_requests
    await bob.page.screenshot(path=screenshots / "shareplay-prompt.png")
    # by keyboard: Tab to Watch, Enter; the focus goes to the video's Play/Pause
    await bob.page.keyboard.press("Tab")
    await expect(offer(bob).get_by_role("button", name="Watch", exact=True)).to_be_focused()
    await bob.page.keyboard.press("Enter")
    await expect(offer(bob)).to_be_hidden()
    await expect(bob.page.locator("#watch-play")).to_be_focused()
    await expect(bob.page.locator("#watch-name")).to_have_text("Clip")
    await expect(bob.page.locator("#watch-by")).to_have_text("Shared by alice")
    await playing(bob)
    assert videos.clip in bob_requests  # (the recording sees the video's requests)
    # alice starts the clip again for both: the question took some of its 20 s
    await page.locator("#watch-seek").fill("0")
    version = (await alice.shareplay())["version"]
    await bob.wait_for(lambda d: d["shareplay"]["version"] == version, "alice's seek")
    await playing(alice)
    await playing(bob)
    samples = await agreement(alice, bob)
    report("playing", samples)
    assert max(samples) < APART_MS

    # bob's video thrown 0.3 s ahead (under the jump): it plays 5 % slower until it is back
    await bob.page.evaluate("document.getElementById('watch-video').currentTime += 0.3")
    await asyncio.sleep(0.3)
    assert await apart_ms(alice, bob) > 100
    assert (await bob.shareplay())["nudging"] == -1  # ahead: slower
    await until(lambda: _within(alice, bob, 40), "back within 40 ms", 8)

    # bob pauses: alice's video stops at the same position
    await bob.page.get_by_role("button", name="Pause").click()
    await playing(alice, paused=True)
    await playing(bob, paused=True)
    first, second = await asyncio.gather(video_at(page), video_at(bob.page))
    assert abs(first["time"] - second["time"]) < 0.02, (first, second)
    await expect(page.get_by_role("button", name="Play", exact=True)).to_be_visible()

    # alice seeks (the slider) and bob's video goes there; bob sets the speed, alice plays
    await page.locator("#watch-seek").fill("12")
    await until(lambda: _both_at(alice, bob, 12.0), "both at 12 s")
    await bob.page.locator("#watch-rate").select_option("1.5")
    await expect(page.locator("#watch-rate")).to_have_value("1.5", timeout=STEP)
    await page.get_by_role("button", name="Play", exact=True).click()
    await playing(bob)
    await playing(alice)
    samples = await agreement(alice, bob, 1.5)
    report("playing at 1.5x", samples)
    assert max(samples) < APART_MS * 1.5
    assert (await bob.shareplay())["playbackRate"] == pytest.approx(1.5, rel=0.06)
    await bob.page.screenshot(path=screenshots / "shareplay.png")

    # on a phone: the video, its controls and the call's controls side by side, none overlapping
    await bob.page.set_viewport_size({"width": 390, "height": 844})
    await asyncio.sleep(0.3)
    boxes = {name: await bob.page.locator(selector).bounding_box() for name, selector in (
        ("panel", "#watch"), ("remote", "#remote-video"), ("self", "#local-video"),
        ("controls", ".controls button:visible >> nth=0"), ("stop", "#watch-stop"),
        ("watch-label", "#watch-together .label"), ("share-label", "#share-screen .label"),
        ("end-label", "#hangup .label"))}
    for name, b in boxes.items():
        assert b is not None and 0 <= b["x"] and b["x"] + b["width"] <= 390, (name, b)
    for one, other in (("panel", "remote"), ("panel", "self"), ("panel", "controls"),
                       ("watch-label", "share-label"), ("watch-label", "end-label")):
        assert not _overlap(boxes[one], boxes[other]), (one, other, boxes[one], boxes[other])
    await bob.page.screenshot(path=screenshots / "shareplay-phone.png")

    await bob.page.get_by_role("button", name="Stop watching").click()
    await expect(page.locator("#watch")).to_be_hidden(timeout=STEP)
    await alice.expect_notice("bob stopped the video")

    # a video shared later is asked about again; when its sharing ends, so does the question
    again = f"{videos.clip}?again"
    await alice.watch_together(again, "Again")
    await asked(bob, "alice", "Again", videos)
    box = await offer(bob).bounding_box()  # (bob's page is still phone-sized)
    assert box is not None and 0 <= box["x"] and box["x"] + box["width"] <= 390 and box["y"] >= 0, box
    await playing(alice)
    await page.get_by_role("button", name="Stop watching").click()
    await expect(offer(bob)).to_be_hidden(timeout=STEP)
    await bob.expect_notice("alice stopped the video")
    assert again not in bob_requests and videos.requests["/clip.webm?again"] > 0
    assert (await alice.diagnostics())["phase"] == "active"
    assert not alice.errors and not bob.errors


async def _within(one: Person, other: Person, ms: float) -> bool:
    return await apart_ms(one, other) < ms


async def _both_at(one: Person, other: Person, seconds: float) -> bool:
    readings = await asyncio.gather(video_at(one.page), video_at(other.page))
    return all(abs(r["time"] - seconds) < 0.02 and r["rate"] == 0 for r in readings)


def _overlap(a: Any, b: Any) -> bool:
    return (a["x"] < b["x"] + b["width"] and b["x"] < a["x"] + a["width"]
            and a["y"] < b["y"] + b["height"] and b["y"] < a["y"] + a["height"])


async def test_a_reloaded_page_catches_up_and_a_video_that_cannot_play_says_so(
        people: PersonFactory, videos: Videos) -> None:
    bob = await people("bob")
    alice = await people("alice")
    await alice.in_call_with(bob)
    alice_requests = recording(alice.page)
    await alice.watch_together(videos.clip, "Clip")
    await asked(bob, "alice", "Clip", videos)
    await offer(bob).get_by_role("button", name="Watch", exact=True).click()
    await playing(bob)

    # bob's page reloads: its new peer connection's channel brings the shared state back, and the
    # reloaded page asks again (a yes lasts as long as the page); bob says Not now
    bob_requests = recording(bob.page)
    await bob.page.reload()
    await bob.wait_connected()
    await asked(bob, "alice", "Clip", videos)
    await offer(bob).get_by_role("button", name="Not now").click()
    await expect(offer(bob)).to_be_hidden()
    join = bob.page.get_by_role("button", name="Join alice's video")
    await expect(join).to_be_focused()
    # alice moves the video to 12 s and pauses it meanwhile: bob's page follows, loading nothing
    where = await page_pause_at(alice, 12.0)
    assert 12.0 <= where < 13.0
    await bob.wait_for(lambda d: (s := d["shareplay"])["activity"] is not None
                       and not s["activity"]["playing"] and abs(s["position"] - where) < 0.001
                       and s["declined"], "following: paused there")
    assert videos.clip not in bob_requests
    assert await bob.page.locator("#watch-video").get_attribute("src") is None
    # bob joins later (the question again, Watch): the video where it is now, paused there
    await join.click()
    await expect(offer(bob).get_by_role("button", name="Watch", exact=True)).to_be_focused()
    await bob.page.keyboard.press("Enter")
    await expect(bob.page.locator("#watch-by")).to_have_text("Shared by alice", timeout=STEP)
    await until(lambda: _both_at(alice, bob, where), f"both at {where:.2f} s")
    # and what the reloaded page does counts for both: bob plays, in sync
    await bob.page.get_by_role("button", name="Play", exact=True).click()
    await playing(alice)
    await playing(bob)
    samples = await agreement(alice, bob, 1.0)
    report("after a reload", samples)
    assert max(samples) < APART_MS

    # bob shares another video, an address that gives none: alice's page asks first (loading
    # nothing while bob's already says it cannot play); once she says Watch, both say so, and
    # the call goes on
    await bob.watch_together(videos.missing)
    await expect(bob.page.locator("#watch-problem")).to_contain_text("This video cannot be played here",
                                                                    timeout=STEP)
    await asked(alice, "bob", "missing.webm", videos)
    assert videos.missing not in alice_requests
    await offer(alice).get_by_role("button", name="Watch", exact=True).click()
    for person in (alice, bob):
        await expect(person.page.locator("#watch-problem")).to_contain_text(
            "This video cannot be played here", timeout=STEP)
        await expect(person.page.locator("#watch-name")).to_have_text("missing.webm")
    assert videos.missing in alice_requests
    assert (await alice.diagnostics())["phase"] == (await bob.diagnostics())["phase"] == "active"
    await alice.hang_up()
    await expect(bob.page.locator("#watch")).to_be_hidden(timeout=STEP)
    assert not alice.errors and not bob.errors


async def page_pause_at(person: Person, seconds: float) -> float:
    """``person`` moves the shared video (playing) to ``seconds`` and pauses it: where it stopped."""
    await person.page.locator("#watch-seek").fill(str(seconds))
    await person.page.get_by_role("button", name="Pause").click()
    shared = await person.wait_for(lambda d: (s := d["shareplay"])["activity"] is not None
                                   and not s["activity"]["playing"], "paused")
    position: float = shared["shareplay"]["position"]
    return position


async def sdk_and_page_apart_ms(call: Call, person: Person) -> float:
    """How far apart the SDK's shared position and the page's video are at one instant, in ms."""
    sdk_position, sdk_epoch = call.shareplay.position(), time.time() * 1000
    page = await video_at(person.page)
    activity = call.shareplay.activity
    assert sdk_position is not None and activity is not None
    sdk_rate = activity.rate if activity.playing else 0.0
    return abs(sdk_position + sdk_rate * (page["epoch"] - sdk_epoch) / 1000 - page["time"]) * 1000


async def same_state(call: Call, person: Person) -> bool:
    """The SDK's state (version and activity) is the page's."""
    shared = await person.shareplay()
    activity, version = call.shareplay.activity, call.shareplay.playback.version
    if activity is None or shared["activity"] is None:
        return activity is None and shared["activity"] is None and list(version) == shared["version"]
    mine = {key: getattr(activity, key) for key in ("id", "url", "title", "playing", "rate")}
    return mine == shared["activity"] and list(version) == shared["version"]


async def test_a_browser_and_the_sdk_watch_together(
        people: PersonFactory, sdk_device: MakeDevice, videos: Videos) -> None:  # noqa: F811 (the fixture)
    """The browser calls the SDK and shares a video; the SDK pauses, seeks, speeds up and plays:
    the page's video follows."""
    bot = await sdk_device("bot")
    alice = await people("alice")
    call = await browser_calls_sdk(alice, bot)
    await alice.watch_together(videos.clip, "Clip")
    await until(lambda: same_state(call, alice), "the same state in the SDK")
    await playing(alice)  # a video alice shared herself: no question
    await expect(alice.page.locator("#watch-offer")).to_be_hidden()
    await until(lambda: _sdk_within(call, alice, 40), "the SDK's position on the page")

    call.shareplay.pause()
    await playing(alice, paused=True)
    assert await same_state(call, alice)
    assert await sdk_and_page_apart_ms(call, alice) < 20
    call.shareplay.seek(8.0)
    call.shareplay.set_rate(2.0)
    call.shareplay.play()
    await playing(alice)
    assert await same_state(call, alice)
    samples = [await sdk_and_page_apart_ms(call, alice) for _ in range(10)]
    report("SDK and browser, 2x", samples)
    assert max(samples) < APART_MS * 2

    await alice.page.get_by_role("button", name="Stop watching").click()
    await until(lambda: same_state(call, alice), "stopped in the SDK too")
    assert call.shareplay.activity is None
    await call.hangup()


async def _sdk_within(call: Call, person: Person, ms: float) -> bool:
    return await sdk_and_page_apart_ms(call, person) < ms


#: what the SDK sends the page that the protocol refuses (as tests/shareplay has them, and a
#: few that JSON.parse alone would take: 1.0 for the integer 1, a float version counter)
ACTIVITY = {"id": "i", "url": "https://videos.example/x.webm", "title": "t", "playing": True,
            "position": 1, "rate": 1, "at": 1}
GARBAGE = [
    "not json", "[]", "null", '"state"', "{}",
    json.dumps({"v": 2, "type": "clock.ping", "t0": 1}),
    json.dumps({"v": 1.0, "type": "clock.ping", "t0": 1}),
    json.dumps({"v": True, "type": "clock.ping", "t0": 1}),
    json.dumps({"v": 1, "type": "nope"}),
    json.dumps({"v": 1, "type": "clock.ping", "t0": 1, "extra": 1}),
    json.dumps({"v": 1, "type": "clock.ping", "t0": -1}),
    json.dumps({"v": 1, "type": "clock.ping", "t0": "1"}),
    '{"v": 1, "type": "clock.ping", "t0": NaN}',
    json.dumps({"v": 1, "type": "clock.pong", "t0": 1, "t1": 1}),
    json.dumps({"v": 1, "type": "state", "n": 99, "by": "x"}),
    json.dumps({"v": 1, "type": "state", "n": 99.0, "by": "x", "activity": None}),
    json.dumps({"v": 1, "type": "state", "n": -1, "by": "x", "activity": None}),
    json.dumps({"v": 1, "type": "state", "n": 2**60, "by": "x", "activity": None}),
    json.dumps({"v": 1, "type": "state", "n": 99, "by": "", "activity": None}),
    *(json.dumps({"v": 1, "type": "state", "n": 99, "by": "x", "activity": {**ACTIVITY, **bad}}) for bad in (
        {"url": "javascript:alert(1)"}, {"url": "file:///etc/passwd"}, {"url": "https://"},
        {"url": "https://x/" + "a" * 3000}, {"title": "t" * 201}, {"position": -1},
        {"position": 1e12}, {"rate": 0}, {"rate": 16}, {"playing": 1}, {"id": ""}, {"extra": True})),
    json.dumps({"v": 1, "type": "state", "n": 99, "by": "x", "activity": {**ACTIVITY, "title": "t" * 7000}}),
    "x" * (MAX_MESSAGE_BYTES + 1),
]


async def test_the_sdk_shares_with_a_browser_and_garbage_changes_nothing(
        people: PersonFactory, sdk_device: MakeDevice, videos: Videos) -> None:  # noqa: F811 (the fixture)
    """The SDK calls the browser and shares a video from 2 s in, with markup in its title; the
    page asks first, and nothing asks the server for the video (the SDK never fetches it) until
    alice says Watch; the title is text. Malformed messages from the SDK are refused by the page
    (counted), which plays on as before; the page seeks and the SDK follows; the call's end ends
    it."""
    alice = await people("alice")
    bot = await sdk_device("bot")
    call = await sdk_calls_browser(bot, alice)
    title = 'Clip <img src=x onerror="window.pwned=1">'
    call.shareplay.start(videos.clip, title, position=2.0)
    await asked(alice, "bot", title, videos)
    await expect(offer(alice).locator("img")).to_have_count(0)
    await until(lambda: same_state(call, alice), "the same state on the page")
    await alice.wait_for(lambda d: d["shareplay"]["clock"] is not None, "the clock measured")
    assert not videos.requests
    # Escape: not now; "Join bot's video" asks again (and offers sharing another video instead)
    await expect(offer(alice)).to_be_focused()
    await alice.page.keyboard.press("Escape")
    await expect(offer(alice)).to_be_hidden()
    await alice.page.get_by_role("button", name="Join bot's video").click()
    await expect(offer(alice).get_by_role("button", name="Share another video")).to_be_visible()
    assert not videos.requests
    await offer(alice).get_by_role("button", name="Watch", exact=True).click()
    await expect(alice.page.locator("#watch-by")).to_have_text("Shared by bot", timeout=STEP)
    await expect(alice.page.locator("#watch-name")).to_have_text(title)
    await playing(alice)
    assert videos.requests["/clip.webm"] > 0
    assert await alice.page.evaluate("window.pwned") is None
    assert await same_state(call, alice)
    assert await sdk_and_page_apart_ms(call, alice) < APART_MS

    for raw in GARBAGE:
        with pytest.raises(ShareplayError):
            parse_message(raw)  # the reference refuses each too
    channel = call.shareplay._channel
    assert channel is not None
    refused = (await alice.shareplay())["refused"]
    for raw in GARBAGE:
        channel.send(raw)
    await alice.wait_for(lambda d: d["shareplay"]["refused"] == refused + len(GARBAGE),
                         "refusing the garbage")
    assert await same_state(call, alice)
    assert (await alice.shareplay())["paused"] is False
    assert await sdk_and_page_apart_ms(call, alice) < APART_MS

    await alice.page.locator("#watch-seek").fill("15")
    await until(lambda: same_state(call, alice), "the page's seek in the SDK")
    assert call.shareplay.playback.version[1] == (await alice.diagnostics())["device"]
    position = call.shareplay.position()
    assert position is not None and 15.0 <= position < 16.0
    await playing(alice)
    await call.hangup()
    await expect(alice.page.locator("#home-view")).to_be_visible(timeout=STEP)
    await expect(alice.page.locator("#watch")).to_be_hidden()
    assert (await alice.page.locator("#watch-video").get_attribute("src")) is None
    assert not alice.errors
