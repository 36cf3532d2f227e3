"""1:1 media SFrame-protected end to end in real Chromium (js/p2p-e2ee.js; DESIGN.md invariant 1):
declared with ``a=facecall-sframe`` in the signed descriptions, every frame encrypted under the
sender's own key (sent as ``call.key`` sealed to the other device), none in the clear; a peer
that does not declare it gets working DTLS-SRTP media and the page says so; a reloaded page and
a device the call moved to get new keys; forged keys change nothing; the Python SDK both ways."""

from __future__ import annotations

import json
from typing import Any

from playwright.async_api import WebSocketRoute, expect

from facecall.client import Call, CallState
from tests.live import MakeDevice
from tests.web.conftest import PersonFactory
from tests.web.people import STEP, Person
from tests.web.test_python_peer import (  # noqa: F401 (fixture)
    browser_calls_sdk,
    browser_video_reaches,
    sdk_calls_browser,
    sdk_device,
)

LINE = "a=facecall-sframe"
#: an init script: this page's browser has no encoded transforms (it cannot declare SFrame)
NO_TRANSFORMS = "delete window.RTCRtpScriptTransform;"


def p2p(diag: dict[str, Any]) -> dict[str, Any]:
    return diag.get("p2p") or {}


def keys(diag: dict[str, Any]) -> dict[str, Any]:
    return p2p(diag).get("e2ee") or {}


def frames(diag: dict[str, Any]) -> dict[str, Any]:
    return keys(diag).get("frames") or {}


def media(diag: dict[str, Any]) -> tuple[int, int, int, int]:
    """(video frames decoded, audio samples decoded, frames encrypted, frames decrypted)."""
    stats = diag.get("stats") or {}
    f = frames(diag)
    return (stats.get("framesDecoded", 0), stats.get("audioSamplesDecoded", 0),
            f.get("encrypted", 0), f.get("decrypted", 0))


async def flows(person: Person, what: str, *, sframe: bool = True, more: int = 20) -> dict[str, Any]:
    """``person``'s call decodes pictures and sound, each count rising by ``more`` from now
    (with ``sframe``: also frames encrypted and decrypted); returns the diagnostics."""
    first = media(await person.diagnostics())
    rising = range(4) if sframe else range(2)
    return await person.wait_for(
        lambda d: all(media(d)[i] > first[i] + (more * 100 if i == 1 else more) for i in rising),
        what)


def session_part(sdp: str) -> str:
    return sdp.split("\r\nm=", 1)[0]


def codecs(sdp: str, kind: str) -> set[str]:
    """The codec names of the ``kind`` m-section of ``sdp``."""
    section = next(s for s in sdp.split("\r\nm=")[1:] if s.startswith(kind))
    return {line.split(" ", 1)[1].split("/")[0].lower() for line in section.split("\r\n")
            if line.startswith("a=rtpmap:")}


def first_codec(sdp: str, kind: str) -> str:
    """The name of the first codec (the preferred one) of the ``kind`` m-section of ``sdp``."""
    section = next(s for s in sdp.split("\r\nm=")[1:] if s.startswith(kind))
    first = section.split("\r\n", 1)[0].split()[3]
    return next(line.split(" ", 1)[1].split("/")[0].lower() for line in section.split("\r\n")
                if line.startswith(f"a=rtpmap:{first} "))


def video_codecs(sdp: str) -> set[str]:
    return codecs(sdp, "video")


def audio_codecs(sdp: str) -> set[str]:
    return codecs(sdp, "audio")


async def protected(person: Person, other_device: str, what: str, refused: int = 0) -> dict[str, Any]:
    """``person``'s call media is SFrame-protected with ``other_device`` and flows; checked as
    the diagnostics and the call screen show it (``refused``: `call.key` events refused so far)."""
    await person.wait_for(
        lambda d: p2p(d).get("sframe") is True and other_device in keys(d).get("senders", []),
        f"{what}: SFrame agreed, the other device's key held")
    diag = await flows(person, what)
    e2ee = keys(diag)
    assert e2ee["members"] == [other_device] and e2ee["senders"] == [other_device], e2ee
    assert e2ee["sending"] and not e2ee["unsealed"] and sum(e2ee["refused"].values()) == refused, e2ee
    f = e2ee["frames"]
    assert f["clear"] == {"sent": 0, "received": 0}, f  # nothing passed unprotected
    assert "AuthenticationFailed" not in f["dropped"], f
    security = person.page.locator("#security")
    await expect(security).to_have_attribute("data-sframe", "true", timeout=STEP)
    await expect(person.page.locator("#media-protection")).to_contain_text("end-to-end encrypted with SFrame")
    return diag


