"""Group calls in the browser (js/group-call.js, with js/group-e2ee.js): real Chromium, the
Python SDK, our server and its SFU.

alice (browser) calls bob (browser); once they talk, alice presses "Add person" and adds carol,
an SDK device, who answers and joins the group media. Three people: both browsers join the SFU
by themselves (the SDK's rule), close their P2P connection, and each of the three decodes the
two others in its receive slots, while every frame the SFU sees is SFrame ciphertext under its
sender's own keys. The browsers show one tile per person, labelled with their name; mute and
camera off still act; malformed ``sfu.slots`` / ``sfu.members`` / ``call.key`` events from the
server are counted and change nothing; a reload rejoins the SFU; the slots of someone who hangs
up empty; the call's end closes the room.

"Add person" refusals as sentences (unknown user, someone already in the call, oneself, busy),
and an invited browser that rings and answers straight into group media. An audio call of three
goes through the SFU too (audio slots only).

The server starts inside ``host_addresses(["127.0.0.1"])`` so that its SFU gathers on loopback
(tests/client/test_group_media.py).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import WebSocketRoute, expect

from facecall.client import Call, EndReason, GroupMedia
from facecall.client.ice import host_addresses
from facecall.sfu.control import InProcessSfu
from tests.client.test_group_media import PayloadSpy
from tests.live import LiveServer, MakeDevice, sdk_devices
from tests.web.conftest import PersonFactory, ServerFactory
from tests.web.people import STEP, Person

LOOPBACK = ["127.0.0.1"]


@pytest.fixture
async def server(web_server: ServerFactory) -> AsyncIterator[LiveServer]:
    """The app, its SFU gathering on loopback."""
    with host_addresses(LOOPBACK):
        async with web_server() as live:
            yield live


@pytest.fixture
async def sdk_device(server: LiveServer) -> AsyncIterator[MakeDevice]:
    async with sdk_devices(server.base_url) as make:
        yield make


def sfu_of(server: LiveServer) -> InProcessSfu:
    sfu: InProcessSfu = server.app.app.state.sfu
    return sfu


def decoded(diag: dict[str, Any], user_id: str, kind: str = "video") -> int:
    """Frames decoded (video) or samples decoded, not concealed (audio), in the slot that names
    ``user_id``: what did not decrypt never reaches the decoder."""
    group = diag.get("group") or {}
    for slot in group.get("slots", []):
        if slot["userId"] == user_id and slot["kind"] == kind:
            return int(slot["framesDecoded"] if kind == "video" else slot["samplesDecoded"])
    return 0


async def decodes_others(person: Person, others: dict[str, int] | None, ids: list[str],
                         what: str) -> dict[str, int]:
    """Wait until ``person``'s page decodes more video frames from each of ``ids`` than
    ``others`` says it had (and hears them); returns the counts."""
    before = others or {}
    diag = await person.wait_for(
        lambda d: (d.get("group") or {}).get("state") == "connected"
        and all(decoded(d, uid) > before.get(uid, 0) + 5 and decoded(d, uid, "audio") > 0 for uid in ids),
        what)
    return {uid: decoded(diag, uid) for uid in ids}


async def sdk_decodes(group: GroupMedia, device_ids: set[str], frames: int = 10) -> None:
    """The SDK device decodes ``frames`` more video frames (and hears audio) from each of
    ``device_ids`` in its slots (frames that do not decrypt are dropped before decoding)."""
    def counts() -> dict[str, int]:
        return {str(s.device_id): s.track.frames for s in group.slots.values()
                if s.kind == "video" and s.filled}

    start = counts()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STEP / 1000
    while True:
        now = counts()
        audio = {str(s.device_id) for s in group.slots.values()
                 if s.kind == "audio" and s.filled and s.track.frames}
        if set(now) == device_ids and audio == device_ids and all(
                now[d] >= start.get(d, 0) + frames for d in device_ids):
            return
        if loop.time() > deadline:
            raise AssertionError(f"the SDK does not decode {device_ids}: video {now}, audio {audio}")
        await asyncio.sleep(0.1)


async def add_person(person: Person, username: str) -> None:
    """Press "Add person", type ``username``, Add."""
    await person.page.get_by_role("button", name="Add person").click()
    dialog = person.page.get_by_role("dialog", name="Add a person to this call")
    await expect(dialog).to_be_visible()
    await dialog.get_by_label("Username").fill(username)
    await dialog.get_by_role("button", name="Add", exact=True).click()


async def tile_names(person: Person) -> list[str]:
    return [name.strip() for name in await person.page.locator("#group-tiles .tile-name").all_inner_texts()]


async def test_three_people_see_each_other_through_the_sfu_end_to_end(
        people: PersonFactory, sdk_device: MakeDevice, server: LiveServer,
        monkeypatch: pytest.MonkeyPatch, screenshots: Path) -> None:
    spy = PayloadSpy(monkeypatch)
    carol = await sdk_device("carol")
    alice = await people("alice")
    bob = await people("bob")
    # bob's signaling passes through the test, which can hand his page frames of its own
    bob_side: list[WebSocketRoute] = []

    def from_bob(ws: WebSocketRoute, _frame: dict[str, Any]) -> bool:
        if not bob_side or bob_side[-1] is not ws:
            bob_side.append(ws)
        return True

    await bob.intercept_signaling(from_bob)
    await alice.in_call_with(bob)
    a_ids = await alice.page.evaluate("window.facecall.identity")
    b_ids = await bob.page.evaluate("window.facecall.identity")
    me = {"alice": await user_id(alice), "bob": await user_id(bob), "carol": str(carol.user_id)}

    await add_person(alice, "carol")
    await alice.expect_notice("Calling carol…")
    c_call: Call = await carol.next_call(timeout=15)
    await c_call.answer()
    c_group = await c_call.join_group_media()

    # both browsers joined the SFU by themselves; each decodes the two others
    counts_a = await decodes_others(alice, None, [me["bob"], me["carol"]], "alice decoding bob and carol")
    counts_b = await decodes_others(bob, None, [me["alice"], me["carol"]], "bob decoding alice and carol")
    await sdk_decodes(c_group, {a_ids["deviceId"], b_ids["deviceId"]})
    assert sfu_of(server).members(c_call.id) == {a_ids["deviceId"], b_ids["deviceId"], str(carol.device_id)}
    for person, others in ((alice, ["bob", "carol"]), (bob, ["alice", "carol"])):
        diag = await person.diagnostics()
        assert diag["people"] == 3 and diag["group"]["joined"]
        assert diag["securityCode"] is None  # no P2P connection: its code went with it
        assert diag["stats"]["localCandidateType"] == "host"
        e2ee = diag["group"]["e2ee"]
        assert sorted(e2ee["senders"]) == sorted(str(d) for d in sfu_of(server).members(c_call.id)
                                                 if d != diag["device"])
        assert e2ee["sending"] and not e2ee["unsealed"] and not e2ee["refused"]
        # one tile per person in the slots, with their name; no empty tile
        await expect(person.page.locator("#group-tiles .tile")).to_have_count(2)
        assert sorted(await tile_names(person)) == others
        await expect(person.page.locator("#remote-video")).to_be_hidden()
        await expect(person.page.get_by_role("heading", name=" and ".join(others))).to_be_visible()
    assert c_group.keys.senders() == {a_ids["deviceId"], b_ids["deviceId"]}
    await bob.page.screenshot(path=screenshots / "group-call.png")

    # end to end: every frame start the SFU saw is SFrame, each device under its own KIDs
    assert spy.unreadable == 0
    tags: dict[str, set[int]] = {}
    for device in (a_ids["deviceId"], b_ids["deviceId"], str(carol.device_id)):
        for kind in ("audio", "video"):
            kids = spy.kids[(device, kind)]
            assert kids, (device, kind)
            tags.setdefault(device, set()).update(kid >> 16 for kid in kids)
    assert all(len(t) == 1 for t in tags.values()) and len(set.union(*tags.values())) == 3, tags

    # mute and camera off act on the group media: bob's tile of alice says so, and her
    # picture goes; back on, it comes back
    await alice.page.get_by_role("button", name="Mute").click()
    await alice.page.get_by_role("button", name="Camera off").click()
    alice_tile = bob.page.locator("#group-tiles .tile").filter(has_text="alice")
    await expect(alice_tile).to_contain_text("camera off, muted")
    await expect(alice_tile.locator("video")).to_be_hidden()
    await alice.page.get_by_role("button", name="Camera on").click()
    await alice.page.get_by_role("button", name="Unmute").click()
    await expect(alice_tile).not_to_contain_text("muted")
    await expect(alice_tile.locator("video")).to_be_visible()
    counts_b = await decodes_others(bob, counts_b, [me["alice"]], "bob decoding alice's camera again")

    # malformed events from the server: counted, nothing changes, the media goes on
    call_id = c_call.id
    bad = [
        {"v": 1, "type": "sfu.slots", "call_id": call_id, "slots": "all of them"},
        {"v": 1, "type": "sfu.slots", "call_id": call_id,
         "slots": [{"mid": "3", "kind": "video", "user_id": "mallory"}]},
        {"v": 1, "type": "sfu.members", "call_id": call_id, "members": {"alice": 1}},
        {"v": 1, "type": "sfu.members", "call_id": call_id,
         "members": [{"user_id": "mallory", "device_id": 7, "joined": "now"}]},
        {"v": 1, "type": "call.key", "call_id": call_id, "from_user": me["alice"],
         "from_device": a_ids["deviceId"], "key": {"v": "1", "kid": "not a kid"}},
        {"v": 1, "type": "call.key", "call_id": call_id},
    ]
    for frame in bad:
        bob_side[-1].send(json.dumps(frame))
    diag = await bob.wait_for(lambda d: d["group"]["refused"]["slots"] == 2
                              and d["group"]["refused"]["members"] == 2
                              and sum(d["group"]["e2ee"]["refused"].values()) == 2,
                              "bob counting the malformed events")
    assert sorted(diag["group"]["e2ee"]["senders"]) == sorted([a_ids["deviceId"], str(carol.device_id)])
    assert sorted(await tile_names(bob)) == ["alice", "carol"]
    counts_b = await decodes_others(bob, counts_b, [me["alice"], me["carol"]], "bob decoding after bad input")
    assert not bob.errors and not alice.errors

    # bob reloads: his page joins the SFU again (a new member: new keys all round)
    await bob.page.reload()
    await expect(bob.page.locator("#call-view")).to_be_visible(timeout=STEP)
    await decodes_others(bob, None, [me["alice"], me["carol"]], "bob decoding after his reload")
    await decodes_others(alice, counts_a, [me["bob"], me["carol"]], "alice decoding bob after his reload")
    await sdk_decodes(c_group, {a_ids["deviceId"], b_ids["deviceId"]})
    assert sorted(await tile_names(bob)) == ["alice", "carol"]

    # carol hangs up: her tiles go, alice and bob go on through the SFU
    await c_call.hangup()
    for person in (alice, bob):
        await expect(person.page.locator("#group-tiles .tile")).to_have_count(1, timeout=STEP)
        await person.expect_notice("carol left the call")
    assert (await tile_names(alice)) == ["bob"] and (await tile_names(bob)) == ["alice"]
    counts_b = await decodes_others(bob, counts_b, [me["alice"]], "bob decoding alice without carol")

    # alice hangs up: the call ends for bob, the room closes
    await alice.hang_up()
    await bob.expect_notice("Call ended")
    for person in (alice, bob):
        await expect(person.page.locator("#home-view")).to_be_visible(timeout=STEP)
        assert (await person.diagnostics())["phase"] == "idle"
        await expect(person.page.locator("#group-tiles .tile")).to_have_count(0)
    assert c_group.closed
    assert len(sfu_of(server).registry) == 0
    assert not bob.errors and not alice.errors


async def user_id(person: Person) -> str:
    account = await person.local_storage("facecall.account")
    return str(account["user"]["id"])


async def test_add_person_says_why_not_and_an_invited_browser_answers_into_the_group(
        people: PersonFactory, sdk_device: MakeDevice) -> None:
    bob = await sdk_device("bob")
    dave = await sdk_device("dave")
    alice = await people("alice")
    carol = await people("carol")
    await alice.call("bob")
    b_call = await bob.next_call(timeout=15)
    add = alice.page.get_by_role("button", name="Add person")
    await expect(add).to_be_disabled()  # not before the call is connected, and it says so
    await expect(add).to_have_attribute("title", "You can add a person once the call is connected")
    await b_call.answer()
    await alice.wait_connected()
    await expect(add).to_be_enabled()

    dialog = alice.page.get_by_role("dialog", name="Add a person to this call")
    for username, why in (("nobody", "No user named nobody"), ("bob", "bob is already in this call"),
                          ("alice", "You are already in this call")):
        await add_person(alice, username)
        await expect(dialog.get_by_role("alert")).to_have_text(why)
        await expect(dialog.get_by_label("Username")).to_be_focused()
        if username == "alice":
            await alice.page.keyboard.press("Escape")
        else:
            await dialog.get_by_role("button", name="Cancel").click()
        await expect(dialog).to_be_hidden()
        await expect(add).to_be_focused()

    # dave is busy: he declines as such, and alice reads it; the call goes on as it was
    await add_person(alice, "dave")
    await expect(dialog).to_be_hidden()
    d_call = await dave.next_call(timeout=15)
    await d_call.decline(busy=True)
    await alice.expect_notice("dave is busy on another call")
    assert (await alice.diagnostics())["group"] is None

    # carol's browser rings like for any call; she answers straight into the group media
    await add_person(alice, "carol")
    await carol.expect_ringing("alice")
    await carol.accept()
    b_group = await b_call.join_group_media()
    ids = {"alice": await user_id(alice), "carol": await user_id(carol), "bob": str(bob.user_id)}
    await decodes_others(carol, None, [ids["alice"], ids["bob"]], "carol decoding alice and bob")
    await decodes_others(alice, None, [ids["bob"], ids["carol"]], "alice decoding bob and carol")
    carol_diag = await carol.diagnostics()
    await expect(carol.page.locator("#call-state")).to_have_text(re.compile(r"^\d\d:\d\d$"), timeout=STEP)
    a_device = (await alice.page.evaluate("window.facecall.identity"))["deviceId"]
    await sdk_decodes(b_group, {a_device, carol_diag["device"]})
    assert sorted(await tile_names(carol)) == ["alice", "bob"]
    assert sorted(await tile_names(alice)) == ["bob", "carol"]

    await b_call.hangup()
    await alice.hang_up()
    await expect(carol.page.locator("#home-view")).to_be_visible(timeout=STEP)
    assert b_group.closed and await b_call.wait_ended(5) is EndReason.HUNG_UP
    assert not alice.errors and not carol.errors



async def test_an_audio_call_of_three_goes_through_the_sfu(
        people: PersonFactory, sdk_device: MakeDevice) -> None:
    bob, carol = await sdk_device("bob"), await sdk_device("carol")
    alice = await people("alice")
    await alice.call("bob", "audio")
    b_call = await bob.next_call(timeout=15)
    await b_call.answer()
    await expect(alice.page.locator("#call-state")).to_have_text(re.compile(r"^\d\d:\d\d$"), timeout=STEP)
    await add_person(alice, "carol")
    c_call = await carol.next_call(timeout=15)
    await c_call.answer()
    groups = [await call.join_group_media() for call in (b_call, c_call)]
    others = {"bob": str(bob.user_id), "carol": str(carol.user_id)}

    def hears_both(d: dict[str, Any]) -> bool:
        return (d.get("group") or {}).get("state") == "connected" and all(
            decoded(d, uid, "audio") > 0 for uid in others.values())

    diag = await alice.wait_for(hears_both, "alice hearing bob and carol")
    assert [s["kind"] for s in diag["group"]["slots"]] == ["audio"] * 3  # no video m-line at all
    await expect(alice.page.locator("#group-tiles .tile")).to_have_count(2)
    assert sorted(await tile_names(alice)) == ["bob", "carol"]
    await expect(alice.page.locator("#group-tiles .tile video").first).to_be_hidden()  # avatars
    a_device = diag["device"]
    for group in groups:  # each SDK device hears alice (her frames decrypt there)
        def alice_heard(g: GroupMedia = group) -> bool:
            return any(s.device_id == a_device and s.track.frames > 10 for s in g.slots.values())
        deadline = asyncio.get_running_loop().time() + STEP / 1000
        while not alice_heard():
            assert asyncio.get_running_loop().time() < deadline, "the SDK does not hear alice"
            await asyncio.sleep(0.1)
    await alice.hang_up()
    await b_call.hangup()
    assert await c_call.wait_ended(10) is EndReason.HUNG_UP
    assert not alice.errors
