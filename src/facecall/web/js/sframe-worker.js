// The dedicated worker of group media's end-to-end encryption (group-e2ee.js starts it, one per
// call): every encoded frame of the senders and receivers it was given
// (RTCRtpScriptTransform, W3C WebRTC Encoded Transform §5) goes through its FrameCipher
// (sframe-media.js), the twin of the SDK's (docs/sframe.md, "In the browser").
//
// Messages from the page (all plain objects, `type` first):
//   {type: "send-key", kid, baseKey}   encrypt with this key from the next frame on
//   {type: "stop"}                      send nothing until the next "send-key"
//   {type: "keys", removed: [[device, kid]], added: [[device, kid, baseKey]]}   receiving keys
//   {type: "slots", slots: [[mid, device | null]]}   who fills each receive slot now
//   {type: "clear", link}   the transforms made with this ``link`` option pass frames on as
//                           they come (a 1:1 connection whose other device does not declare
//                           SFrame: p2p-e2ee.js); until then, and without a link, they protect
// To the page: {type: "stats", frames: {encrypted, decrypted, dropped: {reason: n},
// keyFrameRequests, clear: {sent, received}}}, at most every STATS_INTERVAL ms while frames flow.
//
// A frame that does not decrypt is dropped (never given to the decoder), counted by reason
// (the FrameCipher's, and ``empty``: a frame without a byte, which Chromium sometimes gives an
// audio receiver), and a video receiver asks its sender for a key frame
// (RTCRtpScriptTransformer.sendKeyFrameRequest(), which sends a PLI/FIR: RFC 4585 §6.3.1,
// RFC 5104 §4.3.1) at most every KEY_FRAME_REQUEST_INTERVAL ms — and at once when the keys or
// the sender of its slot change, so the picture comes back at the next key frame.

import { FrameCipher, isKeyFrame } from "./sframe-media.js";

export const KEY_FRAME_REQUEST_INTERVAL = 500; // ms
export const STATS_INTERVAL = 200; // ms
const SUPPORTED = { audio: "audio/opus", video: "video/vp8" };

const cipher = new FrameCipher();
const receivers = new Set(); // the state of each receiving transform (see receive())
const clearLinks = new Set(); // links whose frames pass on as they come ("clear")
const clear = { sent: 0, received: 0 }; // frames passed on so, unencrypted
let keyFrameRequests = 0;
let statsTimer = null;

function postStats() {
  statsTimer = null;
  const { encrypted = 0, decrypted = 0, ...dropped } = cipher.counts;
  self.postMessage({ type: "stats", frames: { encrypted, decrypted, dropped, keyFrameRequests,
    clear: { ...clear } } });
}

function statsChanged() {
  if (statsTimer === null) statsTimer = setTimeout(postStats, STATS_INTERVAL);
}

/** Whether this frame's codec is one SFrame is wired for here (the SFU carries Opus and VP8);
 *  a frame of another codec is never sent, in the clear or otherwise. */
function supported(kind, frame) {
  const mimeType = frame.getMetadata().mimeType;
  return mimeType === undefined || mimeType.toLowerCase() === SUPPORTED[kind];
}

/** Whether the frames of a transform made with option ``link`` pass on as they come. */
function passesClear(link, direction, frame, controller) {
  if (link === undefined || !clearLinks.has(link)) return false;
  clear[direction] += 1;
  controller.enqueue(frame);
  statsChanged();
  return true;
}

function send(kind, link) {
  return new TransformStream({
    async transform(frame, controller) {
      if (passesClear(link, "sent", frame, controller)) return;
      if (!supported(kind, frame)) {
        cipher.count("UnsupportedCodec");
      } else {
        const data = await cipher.encrypt(kind, new Uint8Array(frame.data));
        if (data !== null) {
          frame.data = data.buffer;
          controller.enqueue(frame);
        }
      }
      statsChanged();
    },
  });
}

function askKeyFrame(state, now) {
  if (state.kind !== "video" || now - state.lastRequest < KEY_FRAME_REQUEST_INTERVAL) return;
  state.lastRequest = now;
  keyFrameRequests += 1;
  state.transformer.sendKeyFrameRequest().catch(() => {}); // refused while nothing was received
}

function receive(state) {
  const { kind, mid, link } = state;
  return new TransformStream({
    async transform(frame, controller) {
      if (passesClear(link, "received", frame, controller)) return;
      const data = new Uint8Array(frame.data);
      if (!data.length) { // Chromium hands receivers an empty audio frame now and then: nothing to decode
        cipher.count("empty");
        statsChanged();
        return;
      }
      const plain = await cipher.decryptSlot(mid, kind, data);
      if (plain === null) {
        state.waiting = kind === "video"; // for a key frame that decrypts
        askKeyFrame(state, performance.now());
      } else {
        if (kind === "video" && isKeyFrame(plain)) state.waiting = false;
        frame.data = plain.buffer;
        controller.enqueue(frame);
      }
      statsChanged();
    },
  });
}

/** The receivers that dropped frames since their last key frame and may decode now: asked at
 *  once (the rate limit starts over). */
function askWaiting(devices) {
  const now = performance.now();
  for (const state of receivers) {
    if (state.waiting && devices.has(cipher.slots.get(state.mid))) {
      state.lastRequest = -Infinity;
      askKeyFrame(state, now);
    }
  }
}

self.onrtctransform = (event) => {
  const transformer = event.transformer;
  const { role, kind, mid, link } = transformer.options;
  if (role === "send") {
    transformer.readable.pipeThrough(send(kind, link)).pipeTo(transformer.writable)
      .catch(() => {}); // the sender's transform was replaced or the connection closed
    return;
  }
  const state = { transformer, kind, mid, link, lastRequest: -Infinity, waiting: false };
  receivers.add(state);
  transformer.readable.pipeThrough(receive(state)).pipeTo(transformer.writable)
    .catch(() => {})
    .finally(() => receivers.delete(state));
};

self.onmessage = ({ data: message }) => {
  if (message.type === "send-key") {
    cipher.useKey(message.kid, message.baseKey);
  } else if (message.type === "stop") {
    cipher.stop();
  } else if (message.type === "keys") {
    cipher.apply(message);
    askWaiting(new Set(message.added.map(([device]) => device)));
  } else if (message.type === "clear") {
    clearLinks.add(message.link);
  } else if (message.type === "slots") {
    const changed = new Set();
    for (const [mid, device] of message.slots) {
      if ((cipher.slots.get(mid) ?? null) !== device) changed.add(device);
      cipher.setSlot(mid, device);
    }
    askWaiting(changed);
  }
};