async def device_of(person: Person) -> str:
    device: str = (await person.diagnostics())["device"]
    return device


async def test_two_browsers_encrypt_every_frame_and_refuse_forged_keys(people: PersonFactory) -> None:
    """(a) a video call of two browsers: both declare SFrame in what they sign, encrypt every
    frame and decrypt the other's, picture and sound play; (e) malformed and forged `call.key`
    events are counted and change nothing; (c) bob reloads: his new page gets a new key (alice
    a new epoch) and both decode again."""
    bob = await people("bob")
    alice = await people("alice")
    alice_side: list[WebSocketRoute] = []  # alice's signaling passes through the test

    def from_alice(ws: WebSocketRoute, _frame: dict[str, Any]) -> bool:
        if not alice_side or alice_side[-1] is not ws:
            alice_side.append(ws)
        return True

    await alice.intercept_signaling(from_alice)
    sent = bob.record_signaling()
    await alice.in_call_with(bob)
    a_dev, b_dev = await device_of(alice), await device_of(bob)
    a_diag = await protected(alice, b_dev, "alice")
    await protected(bob, a_dev, "bob")
    assert keys(a_diag)["epoch"] == 0

    # the line is in the session part of every description signed and sent, both ways
    descriptions = [(way, f) for way, f in sent if f.get("type") == "call.sdp"]
    assert {way for way, _ in descriptions} == {"sent", "received"}, descriptions
    for _way, frame in descriptions:
        sdp = frame["description"]["sdp"]
        assert LINE in session_part(sdp).split("\r\n"), sdp
        assert first_codec(sdp, "video") == "vp8" and first_codec(sdp, "audio") == "opus", sdp
        if frame["description"]["type"] == "answer":  # (an offer lists the others after them)
            assert "vp8" in video_codecs(sdp) <= {"vp8", "rtx", "red", "ulpfec", "flexfec-03"}, sdp
            assert audio_codecs(sdp) == {"opus"}, sdp

    # malformed and forged keys: counted, nothing changes, the media goes on
    call_id = (await alice.diagnostics())["callId"]
    a_user = (await alice.local_storage("facecall.account"))["user"]["id"]
    b_user = (await bob.local_storage("facecall.account"))["user"]["id"]
    bad = [
        {"v": 1, "type": "call.key", "call_id": call_id},  # names nobody
        {"v": 1, "type": "call.key", "call_id": call_id, "from_user": b_user, "from_device": b_dev,
         "key": {"v": "1", "kid": "not a kid"}},  # not a sealed key
        {"v": 1, "type": "call.key", "call_id": call_id, "from_user": a_user, "from_device": b_dev,
         "key": {"v": "1"}},  # bob's device claimed as alice's
    ]
    before = keys(await alice.diagnostics())
    for frame in bad:
        alice_side[-1].send(json.dumps(frame))
    diag = await alice.wait_for(lambda d: sum(keys(d)["refused"].values()) == len(bad), "alice counting them")
    assert keys(diag)["senders"] == [b_dev] and keys(diag)["rotations"] == before["rotations"]
    await flows(alice, "alice decoding after the forged keys")
    assert not alice.errors and not bob.errors

    # bob's page reloads: it starts afresh (epoch 0, new keys); alice re-keys (epoch 1)
    rotations = keys(await alice.diagnostics())["rotations"]
    await bob.page.reload()
    await expect(bob.page.locator("#call-view")).to_be_visible(timeout=STEP)
    await bob.wait_connected()
    b_diag = await protected(bob, a_dev, "bob after his reload")
    assert keys(b_diag)["epoch"] == 0
    a_diag = await protected(alice, b_dev, "alice after bob's reload", refused=len(bad))
    assert keys(a_diag)["epoch"] == 1 and keys(a_diag)["rotations"] > rotations

    await alice.hang_up()
    await bob.expect_notice("Call ended")
    assert (await alice.diagnostics())["phase"] == "idle"
    assert not alice.errors and not bob.errors


