"""Simulcast of the browser's video in group calls (js/group-simulcast.js, js/group-call.js):
real Chromium, the Python SDK, our server and its SFU.

alice and bob (browsers) and carol (an SDK device) in a group call, as in
tests/web/test_group_call.py. Each browser offers the SFU its camera as three simulcast layers
(``a=rid:q/h/f send``, ``a=simulcast:send q;h;f``, the rtp-stream-id header extension), which
the SFU's answer takes; the SFU learns each layer's SSRC; everyone decodes everyone; once its
bandwidth estimate pays for it, each browser sends its 640x480 fake camera whole as the top
layer (160x120, 320x240, 640x480: the page sizes the layers with ``scaleResolutionDownTo``, as
from ``scaleResolutionDownBy`` Chromium would send two layers only at that size), and carol (no
bandwidth limit on loopback) decodes it at 640x480; every frame of every layer the SFU sees is
SFrame ciphertext; a shared screen goes through the same simulcast sender. An SFU that declines
simulcast (an older one: no ``a=simulcast`` in its answer) gets one layer, the whole picture,
which everyone decodes.

The layers each browser sends are in its diagnostics (``group.sent``).
"""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiortc.codecs.vpx import VpxPayloadDescriptor
from aiortc.rtp import RtpPacket
from playwright.async_api import expect

from facecall.client import Call, GroupMedia
from facecall.client.sframe_media import clear_bytes
from facecall.e2ee.sframe import SFrameError, decode_header
from facecall.sfu import room as room_module
from facecall.sfu.room import Room
from tests.client.test_group_media import PayloadSpy
from tests.live import LiveServer, MakeDevice
from tests.web.conftest import PersonFactory
from tests.web.people import STEP, Person
from tests.web.test_group_call import (  # the fixtures: the app with its SFU on loopback
    add_person,
    decodes_others,
    sdk_decodes,
    sdk_device,  # noqa: F401 (a fixture)
    server,  # noqa: F401 (a fixture)
    sfu_of,
    user_id,
)
from tests.web.test_screen_share import CAMERA

RIDS = ["q", "h", "f"]
RTP_STREAM_ID = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"


class Exchanges:
    """Every offer the SFU's rooms were given, and their answers, per participant (device)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.offers: dict[str, list[str]] = defaultdict(list)
        self.answers: dict[str, list[str]] = defaultdict(list)
        join = Room.join

        async def spied(room: Room, participant_id: str, offer_sdp: str) -> str:
            self.offers[participant_id].append(offer_sdp)
            answer = await join(room, participant_id, offer_sdp)
            self.answers[participant_id].append(answer)
            return answer

        monkeypatch.setattr(Room, "join", spied)


class LayerSpy(PayloadSpy):
    """PayloadSpy (every frame start the SFU receives read as SFrame, per device and kind), and
    per device the SSRCs of its video whose frame starts were SFrame, with their count."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        super().__init__(monkeypatch)
        self.video: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        self._ssrc = 0
        handle = Room.handle_rtp  # PayloadSpy's

        async def with_ssrc(room: Room, transport: object, packet: RtpPacket, arrival: float) -> None:
            self._ssrc = packet.ssrc  # read() runs before handle awaits anything
            await handle(room, transport, packet, arrival)  # type: ignore[arg-type]

        monkeypatch.setattr(Room, "handle_rtp", with_ssrc)

    def read(self, device_id: str, kind: str, payload: bytes) -> None:
        super().read(device_id, kind, payload)
        if kind != "video":
            return
        descriptor, frame = VpxPayloadDescriptor.parse(payload)
        if descriptor.partition_start and descriptor.partition_id == 0:
            try:
                decode_header(frame[clear_bytes(kind, frame):])
            except SFrameError:
                return
            self.video[device_id][self._ssrc] += 1


def sections(sdp: str) -> list[str]:
    """An SDP's session part, then each m-section (from its m= line to the next)."""
    return re.split(r"\r\n(?=m=)", sdp)


def sending_video(sdp: str) -> str:
    """The sending video m-section of an offer."""
    found = [s for s in sections(sdp) if s.startswith("m=video")
             and re.search(r"^a=(sendrecv|sendonly)\r?$", s, re.M)]
    assert len(found) == 1, sdp
    return found[0]


