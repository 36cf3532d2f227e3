"""Group media's end-to-end encryption in the browser (web/js/group-e2ee.js, sframe-worker.js,
sframe-media.js), in real Chromium:

* the frame on the wire: frames the SDK's FrameCipher encrypts (VP8 key and delta, Opus) decrypt
  in the page's FrameCipher (the code the worker runs) and the other way round; a frame decrypts
  only under the keys of the device its slot names (another device's key under the very same
  KID does not open it);
* real media: two-peer loopbacks in one page (fake camera and microphone) with GroupE2EE
  transforms at both ends — the receiver the sender keyed decodes, the raw bytes another peer
  receives are SFrame that the SDK's FrameCipher decrypts, a member the sender could not seal to
  decodes nothing and counts its drops, a slot naming another device (one that squats the
  sender's KID) decodes nothing until it names the sender;
* keys: rotation on member changes (the departed never gets the new key), a forged or malformed
  ``call.key`` refused with its reason while the object keeps working.
"""

from __future__ import annotations

import os

from facecall.client.sframe_media import FrameCipher, clear_bytes
from facecall.e2ee.media_keys import KeyChanges, make_kid
from facecall.e2ee.sframe_header import decode_header
from tests.web.people import Person
from tests.web.test_identity import page  # noqa: F401 (fixture)

# a VP8 key frame (RFC 6386 §9.1: frame tag with bit 0 clear, start code 9d 01 2a, 320x240),
# a delta frame (bit 0 set), an Opus packet: the payloads only
VP8_KEY = bytes.fromhex("5042009d012a4001f000") + os.urandom(900)
VP8_DELTA = bytes.fromhex("b10b00") + os.urandom(300)
OPUS = bytes.fromhex("fc") + os.urandom(80)
FRAMES = [("video", VP8_KEY), ("video", VP8_DELTA), ("audio", OPUS), ("video", VP8_KEY[:6]),
          ("video", b"")]

FRAMES_JS = """async ({ frames, fromPython, unseen, pythonKid, pythonKey, pageKid, pageKey }) => {
  const s = await import("/js/sframe-media.js");
  const h = (x) => Uint8Array.from(x.match(/../g) || [], (b) => parseInt(b, 16));
  const hex = (b) => b === null ? null : [...b].map((v) => v.toString(16).padStart(2, "0")).join("");
  const out = {};
  out.clear = frames.map(([kind, f]) => s.clearBytes(kind, h(f)));
  // the SDK's frames, in the slot of the device that sent them
  const cipher = new s.FrameCipher();
  cipher.apply({ removed: [], added: [["dev-p", pythonKid, h(pythonKey)],
    ["dev-q", pythonKid, crypto.getRandomValues(new Uint8Array(32))]] }); // dev-q squats the KID
  cipher.setSlot("v", "dev-p");
  cipher.setSlot("w", "dev-q");
  // not in the slot of another device (which holds the same KID under its own key) ...
  const [kind0, f0] = fromPython[0];
  out.wrongSlot = hex(await cipher.decryptSlot("w", kind0, h(f0)));
  out.fromPython = [];
  for (const [kind, f] of fromPython) out.fromPython.push(hex(await cipher.decryptSlot("v", kind, h(f))));
  // ... nor twice, nor changed, nor in an empty slot
  out.replayed = hex(await cipher.decryptSlot("v", kind0, h(f0)));
  const changed = h(unseen);
  changed[1] ^= 0x40; // a clear byte: authenticated as metadata
  out.changed = hex(await cipher.decryptSlot("v", "video", changed));
  out.unchanged = hex(await cipher.decryptSlot("v", "video", h(unseen))); // the forgery moved nothing
  out.empty = hex(await cipher.decryptSlot("x", kind0, h(f0)));
  cipher.setSlot("w", "dev-r");
  out.noKeys = hex(await cipher.decryptSlot("w", kind0, h(f0)));
  cipher.apply({ removed: [["dev-p", pythonKid]], added: [] });
  out.removed = hex(await cipher.decryptSlot("v", "audio", h(fromPython[2][1])));
  out.senders = cipher.senders();
  out.receiveCounts = cipher.counts;
  // the page's frames for the SDK: none before a key, then each under the page's KID
  const sender = new s.FrameCipher();
  out.beforeKey = hex(await sender.encrypt("video", h(frames[0][1])));
  sender.useKey(pageKid, h(pageKey));
  out.toPython = [];
  for (const [kind, f] of frames.slice(0, 3)) out.toPython.push(hex(await sender.encrypt(kind, h(f))));
  out.sendCounts = sender.counts;
  return out;
}"""


