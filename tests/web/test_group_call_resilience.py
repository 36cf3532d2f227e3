"""A browser's group media when the SFU loses it, and a group call moved to another device, in
real Chromium with the SDK and our server's SFU (js/group-call.js, js/call.js).

* The SFU drops bob's browser (the server's SFU lets it go, closing its DTLS, as when nothing
  was heard from it for 15 s): his page joins the SFU again by itself, with a new connection
  and new keys. The tiles stay meanwhile (same people, never fewer), the call line says
  "Reconnecting…" and then "Reconnected to the group call"; everyone decodes everyone again,
  and nothing bob sends through the new connection is under a key of the old one.
* The node dies (SIGKILL: its SFU's rooms with it) and comes back: the browsers cannot resume
  their signaling sessions, and their group media joins the new node's SFU at once (not
  after ICE gives the old connection up), each decoding the others again.
* A call that was a group call and is down to two people stays on the SFU: alice moves it from
  her laptop to her phone, whose page joins the SFU (the ``call.handoff`` reply says
  ``group_media``), and bob decodes the phone there.

The server starts inside ``host_addresses(["127.0.0.1"])`` so that its SFU gathers on loopback.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, expect

from facecall.client import Call, EndReason
from facecall.server import turn_uris
from facecall.turn.server import TurnServer
from tests.client.test_group_media import PayloadSpy
from tests.live import LiveServer, MakeDevice, ServerProcess, free_socket, sdk_devices
from tests.web.conftest import PersonFactory
from tests.web.people import STEP, Person
from tests.web.test_group_call import (  # the fixtures: the app with its SFU on loopback
    add_person,
    decoded,
    decodes_others,
    sdk_decodes,
    sdk_device,  # noqa: F401 (a fixture)
    server,  # noqa: F401 (a fixture)
    sfu_of,
    tile_names,
    user_id,
)

#: records, from now on, the fewest group tiles shown and every text of the call line and of
#: the status live region
WATCH = """() => {
  const tiles = document.getElementById("group-tiles");
  window.__fewestTiles = tiles.children.length;
  new MutationObserver(() => {
    window.__fewestTiles = Math.min(window.__fewestTiles, tiles.children.length);
  }).observe(tiles, { childList: true });
  window.__said = [];
  for (const id of ["call-state", "status"]) {
    const node = document.getElementById(id);
    new MutationObserver(() => window.__said.push(node.textContent))
      .observe(node, { childList: true, characterData: true, subtree: true });
  }
}"""


def tags(spy: PayloadSpy, device: str) -> set[int]:
    """The sender-key tags (a KID's upper bits: one per GroupE2EE) of the frames the SFU saw
    from ``device``."""
    return {kid >> 16 for kind in ("audio", "video") for kid in spy.kids.get((device, kind), set())}


async def test_a_browser_the_sfu_lost_joins_again_by_itself(
        people: PersonFactory, sdk_device: MakeDevice, server: LiveServer,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    spy = PayloadSpy(monkeypatch)
    carol = await sdk_device("carol")
    alice = await people("alice")
    bob = await people("bob")
    await alice.in_call_with(bob)
    await add_person(alice, "carol")
    c_call: Call = await carol.next_call(timeout=15)
    await c_call.answer()
    c_group = await c_call.join_group_media()
    me = {"alice": await user_id(alice), "bob": await user_id(bob), "carol": str(carol.user_id)}
    a_device = (await alice.diagnostics())["device"]
    await decodes_others(alice, None, [me["bob"], me["carol"]], "alice decoding bob and carol")
    await decodes_others(bob, None, [me["alice"], me["carol"]], "bob decoding alice and carol")
    b_diag = await bob.diagnostics()
    b_device = b_diag["device"]
    old_tags = tags(spy, b_device)
    assert len(old_tags) == 1
    await bob.page.evaluate(WATCH)

    # the SFU drops bob's browser: it closes his DTLS
    assert await sfu_of(server).leave(c_call.id, b_device)
    spy.kids.clear()
    counts_a = {me["bob"]: decoded(await alice.diagnostics(), me["bob"])}
    diag = await bob.wait_for(lambda d: d["group"]["rejoins"] == 1 and d["group"]["state"] == "connected",
                              "bob joined the SFU again")
    assert diag["phase"] == "active" and diag["callId"] == c_call.id and not diag["group"]["gaveUp"]
    assert sfu_of(server).members(c_call.id) == {a_device, b_device, str(carol.device_id)}
    counts_b = {uid: decoded(diag, uid) for uid in (me["alice"], me["carol"])}  # the new slots'
    await decodes_others(bob, counts_b, [me["alice"], me["carol"]], "bob decoding alice and carol again")
    await decodes_others(alice, counts_a, [me["bob"]], "alice decoding bob again")
    await sdk_decodes(c_group, {a_device, b_device})

    # new keys both ways: bob's frames through the new connection are under a new sender key
    # only (the SFU saw nothing of his under the old one since), and he holds the others' keys
    new_tags = tags(spy, b_device)
    assert new_tags and not new_tags & old_tags, (old_tags, new_tags)
    assert spy.unreadable == 0
    e2ee = (await bob.diagnostics())["group"]["e2ee"]
    assert sorted(e2ee["senders"]) == sorted([a_device, str(carol.device_id)]) and e2ee["sending"]

    # what bob saw: his tiles all along (same people), "Reconnecting…", then "Reconnected"
    assert await bob.page.evaluate("window.__fewestTiles") == 2
    assert sorted(await tile_names(bob)) == ["alice", "carol"]
    said = await bob.page.evaluate("window.__said")
    assert "Reconnecting…" in said and "Reconnected to the group call" in said, said
    await expect(bob.page.locator("#group-tiles .tile video")).to_have_count(2)
    assert not bob.errors and not alice.errors

    await alice.hang_up()
    await bob.hang_up()
    assert await c_call.wait_ended(10) is EndReason.HUNG_UP
    assert (await bob.diagnostics())["phase"] == "idle"


def from_device_in_slot(device: str) -> Any:
    """Diagnostics whose group media decodes ``device``'s video in a slot."""
    def check(d: dict[str, Any]) -> bool:
        group = d.get("group") or {}
        return group.get("state") == "connected" and any(
            s["deviceId"] == device and s["kind"] == "video" and s["framesDecoded"] > 5
            for s in group.get("slots", []))
    return check


async def test_a_group_call_down_to_two_moves_to_my_other_device_on_the_sfu(
        people: PersonFactory, sdk_device: MakeDevice, server: LiveServer) -> None:  # noqa: F811
    carol = await sdk_device("carol")
    laptop = await people("alice", device_name="laptop")
    phone = await people("alice", signup=False, device_name="phone")
    bob = await people("bob")
    await laptop.in_call_with(bob)
    await add_person(laptop, "carol")
    c_call: Call = await carol.next_call(timeout=15)
    await c_call.answer()
    await c_call.join_group_media()
    me = {"alice": await user_id(laptop), "bob": await user_id(bob), "carol": str(carol.user_id)}
    await decodes_others(bob, None, [me["alice"], me["carol"]], "bob decoding alice and carol")

    # carol leaves: alice and bob stay on the SFU, two people
    await c_call.hangup()
    await bob.expect_notice("carol left the call")
    await expect(bob.page.locator("#group-tiles .tile")).to_have_count(1, timeout=STEP)
    laptop_id, phone_id = (await laptop.diagnostics())["device"], (await phone.diagnostics())["device"]
    b_device = (await bob.diagnostics())["device"]
    assert sfu_of(server).members(c_call.id) == {laptop_id, b_device}

    # alice moves the call to her phone: it joins the SFU, where bob decodes it
    await expect(phone.page.locator("#handoff")).to_contain_text("on laptop", timeout=STEP)
    await phone.page.get_by_role("button", name="Move video call here").click()
    diag = await phone.wait_for(from_device_in_slot(b_device), "the phone decoding bob through the SFU")
    assert diag["group"]["joined"] and diag["callId"] == c_call.id
    await expect(phone.page.locator("#call-state")).to_have_text(re.compile(r"^\d\d:\d\d$"), timeout=STEP)
    await bob.wait_for(from_device_in_slot(phone_id), "bob decoding the phone through the SFU")
    assert sfu_of(server).members(c_call.id) == {phone_id, b_device}
    await laptop.expect_notice("The call moved to another device")
    assert await tile_names(phone) == ["bob"] and await tile_names(bob) == ["alice"]
    assert (await bob.diagnostics())["group"]["e2ee"]["senders"] == [phone_id]

    await bob.hang_up()
    await phone.expect_notice("Call ended")
    assert not phone.errors and not bob.errors and not laptop.errors


async def test_group_media_joins_the_restarted_servers_sfu_again(
        browser: Browser, turn: TurnServer, tmp_path: Path) -> None:
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    node = ServerProcess(tmp_path / "facecall.db", port, ring_timeout=30.0, resume_grace=30.0,
                         turn_urls=turn_uris(turn), env={"FACECALL_SFU_HOST_ADDRESSES": "127.0.0.1"})
    node.start()
    pages: list[Person] = []
    try:
        await node.ready()
        for name in ("alice", "bob"):
            person = await Person.open(browser, node.base_url, name)
            pages.append(person)
            await person.sign_in(device_name=f"{name}'s browser")
        alice, bob = pages
        async with sdk_devices(node.base_url) as make:
            carol = await make("carol")
            await alice.in_call_with(bob)
            await add_person(alice, "carol")
            c_call: Call = await carol.next_call(timeout=15)
            await c_call.answer()
            await c_call.join_group_media()
            me = {"alice": await user_id(alice), "bob": await user_id(bob), "carol": str(carol.user_id)}
            for person, others in ((alice, ["bob", "carol"]), (bob, ["alice", "carol"])):
                await decodes_others(person, None, [me[o] for o in others], f"{person.username} decoding")

            await node.crash_and_restart()
            for person, others in ((alice, ["bob", "carol"]), (bob, ["alice", "carol"])):
                diag = await person.wait_for(
                    lambda d: d["group"]["rejoins"] == 1 and d["group"]["state"] == "connected",
                    f"{person.username} joined the new node's SFU")
                assert diag["phase"] == "active"
                # at once, for the welcome that did not resume (not once ICE gave the old up)
                assert any("joining the SFU again" in line and "could not resume" in line
                           for line in person.console), person.console[-10:]
                counts = {me[o]: decoded(diag, me[o]) for o in others}
                await decodes_others(person, counts, [me[o] for o in others],
                                     f"{person.username} decoding after the restart")
                assert sorted(await tile_names(person)) == others
            await alice.hang_up()
            await bob.hang_up()
            assert await c_call.wait_ended(10) is EndReason.HUNG_UP
            assert not alice.errors and not bob.errors
    finally:
        for person in pages:
            await person.close()
        node.stop()
