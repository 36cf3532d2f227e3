// SFrame end to end on a 1:1 call's P2P media (DESIGN.md invariant 1; docs/web.md, "1:1 media:
// SFrame"): the same frames, keys and worker as group media (group-e2ee.js), over the peer
// connection with the other person's device instead of the SFU.
//
// * Declared in the signed SDP: a device that protects its 1:1 media adds the session-level
//   line `a=facecall-sframe` to the text of every description it sends (the text it signs; its
//   own peer connection keeps the description it made). A connection's media is SFrame-
//   protected iff the description this device sent and the one it received both carry it
//   (peer.js settles it once per connection); otherwise it is DTLS-SRTP only, and the call
//   screen says so. The server cannot strip the line: it is inside the signature.
// * Frames: as group media's (Opus; VP8 on the video transceiver, its header bytes clear: an
//   offer lists the other video codecs after VP8's family, so that a device that declares
//   nothing and sends H.264 only can still answer; the answer to an offer that declares is
//   VP8 only),
//   through RTCRtpScriptTransform transforms put on the transceivers as they are made, before
//   the offer or answer (Chromium 156 ignores a receiver transform first set later). They
//   protect from the start: nothing is sent before this device has a key, and a frame that
//   does not decrypt under the keys of the connection's remote device is dropped. A connection
//   that turns out not to be protected has its transforms pass frames on as they come
//   (GroupE2EE.passClear); an answer to an offer without the line gets no transforms (nor
//   codec limits) at all.
// * Keys: GroupE2EE with a member list of one: {remote device -> {user, joined: epoch}}. The
//   epoch is 0 once this device first knows a connection with that device is protected, +1
//   when that device lost its state and this one sets the media up anew (`call.rejoin`: its
//   page reloaded); another device of the other person (`call.handed_off`) replaces the member,
//   at epoch 0. Each change is a new sender key sealed to that device and sent as `call.key`.

import { GroupE2EE } from "./group-e2ee.js";

/** The session-level attribute that declares SFrame on 1:1 media (before the first m= line). */
export const SFRAME_LINE = "a=facecall-sframe";
/** The codecs a declaring device sends: Opus, and VP8 (with its retransmission and
 *  redundancy formats, which carry the protected frames as they are). */
const CODECS = {
  audio: new Set(["audio/opus"]),
  video: new Set(["video/vp8", "video/rtx", "video/red", "video/ulpfec", "video/flexfec-03"]),
};
const MEDIA_CODEC = { audio: "audio/opus", video: "video/vp8" };

/** ``sdp`` with SFRAME_LINE inserted before its first m= line (once), in its line endings. */
export function declareSFrame(sdp) {
  if (declaresSFrame(sdp)) return sdp;
  const at = sdp.search(/^m=/m);
  const eol = sdp.includes("\r\n") ? "\r\n" : "\n";
  if (at < 0) return `${sdp}${sdp.endsWith("\n") ? "" : eol}${SFRAME_LINE}${eol}`;
  return `${sdp.slice(0, at)}${SFRAME_LINE}${eol}${sdp.slice(at)}`;
}

/** Whether ``sdp`` declares SFrame: SFRAME_LINE at session level (before the first m= line). */
export function declaresSFrame(sdp) {
  if (typeof sdp !== "string") return false;
  const at = sdp.search(/^m=/m);
  const session = at < 0 ? sdp : sdp.slice(0, at);
  return session.split(/\r\n|\r|\n/).includes(SFRAME_LINE);
}

/** Whether this browser can protect frames (W3C WebRTC Encoded Transform). */
export const canProtect = () => typeof RTCRtpScriptTransform === "function";

/** The transforms and codecs of one peer connection (peer.js), all its receivers naming its
 *  remote device: made by P2PE2EE.link. */