async def test_frames_interoperate_with_the_sdk(page: Person) -> None:  # noqa: F811
    python_kid, page_kid = make_kid(0x1234_5678, 0), make_kid(0x0BAD_CAFE, 3)
    python_key, page_key = os.urandom(32), os.urandom(32)
    sdk = FrameCipher()
    sdk.use_key(python_kid, python_key)
    from_python = [(kind, sdk.encrypt(kind, frame)) for kind, frame in FRAMES[:3]]
    unseen = sdk.encrypt("video", VP8_DELTA)
    assert unseen is not None
    out = await page.page.evaluate(FRAMES_JS, {
        "frames": [[kind, frame.hex()] for kind, frame in FRAMES],
        "fromPython": [[kind, frame.hex()] for kind, frame in from_python if frame is not None],
        "unseen": unseen.hex(),
        "pythonKid": python_kid, "pythonKey": python_key.hex(), "pageKid": page_kid,
        "pageKey": page_key.hex()})

    assert out["clear"] == [clear_bytes(kind, frame) for kind, frame in FRAMES] == [10, 3, 0, 6, 0]
    assert out["fromPython"] == [frame.hex() for _, frame in FRAMES[:3]]
    assert [out[k] for k in ("wrongSlot", "replayed", "changed", "empty", "noKeys", "removed")] == [None] * 6
    assert out["unchanged"] == VP8_DELTA.hex()
    assert out["senders"] == ["dev-q"]
    assert out["receiveCounts"] == {"decrypted": 4, "AuthenticationFailed": 2, "ReplayedFrame": 1,
                                    "unassigned": 1, "UnknownKeyId": 2}

    assert out["beforeKey"] is None
    assert out["sendCounts"] == {"unsent": 1, "encrypted": 3}
    receiving = FrameCipher()
    receiving.apply(KeyChanges([], [("dev-j", page_kid, page_key)]))
    for (kind, frame), wire_hex in zip(FRAMES[:3], out["toPython"], strict=True):
        wire = bytes.fromhex(wire_hex)
        clear = clear_bytes(kind, frame)
        assert wire[:clear] == frame[:clear]  # clear || SFrame header || ciphertext || tag
        header, length = decode_header(wire[clear:])
        assert header.kid == page_kid and len(wire) == clear + length + len(frame) - clear + 16
        assert receiving.decrypt(kind, wire, "dev-j") == frame
        assert receiving.decrypt(kind, wire, "dev-k") is None  # another device's slot
    assert receiving.counts == {"decrypted": 3, "UnknownKeyId": 3}


# Devices made in the page (identity and agreement keys, their listing as the server gives it),
# GroupE2EE objects for them, and an in-page relay of call.key between them (what signaling does:
# from_user / from_device added, the message through JSON).
DEVICES_JS = """
  const m = await import("/js/media-keys.js");
  const { GroupE2EE } = await import("/js/group-e2ee.js");
  const { Identity, toBase64url } = await import("/js/identity.js");
  const devices = {};
  const api = { identityKeys: async (token, userId) => ({ user_id: userId,
    devices: Object.values(devices).filter((d) => d.user === userId).map((d) => d.listed) }) };
  const device = async (user, deviceId, { published = true } = {}) => {
    const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
    const publicKey = toBase64url(await crypto.subtle.exportKey("raw", pair.publicKey));
    const agreement = await m.newAgreementKey();
    const certificate = await m.certifyAgreementKey(pair.privateKey, user, deviceId, agreement.publicKey);
    const d = { user, deviceId, privateKey: pair.privateKey, publicKey, agreement, joined: 1, certificate,
      listed: { device_id: deviceId, identity_key: publicKey,
        agreement_key: published ? { key: certificate.key, signature: certificate.signature } : null } };
    d.agreementKey = await m.verifyAgreementKey(publicKey, certificate, { userId: user, deviceId });
    devices[deviceId] = d;
    return d;
  };
  const member = (d) => ({ user_id: d.user, device_id: d.deviceId, joined: d.joined });
  const sent = []; // every call.key request: [from device, frame]
  const groups = {};
  const relay = (from) => async (frame) => {
    sent.push([from.deviceId, JSON.parse(JSON.stringify(frame))]);
    if (refuse.has(frame.to_device)) throw new Error("not_in_call");
    const to = groups[frame.to_device];
    if (to) to.onKey({ type: "call.key", call_id: frame.call_id, from_user: from.user,
      from_device: from.deviceId, key: JSON.parse(JSON.stringify(frame.key)) });
    return { type: "ok" };
  };
  const refuse = new Set();
  const group = (d, callId, options = {}) => {
    const identity = new Identity({ deviceId: d.deviceId, userId: d.user, privateKey: d.privateKey,
      publicKey: d.publicKey, api, token: "t", lookupPauses: [1] });
    groups[d.deviceId] = new GroupE2EE({ callId, userId: d.user, deviceId: d.deviceId, identity,
      agreement: d.agreement, api, send: relay(d), ...options });
    return groups[d.deviceId];
  };
  const until = async (what, test, ms = 15000) => {
    const end = performance.now() + ms;
    for (;;) {
      const value = await test();
      if (value) return value;
      if (performance.now() > end) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
"""

