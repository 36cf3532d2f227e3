"""Safety numbers in the browser (web/js/safety-number.js; docs/security.md, "Safety numbers"):
the same sixty digits as the SDK's (the known answer of tests/e2ee/test_safety_number.py), the
same on both people's screens, shown in the "Verify a contact" panel and marked as verified
there or in a call, where the line under the security code says "Verified", "Safety number
changed" or "Verify bob"; and no number at all when the server lists another key for a device
this browser has called."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import expect

from facecall.e2ee.identity import new_private_key, public_key_text
from facecall.e2ee.safety_number import half
from tests.e2ee.test_safety_number import KEY_A, KEY_B, KNOWN
from tests.live import LiveServer, MakeDevice
from tests.web.conftest import PersonFactory
from tests.web.people import PASSWORD, STEP, Person
from tests.web.test_identity import identity, page, set_key_in_db  # noqa: F401 (fixture)
from tests.web.test_python_peer import sdk_device  # noqa: F401 (fixture)

KNOWN_ANSWER_JS = """async ({ keyA, keyB }) => {
  const m = await import("/js/safety-number.js");
  const why = async (work) => {
    try {
      await work();
      return null;
    } catch (error) {
      return `${error.name}: ${error.message}`;
    }
  };
  const out = {
    halves: [await m.half("user-a", [keyA]), await m.half("user-b", [keyB, keyB])],
    both: [await m.half("user-a", [keyA, keyB]), await m.half("user-a", [keyB, keyA])],
    ab: await m.safetyNumber(["user-a", [keyA]], ["user-b", [keyB]]),
    ba: await m.safetyNumber(["user-b", [keyB]], ["user-a", [keyA]]),
    noKey: await why(() => m.half("user-a", [])),
    badKey: await why(() => m.half("user-a", [keyA.slice(0, -1) + "p"])),
  };
  // the checks on the server's lists, with a stand-in server and identity
  let lists = {};
  const me = { userId: "user-a", deviceId: "device-a", publicKey: keyA, token: "t",
    api: { identityKeys: async (token, userId) => lists[userId] },
    pinned: (id) => JSON.parse(localStorage.getItem("facecall.pinnedKeys") || "{}")[id] || null };
  const listing = (b) => ({
    "user-a": { devices: [{ device_id: "device-a", identity_key: keyA }] },
    "user-b": { devices: [{ device_id: "device-b", identity_key: b }] } });
  localStorage.clear();
  lists = listing(keyB);
  const first = await m.safetyNumberWith(me, "user-b", "bob");
  out.first = [first.number, first.status];
  out.pins = JSON.parse(localStorage.getItem("facecall.pinnedKeys"));
  m.setVerified("user-a", "user-b", first.number);
  out.again = (await m.safetyNumberWith(me, "user-b", "bob")).status;
  lists = listing(keyA); // the server swaps bob's pinned key
  out.swapped = await why(() => m.safetyNumberWith(me, "user-b", "bob"));
  lists = { ...listing(keyB), "user-a": { devices: [] } }; // and leaves out this device's own
  out.notMine = await why(() => m.safetyNumberWith(me, "user-b", "bob"));
  lists["user-a"] = listing(keyB)["user-a"];
  lists["user-b"].devices.push({ device_id: "device-c", identity_key: keyA }); // bob's new device
  out.added = (await m.safetyNumberWith(me, "user-b", "bob")).status;
  return out;
}"""


async def test_the_known_answer_and_the_checks_on_the_servers_lists(page: Person) -> None:  # noqa: F811
    """safety-number.js gives Python's known answer in either order and refuses what has no
    number; safetyNumberWith pins the other person's keys, says verified / changed, and shows no
    number when the server swaps a pinned key or does not list this device's own."""
    out = await page.page.evaluate(KNOWN_ANSWER_JS, {"keyA": KEY_A, "keyB": KEY_B})
    assert out["halves"] == ["764512186548196660116264019842", "759919002969879200700347072705"]
    assert out["both"] == [half("user-a", [KEY_A, KEY_B])] * 2  # the keys sorted, as Python does
    assert out["ab"] == out["ba"] == KNOWN
    assert "user user-a has no device with an identity key" in out["noKey"]
    assert "canonical" in out["badKey"]
    assert out["first"] == [KNOWN, "unverified"]
    assert out["pins"] == {"device-b": ["user-b", KEY_B]}
    assert out["again"] == "verified"
    assert out["swapped"] == ("SafetyNumberError: The server lists another key for a device of bob's you "
                              "have called — someone may be in the middle.")
    assert "does not list this browser's own key" in out["notMine"]
    assert out["added"] == "changed"