def declines_simulcast(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SFU reads offers without their rid and simulcast lines: it answers as an SFU that
    knows nothing of simulcast (no ``a=simulcast``), so the browser sends one layer."""
    parse = room_module.parse_offer

    def without_simulcast(sdp: str, slots: int) -> Any:
        return parse(re.sub(r"a=(rid|simulcast):[^\r\n]*\r\n", "", sdp), slots)

    monkeypatch.setattr(room_module, "parse_offer", without_simulcast)


async def three_in_a_group(people: PersonFactory, make: MakeDevice
                           ) -> tuple[Person, Person, Call, GroupMedia, dict[str, str], dict[str, str]]:
    """alice calls bob (browsers), adds carol (SDK), who joins the group media; everyone
    decodes everyone. Returns alice, bob, carol's call and group media, the user ids and the
    device ids by name."""
    carol = await make("carol")
    alice = await people("alice")
    bob = await people("bob")
    await alice.in_call_with(bob)
    await add_person(alice, "carol")
    c_call: Call = await carol.next_call(timeout=15)
    await c_call.answer()
    c_group = await c_call.join_group_media()
    users = {"alice": await user_id(alice), "bob": await user_id(bob), "carol": str(carol.user_id)}
    devices = {"alice": (await alice.page.evaluate("window.facecall.identity"))["deviceId"],
               "bob": (await bob.page.evaluate("window.facecall.identity"))["deviceId"],
               "carol": str(carol.device_id)}
    await decodes_others(alice, None, [users["bob"], users["carol"]], "alice decoding bob and carol")
    await decodes_others(bob, None, [users["alice"], users["carol"]], "bob decoding alice and carol")
    await sdk_decodes(c_group, {devices["alice"], devices["bob"]})
    return alice, bob, c_call, c_group, users, devices


def sending(diag: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """The layers a browser sends (encodes frames of), by rid, lowest first: their sizes now."""
    return {layer["rid"]: (layer["frameWidth"], layer["frameHeight"])
            for layer in (diag.get("group") or {}).get("sent", []) if layer["framesEncoded"]}


async def sdk_frames(group: GroupMedia, device: str, size: Callable[[int, int], bool], what: str) -> None:
    """The SDK decodes ``device``'s video at a size that ``size(width, height)`` accepts: ten
    frames in a row from its slot (it may change layer at a key frame before)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STEP / 1000
    seen: list[tuple[int, int]] = []
    while True:
        slot = next((s for s in group.slots.values()
                     if s.kind == "video" and str(s.device_id) == device), None)
        assert slot is not None, f"no slot of {device} in {group.slots}"
        frame = await asyncio.wait_for(slot.track.recv(), STEP / 1000)
        seen = [*seen[-19:], (frame.width, frame.height)]
        if len(seen) >= 10 and all(size(*s) for s in seen[-10:]):
            return
        assert loop.time() < deadline, f"the SDK does not decode {what}: the last frames {seen}"


async def test_browsers_send_simulcast_and_everyone_decodes_everyone(
        people: PersonFactory, sdk_device: MakeDevice, server: LiveServer,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch, screenshots: Path) -> None:
    exchanges = Exchanges(monkeypatch)
    spy = LayerSpy(monkeypatch)
    alice, bob, c_call, c_group, users, devices = await three_in_a_group(people, sdk_device)
    browsers = {"alice": alice, "bob": bob}

    # (a) each browser's offer: three rids, lowest first, the simulcast line, the rid extension;
    # the SFU's answer takes them
    for name in browsers:
        video = sending_video(exchanges.offers[devices[name]][-1])
        for rid in RIDS:
            assert re.search(rf"^a=rid:{rid} send\r?$", video, re.M), video
        assert re.search(r"^a=simulcast:send q;h;f\r?$", video, re.M), video
        assert re.search(rf"^a=extmap:\d+ {re.escape(RTP_STREAM_ID)}\r?$", video, re.M), video
        answered = [m for m in sections(exchanges.answers[devices[name]][-1]) if "a=simulcast" in m]
        assert len(answered) == 1 and re.search(r"^a=recvonly\r?$", answered[0], re.M), answered
        assert re.search(r"^a=simulcast:recv q;h;f\r?$", answered[0], re.M), answered[0]
    assert "a=simulcast" not in sending_video(exchanges.offers[devices["carol"]][-1])

    # (b) the SFU learnt each browser's layers (SSRCs) as they come: two at least
    room = sfu_of(server).registry.room(c_call.id)
    assert room is not None
    for name, person in browsers.items():
        diag = await person.wait_for(lambda d: len(sending(d)) >= 2, f"{name} sending two layers or more")
        learnt = {ssrc for ssrc, kind in room.participants[devices[name]].sources.items() if kind == "video"}
        ssrcs = {layer["ssrc"] for layer in diag["group"]["sent"] if layer["framesEncoded"]}
        assert len(learnt) >= 2 and ssrcs <= learnt, (name, diag["group"]["sent"], learnt)

    # (c) everyone still decodes everyone
    counts = {name: await decodes_others(person, None, [users[o] for o in users if o != name],
                                         f"{name} decoding the two others")
              for name, person in browsers.items()}
    await sdk_decodes(c_group, {devices["alice"], devices["bob"]})

    # (d) once a browser's bandwidth estimate pays for its top layer, it sends its camera whole
    # (640x480: three layers, not the two libwebrtc would allow that size), and carol (no
    # bandwidth limit on loopback) decodes it at that size
    for name, person in browsers.items():
        diag = await person.wait_for(lambda d: sending(d).get("f") == CAMERA, f"{name} sending layer f whole",
                                     timeout=4 * STEP / 1000)
        assert list(sending(diag).values()) == [(160, 120), (320, 240), CAMERA], diag["group"]["sent"]
        await sdk_frames(c_group, devices[name], lambda w, h: (w, h) == CAMERA, f"{name}'s camera whole")

    # every frame of every layer that reached the SFU is SFrame, under the sender's own keys
    assert spy.unreadable == 0
    for name, person in browsers.items():
        diag = await person.diagnostics()
        layers = {layer["ssrc"] for layer in diag["group"]["sent"] if layer["framesEncoded"]}
        seen = {ssrc for ssrc, frames in spy.video[devices[name]].items() if frames > 0}
        assert len(layers) == 3 and seen == layers, (name, seen, layers)
        assert spy.kids[(devices[name], "video")] and spy.kids[(devices[name], "audio")]

    # a shared screen goes out through the same simulcast sender, its layers sized for it:
    # bob and carol decode it (its shape: wider than the camera's 4:3)
    await alice.page.locator("#share-screen").click()
    await expect(bob.page.locator("#group-tiles .tile").filter(has_text="alice")).to_contain_text(
        "sharing their screen", timeout=STEP)

    def wide(width: int, height: int) -> bool:
        return width * 3 > height * 4 + 30

    diag = await alice.wait_for(lambda d: wide(*sending(d).get("q", (0, 1))), "alice sending her screen")
    screen = dict(sending(diag))

    def bob_decodes_screen(d: dict[str, Any]) -> bool:
        slot = next((s for s in d["group"]["slots"]
                     if s["userId"] == users["alice"] and s["kind"] == "video"), None)
        return bool(slot) and wide(slot["frameWidth"], slot["frameHeight"]) \
            and slot["framesDecoded"] > counts["bob"][users["alice"]] + 10

    await bob.wait_for(bob_decodes_screen, "bob decoding alice's screen")
    await sdk_frames(c_group, devices["alice"], wide, f"alice's screen ({screen})")
    await alice.page.locator("#share-screen").click()
    await alice.wait_for(lambda d: sending(d).get("q") == (160, 120), "alice sending her camera again")
    await decodes_others(bob, None, [users["alice"]], "bob decoding alice's camera again")
    await sdk_frames(c_group, devices["alice"], lambda w, h: not wide(w, h), "alice's camera again")
    await bob.page.screenshot(path=screenshots / "group-simulcast.png")
    assert spy.unreadable == 0
    assert not alice.errors and not bob.errors


async def test_an_sfu_that_declines_simulcast_gets_one_layer_that_everyone_decodes(
        people: PersonFactory, sdk_device: MakeDevice, server: LiveServer,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    declines_simulcast(monkeypatch)
    exchanges = Exchanges(monkeypatch)
    spy = LayerSpy(monkeypatch)
    alice, bob, c_call, c_group, users, devices = await three_in_a_group(people, sdk_device)
    room = sfu_of(server).registry.room(c_call.id)
    assert room is not None
    for name, person in (("alice", alice), ("bob", bob)):
        assert "a=rid:q send" in exchanges.offers[devices[name]][-1]  # offered, declined
        assert "a=simulcast" not in exchanges.answers[devices[name]][-1]
        # Chromium keeps the first encoding only; the page gives it the whole picture
        diag = await person.wait_for(lambda d: list(sending(d).values()) == [CAMERA],
                                     f"{name} sending one layer, its camera whole", timeout=4 * STEP / 1000)
        assert list(sending(diag)) == ["q"]
        ssrc = next(layer["ssrc"] for layer in diag["group"]["sent"] if layer["framesEncoded"])
        learnt = [s for s, kind in room.participants[devices[name]].sources.items() if kind == "video"]
        assert learnt == [ssrc] and set(spy.video[devices[name]]) == {ssrc}
        await sdk_frames(c_group, devices[name], lambda w, h: (w, h) == CAMERA, f"{name}'s camera whole")
    await decodes_others(alice, None, [users["bob"], users["carol"]], "alice decoding bob and carol")
    await decodes_others(bob, None, [users["alice"], users["carol"]], "bob decoding alice and carol")
    assert spy.unreadable == 0
    assert not alice.errors and not bob.errors
