"""Who is speaking in a group call, in the browser (js/group-call.js, js/ui.js): real Chromium,
the Python SDK, our server and its SFU.

alice and bob (browsers) and carol (an SDK device) in a group call, as in
tests/web/test_group_call.py. The SFU takes for the speaker whoever its RFC 6464 audio levels
say talks (src/facecall/sfu/speaker.py); what makes it deterministic here: alice is muted from
the start (a muted track sends silence), carol answers with a steady tone (the SDK tests'
TalkingAudioTrack) but muted, so bob's fake microphone (Chromium's beeps) is the only sound and
he is the first speaker; then carol unmutes and bob mutes, and carol, talking without a pause,
takes over. Each time every browser's tile of the speaker is outlined and its accessible name
says "…, speaking", and nobody's is on the speaker's own screen. Malformed ``sfu.speaker``
events the test hands bob's page are counted and change nothing; one naming somebody in none
of the slots highlights nothing; bob's page reloaded has the speaker from its ``sfu.join``'s
``ok``. carol leaves: nobody speaks, no tile is outlined.
"""

from __future__ import annotations

import json
from typing import Any

from playwright.async_api import WebSocketRoute, expect

from facecall.client import Call
from tests.live import LiveServer, MakeDevice
from tests.sfu.test_transport import TalkingAudioTrack
from tests.web.conftest import PersonFactory
from tests.web.people import STEP, Person
from tests.web.test_group_call import (  # the fixtures: the app with its SFU on loopback
    add_person,
    decodes_others,
    sdk_device,  # noqa: F401 (a fixture)
    server,  # noqa: F401 (a fixture)
    user_id,
)


async def speaks(person: Person, device: str | None, what: str) -> dict[str, Any]:
    """Wait until ``person``'s page has ``device`` for the speaker (None: nobody)."""
    return await person.wait_for(lambda d: (d.get("group") or {}).get("speaker", "?") == device, what)


async def outlined(person: Person) -> list[dict[str, Any]]:
    """The tiles ``person``'s page outlines as speaking: their device, label and outline."""
    result: list[dict[str, Any]] = await person.page.eval_on_selector_all(
        "#group-tiles .tile.speaking", """tiles => tiles.map((tile) => {
          const style = getComputedStyle(tile);
          return { device: tile.dataset.device, label: tile.getAttribute("aria-label"),
                   outline: [style.outlineStyle, style.outlineWidth] };
        })""")
    return result


async def shows_speaking(person: Person, name: str, device: str) -> None:
    """``person``'s tile of ``name`` (on ``device``), and no other, is outlined and labelled so."""
    tile = person.page.get_by_role("listitem", name=f"{name}, speaking", exact=True)
    await expect(tile).to_be_visible(timeout=STEP)
    await expect(person.page.locator("#group-tiles .tile.speaking")).to_have_count(1)
    assert await outlined(person) == [{"device": device, "label": f"{name}, speaking",
                                       "outline": ["solid", "3px"]}]


async def test_the_person_speaking_stands_out_on_every_screen(
        people: PersonFactory, sdk_device: MakeDevice, server: LiveServer) -> None:  # noqa: F811
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
    await alice.page.get_by_role("button", name="Mute").click()  # silence from alice
    device = {"alice": (await alice.page.evaluate("window.facecall.identity"))["deviceId"],
              "bob": (await bob.page.evaluate("window.facecall.identity"))["deviceId"],
              "carol": str(carol.device_id)}
    me = {"alice": await user_id(alice), "bob": await user_id(bob), "carol": str(carol.user_id)}

    await add_person(alice, "carol")
    c_call: Call = await carol.next_call(timeout=15)
    await c_call.answer(audio_source=TalkingAudioTrack())
    c_call.mute()  # she says nothing yet
    await c_call.join_group_media()
    await decodes_others(alice, None, [me["bob"], me["carol"]], "alice decoding bob and carol")
    await decodes_others(bob, None, [me["alice"], me["carol"]], "bob decoding alice and carol")

    # bob's microphone is the only one heard: he is the speaker. alice's tile of him says so;
    # on his own screen nothing is outlined (he has no tile of himself)
    for person in (alice, bob):
        await speaks(person, device["bob"], "told bob speaks")
    await shows_speaking(alice, "bob", device["bob"])
    await expect(bob.page.locator("#group-tiles .tile.speaking")).to_have_count(0)
    await expect(bob.page.locator("#group-tiles .tile")).to_have_count(2)

    # carol talks, bob stops: the outline moves to carol's tile, on both screens
    c_call.unmute()
    await bob.page.get_by_role("button", name="Mute").click()
    for person in (alice, bob):
        await speaks(person, device["carol"], "told carol speaks")
        await shows_speaking(person, "carol", device["carol"])
    bob_tile = alice.page.locator(f'#group-tiles .tile[data-device="{device["bob"]}"]')
    await expect(bob_tile).to_have_attribute("aria-label", "bob, muted")

    # what the server might send wrong: counted, nothing changes
    call_id = c_call.id

    def speaker(**fields: Any) -> str:
        return json.dumps({"v": 1, "type": "sfu.speaker", "call_id": call_id, **fields})

    for bad in ({"user_id": 7, "device_id": device["carol"]},
                {"user_id": me["carol"]},  # no device
                {"user_id": None, "device_id": device["carol"]},
                {"user_id": me["carol"], "device_id": "carol's phone"},  # not an id: a space
                {"user_id": [me["carol"]], "device_id": device["carol"]}):
        bob_side[-1].send(speaker(**bad))
    diag = await bob.wait_for(lambda d: d["group"]["refused"]["speaker"] == 5, "bob counting them")
    assert diag["group"]["speaker"] == device["carol"]
    assert diag["group"]["refused"] == {"slots": 0, "members": 0, "speaker": 5, "keys": 0}
    await shows_speaking(bob, "carol", device["carol"])

    # a speaker in none of bob's slots: no tile stands out; carol again: hers does
    bob_side[-1].send(speaker(user_id="mallory", device_id="mallory-phone"))
    await speaks(bob, "mallory-phone", "told mallory speaks")
    await expect(bob.page.locator("#group-tiles .tile.speaking")).to_have_count(0)
    bob_side[-1].send(speaker(user_id=me["carol"], device_id=device["carol"]))
    await speaks(bob, device["carol"], "told carol speaks again")
    await shows_speaking(bob, "carol", device["carol"])

    # bob reloads: his page joins the SFU again, and the reply says who speaks (no event does:
    # the speaker did not change)
    await bob.page.reload()
    await expect(bob.page.locator("#call-view")).to_be_visible(timeout=STEP)
    await decodes_others(bob, None, [me["alice"], me["carol"]], "bob decoding after his reload")
    assert (await speaks(bob, device["carol"], "bob told carol speaks"))["group"]["refused"]["speaker"] == 0
    await shows_speaking(bob, "carol", device["carol"])

    # carol leaves: nobody is the speaker any more, no tile is outlined
    await c_call.hangup()
    for person in (alice, bob):
        await speaks(person, None, "told nobody speaks")
        await expect(person.page.locator("#group-tiles .tile")).to_have_count(1, timeout=STEP)
        await expect(person.page.locator("#group-tiles .tile.speaking")).to_have_count(0)
    await alice.hang_up()
    assert not alice.errors and not bob.errors