export class Link {
  constructor(e2ee, label, remoteDevice) {
    this.e2ee = e2ee;
    this.label = label; // the transforms' link and the receivers' slot: one per connection
    this.remoteDevice = remoteDevice;
    this.prepared = new Set(); // transceivers done
    e2ee.keys.setSlots([{ mid: label, device_id: remoteDevice }]);
  }

  /** Opus or VP8 first on ``transceiver`` (``only``: nothing else, for an answer to an offer
   *  that declares SFrame), and its frames through the keys' worker: before the offer or answer
   *  that negotiates it. (On a protected connection a frame of another codec does not decrypt
   *  anywhere; on one that is not, it passes as it is.) */
  prepare(transceiver, { only = false } = {}) {
    if (this.prepared.has(transceiver) || transceiver.stopped) return;
    this.prepared.add(transceiver);
    const kind = transceiver.receiver.track.kind;
    const all = (RTCRtpReceiver.getCapabilities(kind) || {}).codecs || [];
    const ours = all.filter((codec) => CODECS[kind].has(codec.mimeType.toLowerCase()));
    if (!ours.some((codec) => codec.mimeType.toLowerCase() === MEDIA_CODEC[kind])) {
      throw new Error(`this browser has no ${MEDIA_CODEC[kind]} codec`);
    }
    const others = all.filter((codec) => !CODECS[kind].has(codec.mimeType.toLowerCase()));
    transceiver.setCodecPreferences(only ? ours : [...ours, ...others]);
    const keys = this.e2ee.keys;
    keys.protectSender(transceiver.sender, kind, this.label);
    keys.protectReceiver(transceiver.receiver, kind, this.label, this.label);
  }

  /** The connection is not protected (the other device does not declare SFrame): its frames
   *  pass on as they come. */
  passClear() {
    this.e2ee.keys.passClear(this.label);
  }
}

/** The SFrame keys of one call's 1:1 media (its connections come and go; the keys stay). */
export class P2PE2EE {
  /** @param {object} o  callId, userId, deviceId, identity, api, send: as GroupE2EE's */
  constructor(o) {
    this.keys = new GroupE2EE(o);
    this.remote = null; // {device, user, epoch}: the member, once a connection was protected
    this.links = 0;
  }

  link(remoteDevice) {
    this.links += 1;
    return new Link(this, `p2p${this.links}`, remoteDevice);
  }

  /** A connection with ``device`` (of ``user``) is protected: it is the member (at epoch 0 if
   *  it is a new one). */
  agreed(device, user) {
    if (!this.remote || this.remote.device !== device) this.remote = { device, user, epoch: 0 };
    this.apply();
  }

  /** ``device`` lost its state (its page reloaded): a new epoch, a new key. */
  rejoined(device) {
    if (!this.remote || this.remote.device !== device) return;
    this.remote.epoch += 1;
    this.apply();
  }

  /** The other person moved the call from ``from`` to ``to``: the new device is the member. */
  handedOff(from, to, user) {
    if (!this.remote || this.remote.device !== from || from === to) return;
    this.remote = { device: to, user, epoch: 0 };
    this.apply();
  }

  apply() {
    const { device, user, epoch } = this.remote;
    this.keys.setMembers([{ user_id: user, device_id: device, joined: epoch }]);
  }

  onKey(event) {
    return this.keys.onKey(event);
  }

  stats() {
    return { ...this.keys.stats(), epoch: this.remote ? this.remote.epoch : null };
  }

  close() {
    this.keys.close();
  }
}

/** What the call screen says of the media's protection (inside the security code's
 *  details): ``true`` SFrame, ``false`` DTLS-SRTP only, null nothing. */