async def test_a_call_moved_to_another_device_is_re_keyed(people: PersonFactory) -> None:
    """(d) alice moves the call from her laptop to her phone: bob drops the laptop's keys,
    seals a new key to the phone, and decodes the phone's frames; the phone decodes bob's."""
    laptop = await people("alice", device_name="laptop")
    phone = await people("alice", signup=False, device_name="phone")
    bob = await people("bob")
    await laptop.in_call_with(bob)
    l_dev, p_dev, b_dev = await device_of(laptop), await device_of(phone), await device_of(bob)
    await protected(bob, l_dev, "bob with the laptop")
    rotations = keys(await bob.diagnostics())["rotations"]

    await expect(phone.page.locator("#handoff")).to_contain_text("on laptop", timeout=STEP)
    await phone.page.get_by_role("button", name="Move video call here").click()
    await phone.wait_connected()
    await protected(phone, b_dev, "the phone")
    diag = await protected(bob, p_dev, "bob with the phone")  # the laptop's keys are gone
    assert keys(diag)["epoch"] == 0 and keys(diag)["rotations"] > rotations
    await laptop.expect_notice("The call moved to another device")
    assert (await laptop.diagnostics())["phase"] == "idle"

    await bob.hang_up()
    await phone.expect_notice("Call ended")
    assert not bob.errors and not phone.errors and not laptop.errors


async def test_a_browser_that_does_not_declare_sframe_gets_working_dtls_srtp_media(
        people: PersonFactory) -> None:
    """(b) alice's browser has no encoded transforms, so her descriptions do not declare
    SFrame: bob's browser (offering, then answering) sends and receives her media as it comes,
    both pages say it is DTLS-SRTP only, and pictures and sound play both ways."""
    alice = await people("alice")
    await alice.context.add_init_script(NO_TRANSFORMS)
    await alice.page.reload()
    await expect(alice.page.locator("#home-view")).to_be_visible(timeout=STEP)
    bob = await people("bob")

    for caller, callee in ((bob, alice), (alice, bob)):
        await caller.in_call_with(callee)
        for person in (alice, bob):
            await person.wait_for(lambda d: p2p(d).get("sframe") is False, "settled: no SFrame")
            await flows(person, f"{person.username} decoding without SFrame", sframe=False)
            await expect(person.page.locator("#security")).to_have_attribute("data-sframe", "false",
                                                                             timeout=STEP)
        a, b = await alice.diagnostics(), await bob.diagnostics()
        assert p2p(a) == {"sframe": False, "capable": False, "e2ee": None}, p2p(a)
        assert frames(b)["encrypted"] == 0 and frames(b)["decrypted"] == 0, frames(b)
        if caller is bob:  # his transforms were made before the answer, then let frames pass
            assert frames(b)["clear"]["sent"] > 0 and frames(b)["clear"]["received"] > 0, frames(b)
        await expect(alice.page.locator("#media-protection")).to_contain_text("This browser cannot")
        await expect(bob.page.locator("#media-protection")).to_contain_text("does not support SFrame")
        await caller.hang_up()
        await expect(callee.page.locator("#home-view")).to_be_visible(timeout=STEP)
    assert not alice.errors and not bob.errors


async def test_a_browser_and_the_python_sdk_protect_their_media_both_ways(
        people: PersonFactory, sdk_device: MakeDevice) -> None:  # noqa: F811
    """(f) browser → SDK and SDK → browser: both declare SFrame, each decrypts the other's
    frames (the SDK's `Call.sframe`, `Call.sframe_counts`), nothing passes in the clear."""
    bot = await sdk_device("bot")
    alice = await people("alice")
    bot_dev = str(bot.device_id)

    async def check(call: Call) -> None:
        await protected(alice, bot_dev, "alice with the SDK")
        assert all(w > 0 and h > 0 for w, h in await browser_video_reaches(call))
        assert call.sframe is True
        counts = call.sframe_counts
        assert counts.get("encrypted", 0) > 10 and counts.get("decrypted", 0) > 10, counts

    incoming = await browser_calls_sdk(alice, bot)
    await check(incoming)
    await alice.hang_up()
    await incoming.wait_ended(10)

    outgoing = await sdk_calls_browser(bot, alice)
    await check(outgoing)
    await outgoing.hangup()
    await expect(alice.page.locator("#home-view")).to_be_visible(timeout=STEP)
    assert outgoing.state is CallState.ENDED
    assert not alice.errors