async def number_shown(person: Person, username: str) -> str:
    """Look ``username`` up in the "Verify a contact" panel; the sixty digits it shows."""
    await person.page.locator("#verify-username").fill(username)
    await person.page.get_by_role("button", name="Show number").click()
    digits = person.page.get_by_role("group", name="Safety number")
    await expect(digits.locator("span")).to_have_count(12, timeout=STEP)
    return " ".join(await digits.locator("span").all_inner_texts())


async def expect_status(person: Person, status: str, text: str) -> None:
    line = person.page.locator("#verify-status")
    await expect(line).to_have_attribute("data-status", status, timeout=STEP)
    await expect(line).to_contain_text(text)


async def test_both_browsers_and_the_sdk_show_the_same_number(
        people: PersonFactory, sdk_device: MakeDevice) -> None:  # noqa: F811 (the fixture)
    """bob signed up with the SDK and also signed in with a browser; alice's browser, bob's
    browser and bob's SDK device show the same sixty digits. Unknown users and yourself have
    none, and say so."""
    bot = await sdk_device("bob")
    bob = await people("bob", signup=False)
    alice = await people("alice")
    number = await number_shown(alice, "bob")
    await expect_status(alice, "unverified", "Not verified yet")
    assert await number_shown(bob, "alice") == number
    sdk = await bot.safety_number("alice")
    assert (sdk.number, sdk.status) == (number, "unverified")
    assert len(number.replace(" ", "")) == 60

    await alice.page.locator("#verify-username").fill("nobody")
    await alice.page.get_by_role("button", name="Show number").click()
    await expect(alice.page.locator("#verify-error")).to_have_text("No user named nobody.", timeout=STEP)
    await expect(alice.page.locator("#verify-result")).to_be_hidden()
    await alice.page.locator("#verify-username").fill("alice")
    await alice.page.get_by_role("button", name="Show number").click()
    await expect(alice.page.locator("#verify-error")).to_contain_text("That is you", timeout=STEP)


async def add_device(server: LiveServer, username: str) -> None:
    """``username`` registers another device, with a key of its own (a new phone, say)."""
    signed_in = await server.http.post("/v1/sessions", json={"username": username, "password": PASSWORD})
    assert signed_in.status_code == 200, signed_in.text
    token = signed_in.json()["token"]
    response = await server.http.post(
        "/v1/devices", headers={"Authorization": f"Bearer {token}"},
        json={"kind": "ios", "name": "phone", "identity_key": public_key_text(new_private_key())})
    assert response.status_code in (200, 201), response.text


async def test_verified_in_settings_shows_in_calls_and_a_new_device_changes_it(
        people: PersonFactory, server: LiveServer) -> None:
    """alice marks her number with bob as verified: her call screen says "Verified", bob's (who
    did not) offers "Verify alice", and he marks it there. bob adds a device: alice's panel and
    her next call say the number changed, and so does bob's (his own keys are in it too)."""
    alice, bob = await people("alice"), await people("bob")
    number = await number_shown(alice, "bob")
    await alice.page.get_by_role("button", name="Mark as verified").click()
    await expect_status(alice, "verified", "Verified: you compared this number with bob.")

    await alice.in_call_with(bob)
    await expect(alice.page.locator("#call-safety-status")).to_have_text("Verified", timeout=STEP)
    verify = bob.page.get_by_role("button", name="Verify alice")
    await verify.click()
    digits = bob.page.locator("#call-safety").get_by_role("group", name="Safety number")
    assert " ".join(await digits.locator("span").all_inner_texts()) == number
    await bob.page.locator("#call-safety").get_by_role("button", name="Mark as verified").click()
    await expect(bob.page.locator("#call-safety-status")).to_have_text("Verified")
    await alice.hang_up()
    await expect(bob.page.locator("#home-view")).to_be_visible(timeout=STEP)
    await expect(bob.page.locator("#call-safety")).to_be_hidden()

    await add_device(server, "bob")
    changed = await number_shown(alice, "bob")
    assert changed != number
    await expect_status(alice, "changed", "Safety number changed since you verified it")
    await alice.in_call_with(bob)
    # bob's own keys changed too: the number is over both people's
    for person in (alice, bob):
        status = person.page.locator("#call-safety-status")
        await expect(status).to_have_text("Safety number changed", timeout=STEP)


async def test_a_key_swapped_for_a_device_met_shows_no_number(
        people: PersonFactory, tmp_path: Path) -> None:
    """alice has seen bob's device (its key pinned); then the server lists another key for it:
    the panel refuses to show a number, and says why."""
    alice, bob = await people("alice"), await people("bob")
    await number_shown(alice, "bob")
    set_key_in_db(tmp_path, (await identity(bob))["deviceId"], public_key_text(new_private_key()))
    await alice.page.get_by_role("button", name="Show number").click()
    await expect(alice.page.locator("#verify-error")).to_have_text(
        "No safety number with bob: The server lists another key for a device of bob's you have called "
        "— someone may be in the middle.", timeout=STEP)
    await expect(alice.page.locator("#verify-result")).to_be_hidden()