MEDIA_JS = "async ({ callId }) => {" + DEVICES_JS + """
  const [a, b, c, d, x] = [await device("ua", "da"), await device("ub", "db"),
    await device("uc", "dc", { published: false }), await device("ud", "dd"), await device("ux", "dx")];
  const squatter = await device("um", "dm");
  const [ga, gb, gc, gd] = [group(a, callId), group(b, callId), group(c, callId), group(d, callId)];
  // the squatter sends b and d a key of its own under the KID a is about to use, before a's
  const squat = new m.SenderKeys({ identity: squatter.privateKey, callId, userId: "um", deviceId: "dm",
    tag: ga.senderKeys.tag });
  const squatMessage = await squat.rotate([b.agreementKey, d.agreementKey]);
  for (const g of [gb, gd]) {
    await g.onKey({ type: "call.key", call_id: callId, from_user: "um", from_device: "dm",
      key: squatMessage });
  }
  // a, b, c, d and x are in the room; a sends (c published no agreement key: a cannot seal to it)
  ga.setMembers([a, b, c, d, x, squatter].map(member));
  await ga.settled();

  const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 320, height: 240 },
    audio: true });
  const vp8 = RTCRtpSender.getCapabilities("video").codecs.filter((c) => c.mimeType === "video/VP8");
  const pcs = [];
  // a -> receiver: a's transforms on the sending side; on the receiving side the receiver's
  // (GroupE2EE, slot naming ``slotDevice``), or a raw capture of the frames as they arrive
  const connect = async (receiving, slotDevice) => {
    const raw = receiving === "raw";
    const pc1 = new RTCPeerConnection();
    const pc2 = new RTCPeerConnection(raw ? { encodedInsertableStreams: true } : {});
    pcs.push(pc1, pc2);
    pc1.onicecandidate = (e) => e.candidate && pc2.addIceCandidate(e.candidate);
    pc2.onicecandidate = (e) => e.candidate && pc1.addIceCandidate(e.candidate);
    const video = pc1.addTransceiver(stream.getVideoTracks()[0], { direction: "sendonly" });
    video.setCodecPreferences(vp8);
    const audio = pc1.addTransceiver(stream.getAudioTracks()[0], { direction: "sendonly" });
    ga.protectSender(video.sender, "video");
    ga.protectSender(audio.sender, "audio");
    await pc1.setLocalDescription();
    await pc2.setRemoteDescription(pc1.localDescription);
    const captured = { video: [], audio: [], empty: 0 };
    for (const t of pc2.getTransceivers()) {
      const kind = t.receiver.track.kind;
      if (raw) {
        const { readable, writable } = t.receiver.createEncodedStreams();
        readable.pipeThrough(new TransformStream({ transform(frame, controller) {
          if (!frame.data.byteLength) captured.empty += 1; // (a Chromium audio frame without a byte)
          else if (captured[kind].length < 12) captured[kind].push(new Uint8Array(frame.data.slice(0)));
          controller.enqueue(frame);
        } })).pipeTo(writable);
      } else {
        receiving.protectReceiver(t.receiver, kind, t.mid);
      }
      const v = document.createElement(kind);
      v.muted = true;
      v.srcObject = new MediaStream([t.receiver.track]);
      v.play().catch(() => {});
    }
    if (!raw) {
      receiving.setSlots(pc2.getTransceivers().map((t) => ({ mid: t.mid, kind: t.receiver.track.kind,
        user_id: devices[slotDevice].user, device_id: slotDevice })));
    }
    await pc2.setLocalDescription();
    await pc1.setRemoteDescription(pc2.localDescription);
    return { pc: pc2, captured, slots: pc2.getTransceivers().map((t) => [t.mid, t.receiver.track.kind]) };
  };
  const inbound = async (pc) => {
    const out = {};
    for (const r of (await pc.getStats()).values()) if (r.type === "inbound-rtp") out[r.kind] = r;
    return out;
  };
  const decoded = async (pc) => ((await inbound(pc)).video || {}).framesDecoded || 0;
  const toB = await connect(gb, "da"); // b's slot names a: decodes
  const toC = await connect(gc, "da"); // c holds no key of a
  const toD = await connect(gd, "dm"); // d's slot names the squatter, who holds a's KID
  const toX = await connect("raw", null);

  await until("b to decode a's video", async () => (await decoded(toB.pc)) > 15);
  await until("c's and d's drops and key frame requests", () => [gc, gd].every((g) => {
    const f = g.stats().frames;
    return Object.values(f.dropped).reduce((n, v) => n + v, 0) > 20 && f.keyFrameRequests > 1;
  }));
  await until("the raw frames", () => toX.captured.video.length >= 12 && toX.captured.audio.length >= 12);
  const packets = async (pc) => ((await inbound(pc)).video || {}).packetsReceived || 0;
  const audioOf = async (pc) => {
    const r = (await inbound(pc)).audio || {};
    return [r.packetsReceived || 0, r.totalSamplesReceived || 0, r.concealedSamples || 0];
  };
  await new Promise((r) => setTimeout(r, 500)); // a last stats snapshot from the workers
  const out = {
    kid: ga.senderKeys.kid, baseKey: [...ga.senderKeys.baseKey],
    decodedB: await decoded(toB.pc), decodedC: await decoded(toC.pc), decodedD: await decoded(toD.pc),
    packetsC: await packets(toC.pc), packetsD: await packets(toD.pc),
    audioB: await audioOf(toB.pc), audioC: await audioOf(toC.pc),
    stats: Object.fromEntries(Object.entries(groups).map(([id, g]) => [id, g.stats()])),
    raw: { video: toX.captured.video.map((f) => [...f]), audio: toX.captured.audio.map((f) => [...f]) },
  };
  // d's slot now names a (the SFU's sfu.slots): d asks for a key frame and decodes
  gd.setSlots(toD.slots.map(([mid, kind]) => ({ mid, kind, user_id: "ua", device_id: "da" })));
  await until("d to decode a's video once its slot names a", async () => (await decoded(toD.pc)) > 5);
  out.decodedCAfter = await decoded(toC.pc);
  for (const pc of pcs) pc.close();
  stream.getTracks().forEach((t) => t.stop());
  Object.values(groups).forEach((g) => g.close());
  return out;
}"""


