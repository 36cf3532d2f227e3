"""SFrame in the browser (web/js/sframe.js, RFC 9605), in real Chromium: every published test
vector (tests/e2ee/vectors/sframe-rfc9605.json), frames encrypted by Python decrypted by the page
and the other way round, for every cipher suite, and the same errors as Python's for bad input.
One test, one page: a browser test is expensive."""

from __future__ import annotations

from typing import Any

from facecall.e2ee.sframe import MAX_FRAME, CipherSuite, Receiver, Sender, decode_header
from tests.e2ee.test_sframe import VECTORS
from tests.web.people import Person
from tests.web.test_identity import page  # noqa: F401 (fixture)

MAX64 = (1 << 64) - 1
BASE_KEY = bytes(range(100, 132))
METADATA = b"rtp header extension"
PLAINTEXT = b"an encoded video frame " * 20

SFRAME_JS = """async ({ vectors, fromPython, baseKey, metadata, plaintext, maxFrame }) => {
  const m = await import("/js/sframe.js");
  const h = (s) => Uint8Array.from(s.match(/../g) || [], (x) => parseInt(x, 16));
  const hex = (b) => [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  const why = async (work) => {
    try {
      await work();
      return null;
    } catch (error) {
      return error instanceof m.SFrameError ? error.name : `not an SFrameError: ${error}`;
    }
  };
  const out = { header: [], ctrHmac: [], sframe: [], fromPython: [], toPython: [], errors: {} };
  for (const v of vectors.header) {
    const d = m.decodeHeader(h(v.encoded + "abcdef"));
    out.header.push([hex(m.encodeHeader(BigInt(v.kid), BigInt(v.ctr))), `${d.kid}`, `${d.ctr}`, d.length]);
  }
  for (const v of vectors.aes_ctr_hmac) {
    const aead = await m.Aead.create(v.cipher_suite, h(v.key));
    const ct = await aead.encrypt(h(v.nonce), h(v.aad), h(v.pt));
    out.ctrHmac.push([hex(ct), hex(await aead.decrypt(h(v.nonce), h(v.aad), ct))]);
  }
  for (const v of vectors.sframe) {
    const { key, salt } = await m.deriveKeySalt(v.cipher_suite, BigInt(v.kid), h(v.base_key));
    const sender = new m.Sender(v.cipher_suite);
    await sender.addKey(BigInt(v.kid), h(v.base_key));
    const frame = await sender.encrypt(BigInt(v.kid), h(v.metadata), h(v.pt), { ctr: BigInt(v.ctr) });
    const receiver = new m.Receiver(v.cipher_suite);
    await receiver.addKey(BigInt(v.kid), h(v.base_key));
    const got = await receiver.decryptFrame(h(v.metadata), h(v.ct));
    out.sframe.push({ labels: [hex(m.label("key", v.cipher_suite, BigInt(v.kid))),
      hex(m.label("salt", v.cipher_suite, BigInt(v.kid)))], key: hex(key), salt: hex(salt),
      ct: hex(frame), pt: hex(got.plaintext), kid: `${got.kid}`, ctr: `${got.ctr}` });
  }
  // Python's frames, and frames for Python: CTR 0 and 1 of KID 7, then CTR 2^64-1 of KID 2^64-1
  for (const f of fromPython) {
    const receiver = new m.Receiver(f.suite);
    await receiver.addKey(BigInt(f.kid), h(baseKey));
    out.fromPython.push(hex(await receiver.decrypt(h(metadata), h(f.frame))));
  }
  for (const suite of Object.values(m.CipherSuite)) {
    const sender = new m.Sender(suite);
    const big = m.MAX_VALUE;
    await Promise.all([sender.addKey(7, h(baseKey)), sender.addKey(big, h(baseKey))]);
    const frames = await Promise.all([sender.encrypt(7, h(metadata), h(plaintext)),
      sender.encrypt(7, h(metadata), h(plaintext)),
      sender.encrypt(big, h(metadata), h(plaintext), { ctr: big })]);
    out.toPython.push([suite, frames.map(hex)]);
    // bad input, each its own error
    const e = {};
    const receiver = new m.Receiver(suite, { replayWindow: 4 });
    await receiver.addKey(7, h(baseKey));
    const frame = frames[1];
    e.truncated = [];
    for (let n = 0; n < frame.length; n++) {
      e.truncated.push(await why(() => receiver.decrypt(h(metadata), frame.subarray(0, n))));
    }
    const flip = (bytes, at) => { const b = Uint8Array.from(bytes); b[at] ^= 1; return b; };
    e.flippedCiphertext = await why(() => receiver.decrypt(h(metadata), flip(frame, 3)));
    e.flippedTag = await why(() => receiver.decrypt(h(metadata), flip(frame, frame.length - 1)));
    e.flippedMetadata = await why(() => receiver.decrypt(flip(h(metadata), 0), frame));
    e.flippedCtr = await why(() => receiver.decrypt(h(metadata), flip(frame, 0)));  // CTR 1 -> 0
    e.first = await why(() => receiver.decrypt(h(metadata), frame));
    e.replayed = await why(() => receiver.decrypt(h(metadata), frame));
    e.unknownKid = await why(() => receiver.decrypt(h(metadata), frames[2]));
    e.nonMinimal = await why(() => receiver.decrypt(h(metadata), h("8007" + "00".repeat(16))));
    e.notBytes = await why(() => receiver.decrypt(h(metadata), "text"));
    e.tooLarge = await why(() => sender.encrypt(7, h(metadata), new Uint8Array(maxFrame + 1)));
    e.tooLargeFrame = await why(() => receiver.decrypt(h(metadata), new Uint8Array(maxFrame + 17 + 17)));
    e.reused = await why(() => sender.encrypt(7, h(metadata), h(plaintext), { ctr: 1 }));
    e.exhausted = await why(() => sender.encrypt(big, h(metadata), h(plaintext)));
    e.beyond64 = await why(() => sender.encrypt(7, h(metadata), h(plaintext), { ctr: big + 1n }));
    e.kidInUse = await why(() => sender.addKey(7, h(baseKey)));
    e.shortKey = await why(() => receiver.addKey(8, new Uint8Array(15)));
    out.errors[suite] = e;
  }
  // the replay window alone: out of order within it, too old, a jump
  const sender = new m.Sender(4);
  const receiver = new m.Receiver(4, { replayWindow: 4 });
  await Promise.all([sender.addKey(1, h(baseKey)), receiver.addKey(1, h(baseKey))]);
  const frames = [];
  for (let i = 0; i < 10; i++) frames.push(await sender.encrypt(1, new Uint8Array(0), Uint8Array.of(i)));
  out.window = [];
  for (const i of [5, 5, 3, 3, 2, 1, 9, 5, 6]) {
    out.window.push(await why(() => receiver.decrypt(new Uint8Array(0), frames[i])));
  }
  return out;
}"""


