"""Media keys in the browser (web/js/media-keys.js), in real Chromium: the known answer of
tests/e2ee/test_media_keys.py byte for byte, a message sealed by Python opened by the page and one
sealed by the page opened by Python (with keys the page made, its agreement key not
extractable), and the same error as Python's for each bad message. One test, one page."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from facecall.e2ee.agreement import (
    MediaKeyError,
    certify_agreement_key,
    new_agreement_key,
    verify_agreement_key,
)
from facecall.e2ee.identity import public_key_text
from facecall.e2ee.media_keys import NotAddressedToMe, make_kid, open_sender_key, seal_sender_key
from tests.e2ee.test_media_keys import (
    ALICE,
    B_IDENTITY_SEED,
    BASE_KEY,
    BOB,
    CAROL,
    KID,
    KNOWN_CERTIFICATE,
    KNOWN_MESSAGE,
    SCENARIO,
    SENDER,
    SENDER_PUBLIC,
    SENDER_SEED,
    Device,
    agreement,
    ed,
    open_as_b,
    resign,
    run_scenario,
    small_order_encodings,
    x,
)
from tests.web.people import Person
from tests.web.test_identity import page  # noqa: F401 (fixture)

PRELUDE = """
  const m = await import("/js/media-keys.js");
  const h = (s) => Uint8Array.from(s.match(/../g) || [], (b) => parseInt(b, 16));
  const hex = (b) => [...new Uint8Array(b)].map((v) => v.toString(16).padStart(2, "0")).join("");
  // PKCS #8 (RFC 8410) of a raw private key: a fixed prefix, then the 32 bytes
  const pkcs8 = (oid, raw) => Uint8Array.from([0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03,
    0x2b, 0x65, oid, 0x04, 0x22, 0x04, 0x20, ...h(raw)]);
  const ed = (raw) => crypto.subtle.importKey("pkcs8", pkcs8(0x70, raw), "Ed25519", false, ["sign"]);
  const xPrivate = (raw) => crypto.subtle.importKey("pkcs8", pkcs8(0x6e, raw), "X25519", false,
    ["deriveBits"]);
  const xPublic = (raw) => crypto.subtle.importKey("raw", h(raw), { name: "X25519" }, true, []);
  const why = async (work) => {
    try {
      await work();
      return null;
    } catch (error) {
      return error instanceof m.MediaKeyError ? error.name : `not a MediaKeyError: ${error}`;
    }
  };
