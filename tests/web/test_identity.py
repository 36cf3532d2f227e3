"""Device identity keys in the browser (web/js/identity.js; docs/security.md, "Device identity
keys"): the browser signs every SDP it sends with its device's Ed25519 key (WebCrypto, kept in
IndexedDB), checks every SDP it gets against the sender device's key (pinned in localStorage on
first use) before applying it, and refuses what a server in the middle changed: the call ends
``identity_check_failed`` on both sides, with a message that says why. The SDK's version of each
case is tests/client/test_identity.py; the known answer is tests/e2ee/test_identity.py's."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, expect

from facecall.client import EndReason
from facecall.e2ee.identity import new_private_key, public_key_text, sign_description
from tests.client.test_identity import own_fingerprint
from tests.e2ee.test_identity import CALL, KNOWN_SIGNATURE, PUBLIC, SEED_HEX
from tests.live import LiveServer
from tests.web.conftest import PersonFactory
from tests.web.people import STEP, Person
from tests.web.test_python_peer import browser_calls_sdk, sdk_calls_browser, sdk_device  # noqa: F401 (fixture)

PINS = "facecall.pinnedKeys"
REFUSED = "device could not prove it is theirs — someone may be listening in"  # the refusing side
NOT_CONFIRMED = "device could not confirm that the call came from your device — someone may be listening in"


async def identity(person: Person) -> dict[str, str]:
    """The page's device and the public key it signs with: ``{deviceId, key}``."""
    result: dict[str, str] = await person.page.evaluate("window.facecall.identity")
    return result


async def device_of(person: Person) -> dict[str, Any]:
    """This browser's device as the page keeps it: ``{id, token, userId, name}``."""
    device: dict[str, Any] = await person.local_storage("facecall.device")
    return device