async def test_group_media_in_the_browser_end_to_end(page: Person) -> None:  # noqa: F811
    out = await page.page.evaluate(MEDIA_JS, {"callId": "call-media"})
    a, b, c, d = (out["stats"][k] for k in ("da", "db", "dc", "dd"))

    # a sealed its key to every member but c (no agreement key): b and d hold it, and so the
    # squatter's key under the same KID — each sender's keys apart
    assert a["unsealed"] == ["dc"] and a["sending"] and a["rotations"] == 1
    assert sorted(b["senders"]) == ["da", "dm"] and sorted(d["senders"]) == ["da", "dm"]
    assert c["senders"] == [] and b["refused"] == {} and d["refused"] == {}
    assert a["frames"]["encrypted"] > 100

    # b decodes a's video and audio (``empty``: audio frames without a byte Chromium hands on)
    dropped = {name: {k for k in stats["frames"]["dropped"] if k != "empty"}
               for name, stats in out["stats"].items()}
    assert out["decodedB"] > 15 and b["frames"]["decrypted"] > out["decodedB"] and dropped["db"] == set()
    packets, samples, concealed = out["audioB"]
    assert packets > 0 and samples > 0 and concealed < samples / 2
    # c (no key) and d (its slot names the squatter) decode nothing of what arrives, and ask
    # for key frames
    assert out["packetsC"] > 0 and out["packetsD"] > 0
    assert out["decodedC"] == 0 and out["decodedD"] == 0 and out["decodedCAfter"] == 0
    assert c["frames"]["decrypted"] == 0 and dropped["dc"] == {"UnknownKeyId"}
    assert d["frames"]["decrypted"] == 0 and dropped["dd"] == {"AuthenticationFailed"}
    assert c["frames"]["keyFrameRequests"] > 1 and d["frames"]["keyFrameRequests"] > 1
    packets, samples, concealed = out["audioC"]  # no audio played but concealment
    assert packets > 0 and concealed >= samples * 0.9

    # the bytes on the wire: SFrame under a's KID, which the SDK's FrameCipher decrypts
    sdk = FrameCipher()
    sdk.apply(KeyChanges([], [("da", out["kid"], bytes(out["baseKey"]))]))
    key_frames = 0
    # in CTR order: a's audio and video share one counter (the replay window is 128 CTRs)
    wire = [(decode_header(bytes(f)[clear_bytes(kind, bytes(f)):])[0], kind, bytes(f))
            for kind in ("video", "audio") for f in out["raw"][kind]]
    for header, kind, frame in sorted(wire, key=lambda w: w[0].ctr):
        clear = clear_bytes(kind, frame)
        assert header.kid == out["kid"]
        plain = sdk.decrypt(kind, frame, "da")
        assert plain is not None and plain[:clear] == frame[:clear], sdk.counts
        if kind == "video" and frame[0] & 1 == 0:
            key_frames += 1
            assert plain[3:6] == b"\x9d\x01\x2a"  # a VP8 key frame's start code (RFC 6386 §9.1)
    assert key_frames >= 1
    assert sdk.counts == {"decrypted": len(out["raw"]["video"]) + len(out["raw"]["audio"])}