async def test_an_sdk_device_that_does_not_declare_sframe_still_gets_media(
        people: PersonFactory, sdk_device: MakeDevice) -> None:  # noqa: F811
    """(b) an SDK device asked to send H.264 declares nothing: the browser answering its offer
    sets no transforms and no codec limits, decodes its H.264 and says it is DTLS-SRTP only;
    the browser calling it offers VP8 first and the others after, the SDK answers H.264, and
    the browser's transforms let its frames pass as they are."""
    bot = await sdk_device("h264bot", video_codec="H264")
    alice = await people("alice")
    outgoing = await sdk_calls_browser(bot, alice)
    diag = await alice.wait_for(lambda d: p2p(d).get("sframe") is False, "settled: no SFrame")
    assert frames(diag).get("encrypted", 0) == 0 and frames(diag).get("clear") == {"sent": 0, "received": 0}
    await flows(alice, "alice decoding the SDK's H.264", sframe=False)
    assert all(w > 0 and h > 0 for w, h in await browser_video_reaches(outgoing))
    assert outgoing.sframe is False
    await expect(alice.page.locator("#media-protection")).to_contain_text("does not support SFrame")
    await outgoing.hangup()
    await expect(alice.page.locator("#home-view")).to_be_visible(timeout=STEP)

    incoming = await browser_calls_sdk(alice, bot)
    diag = await alice.wait_for(lambda d: p2p(d).get("sframe") is False, "settled: no SFrame")
    await flows(alice, "alice decoding the SDK's H.264, having offered", sframe=False)
    assert all(w > 0 and h > 0 for w, h in await browser_video_reaches(incoming))
    assert incoming.sframe is False
    diag = await alice.diagnostics()
    f = frames(diag)
    assert f.get("encrypted", 0) == 0 and f["clear"]["sent"] > 0 and f["clear"]["received"] > 0, f
    await alice.hang_up()
    await incoming.wait_ended(10)


async def test_a_page_whose_sframe_worker_cannot_load_sends_nothing_and_says_so(
        people: PersonFactory) -> None:
    """alice's page cannot load the SFrame worker's script (the server went away just then,
    say): her call connects, but not one frame of hers reaches bob — none in the clear — and
    her page says why and what to do."""
    alice = await people("alice")
    await alice.page.route("**/js/sframe-worker.js", lambda route: route.abort())
    await alice.page.reload()  # (the page makes a worker ahead of time as it starts)
    await expect(alice.page.locator("#home-view")).to_be_visible(timeout=STEP)
    bob = await people("bob")
    await alice.call(bob.username, "video")
    await bob.expect_ringing(alice.username)
    await bob.accept()
    await alice.expect_alert("End-to-end encryption could not start on this page")
    await bob.wait_for(lambda d: (d.get("stats") or {}).get("connectionState") == "connected",
                       "bob connected to alice")
    await bob.page.wait_for_timeout(3000)  # alice's camera and microphone have had time to send
    b = await bob.diagnostics()
    f = frames(b)
    # nothing received: no frame decrypted, none refused (``unsent`` counts bob's own frames
    # made before his key), none passed clear
    assert f["decrypted"] == 0 and set(f["dropped"]) <= {"unsent"}, f
    assert f["clear"] == {"sent": 0, "received": 0}, f
    assert media(b)[0] == 0, media(b)  # nothing of alice decoded
    a = await alice.diagnostics()
    assert keys(a)["failed"] is True, keys(a)
    await alice.hang_up()
    await expect(bob.page.locator("#home-view")).to_be_visible(timeout=STEP)
