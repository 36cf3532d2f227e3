// The peer connection of a group call with the SFU, in the SFU's slot shape (docs/sfu.md;
// group-call.js joins with it): BUNDLE (max-bundle) and rtcp-mux; one sendrecv audio m-line
// and, in a video call, one sendrecv video m-line sent as simulcast (group-simulcast.js); then
// the receive slots, recvonly, as many of each kind as asked for; Opus and VP8 only (no RTX,
// RED or FEC: one SSRC an m-line). Every frame sent and every slot received is protected by
// the join's keys (group-e2ee.js) before the offer is made, and the offer carries every
// candidate (the SFU takes no trickled ones).

import { sendEncodings } from "./group-simulcast.js";

/** How long the offer waits for ICE gathering to complete before it goes with the candidates
 *  it has (the SFU takes no trickled candidates). */
export const GATHER_MS = 5000;
/** The codec each kind of m-line offers: the ones the SFU forwards. */
const CODECS = { audio: "audio/opus", video: "video/vp8" };
export const KINDS = ["audio", "video"];

/**
 * A new peer connection in the SFU's slot shape, protected by ``e2ee``, its offer with every
 * candidate gathered: ``{pc, slots, senders, sdp}`` (``slots``: mid -> ``{mid, kind, userId,
 * deviceId, track}``, nobody in them yet). Closed again if it cannot be made.
 * @param {object} o
 * @param {import('./media.js').LocalMedia} o.media  this device's microphone and camera
 * @param {boolean} o.video  a video call (else audio m-lines only)
 * @param {number} o.slots  receive slots per kind
 * @param {import('./group-e2ee.js').GroupE2EE} o.e2ee  the keys of this join
 * @param {object[]} o.iceServers @param {boolean} o.relayOnly
 * @param {(pc: RTCPeerConnection) => void} o.onState  its connection state changed
 */
export async function slotOffer({ media, video, slots: slotsPerKind, e2ee, iceServers, relayOnly, onState }) {
  const pc = new RTCPeerConnection({
    iceServers, iceTransportPolicy: relayOnly ? "relay" : "all",
    bundlePolicy: "max-bundle", rtcpMuxPolicy: "require",
  });
  try {
    pc.onconnectionstatechange = () => onState(pc);
    const senders = { audio: null, video: null };
    const own = [["audio", media.audioTrack]];
    if (video) own.push(["video", media.sentVideo]);
    for (const [kind, track] of own) {
      const transceiver = pc.addTransceiver(track || kind, { direction: "sendrecv", streams: [media.stream],
        ...(kind === "video" ? { sendEncodings: sendEncodings() } : {}) });
      only(transceiver, kind);
      senders[kind] = transceiver.sender;
      // nothing leaves unencrypted: one transform takes the frames of every simulcast layer
      e2ee.protectSender(transceiver.sender, kind);
    }
    const receivers = [];
    for (const kind of video ? KINDS : ["audio"]) {
      for (let i = 0; i < slotsPerKind; i += 1) {
        const transceiver = pc.addTransceiver(kind, { direction: "recvonly" });
        only(transceiver, kind);
        // Chromium (156) never applies a receiver transform first set after the offer's
        // setLocalDescription: its frames would go to the decoder as they came. So each slot
        // is protected now, under the mid it will get (transceivers are numbered in order)...
        const expected = String(pc.getTransceivers().length - 1);
        e2ee.protectReceiver(transceiver.receiver, kind, expected);
        receivers.push([transceiver, expected]);
      }
    }
    await pc.setLocalDescription(await pc.createOffer());
    const slots = new Map();
    for (const [{ mid, receiver }, expected] of receivers) { // the mids are set now
      // ...and again under its real one if the browser chose another (replacing works)
      if (mid !== expected) e2ee.protectReceiver(receiver, receiver.track.kind, mid);
      slots.set(mid, { mid, kind: receiver.track.kind, userId: null, deviceId: null, track: receiver.track });
    }
    await gathered(pc);
    return { pc, slots, senders, sdp: pc.localDescription.sdp };
  } catch (error) {
    pc.close();
    throw error;
  }
}

/** Offer only the codec the SFU forwards for ``kind`` (no RTX, RED or FEC: one SSRC an m-line). */
function only(transceiver, kind) {
  const capabilities = RTCRtpReceiver.getCapabilities(kind);
  const codecs = ((capabilities && capabilities.codecs) || [])
    .filter((codec) => codec.mimeType.toLowerCase() === CODECS[kind]);
  if (!codecs.length) throw new Error(`this browser has no ${CODECS[kind].split("/")[1]} codec`);
  transceiver.setCodecPreferences(codecs);
}

/** ICE gathering complete (or GATHER_MS passed, with at least one candidate). */
function gathered(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve, reject) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    };
    const check = () => {
      if (pc.iceGatheringState === "complete") done();
    };
    const timer = setTimeout(() => {
      pc.removeEventListener("icegatheringstatechange", check);
      if (/\r\na=candidate:/.test(pc.localDescription.sdp)) resolve();
      else reject(new Error("no network address was found for the group media"));
    }, GATHER_MS);
    pc.addEventListener("icegatheringstatechange", check);
  });
}