KEYS_JS = "async ({ callId }) => {" + DEVICES_JS + """
  const [a, b, c, d, e, f, g] = [await device("ua", "da"), await device("ub", "db"), await device("uc", "dc"),
    await device("ud", "dd"), await device("ue", "de", { published: false }), await device("uf", "df"),
    await device("ug", "dg")];
  const [ga, gb, gc, gd] = [group(a, callId), group(b, callId), group(c, callId), group(d, callId)];
  // g's keys are read slowly (a server can stall a lookup) until ``release``
  let release;
  const stalled = new Promise((r) => { release = r; });
  const identityKeys = api.identityKeys;
  api.identityKeys = async (token, userId) => {
    if (userId === "ug") await stalled;
    return identityKeys(token, userId);
  };
  // what a sent since the last look: [to, kid, the message's recipients]
  let seen = 0;
  const sentByA = () => {
    const out = sent.slice(seen).filter(([from]) => from === "da").map(([, frame]) =>
      [frame.to_device, Number(frame.key.kid), frame.key.recipients.map((r) => r.device)]);
    seen = sent.length;
    return out;
  };
  const used = []; // the KIDs a's worker was told to encrypt with, in order (null: stop)
  const post = ga.worker.postMessage.bind(ga.worker);
  ga.worker.postMessage = (message) => {
    if (message.type === "send-key" || message.type === "stop") used.push(message.kid ?? null);
    post(message);
  };
  const all = () => Promise.all(Object.values(groups).map((x) => x.settled()));
  const out = { steps: [] };
  const step = async (name) => {
    await all();
    await until("a's switch to its newest key", () => !ga.switches.length);
    out.steps.push({ name, sent: sentByA(), stats: ga.stats(), held: ga.received.held() });
  };

  ga.setMembers([a, b, c].map(member));
  gb.setMembers([a, b, c].map(member)); // b sends a its key too
  await step("a, b, c");
  await until("a to send", () => ga.stats().sending);
  const fromA = (held) => held.filter(([device]) => device === "da");
  out.cHolds = fromA(gc.received.held());
  // c leaves as g joins, whose keys are slow to come: a re-keys to b at once, then b and g
  ga.setMembers([a, b, g].map(member));
  await until("a's key for b alone", () => sent.length > seen);
  await new Promise((r) => setTimeout(r, 100)); // shorter than the switch delay
  out.whileStalled = sentByA();
  release();
  await step("c left, g joined");
  out.cHoldsAfter = fromA(gc.received.held());
  out.newKeyForC = await (async () => {
    try {
      const [, frame] = sent.filter(([from, fr]) => from === "da" && fr.to_device === "db").at(-1);
      await m.openSenderKey(frame.key, { callId, senderKey: a.publicKey, userId: "uc", deviceId: "dc",
        agreement: c.agreement });
      return "opened";
    } catch (error) {
      return error.name;
    }
  })();
  // two lists at once: d joins, then e (no agreement key) too
  ga.setMembers([a, b, g, d].map(member));
  ga.setMembers([a, b, g, d, e].map(member));
  await step("d and e joined");
  // b joins again (a new peer connection: the keys it sent before are gone)
  b.joined = 2;
  ga.setMembers([a, b, g, d, e].map(member));
  await step("b joined again");

  // keys a receives: forged, malformed, then a good one
  const forged = await m.sealSenderKey(f.privateKey, callId, "ub", "db", m.makeKid(9, 0),
    new Uint8Array(32).fill(7), [a.agreementKey]);
  const fromF = await m.sealSenderKey(f.privateKey, callId, "uf", "df", m.makeKid(9, 1),
    new Uint8Array(32).fill(8), [a.agreementKey]);
  const fromD = await m.sealSenderKey(d.privateKey, callId, "ud", "dd", m.makeKid(11, 0),
    new Uint8Array(32).fill(9), [a.agreementKey]);
  const event = (user, device, key, extra = {}) => ({ type: "call.key", call_id: callId, from_user: user,
    from_device: device, key, ...extra });
  out.refusals = [];
  for (const e of [event("ub", "db", forged), event("ub", "db", fromF),
    event("ud", "dd", fromD, { call_id: "other" }), null, {}, event("ud", undefined, fromD),
    event("ud", "dd", "junk"), event("ud", "dd", { ...fromD, extra: "1" }), event("uz", "dz", fromD),
    event("ud", "dd", { ...fromD, kid: String(m.makeKid(11, 1)) })]) {
    out.refusals.push(await ga.onKey(e));
  }
  out.accepted = await ga.onKey(event("ud", "dd", fromD));
  await step("keys received");

  // nobody else left: nothing is sent; someone back: a new key
  ga.setMembers([a].map(member));
  await step("alone");
  ga.setMembers([a, d].map(member));
  await step("d back");
  await until("a to send again", () => ga.stats().sending);
  // a call.key that signaling refuses (the device left meanwhile): counted, a goes on
  refuse.add("dd");
  d.joined = 2;
  ga.setMembers([a, d].map(member));
  await step("refused by signaling");
  await until("a to send again", () => ga.stats().sending);
  out.sendingAfter = ga.stats().sending;
  out.used = used;
  Object.values(groups).forEach((x) => x.close());
  return out;
}"""