function showProtection(agreed) {
  const details = typeof document !== "undefined" && document.getElementById("security");
  if (!details) return;
  let line = document.getElementById("media-protection");
  if (!line) {
    line = document.createElement("p");
    line.id = "media-protection";
    line.className = "security-help";
    details.append(line);
  }
  line.hidden = agreed === null;
  details.dataset.sframe = agreed === null ? "" : String(agreed);
  let text = "";
  if (agreed) {
    text = "Pictures and sound are also end-to-end encrypted with SFrame: only this device and the "
      + "other person's can decrypt them.";
  } else if (agreed === false) {
    text = `${canProtect() ? "The other person's device does not support SFrame"
      : "This browser cannot encrypt calls with SFrame"}: pictures and sound are encrypted between `
      + "the two devices with DTLS-SRTP only.";
  }
  line.textContent = text;
}

/** The part of a Call (call.js) about its 1:1 media's SFrame: the keys (made when first
 *  needed), a Link for each peer connection, and what the member list follows. */
export class CallProtection {
  /** @param {import('./call.js').Call} call */
  constructor(call) {
    this.call = call;
    this.e2ee = undefined; // made when first needed; null: this browser cannot protect
    this.agreed = null; // the current connection's: true SFrame, false DTLS-SRTP only
  }

  /** The call's keys, made now if need be (null when this browser cannot protect frames). */
  keys() {
    if (this.e2ee !== undefined) return this.e2ee;
    const { call } = this;
    const host = call.host;
    if (!call.id || call.ended) return null; // (not yet, or no more)
    this.e2ee = null;
    // (a device whose agreement key the server does not have could get no key: it declares
    // nothing, and its media is DTLS-SRTP only)
    if (!canProtect() || host.identity.agreementPublished === false) return null;
    try {
      this.e2ee = new P2PE2EE({
        callId: call.id, userId: host.tokens().userId, deviceId: host.signaling.welcome.device_id,
        identity: host.identity, api: host.api,
        send: ({ to_device: toDevice, key }) => host.signaling.request("call.key",
          { call_id: call.id, to_device: toDevice, key }),
        onFailure: () => {
          if (call.ended || call.group) return;
          host.view.error("End-to-end encryption could not start on this page, so the call's "
            + "pictures and sound can be neither sent nor played here. Reload the page to try again.");
        },
      });
    } catch (error) { // (not signed in or connected yet: tried again when next needed)
      console.warn("facecall: 1:1 media cannot be SFrame-protected yet", error);
      this.e2ee = undefined;
      return null;
    }
    return this.e2ee;
  }

  /** The Link of a new peer connection with ``remoteDevice`` (null: it declares nothing). */
  link(remoteDevice) {
    this.agreed = null;
    const e2ee = this.keys();
    return e2ee ? e2ee.link(remoteDevice) : null;
  }

  /** The current peer connection settled whether its media is protected. */
  onAgreement(peer, agreed) {
    this.agreed = agreed;
    if (agreed && this.e2ee) this.e2ee.agreed(peer.remoteDevice, this.call.peerId);
    if (!agreed) console.warn(`facecall: device ${peer.remoteDevice} does not declare SFrame: DTLS-SRTP only`);
    showProtection(agreed);
  }

  /** The other device asks for the media anew (`call.rejoin`): it lost its state. */
  rejoined(device) {
    if (this.e2ee) this.e2ee.rejoined(device);
  }

  /** `call.handed_off`, for the call's remote device ``from``. */
  handedOff(from, event) {
    if (this.e2ee) this.e2ee.handedOff(from, event.to_device, event.user_id);
  }

  /** A `call.key` for the 1:1 media; resolves with null or the reason it was refused. */
  onKey(event) {
    const e2ee = this.keys();
    if (!e2ee) return Promise.resolve("NotProtected");
    return e2ee.onKey(event);
  }

  diagnostics() {
    let e2ee = null;
    try {
      e2ee = this.e2ee ? this.e2ee.stats() : null;
    } catch (error) {
      e2ee = { error: String(error) };
    }
    return { sframe: this.agreed, capable: canProtect(), e2ee };
  }

  /** The call ended here or went to the SFU: the keys go (its worker with them). */
  close() {
    if (this.e2ee) this.e2ee.close();
    this.e2ee = null;
    this.agreed = null;
    showProtection(null);
  }
}
