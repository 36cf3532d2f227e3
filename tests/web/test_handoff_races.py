"""Handoff races in real Chromium (found or checked by an audit): the old device in its resume
grace, hanging up on it as the new one takes the call, and the call moving while the other
side's page reloads."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest
from playwright.async_api import WebSocketRoute, expect

from tests.web.conftest import PersonFactory
from tests.web.people import STEP, Person
from tests.web.test_security_code import shown_code


def from_device(device_id: str) -> Any:
    return lambda d: d.get("remoteDevice") == device_id and (d.get("stats") or {}).get("framesDecoded", 0) > 0


async def decoding_more(person: Person, what: str) -> None:
    frames = (await person.diagnostics())["stats"]["framesDecoded"]
    await person.wait_for(lambda d: (d.get("stats") or {}).get("framesDecoded", 0) > frames + 15, what)


async def test_a_call_moves_while_the_old_device_is_in_its_resume_grace(people: PersonFactory) -> None:
    """The laptop's signaling is down (the server keeps it in the call for the resume grace)
    when the phone takes the call: bob gets the phone's media; the laptop, back, hears the call
    moved and does not take it back or disturb it."""
    laptop = await people("alice", device_name="laptop")
    phone = await people("alice", signup=False, device_name="phone")
    bob = await people("bob")
    await laptop.in_call_with(bob)
    phone_id = (await phone.diagnostics())["device"]
    # cut the laptop's signaling and keep it cut (its WebSocket refused while we hold it)
    blocked = asyncio.Event()
    blocked.set()

    async def route(ws: WebSocketRoute) -> None:
        if blocked.is_set():
            await ws.close(code=1011)
            return
        server = ws.connect_to_server()
        ws.on_message(lambda m: server.send(m))
        server.on_message(lambda m: ws.send(m))

    await laptop.page.route_web_socket(re.compile(r".*/v1/signaling.*"), route)
    await laptop.page.evaluate("window.facecall.dropConnection()")
    await expect(laptop.page.locator("#connection")).to_be_visible(timeout=STEP)

    await expect(phone.page.locator("#handoff")).to_contain_text("on laptop", timeout=STEP)
    await phone.page.get_by_role("button", name="Move video call here").click()
    await phone.wait_connected()
    await bob.wait_for(from_device(phone_id), "decoding the phone")
    blocked.clear()
    await laptop.expect_notice("The call moved to another device", timeout=30_000)
    await expect(laptop.page.locator("#home-view")).to_be_visible()
    await asyncio.sleep(2)
    await bob.wait_for(from_device(phone_id), "still decoding the phone")
    await decoding_more(bob, "bob decoding on")
    await decoding_more(phone, "phone decoding on")
    assert (await bob.diagnostics())["phase"] == "active"
    assert await shown_code(bob) == await shown_code(phone)


#: (bob's phase, the phone's) once a hang-up and a handoff that crossed are settled
SETTLED = (("idle", "idle"), ("active", "active"))


def decided(frames: list[tuple[str, dict[str, Any]]]) -> bool:
    """Whether the node answered the hang-up among the laptop's ``frames``, or told the laptop
    that its call moved to another device."""
    hangups = {f["id"] for way, f in frames if way == "sent" and f.get("type") == "call.hangup"}
    return any(way == "received" and ((f.get("re") in hangups and f.get("type") in ("ok", "error"))
                                      or (f.get("type") == "call.ended" and f.get("reason") == "handed_off"))
               for way, f in frames)


@pytest.mark.parametrize("handoff_first", [False, True])
async def test_hanging_up_on_the_old_device_as_the_new_one_takes_the_call(people: PersonFactory,
                                                                          handoff_first: bool) -> None:
    """The laptop hangs up at the moment the phone's call.handoff reaches the server: the call
    ends everywhere, or it goes on with the phone; never half of each."""
    laptop = await people("alice", device_name="laptop")
    phone = await people("alice", signup=False, device_name="phone")
    bob = await people("bob")
    held: list[str] = []
    hold = asyncio.Event()
    routes: list[Any] = []

    def from_page(ws: WebSocketRoute, frame: dict[str, Any]) -> bool:
        if frame.get("type") == "call.handoff" and not held:
            held.append(json.dumps(frame))
            routes.append(ws)
            hold.set()
            return False
        return True

    servers = await phone.intercept_signaling(from_page)
    await laptop.in_call_with(bob)
    await expect(phone.page.locator("#handoff")).to_contain_text("on laptop", timeout=STEP)
    await phone.page.get_by_role("button", name="Move video call here").click()
    await asyncio.wait_for(hold.wait(), 15)
    laptop_frames = laptop.record_signaling()
    # both at once: the laptop's End and the phone's call.handoff
    if handoff_first:
        servers[-1].send(held[0])
        await laptop.page.evaluate("document.getElementById('hangup').click()")
    else:
        await laptop.hang_up()
        servers[-1].send(held[0])
    # Until the node has decided: it answered the laptop's hang-up (ok: the call ended before it
    # could move; an error: it had moved), or it told the laptop the call moved (a hang-up sent
    # after that cannot end it). What it tells bob and the phone follows; a half of each (one
    # side idle, the other in the call or connecting) lasts until a 30 s watchdog of the page,
    # past the wait below, and fails it.
    deadline = asyncio.get_running_loop().time() + STEP / 1000
    while not decided(laptop_frames):
        assert asyncio.get_running_loop().time() < deadline, f"the node did not decide: {laptop_frames}"
        await asyncio.sleep(0.05)
    deadline = asyncio.get_running_loop().time() + STEP / 1000
    while True:
        bob_phase = (await bob.diagnostics())["phase"]
        phone_phase = (await phone.diagnostics())["phase"]
        if (bob_phase, phone_phase) in SETTLED or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.1)
    laptop_phase = (await laptop.diagnostics())["phase"]
    assert laptop_phase == "idle"
    assert (bob_phase, phone_phase) in SETTLED, (bob_phase, phone_phase)
    if bob_phase == "active":
        await decoding_more(bob, "bob decoding the phone")
        await decoding_more(phone, "the phone decoding bob")


# the page's first getUserMedia waits for window.__release() (a slow camera, a permission prompt)
SLOW_CAMERA = """
(() => {
  const real = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
  window.__gumCalls = 0;
  navigator.mediaDevices.getUserMedia = async (constraints) => {
    window.__gumCalls += 1;
    if (window.__gumCalls === 1) await new Promise((resolve) => { window.__release = resolve; });
    return real(constraints);
  };
})();
"""


async def test_the_call_moves_while_the_other_side_s_page_is_reloading(people: PersonFactory) -> None:
    """Bob's page reloads; while its camera is still starting (after the welcome that listed
    alice's laptop in the call), alice moves the call to her phone. Once bob's camera is up,
    the call must go on between bob and the phone — not end, not stay without media."""
    laptop = await people("alice", device_name="laptop")
    phone = await people("alice", signup=False, device_name="phone")
    bob = await people("bob")
    await laptop.in_call_with(bob)
    phone_id = (await phone.diagnostics())["device"]
    await bob.context.add_init_script(SLOW_CAMERA)
    await bob.page.reload()
    for _ in range(100):  # the welcome came and the kept call waits for the camera
        if await bob.page.evaluate("window.__gumCalls === 1 && window.facecall.signaling === 'open'"):
            break
        await asyncio.sleep(0.1)
    await expect(bob.page.locator("#call-state")).to_have_text("Reconnecting…", timeout=STEP)
    await phone.page.get_by_role("button", name="Move video call here").click()
    await laptop.expect_notice("The call moved to another device")
    # bob's page has the handoff (its call points at the phone) while its camera still starts
    await bob.wait_for(lambda d: d.get("remoteDevice") == phone_id, "told the call moved")
    await bob.page.evaluate("window.__release()")
    await bob.wait_for(from_device(phone_id), "decoding the phone")
    await phone.wait_connected()
    await decoding_more(bob, "bob decoding the phone on")
    await decoding_more(phone, "the phone decoding bob on")
    assert bob.errors == [] and phone.errors == []