async def test_keys_rotate_with_the_members_and_refuse_what_does_not_open(page: Person) -> None:  # noqa: F811
    out = await page.page.evaluate(KEYS_JS, {"callId": "call-keys"})
    steps = {s["name"]: s for s in out["steps"]}
    tag = steps["a, b, c"]["sent"][0][1] >> 16
    k = [make_kid(tag, n) for n in range(8)]

    # a key for b and c, one message; b's own key reached a
    first = steps["a, b, c"]
    assert first["sent"] == [["db", k[0], ["db", "dc"]], ["dc", k[0], ["db", "dc"]]]
    assert first["stats"]["members"] == ["db", "dc"] and first["stats"]["senders"] == ["db"]
    assert out["cHolds"] == [["da", k[0]]]
    # c left as g joined: a new key for b at once (g's keys were slow), then for b and g;
    # c never gets one, and cannot open what b got
    assert out["whileStalled"] == [["db", k[1], ["db"]]]
    # k1 is used at its time, 0.3 s after c left (not only with k2, 0.3 s after g's keys came)
    assert out["used"][:3] == [k[0], k[1], k[2]]
    assert steps["c left, g joined"]["sent"] == [["db", k[2], ["db", "dg"]], ["dg", k[2], ["db", "dg"]]]
    assert out["cHoldsAfter"] == [["da", k[0]]] and out["newKeyForC"] == "NotAddressedToMe"
    # two lists at once: d in, then e as well (unsealed: no agreement key); c nowhere
    joined = steps["d and e joined"]
    assert joined["stats"]["unsealed"] == ["de"]
    assert [to for to, _, _ in joined["sent"]][-3:] == ["db", "dg", "dd"]
    assert joined["sent"][-1][2] == ["db", "dg", "dd"]
    # b joined again: a new key for all, and b's old keys dropped
    again = steps["b joined again"]
    assert again["sent"][0][1] > joined["sent"][-1][1] and again["sent"][0][2] == ["db", "dg", "dd"]
    assert again["stats"]["senders"] == [] and again["held"] == []
    assert all("dc" not in recipients for s in out["steps"][1:] for _, _, recipients in s["sent"])

    # refused keys, each with its reason; the good one is taken
    assert out["refusals"] == ["BadSignature", "BadSignature", "WrongCall", *["MalformedMessage"] * 5,
                               "IdentityError", "BadSignature"]
    assert out["accepted"] is None
    received = steps["keys received"]
    assert received["stats"]["refused"] == {"BadSignature": 3, "WrongCall": 1, "MalformedMessage": 5,
                                            "IdentityError": 1}
    assert received["stats"]["senders"] == ["dd"] and received["held"] == [["dd", make_kid(11, 0)]]

    # alone: nothing sent (the holders left); d back: a new key
    assert steps["alone"]["sent"] == [] and not steps["alone"]["stats"]["sending"]
    assert steps["alone"]["held"] == []
    back = steps["d back"]["sent"]
    assert len(back) == 1 and back[0][0] == "dd" and back[0][2] == ["dd"]
    refused = steps["refused by signaling"]
    assert refused["stats"]["notSent"] == 1 and len(refused["sent"]) == 1 and out["sendingAfter"]
    # the keys a used, in the order it made them; none while it was alone
    stop = out["used"].index(None)
    before, after = out["used"][:stop], out["used"][stop + 1:]
    assert before == sorted(before) and after == sorted(after) and after[0] > before[-1]
    assert steps["alone"]["stats"]["rotations"] == steps["b joined again"]["stats"]["rotations"]


