// SFrame (RFC 9605) on group media's encoded frames, in the browser: the twin of the SDK's
// src/facecall/client/sframe_media.py (FrameCipher, clear_bytes), the same frame on the wire:
//
//     clear bytes || SFrame header || ciphertext || tag          (AES_128_GCM_SHA256_128)
//
// The clear bytes are the VP8 frame header (RFC 6386 §9.1): 10 bytes of a key frame (the 3-byte
// frame tag, start code and dimensions), 3 of any other; audio keeps none. They are the SFrame
// metadata (§4.4.3: authenticated, not sent twice), so the SFU can read the key-frame bit and
// the browser's VP8 depacketizer the dimensions, and nobody can change them.
//
// Pure: no DOM, no worker, no clock. sframe-worker.js runs it on RTCRtpScriptTransform frames;
// tests/web/test_group_e2ee_js.py runs it in the page against the SDK's FrameCipher.

import { CipherSuite, Receiver, Sender, SFrameError, UnknownKeyId } from "./sframe.js";

/** The cipher suite of group media (RFC 9605 §4.5): a full 16-byte tag, one WebCrypto call. */
export const SUITE = CipherSuite.AES_128_GCM_SHA256_128;
/** Bytes of a VP8 frame left clear (RFC 6386 §9.1): a key frame's header, another's frame tag. */
export const VP8_KEY_FRAME_CLEAR = 10;
export const VP8_FRAME_CLEAR = 3;

/** How many leading bytes of an encoded ``frame`` (Uint8Array) of ``kind`` stay clear: the VP8
 *  frame header for video (bit 0 of byte 0 is 0 on a key frame), none for audio; never more
 *  than the frame. */
export function clearBytes(kind, frame) {
  if (kind !== "video" || !frame.length) return 0;
  return Math.min(frame.length, (frame[0] & 1) === 0 ? VP8_KEY_FRAME_CLEAR : VP8_FRAME_CLEAR);
}

/** Whether a VP8 frame (its clear first byte) is a key frame (RFC 6386 §9.1). */
export const isKeyFrame = (frame) => frame.length > 0 && (frame[0] & 1) === 0;

function concat(a, b) {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/**
 * The SFrame state of one device's group media: its Sender (this device's keys; the current
 * KID encrypts), one Receiver per sender device (that device's keys), and which device fills
 * each receive slot (by MID).
 *
 * **A frame decrypts only under the keys of the device the SFU names for the slot it arrives
 * in** (setSlot): frames of member M routed into the slot labelled V do not decrypt, and a
 * member that uses V's KIDs for keys of its own takes nothing of V's.
 *
 * ``counts`` counts frames as the SDK's FrameCipher does: ``encrypted``, ``decrypted``,
 * ``unsent`` (no key yet: nothing leaves in the clear), ``unassigned`` (a slot that names no
 * device), and each failure by its SFrameError name (``UnknownKeyId``: no such key of that
 * sender; ``AuthenticationFailed``; ``ReplayedFrame``; ``MalformedHeader``; ...).
 */
export class FrameCipher {
  constructor(suite = SUITE) {
    this.suite = suite;
    this.sender = new Sender(suite);
    this.currentKid = null;
    this.receivers = new Map(); // sender device -> {receiver: Receiver, kids: Set<number>}
    this.slots = new Map(); // MID -> sender device
    this.counts = {};
  }

  count(name) {
    this.counts[name] = (this.counts[name] || 0) + 1;
  }

  /** The KID this device encrypts with now (null: none, nothing is sent). */
  get kid() {
    return this.currentKid;
  }

  /** Encrypt with this key from the next frame on; the previous one is forgotten (a KID is
   *  never used again: media-keys.js). */
  useKey(kid, baseKey) {
    this.sender.addKey(kid, baseKey);
    const previous = this.currentKid;
    this.currentKid = kid;
    if (previous !== null) this.sender.removeKey(previous);
  }

  /** Send nothing from now on, until useKey gives a new key. */
  stop() {
    if (this.currentKid !== null) this.sender.removeKey(this.currentKid);
    this.currentKid = null;
  }

  /** Change the receiving keys, each sender device's own (ReceivedKeys' result:
   *  ``{removed: [[device, kid]], added: [[device, kid, baseKey]]}``). A device left with no
   *  key is forgotten, replay windows included. */
  apply({ removed, added }) {
    for (const [device, kid] of removed) {
      const held = this.receivers.get(device);
      if (!held || !held.kids.delete(kid)) continue;
      held.receiver.removeKey(kid);
      if (!held.kids.size) this.receivers.delete(device);
    }
    for (const [device, kid, baseKey] of added) {
      let held = this.receivers.get(device);
      if (!held) {
        held = { receiver: new Receiver(this.suite), kids: new Set() };
        this.receivers.set(device, held);
      }
      if (held.kids.has(kid)) held.receiver.removeKey(kid);
      held.receiver.addKey(kid, baseKey);
      held.kids.add(kid);
    }
  }

  /** The device that fills slot ``mid`` from now on (null: nobody), as the SFU says. */
  setSlot(mid, device) {
    if (device === null || device === undefined) this.slots.delete(mid);
    else this.slots.set(mid, device);
  }

  /** The devices with keys here. */
  senders() {
    return [...this.receivers.keys()];
  }

  /** ``clear || SFrame`` of one encoded frame (Uint8Array) of ``kind``, or null when there is
   *  no key (counted ``unsent``). */
  async encrypt(kind, frame) {
    if (this.currentKid === null) {
      this.count("unsent");
      return null;
    }
    const clear = frame.subarray(0, clearBytes(kind, frame));
    const protectedPart = await this.sender.encrypt(this.currentKid, clear, frame.subarray(clear.length));
    this.count("encrypted");
    return concat(clear, protectedPart);
  }

  /** The encoded frame in ``data`` (as encrypt made it) from device ``device`` (null: nobody),
   *  or null if it does not decrypt under that device's keys (counted by reason). */
  async decrypt(kind, data, device) {
    if (device === null || device === undefined) {
      this.count("unassigned");
      return null;
    }
    const clear = data.subarray(0, clearBytes(kind, data));
    try {
      const held = this.receivers.get(device);
      if (!held) throw new UnknownKeyId(`no key of device ${device}`);
      const plain = await held.receiver.decrypt(clear, data.subarray(clear.length));
      this.count("decrypted");
      return concat(clear, plain);
    } catch (error) {
      if (!(error instanceof SFrameError)) throw error;
      this.count(error.name);
      return null;
    }
  }

  /** decrypt() with the device that fills slot ``mid`` now. */
  decryptSlot(mid, kind, data) {
    return this.decrypt(kind, data, this.slots.has(mid) ? this.slots.get(mid) : null);
  }
}