def as_strings(vectors: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """The vectors with KIDs and CTRs as decimal strings: 64-bit integers do not survive a trip
    through JSON into JavaScript numbers."""
    return {kind: [{k: str(x) if k in ("kid", "ctr") else x for k, x in v.items()} for v in vs]
            for kind, vs in vectors.items()}


async def test_sframe_js_vectors_errors_and_python_interop(page: Person) -> None:  # noqa: F811
    """sframe.js gives every published vector, decrypts Python's frames, makes frames Python
    decrypts, and refuses bad input with the error Python gives it."""
    from_python = []
    for suite in CipherSuite:
        sender = Sender(suite)
        sender.add_key(MAX64 - 1, BASE_KEY)
        frame = sender.encrypt(MAX64 - 1, METADATA, PLAINTEXT, ctr=MAX64 - 5)
        from_python.append({"suite": int(suite), "kid": str(MAX64 - 1), "frame": frame.hex()})
    out = await page.page.evaluate(SFRAME_JS, {
        "vectors": as_strings(VECTORS), "fromPython": from_python, "baseKey": BASE_KEY.hex(),
        "metadata": METADATA.hex(), "plaintext": PLAINTEXT.hex(), "maxFrame": MAX_FRAME})

    # the published vectors
    assert out["header"] == [[v["encoded"], str(v["kid"]), str(v["ctr"]), len(v["encoded"]) // 2]
                             for v in VECTORS["header"]]
    assert out["ctrHmac"] == [[v["ct"], v["pt"]] for v in VECTORS["aes_ctr_hmac"]]
    assert out["sframe"] == [{"labels": [v["sframe_key_label"], v["sframe_salt_label"]],
                              "key": v["sframe_key"], "salt": v["sframe_salt"], "ct": v["ct"],
                              "pt": v["pt"], "kid": str(v["kid"]), "ctr": str(v["ctr"])}
                             for v in VECTORS["sframe"]]

    # Python -> JS and JS -> Python
    assert out["fromPython"] == [PLAINTEXT.hex()] * len(CipherSuite)
    assert [suite for suite, _ in out["toPython"]] == [int(s) for s in CipherSuite]
    for suite, frames in out["toPython"]:
        receiver = Receiver(CipherSuite(suite))
        receiver.add_key(7, BASE_KEY)
        receiver.add_key(MAX64, BASE_KEY)
        decrypted = [receiver.decrypt_frame(METADATA, bytes.fromhex(f)) for f in frames]
        assert decrypted == [(7, 0, PLAINTEXT), (7, 1, PLAINTEXT), (MAX64, MAX64, PLAINTEXT)]
        # and the page's frame is byte for byte Python's
        sender = Sender(CipherSuite(suite))
        sender.add_key(7, BASE_KEY)
        assert sender.encrypt(7, METADATA, PLAINTEXT).hex() == frames[0]

    # bad input: the names of Python's errors
    for suite in CipherSuite:
        e = out["errors"][str(int(suite))]
        frame = bytes.fromhex(out["toPython"][int(suite) - 1][1][1])
        header_length = decode_header(frame)[1]
        assert e["truncated"] == [
            "MalformedHeader" if n < header_length else
            "MalformedFrame" if n < header_length + suite.tag_length else "AuthenticationFailed"
            for n in range(len(frame))]
        assert {k: v for k, v in e.items() if k != "truncated"} == {
            "flippedCiphertext": "AuthenticationFailed", "flippedTag": "AuthenticationFailed",
            "flippedMetadata": "AuthenticationFailed", "flippedCtr": "AuthenticationFailed",
            "first": None, "replayed": "ReplayedFrame", "unknownKid": "UnknownKeyId",
            "nonMinimal": "MalformedHeader", "notBytes": "InvalidInput", "tooLarge": "FrameTooLarge",
            "tooLargeFrame": "FrameTooLarge", "reused": "CounterReused", "exhausted": "CounterExhausted",
            "beyond64": "ValueOutOfRange", "kidInUse": "KeyIdInUse", "shortKey": "ValueOutOfRange"}
    assert out["window"] == [None, "ReplayedFrame", None, "ReplayedFrame", None, "ReplayedFrame", None,
                             "ReplayedFrame", None]