"""

FIRST_JS = "async (a) => {" + PRELUDE + """
  const out = {};
  // the known answer
  const bob = { privateKey: await xPrivate(a.bob), publicKey: await xPublic(a.bobPublic) };
  const carol = { privateKey: await xPrivate(a.carol), publicKey: await xPublic(a.carolPublic) };
  out.certificate = await m.certifyAgreementKey(await ed(a.bIdentitySeed), "user-b", "device-b",
    bob.publicKey);
  const b = await m.verifyAgreementKey(a.bIdentity, a.certificate,
    { userId: "user-b", deviceId: "device-b" });
  const c = { userId: "user-c", deviceId: "device-c", key: await m.agreementPublicText(carol.publicKey),
    publicKey: carol.publicKey };
  const ephemeral = { privateKey: await xPrivate(a.alice), publicKey: await xPublic(a.alicePublic) };
  out.message = await m.sealSenderKey(await ed(a.senderSeed), "call-1", "user-a", "device-a", a.kid,
    h(a.baseKey), [b, c], { ephemeral });
  const asB = { callId: "call-1", senderKey: a.sender, userId: "user-b", deviceId: "device-b",
    agreement: bob };
  out.openedB = await m.openSenderKey(a.knownMessage, asB);
  out.openedB.baseKey = hex(out.openedB.baseKey);
  out.openedC = hex((await m.openSenderKey(a.knownMessage, { ...asB, userId: "user-c", deviceId: "device-c",
    agreement: carol })).baseKey);
  // bad messages and certificates: the error names
  out.cases = [];
  for (const [message, callId, userId, deviceId] of a.cases) {
    out.cases.push(await why(() => m.openSenderKey(message, { ...asB, callId, userId, deviceId })));
  }
  out.otherKey = await why(async () => m.openSenderKey(a.knownMessage,
    { ...asB, agreement: await crypto.subtle.generateKey({ name: "X25519" }, false, ["deriveBits"]) }));
  out.uncertified = await why(() => m.verifyAgreementKey(a.sender, a.certificate,
    { userId: "user-b", deviceId: "device-b" }));
  out.anotherDevice = await why(() => m.verifyAgreementKey(a.bIdentity, a.certificate,
    { userId: "user-b", deviceId: "device-x" }));
  out.smallOrderCertificate = await why(() => m.verifyAgreementKey(a.bIdentity,
    { ...a.certificate, key: "A".repeat(43) }, { userId: "user-b", deviceId: "device-b" }));
  out.smallOrder = a.smallOrder.map((raw) => m.isSmallOrder(h(raw)));
  out.notSmallOrder = [a.bobPublic, a.alicePublic, a.carolPublic].map((raw) => m.isSmallOrder(h(raw)));
  out.tooMany = await why(() => m.sealSenderKey(null, "call-1", "user-a", "device-a", 1, h(a.baseKey),
    Array.from({ length: 65 }, (_, i) => ({ ...c, deviceId: `device-${i}` }))));
  // this page as a device of its own: keys it makes, a key it seals to the Python device
  const identity = await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
  const own = await m.newAgreementKey();
  window.mediaKeysTest = { own };
  const { toBase64url } = await import("/js/identity.js");
  out.ownIdentity = toBase64url(await crypto.subtle.exportKey("raw", identity.publicKey));
  out.extractable = [identity.privateKey.extractable, own.privateKey.extractable];
  out.ownCertificate = await m.certifyAgreementKey(identity.privateKey, "user-j", "device-j", own.publicKey);
  const python = await m.verifyAgreementKey(a.python.identity, a.python.certificate,
    { userId: "user-p", deviceId: "device-p" });
  const baseKey = crypto.getRandomValues(new Uint8Array(32));
  out.toPython = await m.sealSenderKey(identity.privateKey, "call-2", "user-j", "device-j", a.jsKid, baseKey,
    [python, c]);
  out.toPythonKey = hex(baseKey);
  // the rotation rules: this page as a sender (to the Python device and device-c), and a receiver
  const keys = new m.SenderKeys({ identity: identity.privateKey, callId: "call-2", userId: "user-j",
    deviceId: "device-j", tag: 77 });
  out.rotated = [await keys.rotate([python, c]), await keys.rotate([python])];
  out.rotatedKeys = [hex(keys.baseKey), keys.kid];
  out.resealed = await keys.reseal([python]);
  out.resealToStranger = await why(() => keys.reseal([c]));
  const received = new m.ReceivedKeys("call-1", { grace: 5.0, maxSenders: 3 });
  out.scenario = [];
  for (const [op, ...args] of a.scenario) {
    let changes;
    try {
      if (op === "timer") changes = received.handleTimer(args[0]);
      else if (op === "remove") changes = received.removeSender(args[0]);
      else {
        const [device, tag, number, now] = args;
        const baseKey = op === "conflict" ? new Uint8Array(32) : new Uint8Array(32).fill(number + 1);
        changes = received.add({ callId: op === "other-call" ? "call-2" : "call-1", senderUser: "user",
          senderDevice: device, kid: m.makeKid(tag, number), baseKey }, now);
      }
    } catch (error) {
      out.scenario.push(error instanceof m.MediaKeyError ? error.name : `${error}`);
      continue;
    }
    out.scenario.push([changes.removed, changes.added.map(([device, kid]) => [device, kid]),
      received.getTimer(), received.held()]);
  }
  return out;
}"""

SECOND_JS = "async (a) => {" + PRELUDE + """
  const opened = await m.openSenderKey(a.message, { callId: "call-2", senderKey: a.sender, userId: "user-j",
    deviceId: "device-j", agreement: window.mediaKeysTest.own });
  return [opened.senderDevice, opened.kid, hex(opened.baseKey)];
}"""


def public_hex(private_hex: str) -> str:
    return x(private_hex).public_key().public_bytes_raw().hex()


def bad_cases() -> list[tuple[dict[str, Any], str, str, str]]:
    """Bad messages (opened as device-b of call-1 unless said otherwise)."""
    known = KNOWN_MESSAGE
    entry = known["recipients"][0]  # type: ignore[index]
    swapped = [{**entry, "device": "device-c", "user": "user-c"}, {**known["recipients"][1],  # type: ignore[index]
                                                                   "device": "device-b", "user": "user-b"}]
    messages = [
        {**known, "call_id": "call-2"}, {**known, "signature": "A" * 86}, {**known, "kid": "01"},
        {**known, "recipients": [entry] * 65}, {**known, "epk": "A" * 43}, {**known, "recipients": swapped},
        resign({**known, "kid": str(KID + 1)}), {**known, "extra": "1"},
    ]
    cases = [(message, "call-1", "user-b", "device-b") for message in messages]
    cases += [(known, "call-2", "user-b", "device-b"), (known, "call-1", "user-b", "device-d"),
              (known, "call-1", "user-x", "device-b")]
    return cases


def python_error(case: tuple[dict[str, Any], str, str, str]) -> str | None:
    message, call_id, user_id, device_id = case
    try:
        open_as_b(message, call_id=call_id, user_id=user_id, device_id=device_id)
    except MediaKeyError as error:
        return type(error).__name__
    return None


async def test_media_keys_js_known_answer_interop_and_errors(page: Person) -> None:  # noqa: F811
    python = Device("p")
    python_certificate = certify_agreement_key(python.identity, python.user, python.device, python.key)
    cases = bad_cases()
    js_kid = make_kid(int.from_bytes(os.urandom(4), "big"), 0xFFFF)  # the largest number of a tag
    out = await page.page.evaluate(FIRST_JS, {
        "bob": BOB, "bobPublic": public_hex(BOB), "carol": CAROL, "carolPublic": public_hex(CAROL),
        "alice": ALICE, "alicePublic": public_hex(ALICE), "bIdentitySeed": B_IDENTITY_SEED,
        "bIdentity": public_key_text(ed(B_IDENTITY_SEED)), "senderSeed": SENDER_SEED,
        "sender": SENDER_PUBLIC,
        "certificate": KNOWN_CERTIFICATE, "knownMessage": KNOWN_MESSAGE, "kid": KID,
        "baseKey": BASE_KEY.hex(),
        "cases": cases, "scenario": SCENARIO, "jsKid": js_kid,
        "smallOrder": [raw.hex() for raw in small_order_encodings()],
        "python": {"identity": public_key_text(python.identity), "certificate": python_certificate},
    })

    # the known answer, byte for byte
    assert out["certificate"] == KNOWN_CERTIFICATE
    assert out["message"] == KNOWN_MESSAGE
    assert out["openedB"] == {"callId": "call-1", "senderUser": "user-a", "senderDevice": "device-a",
                              "kid": KID, "baseKey": BASE_KEY.hex()}
    assert out["openedC"] == BASE_KEY.hex()

    # bad input: the error Python gives the same input
    expected = [python_error(case) for case in cases]
    assert out["cases"] == expected
    assert expected == ["WrongCall", "BadSignature", "MalformedMessage", "MessageTooLarge", "SmallOrderKey",
                        "BadSignature", "UndecryptableEntry", "MalformedMessage", "WrongCall",
                        "NotAddressedToMe", "NotAddressedToMe"]
    assert [out["otherKey"], out["uncertified"], out["anotherDevice"], out["tooMany"],
            out["smallOrderCertificate"]] == [
        "UndecryptableEntry", "UncertifiedKey", "UncertifiedKey", "MessageTooLarge", "SmallOrderKey"]
    assert out["smallOrder"] == [True] * len(small_order_encodings())
    assert out["notSmallOrder"] == [False] * 3

    # the page -> Python: its certificate checks with its identity key, its message opens
    assert out["extractable"] == [False, False]
    page_key = verify_agreement_key(out["ownIdentity"], out["ownCertificate"], user_id="user-j",
                                    device_id="device-j")
    opened = open_sender_key(json.loads(json.dumps(out["toPython"])), call_id="call-2",
                             sender_key=out["ownIdentity"], user_id=python.user, device_id=python.device,
                             agreement=python.key)
    assert (opened.sender_device, opened.kid, opened.base_key.hex()) == (
        "device-j", js_kid, out["toPythonKey"])
    assert open_sender_key(out["toPython"], call_id="call-2", sender_key=out["ownIdentity"], user_id="user-c",
                           device_id="device-c", agreement=x(CAROL)).base_key == opened.base_key

    # the page's SenderKeys: a new KID and key on each change, only to the members of the moment
    first, second = (open_sender_key(message, call_id="call-2", sender_key=out["ownIdentity"],
                                     user_id=python.user, device_id=python.device, agreement=python.key)
                     for message in out["rotated"])
    assert (first.kid, second.kid) == (make_kid(77, 0), make_kid(77, 1)) and first.base_key != second.base_key
    assert [second.base_key.hex(), second.kid] == out["rotatedKeys"]
    assert open_sender_key(out["resealed"], call_id="call-2", sender_key=out["ownIdentity"],
                           user_id=python.user, device_id=python.device, agreement=python.key) == second
    with pytest.raises(NotAddressedToMe):
        open_sender_key(out["rotated"][1], call_id="call-2", sender_key=out["ownIdentity"],
                        user_id="user-c", device_id="device-c", agreement=x(CAROL))
    assert out["resealToStranger"] == "MediaKeyError"
    # the page's ReceivedKeys lives the same life as Python's
    assert out["scenario"] == run_scenario(SCENARIO)

    # Python -> the page
    base_key = os.urandom(32)
    message = seal_sender_key(SENDER, "call-2", "user-a", "device-a", 12345, base_key,
                              [page_key, agreement("user-q", "device-q", new_agreement_key())])
    assert await page.page.evaluate(SECOND_JS, {"message": message, "sender": SENDER_PUBLIC}) == [
        "device-a", 12345, base_key.hex()]


DEPARTED_JS = """async ({ call }) => {
  const m = await import("/js/media-keys.js");
  const keys = new m.ReceivedKeys(call);
  const key = { callId: call, senderUser: "dave", senderDevice: "d1", kid: m.makeKid(5, 3),
                baseKey: new Uint8Array(32) };
  keys.add(key, 0);
  const removed = keys.removeSender("d1").removed;
  let replayed = "taken";
  try { keys.add(key, 1); } catch (e) { replayed = e.name; }
  const kids = keys.held().length;
  const back = keys.add({ ...key, kid: m.makeKid(6, 0) }, 2).added.length;  // a new tag: it came back
  return { removed, replayed, kids, back };
}"""


async def test_a_departed_senders_key_replayed_stays_refused_in_the_browser(page: Person) -> None:  # noqa: F811
    """The twin of tests/client/test_group_e2e_audit.py's rule: a departed device's current key,
    replayed (or in flight when it left), does not come back; a new key of that device does."""
    out = await page.page.evaluate(DEPARTED_JS, {"call": "call-audit"})
    assert out == {"removed": [["d1", make_kid(5, 3)]], "replayed": "StaleKey", "kids": 0, "back": 1}