RETRY_JS = "async ({ callId }) => {" + DEVICES_JS + """
  const [a, b, e] = [await device("ua", "da"), await device("ub", "db"),
    await device("ue", "de", { published: false })];
  const ga = group(a, callId, { retryFirst: 0.05 });
  ga.setMembers([a, b, e].map(member));
  await ga.settled();
  const out = { first: ga.stats(), sentFirst: sent.map(([, f]) => f.to_device) };
  await new Promise((r) => setTimeout(r, 250)); // looked up again at 0.05 and 0.15 s: still none
  out.waiting = ga.stats();
  out.sentWaiting = sent.length;
  e.listed.agreement_key = { key: e.certificate.key, signature: e.certificate.signature }; // published
  await until("a key sealed to e", () => ga.stats().unsealed.length === 0 && sent.length > out.sentWaiting);
  await ga.settled();
  out.after = ga.stats();
  out.sentAfter = sent.slice(out.sentWaiting)
    .map(([, f]) => [f.to_device, f.key.recipients.map((r) => r.device)]);
  ga.close();
  return out;
}"""


async def test_a_member_whose_agreement_key_was_missing_gets_a_key_once_it_is_published(
        page: Person) -> None:  # noqa: F811
    """e had published no agreement key: a could seal it nothing (unsealed). a looks it up again
    later (the wait doubling, as the SDK's GroupKeys): once it is there, a new key for everyone,
    e included; no new key while it is still missing."""
    out = await page.page.evaluate(RETRY_JS, {"callId": "call-retry"})
    assert out["first"]["unsealed"] == ["de"] and out["sentFirst"] == ["db"]
    assert out["waiting"]["unsealed"] == ["de"] and out["waiting"]["rotations"] == 1
    assert out["sentWaiting"] == 1
    assert out["after"]["unsealed"] == [] and out["after"]["rotations"] == 2
    assert sorted(out["sentAfter"]) == [["db", ["db", "de"]], ["de", ["db", "de"]]]