async def listed_devices(server: LiveServer, token: str) -> list[tuple[str, str | None]]:
    """``GET /v1/devices``: each device's id and identity key."""
    response = await server.http.get("/v1/devices", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    return [(d["id"], d["identity_key"]) for d in response.json()]


def set_key_in_db(tmp_path: Path, device_id: str, key: str | None) -> None:
    """What a server (or whoever holds its database) can do to a device's published key."""
    database = sqlite3.connect(tmp_path / "facecall.db")
    with database:
        database.execute("UPDATE user_devices SET identity_key = ? WHERE id = ?", (key, device_id))
    database.close()


def offers(change: Any) -> Any:
    """A server in the middle that passes each ``call.sdp`` offer through ``change``."""
    def tamper(frame: dict[str, Any]) -> dict[str, Any] | None:
        if frame.get("type") == "call.sdp" and frame["description"]["type"] == "offer":
            return change(frame)  # type: ignore[no-any-return]
        return frame
    return tamper


@pytest.fixture
async def page(browser: Browser, server: LiveServer) -> AsyncIterator[Person]:
    """The web client's page, not signed in: identity.js is there to import."""
    person = await Person.open(browser, server.base_url, "nobody")
    yield person
    await person.close()


KNOWN_ANSWER_JS = """async ({ seedHex, publicKey, call, attacker }) => {
  const m = await import("/js/identity.js");
  const [callId, fromUser, fromDevice, toDevice, type, sdp] = call;
  const seed = Uint8Array.from(seedHex.match(/../g), (h) => parseInt(h, 16));
  // PKCS #8 of an Ed25519 private key (RFC 8410): a fixed prefix, then the 32-byte seed
  const pkcs8 = new Uint8Array([0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65,
    0x70, 0x04, 0x22, 0x04, 0x20, ...seed]);
  const privateKey = await crypto.subtle.importKey("pkcs8", pkcs8, { name: "Ed25519" }, false, ["sign"]);
  let answer = () => ({ devices: [{ device_id: fromDevice, identity_key: publicKey }] });
  const api = { identityKeys: async () => answer() };
  const sender = new m.Identity({ deviceId: fromDevice, userId: fromUser, privateKey, publicKey, api,
    token: "t" });
  const receiver = new m.Identity({ deviceId: toDevice, userId: "user-b", privateKey: null, publicKey: null,
    api, token: "t", lookupPauses: [1, 1, 1] });
  const why = async (event) => {
    try {
      await receiver.check(callId, event);
      return null;
    } catch (error) {
      if (!(error instanceof m.IdentityError)) return `a bug: ${error}`;
      return (error.unchecked ? "unchecked: " : "") + error.message;
    }
  };
  const out = { statement: new TextDecoder().decode(m.statement(...call)) };
  out.signature = await sender.sign(callId, toDevice, type, sdp);
  const event = { from_user: fromUser, from_device: fromDevice, description: { type, sdp },
    signature: out.signature };
  localStorage.removeItem("facecall.pinnedKeys");
  out.valid = await why(event);
  out.pinned = receiver.pinned(fromDevice);
  out.changedSdp = await why({ ...event, description: { type, sdp: sdp.replace("AB:CD", "AB:CE") } });
  out.answer = await why({ ...event, description: { type: "answer", sdp } });
  out.stripped = await why({ ...event, signature: null });
  out.notCanonical = await why({ ...event, signature: out.signature.slice(0, -1) + "x" });
  out.anotherUser = await why({ ...event, from_user: "user-x" });
  // the server lists another key for the pinned device, and signs with it: the pin counts
  answer = () => ({ devices: [{ device_id: fromDevice, identity_key: attacker.key }] });
  out.swapped = await why({ ...event, signature: attacker.signature });
  answer = () => ({ devices: [] });
  out.noKey = await why({ ...event, from_device: "device-c" });
  answer = () => ({ devices: [{ device_id: "device-d", identity_key: "A".repeat(42) }] });
  out.badKey = await why({ ...event, from_device: "device-d" });
  let asked = 0;
  const failing = (status) => () => {
    asked += 1;
    throw Object.assign(new Error(`failed with ${status}`), { status });
  };
  answer = failing(0);
  out.noAnswer = [await why({ ...event, from_device: "device-e" }), asked];
  asked = 0;
  answer = failing(404);
  out.refused = [await why({ ...event, from_device: "device-e" }), asked];
  // a node restarting: no answer twice (unreachable, then a 503), then the list
  asked = 0;
  const listing = { devices: [{ device_id: "device-f", identity_key: publicKey }] };
  answer = () => (asked < 2 ? failing(asked ? 503 : 0)() : listing);
  const senderF = new m.Identity({ deviceId: "device-f", userId: fromUser, privateKey, publicKey, api,
    token: "t" });
  const signedByF = await senderF.sign(callId, toDevice, type, sdp);
  out.restarted = [await why({ ...event, from_device: "device-f", signature: signedByF }), asked];
  out.pins = JSON.parse(localStorage.getItem("facecall.pinnedKeys"));
  return out;
}"""


async def test_the_known_answer_and_what_the_browser_refuses(page: Person) -> None:
    """identity.js signs CALL with RFC 8032's TEST 1 key exactly as the Python SDK does, and
    refuses every change to what was signed, a missing or malformed signature, a device pinned
    as another user's, a key the server swaps for a pinned device, and a device without a key."""
    attacker = new_private_key()
    out = await page.page.evaluate(KNOWN_ANSWER_JS, {
        "seedHex": SEED_HEX, "publicKey": PUBLIC, "call": list(CALL),
        "attacker": {"key": public_key_text(attacker), "signature": sign_description(attacker, *CALL)},
    })
    assert out["statement"] == "facecall sdp v1\ncall-1\nuser-a\ndevice-a\ndevice-b\noffer\n" + CALL[5]
    assert out["signature"] == KNOWN_SIGNATURE
    assert out["valid"] is None
    assert out["pinned"] == ["user-a", PUBLIC]
    for case in ("changedSdp", "answer", "swapped"):
        assert "is not signed by its identity key" in out[case], case
    assert "without a signature" in out["stripped"]
    assert "canonical" in out["notCanonical"]
    assert "known as a device of user user-a, not user-x" in out["anotherUser"]
    assert "device device-c of user user-a has no identity key" in out["noKey"]
    assert "43 base64url characters" in out["badKey"]
    assert out["noAnswer"][0].startswith("unchecked: cannot read the identity keys")
    assert out["noAnswer"][1] == 4  # the first try and one after each of the three pauses
    assert out["refused"] == ["cannot read the identity keys of user user-a: failed with 404", 1]
    assert out["restarted"] == [None, 2]  # two tries unanswered, then checked and pinned
    # nothing pinned but the keys read and checked
    assert out["pins"] == {"device-a": ["user-a", PUBLIC], "device-f": ["user-a", PUBLIC]}


ORDER_JS = """async () => {
  const { Call } = await import("/js/call.js");
  const checks = []; // one per description: [event, resolve, reject]
  const finished = [];
  const host = {
    identity: {
      check: (callId, event) => new Promise((resolve, reject) => checks.push([event, resolve, reject])),
    },
    finish: (call, reason) => { finished.push(reason); call.ended = true; },
  };
  const call = new Call(host, { id: "call-1", name: "bob", peerId: "user-b", remoteDevice: "device-b" });
  const from = { from_user: "user-b", from_device: "device-b" }; // the call's other device
  const applied = [];
  for (const name of ["onSdp", "onCandidate", "onRejoin", "onHandedOff", "onRemoteMedia"]) {
    call[name] = (event) => applied.push(event.n);
  }
  const settle = () => new Promise((resolve) => setTimeout(resolve, 0));
  const steps = {};
  call.onRelayed({ type: "call.candidate", n: 1, ...from }); // nothing to wait for: at once
  call.onRelayed({ type: "call.sdp", n: 2, ...from });
  call.onRelayed({ type: "call.candidate", n: 3, ...from });
  call.onRelayed({ type: "call.sdp", n: 4, ...from });
  call.onRelayed({ type: "call.candidate", n: 5, ...from });
  call.onRelayed({ type: "call.media", n: 6, ...from });
  await settle();
  steps.whileChecking = [...applied];
  call.onRelayed({ type: "call.sdp", n: 100, from_user: "user-m", from_device: "device-m" }); // not ours
  checks[0][1]();
  await settle();
  steps.firstChecked = [...applied];
  call.onRelayed({ type: "call.handed_off", n: 7, ...from });
  checks[1][1]();
  await settle();
  steps.secondChecked = [...applied];
  call.onRelayed({ type: "call.sdp", n: 8, ...from });
  call.onRelayed({ type: "call.candidate", n: 9, ...from });
  checks[2][2](new Error("not signed"));
  await settle();
  steps.refused = [...applied];
  steps.finished = finished;
  steps.checked = checks.map(([event]) => event.n);
  return steps;
}"""


async def test_what_follows_a_description_waits_for_its_check(page: Person) -> None:
    """Relayed events are applied in the order they came: a description only once its check
    passed, and what came after it (a candidate, another description) only after it; after a
    refused description, nothing more of the call is applied."""
    steps = await page.page.evaluate(ORDER_JS)
    assert steps == {
        "whileChecking": [1], "firstChecked": [1, 2, 3], "secondChecked": [1, 2, 3, 4, 5, 6, 7],
        "refused": [1, 2, 3, 4, 5, 6, 7], "finished": ["identity_check_failed"], "checked": [2, 4, 8],
    }


async def refused_call(alice: Person, bob: Person) -> None:
    """alice calls bob, who accepts; bob's browser refuses alice's offer, and both say why."""
    await alice.call("bob")
    await bob.expect_ringing("alice")
    await bob.accept()
    await bob.expect_alert(f"Call ended: alice's {REFUSED}")
    await alice.expect_alert(f"Call ended: bob's {NOT_CONFIRMED}")


async def test_browsers_sign_check_and_pin_and_a_key_swapped_later_is_refused(
        people: PersonFactory, server: LiveServer, tmp_path: Path) -> None:
    """Each browser published its key when it registered, and a call between two browsers
    connects with every description signed and checked; each pinned the other's device. The
    keys and the pins outlive a reload. Then the server hands out a key of its own for alice's
    device and signs its changed offer with it: bob's browser goes by its pin and refuses."""
    alice, bob = await people("alice"), await people("bob")
    a, b = await identity(alice), await identity(bob)
    a_device, b_device = await device_of(alice), await device_of(bob)
    assert await listed_devices(server, a_device["token"]) == [(a["deviceId"], a["key"])]

    await alice.in_call_with(bob)
    assert await alice.local_storage(PINS) == {b["deviceId"]: [b_device["userId"], b["key"]]}
    assert await bob.local_storage(PINS) == {a["deviceId"]: [a_device["userId"], a["key"]]}
    await alice.hang_up()
    await expect(bob.page.locator("#home-view")).to_be_visible(timeout=STEP)

    attacker = new_private_key()
    changed: list[str] = []

    def resigned(frame: dict[str, Any]) -> dict[str, Any]:
        frame = own_fingerprint(frame)
        description = frame["description"]
        frame["signature"] = sign_description(
            attacker, frame["call_id"], frame["from_user"], frame["from_device"], b["deviceId"], "offer",
            description["sdp"])
        changed.append(frame["call_id"])
        return frame

    await bob.tamper_signaling(to_page=offers(resigned))  # a reload
    await alice.page.reload()
    await expect(alice.page.locator("#home-view")).to_be_visible(timeout=STEP)
    assert await identity(alice) == a and await identity(bob) == b  # the keys, from IndexedDB
    assert await bob.local_storage(PINS) == {a["deviceId"]: [a_device["userId"], a["key"]]}

    set_key_in_db(tmp_path, a["deviceId"], public_key_text(attacker))
    await refused_call(alice, bob)
    assert changed
    assert await bob.local_storage(PINS) == {a["deviceId"]: [a_device["userId"], a["key"]]}


async def test_a_changed_offer_is_refused_by_the_browser(
        people: PersonFactory, server: LiveServer) -> None:
    """The server puts its own certificate fingerprint in alice's offer to bob: bob's browser
    refuses it before any media, hangs up ``identity_check_failed``, and says so; alice's
    browser hears why. Both recents say the call failed its security check."""
    alice, bob = await people("alice"), await people("bob")
    changed: list[str] = []

    def fingerprint(frame: dict[str, Any]) -> dict[str, Any]:
        changed.append(frame["call_id"])
        return own_fingerprint(frame)

    await bob.tamper_signaling(to_page=offers(fingerprint))
    await refused_call(alice, bob)
    assert changed
    assert (await bob.diagnostics())["phase"] == "idle" and (await alice.diagnostics())["phase"] == "idle"
    token = (await device_of(alice))["token"]
    history = await server.http.get("/v1/calls/history", headers={"Authorization": f"Bearer {token}"})
    assert history.json()["items"][0]["end_reason"] == "identity_check_failed"
    await expect(alice.page.locator("#recents li .kind").first).to_have_text(
        "Outgoing video · security check failed", timeout=STEP)
    await expect(bob.page.locator("#recents li .kind").first).to_have_text(
        "Incoming video · security check failed", timeout=STEP)


async def test_the_browser_and_the_sdk_check_each_other(
        people: PersonFactory, sdk_device: Any) -> None:  # noqa: F811 (the fixture)
    """Browser → SDK and SDK → browser both connect: each checked the other's signed
    descriptions, and pinned the other's device key."""
    bot = await sdk_device("bot")
    alice = await people("alice")
    incoming = await browser_calls_sdk(alice, bot)
    await alice.hang_up()
    assert await incoming.wait_ended(10) is EndReason.HUNG_UP
    outgoing = await sdk_calls_browser(bot, alice)
    await outgoing.hangup()

    a, device = await identity(alice), await device_of(alice)
    assert bot.identity is not None
    assert bot.identity.pinned(a["deviceId"]) == (device["userId"], a["key"])
    assert await alice.local_storage(PINS) == {bot.device_id: [bot.user_id, bot.identity.public_key]}


async def test_tampered_descriptions_between_the_browser_and_the_sdk_are_refused(
        people: PersonFactory, sdk_device: Any) -> None:  # noqa: F811 (the fixture)
    """The server changes the browser's offer to the SDK (its own fingerprint): the SDK refuses
    it and the browser hears why. Then it strips the signature of the SDK's offer to the
    browser: the browser refuses it, and the SDK hears why."""
    bot = await sdk_device("bot")
    alice = await people("alice")
    changed: list[str] = []

    def fingerprint(frame: dict[str, Any]) -> dict[str, Any]:
        changed.append("fingerprint")
        return own_fingerprint(frame)

    def stripped(frame: dict[str, Any]) -> dict[str, Any]:
        changed.append("stripped")
        return {**frame, "signature": None}

    await alice.tamper_signaling(to_node=offers(fingerprint), to_page=offers(stripped))
    await alice.call("bot", "audio")
    incoming = await bot.next_call(timeout=15)
    await incoming.answer()
    assert await incoming.wait_ended(15) is EndReason.IDENTITY_CHECK_FAILED
    assert "not signed by its identity key" in (incoming.identity_failure or "")
    await alice.expect_alert(f"Call ended: bot's {NOT_CONFIRMED}")

    outgoing = await bot.call("alice", video=False)
    await alice.expect_ringing("bot")
    await alice.accept()
    await alice.expect_alert(f"Call ended: bot's {REFUSED}")
    assert await outgoing.wait_ended(15) is EndReason.IDENTITY_CHECK_FAILED
    assert outgoing.timings.connected is None and incoming.timings.connected is None
    assert changed == ["fingerprint", "stripped"]


async def forget_keys(person: Person) -> None:
    """Clear the page's key store (what clearing a site's data does to it)."""
    await person.page.evaluate("""() => new Promise((resolve, reject) => {
      const request = indexedDB.deleteDatabase("facecall-identity");
      request.onsuccess = () => resolve();
      request.onerror = () => reject(request.error);
      request.onblocked = () => reject(new Error("blocked"));
    })""")


async def test_a_browser_without_its_key_publishes_one_or_becomes_a_new_device(
        people: PersonFactory, server: LiveServer, tmp_path: Path) -> None:
    """A device registered before identity keys existed (no key on the server, none in the
    browser) publishes a new key when the page loads, and keeps its device. A device whose
    published key the browser no longer holds cannot sign for it: the browser becomes a new
    device (with a new key), removes the old one and says so."""
    alice = await people("alice")
    first, device = await identity(alice), await device_of(alice)
    set_key_in_db(tmp_path, first["deviceId"], None)
    await forget_keys(alice)
    await alice.page.reload()
    await expect(alice.page.locator("#home-view")).to_be_visible(timeout=STEP)
    second = await identity(alice)
    assert second["deviceId"] == first["deviceId"] and second["key"] != first["key"]
    assert await listed_devices(server, device["token"]) == [(first["deviceId"], second["key"])]

    await forget_keys(alice)
    await alice.page.reload()
    await alice.expect_notice("This browser had lost the key that secures the calls of its device")
    third, now = await identity(alice), await device_of(alice)
    assert third["deviceId"] != first["deviceId"] and now["id"] == third["deviceId"]
    await expect(alice.page.locator("#devices li")).to_have_count(1, timeout=STEP)
    assert await listed_devices(server, now["token"]) == [(third["deviceId"], third["key"])]
