"""Audit of device identity keys and safety numbers in the browser (web/js/identity.js,
call.js, safety-number.js, security-code.js; docs/security.md): what a server in the middle
(ours, or whoever holds it and its database) can still do. Each test is a defect, marked
``xfail(strict=True)`` until it was fixed (all were, in session 16).

The server's powers are played with the real server: its signaling through
``Person.tamper_signaling``, its HTTP answers through Playwright's ``page.route``, its database
through sqlite, and a device it invents is a real device registered with the user's password."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

from playwright.async_api import Route, expect

from facecall.e2ee.identity import new_private_key, public_key_text, sign_description
from tests.live import LiveServer, MakeDevice
from tests.web.conftest import PersonFactory
from tests.web.people import PASSWORD, STEP
from tests.web.test_identity import identity
from tests.web.test_python_peer import sdk_calls_browser, sdk_device  # noqa: F401 (fixture)
from tests.web.test_safety_number import number_shown

PINS = "facecall.pinnedKeys"
MAX_PINNED = 4096  # identity.js's MAX_PINNED


async def device_with_key(server: LiveServer, username: str, key: str) -> tuple[str, str]:
    """``username`` signs up and registers a device with the public ``key``: (user id, device id)."""
    account = await server.sign_up(username, PASSWORD)
    response = await server.http.post(
        "/v1/devices", headers={"Authorization": f"Bearer {account['token']}"},
        json={"kind": "sdk", "name": f"{username}'s device", "identity_key": key})
    assert response.status_code == 201, response.text
    return account["user"]["id"], response.json()["device"]["id"]


async def test_a_description_from_a_device_not_in_the_call_is_applied(
        people: PersonFactory, server: LiveServer, sdk_device: MakeDevice) -> None:  # noqa: F811
    """bob's SDK device calls alice's browser. The server relays bob's offer as if mallory's
    device had sent it (a real device of a real user, signed with its own key): alice's browser
    checks it against mallory's key, applies it to her call with bob, and answers it."""
    mallory_key = new_private_key()
    mallory, mallory_device = await device_with_key(server, "mallory", public_key_text(mallory_key))
    bot = await sdk_device("bob")
    alice = await people("alice")
    alice_device = (await identity(alice))["deviceId"]
    answers: list[dict[str, Any]] = []

    def as_mallorys(frame: dict[str, Any]) -> dict[str, Any]:
        if frame.get("type") == "call.sdp" and frame.get("from_device") == bot.device_id:
            description = frame["description"]
            frame = {**frame, "from_user": mallory, "from_device": mallory_device,
                     "signature": sign_description(mallory_key, frame["call_id"], mallory, mallory_device,
                                                   alice_device, description["type"], description["sdp"])}
        return frame

    def sent(frame: dict[str, Any]) -> dict[str, Any]:
        if frame.get("type") == "call.sdp":
            answers.append(frame)
        return frame

    await alice.tamper_signaling(to_page=as_mallorys, to_node=sent)
    await bot.call("alice", video=False)
    await alice.expect_ringing("bob")
    await alice.accept()
    # Until alice's page has handled mallory's offer: it logs that it ignored it (call.js), or
    # it answers it (the defect). Whichever comes first, only an answer fails the test.
    ignored = f"ignored a call.sdp from {mallory} {mallory_device}"
    deadline = asyncio.get_running_loop().time() + STEP / 1000
    while not answers and not any(ignored in line for line in alice.console):
        assert asyncio.get_running_loop().time() < deadline, (
            "alice's page neither ignored nor answered mallory's offer:\n" + "\n".join(alice.console[-20:]))
        await asyncio.sleep(0.05)
    assert not answers, (
        f"alice's browser, in a call with bob's device {bot.device_id}, answered an offer from "
        f"mallory's device {mallory_device}: {[a['to_device'] for a in answers]}")


async def test_verified_on_the_call_screen_with_a_device_the_server_hides(
        people: PersonFactory, server: LiveServer, sdk_device: MakeDevice) -> None:  # noqa: F811
    """alice compared her number with bob. The server invents a device of bob's (its own key),
    calls alice from it, and lists it only once, for the check of its offer: alice's call screen
    says "Verified" under the security code of a call with the server's device."""
    bob = await sdk_device("bob")
    alice = await people("alice")
    await number_shown(alice, "bob")
    await alice.page.get_by_role("button", name="Mark as verified").click()

    invented = await sdk_device("bob")  # the server's device "of bob's", with its own key
    served = 0

    async def hide_it(route: Route) -> None:
        nonlocal served
        response = await route.fetch()
        body = await response.json()
        served += 1
        if served > 1:  # listed for the check of its offer, hidden from the safety number
            body["devices"] = [d for d in body["devices"] if d["device_id"] != invented.device_id]
        await route.fulfill(response=response, json=body)

    await alice.page.route(f"**/v1/users/{bob.user_id}/identity-keys", hide_it)
    await sdk_calls_browser(invented, alice)
    pins = await alice.local_storage(PINS)
    assert pins[invented.device_id][0] == bob.user_id  # trusted on first use, as bob's
    status = alice.page.locator("#call-safety-status")
    await expect(alice.page.locator("#call-safety")).to_be_visible(timeout=STEP)
    shown = re.compile("verified|changed|refused")
    await expect(status).to_have_attribute("data-status", shown, timeout=STEP)
    assert served >= 2
    assert await status.get_attribute("data-status") in ("changed", "refused"), (
        f"alice's call screen says {await status.text_content()!r} in a call with "
        f"{invented.device_id}, a device the safety number does not cover")


async def test_a_long_key_list_evicts_the_pin_of_a_device_met(
        people: PersonFactory, server: LiveServer, tmp_path: Path) -> None:
    """alice's browser pinned bob's device (the "Verify a contact" panel pins, as a call does).
    The server lists 4096 devices for mallory (it lets a user have 32; it holds the database)
    and alice looks their number up: bob's pin is gone."""
    bob_key = public_key_text(new_private_key())
    bob, bob_device = await device_with_key(server, "bob", bob_key)
    mallory = (await server.sign_up("mallory", PASSWORD))["user"]["id"]
    alice = await people("alice")
    await number_shown(alice, "bob")
    assert (await alice.local_storage(PINS))[bob_device] == [bob, bob_key]

    now = time.time()
    rows = [(uuid.uuid4().hex, mallory, "sdk", f"m{i}", now, now, None, public_key_text(new_private_key()))
            for i in range(MAX_PINNED)]
    with sqlite3.connect(tmp_path / "facecall.db") as db:
        db.executemany("INSERT INTO user_devices (id, user_id, kind, name, created_at, last_seen_at, "
                       "removed_at, identity_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    await alice.page.locator("#verify-username").fill("mallory")
    await alice.page.get_by_role("button", name="Show number").click()
    await expect(alice.page.locator("#verify-error")).to_have_text(
        f"No safety number with mallory: The server lists {MAX_PINNED} devices for one person, "
        "more than the 32 anyone can have — someone may be in the middle.", timeout=STEP)
    pins = await alice.local_storage(PINS)
    assert pins.get(bob_device) == [bob, bob_key], (
        f"bob's pin was evicted by mallory's list of {MAX_PINNED} devices ({len(pins)} pins kept)")
