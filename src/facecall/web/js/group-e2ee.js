// End-to-end encryption of group media in the browser (docs/sframe.md, "In the browser"): the
// twin of the SDK's GroupKeys (src/facecall/client/group_keys.py) and FrameCipher, and
// interoperable with them on the wire.
//
// * Frames: every encoded frame this device sends through the SFU is SFrame-encrypted (RFC 9605)
//   under its own current sender key, in a dedicated worker (sframe-worker.js) through
//   RTCRtpScriptTransform; nothing is sent before it has a key. A receive slot's frames decrypt
//   only under the keys of the device the SFU names for that slot now (setSlots): frames of
//   member M routed into the slot labelled V do not decrypt, and nobody can take another
//   sender's KIDs. A frame that does not decrypt is dropped, counted, and (video) a key frame
//   is asked for.
// * Keys: on every change of the room's member list (sfu.join's `members`, then sfu.members)
//   a new sender key (media-keys.js SenderKeys.rotate) sealed to each other member's agreement
//   key — read from the server's list and checked with that device's pinned identity key — and
//   sent to each of them as `call.key`; used SWITCH_DELAY seconds later (the first at once). A
//   device that left never gets a key made after it left; when a departed device holds the
//   key in use and no new one can be made, this device stops sending. A `call.key` received is
//   opened only if the sender device's pinned identity key signed it (ReceivedKeys keeps each
//   sender's keys apart, drops a departed one's at once, a previous one after GRACE).
//
// Membership changes are handled one at a time, the newest list only; received keys in order.
// 1:1 media uses the same keys, with the one remote device as the member list (p2p-e2ee.js).

import { IdentityError } from "./identity.js";
import { takeWorker } from "./sframe-workers.js";
import { MediaKeyError, MalformedMessage, ReceivedKeys, SenderKeys, WrongCall, openSenderKey,
  verifyAgreementKey } from "./media-keys.js";

/** Seconds between sending a new key and encrypting with it (the others must hold it first). */
export const SWITCH_DELAY = 0.3;
/** The most entries a member list may have (the SFU's rooms hold fewer). */
export const MAX_MEMBERS = 64;
/** Seconds before the agreement keys of members no key could be sealed to are looked up again,
 *  doubling each time up to RETRY_MAX (the wait starts over at every membership change): as
 *  the SDK's GroupKeys. */
export const RETRY_FIRST = 1;
export const RETRY_MAX = 30;
const KINDS = new Set(["audio", "video"]);

const isId = (value) => typeof value === "string" && value.length > 0;

/** A ``members`` list as a Map device id -> {user, joined}, this device included; entries that
 *  are not well formed are skipped (the server makes the list), as the SDK's parse_members. */
export function parseMembers(wire) {
  const members = new Map();
  if (!Array.isArray(wire)) return members;
  for (const entry of wire.slice(0, MAX_MEMBERS)) {
    if (!entry || typeof entry !== "object") continue;
    const { user_id: user, device_id: device, joined } = entry;
    if (isId(user) && isId(device) && Number.isSafeInteger(joined)) members.set(device, { user, joined });
  }
  return members;
}

const sameMembers = (a, b) => a.size === b.size && [...a].every(([device, m]) => {
  const other = b.get(device);
  return other !== undefined && other.user === m.user && other.joined === m.joined;
});

const sameSet = (a, b) => a !== null && a.size === b.size && [...a].every((x) => b.has(x));

export class GroupE2EE {
  /**
   * @param {object} o
   * @param {string} o.callId
   * @param {string} o.userId @param {string} o.deviceId  this device
   * @param {import('./identity.js').Identity} o.identity  this device's identity (its private
   *   key signs the keys it sends; other devices' keys are pinned through it)
   * @param {{privateKey: CryptoKey, publicKey: CryptoKey}} [o.agreement]  this device's X25519
   *   agreement key pair (default: ``identity.agreement``)
   * @param {import('./api.js').Api} o.api  to read other users' identity and agreement keys
   * @param {(frame: {type: "call.key", call_id: string, to_device: string, key: object}) =>
   *   Promise<object>} o.send  sends one `call.key` request over signaling; resolves with its
   *   reply, rejects on an error
   * @param {number} [o.switchDelay]  seconds (SWITCH_DELAY)
   * @param {number} [o.retryFirst]  seconds (RETRY_FIRST)
   * @param {() => void} [o.onFailure]  called if the worker fails (its script did not load, say):
   *   nothing is sent or decoded from then on, never a clear frame
   */
  constructor({ callId, userId, deviceId, identity, agreement = identity && identity.agreement, api, send,
    switchDelay = SWITCH_DELAY, retryFirst = RETRY_FIRST, onFailure = null }) {
    if (!identity || !identity.privateKey) throw new Error("group media needs this device's identity key");
    if (!agreement || !agreement.privateKey || !agreement.publicKey) {
      throw new Error("group media needs this device's agreement key (identity.js publishes it)");
    }
    Object.assign(this, { callId, userId, deviceId, identity, agreement, api, send, switchDelay, retryFirst });
    this.senderKeys = new SenderKeys({ identity: identity.privateKey, callId, userId, deviceId });
    this.received = new ReceivedKeys(callId);
    this.members = new Map(); // the room's other devices: device -> {user, joined}
    this.agreementKeys = new Map(); // device -> {joined, key} (checked; kept while the same member)
    this.inUseHolders = new Set(); // devices that hold the key in use
    this.switches = []; // pending switches to new keys, oldest first: {kid, baseKey, holders, timer}
    this.sendingKid = null; // the KID the worker encrypts with (null: it sends nothing)
    this.unsealed = new Set(); // members this device could not seal its current key to
    this.refused = {}; // call.key refused, by reason
    this.notSent = 0; // call.key requests that failed
    this.rotations = 0;
    this.frames = { encrypted: 0, decrypted: 0, dropped: {}, keyFrameRequests: 0, clear: { sent: 0, received: 0 } };
    this.pendingMembers = null;
    this.retryWait = retryFirst; // seconds before the unsealed members are tried again
    this.retryTimer = null;
    this.retrying = false; // …and it is time: the follower looks their keys up again
    this.following = null; // the membership follower's promise, while it runs
    this.keysOpened = Promise.resolve(); // the chain of received keys
    this.expiryTimer = null;
    this.closed = false;
    this.worker = takeWorker(); // loaded ahead of time (sframe-workers.js)
    this.worker.onmessage = ({ data }) => {
      if (data && data.type === "stats") this.frames = data.frames;
    };
    this.failed = false; // the worker failed: the protected senders and receivers pass nothing
    this.worker.onerror = (event) => {
      console.error("facecall: the SFrame worker failed", event.message);
      if (this.failed || this.closed) return;
      this.failed = true;
      if (onFailure) onFailure();
    };
  }

  // -------------------------------------------------------------------- media
  /** Encrypt every frame ``sender`` sends under this device's current key; nothing is sent
   *  before it has one. ``kind``: "audio" (Opus) or "video" (VP8). ``link``: a name for the
   *  transforms of one connection, which passClear(link) may later let through as they are. */
  protectSender(sender, kind, link = undefined) {
    if (!KINDS.has(kind)) throw new TypeError(`kind is audio or video, not ${kind}`);
    sender.transform = new RTCRtpScriptTransform(this.worker, { role: "send", kind, ...(link ? { link } : {}) });
  }

  /** Decrypt the frames of receive slot ``mid`` with the keys of the device that slot names
   *  now (setSlots); until a slot names a device, nothing of it is decoded. (``link``: as
   *  protectSender's.) */
  protectReceiver(receiver, kind, mid, link = undefined) {
    if (!KINDS.has(kind)) throw new TypeError(`kind is audio or video, not ${kind}`);
    if (!isId(mid)) throw new TypeError("a receive slot's mid is a non-empty string");
    receiver.transform = new RTCRtpScriptTransform(this.worker,
      { role: "receive", kind, mid, ...(link ? { link } : {}) });
  }

  /** From now on the transforms made with ``link`` pass frames on as they come, unencrypted
   *  (a 1:1 connection whose other device does not declare SFrame: p2p-e2ee.js). Never for
   *  group media. */
  passClear(link) {
    if (!isId(link)) throw new TypeError("a link is a non-empty string");
    if (!this.closed) this.worker.postMessage({ type: "clear", link });
  }

  /** Who fills each receive slot (sfu.join's `ok` and every sfu.slots: ``[{mid, kind, user_id,
   *  device_id}]``, null ids for an empty slot). Entries that are not well formed are skipped. */
  setSlots(slots) {
    if (this.closed || !Array.isArray(slots)) return;
    const entries = slots.filter((s) => s && isId(s.mid) && (s.device_id === null || isId(s.device_id)))
      .map((s) => [s.mid, s.device_id]);
    this.worker.postMessage({ type: "slots", slots: entries });
  }

  // -------------------------------------------------------------------- sending keys
  /** The room's member list (sfu.join's `ok` and sfu.members of this device's current join:
   *  ``[{user_id, device_id, joined}]``, this device included). Only the newest list waiting
   *  is applied. */
  setMembers(members) {
    if (this.closed) return;
    this.pendingMembers = parseMembers(members);
    if (!this.following) this.following = this.followMembers();
  }

  async followMembers() {
    try {
      while ((this.pendingMembers || this.retrying) && !this.closed) {
        const listed = this.pendingMembers;
        this.pendingMembers = null;
        this.retrying = false;
        try {
          if (listed) await this.membersChanged(listed);
          else await this.sealToUnsealed();
        } catch (error) { // a failed rotation must not end the follower
          console.warn("facecall: group media's key rotation failed", error);
        }
        this.armRetry();
      }
    } finally {
      this.following = null; // (in the same turn as the last look at pendingMembers)
    }
  }

  /** Look the unsealed members' agreement keys up again later, if there are any. */
  armRetry() {
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (!this.unsealed.size || this.closed) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.retrying = true;
      if (!this.following) this.following = this.followMembers();
    }, this.retryWait * 1000);
    this.retryWait = Math.min(RETRY_MAX, this.retryWait * 2);
  }

  /** A new key for every member, if one that had none can have one now (its agreement key is
   *  looked up again; the others' are known). */
  async sealToUnsealed() {
    const waiting = [...this.unsealed].filter((device) => this.members.has(device));
    const found = await Promise.all(waiting.map((device) => this.agreementKeyOf(device, this.members.get(device))));
    if (found.some(Boolean) && !this.closed) await this.rotate(this.members);
  }

  async membersChanged(listed) {
    const members = new Map([...listed].filter(([device]) => device !== this.deviceId));
    if (sameMembers(members, this.members)) return;
    this.retryWait = this.retryFirst;
    for (const [device, member] of this.members) {
      const now = members.get(device);
      if (!now || now.joined !== member.joined || now.user !== member.user) { // left, or joined again
        this.applyReceived(this.received.removeSender(device));
      }
    }
    this.members = members;
    for (const [device, { joined }] of this.agreementKeys) {
      if (!members.has(device) || members.get(device).joined !== joined) this.agreementKeys.delete(device);
    }
    let rotated = false;
    try {
      rotated = await this.rotate(members);
    } finally {
      if (!rotated && this.departedHolder()) this.stopSending();
    }
  }

  /** A new key sealed and sent to ``members`` and used after the switch delay: false if there
   *  is nobody it can be sealed to. */
  async rotate(members) {
    if (!members.size) return false; // nobody to hear: the next member gets a new key
    const known = [...members.keys()].map((device) => this.agreementKeys.get(device)).filter(Boolean)
      .map(({ key }) => key);
    let sealedTo = null;
    if (this.departedHolder() && known.length < members.size) {
      // a holder left, and keys must be read (which a server can stall): the key it holds is
      // not used meanwhile — a new one for those whose keys are known, or none
      if (known.length) {
        await this.sealAndSwitch(known);
        sealedTo = new Set(known.map((key) => key.deviceId));
      } else {
        this.stopSending();
      }
    }
    const found = await Promise.all([...members].map(([device, member]) => this.agreementKeyOf(device, member)));
    if (this.closed) return true;
    const keys = found.filter(Boolean);
    const sealable = new Set(keys.map((key) => key.deviceId));
    this.unsealed = new Set([...members.keys()].filter((device) => !sealable.has(device)));
    if (!keys.length) return false;
    if (!sameSet(sealedTo, sealable)) await this.sealAndSwitch(keys);
    return true;
  }

  /** Whether a device that holds the key in use, or one a pending switch is to, has left. */
  departedHolder() {
    const gone = (holders) => [...holders].some((device) => !this.members.has(device));
    return gone(this.inUseHolders) || this.switches.some((pending) => gone(pending.holders));
  }

  /** A new key sealed and sent to ``keys``' devices, used after the switch delay (at once if
   *  nothing is sent yet). A pending switch to a key a departed device holds is cancelled; the
   *  others go on in order (cancelling them would keep the key in use, which a departed device
   *  may hold, for another delay). */
  async sealAndSwitch(keys) {
    const message = await this.senderKeys.rotate(keys);
    const { kid, baseKey } = this.senderKeys;
    this.rotations += 1;
    await Promise.all(keys.map((key) => this.sendKey(key.deviceId, message)));
    if (this.closed) return;
    this.switches = this.switches.filter((pending) => {
      const keep = [...pending.holders].every((device) => this.members.has(device));
      if (!keep) clearTimeout(pending.timer);
      return keep;
    });
    const pending = { kid, baseKey, holders: new Set(keys.map((key) => key.deviceId)) };
    pending.timer = setTimeout(() => this.useKey(pending), this.sendingKid === null ? 0 : this.switchDelay * 1000);
    this.switches.push(pending);
  }

  /** Encrypt with a pending switch's key from now on (switches before it are superseded). */
  useKey(pending) {
    const at = this.switches.indexOf(pending);
    if (this.closed || at < 0) return;
    for (const earlier of this.switches.slice(0, at)) clearTimeout(earlier.timer);
    this.switches = this.switches.slice(at + 1);
    this.worker.postMessage({ type: "send-key", kid: pending.kid, baseKey: pending.baseKey });
    this.sendingKid = pending.kid;
    this.inUseHolders = pending.holders;
  }

  /** A device that holds the key in use left and no new key could be made: send nothing. */
  stopSending() {
    for (const pending of this.switches) clearTimeout(pending.timer);
    this.switches = [];
    this.worker.postMessage({ type: "stop" });
    this.sendingKid = null;
    this.inUseHolders = new Set();
  }

  async sendKey(device, message) {
    try {
      await this.send({ type: "call.key", call_id: this.callId, to_device: device, key: message });
    } catch (error) { // it left meanwhile, or signaling is down: the next change re-keys
      this.notSent += 1;
      console.warn(`facecall: call.key to device ${device} not sent`, error);
    }
  }

  /** A member's agreement key from the server's list, checked with the identity key pinned for
   *  that device (pinned now on first use); null (logged) if there is none that checks out. */
  async agreementKeyOf(device, member) {
    const cached = this.agreementKeys.get(device);
    if (cached && cached.joined === member.joined) return cached.key;
    try {
      const identityKey = await this.identity.keyOf(member.user, device);
      const listing = await this.api.identityKeys(this.identity.token, member.user);
      const devices = listing && Array.isArray(listing.devices) ? listing.devices : [];
      const entry = devices.find((d) => d && d.device_id === device);
      const certificate = entry ? entry.agreement_key : null;
      if (!certificate || typeof certificate !== "object" || Array.isArray(certificate)) {
        throw new IdentityError(`device ${device} of user ${member.user} has no agreement key`);
      }
      const key = await verifyAgreementKey(identityKey, { ...certificate, user_id: member.user, device_id: device },
        { userId: member.user, deviceId: device });
      this.agreementKeys.set(device, { joined: member.joined, key });
      return key;
    } catch (error) {
      console.warn(`facecall: no usable agreement key for device ${device}: it cannot read this device's media`,
        error);
      return null;
    }
  }

  // -------------------------------------------------------------------- receiving keys
  /** A `call.key` event: opened and taken in order. Resolves with null once the key is taken,
   *  or with the reason it was refused (counted in stats().refused); never rejects. */
  onKey(event) {
    const opened = this.keysOpened.then(() => this.openKey(event)).then(() => null, (error) => {
      const reason = error instanceof MediaKeyError || error instanceof IdentityError ? error.name : "Error";
      this.refused[reason] = (this.refused[reason] || 0) + 1;
      console.warn("facecall: a call.key was refused", error);
      return reason;
    });
    this.keysOpened = opened;
    return opened;
  }

  async openKey(event) {
    if (this.closed) throw new MediaKeyError("group media is closed");
    if (!event || typeof event !== "object" || !isId(event.from_user) || !isId(event.from_device)) {
      throw new MalformedMessage("a call.key event names the user and device it comes from");
    }
    if (event.call_id !== this.callId) throw new WrongCall(`a call.key of call ${event.call_id}, not ${this.callId}`);
    const { from_user: user, from_device: device } = event;
    const senderKey = await this.identity.keyOf(user, device);
    const key = await openSenderKey(event.key, { callId: this.callId, senderKey, userId: this.userId,
      deviceId: this.deviceId, agreement: this.agreement });
    if (key.senderUser !== user || key.senderDevice !== device) {
      throw new MediaKeyError(`a key of device ${key.senderDevice} relayed from ${device}`);
    }
    if (this.closed) return;
    this.applyReceived(this.received.add(key, performance.now() / 1000));
  }

  applyReceived(changes) {
    if (changes.removed.length || changes.added.length) {
      this.worker.postMessage({ type: "keys", removed: changes.removed, added: changes.added });
    }
    clearTimeout(this.expiryTimer);
    this.expiryTimer = null;
    const when = this.received.getTimer();
    if (when !== null && !this.closed) {
      this.expiryTimer = setTimeout(() => {
        this.expiryTimer = null;
        this.applyReceived(this.received.handleTimer(performance.now() / 1000));
      }, Math.max(0, when * 1000 - performance.now()));
    }
  }

  // -------------------------------------------------------------------- the rest
  /** Resolves when the member lists and keys given so far have been handled. */
  async settled() {
    while (this.following) await this.following;
    await this.keysOpened;
  }

  /** For the page's diagnostics: the room's other devices, those whose current key this device
   *  holds, those it could not seal its key to, refused call.key by reason, the frames (the
   *  worker's counts, a moment old). */
  stats() {
    return {
      members: [...this.members.keys()],
      senders: [...this.received.senders()],
      unsealed: [...this.unsealed],
      refused: { ...this.refused },
      sending: this.sendingKid !== null,
      failed: this.failed,
      rotations: this.rotations,
      notSent: this.notSent,
      frames: structuredClone(this.frames),
    };
  }

  /** Stop everything: the worker ends (protected senders send nothing from then on). */
  close() {
    this.closed = true;
    for (const pending of this.switches) clearTimeout(pending.timer);
    clearTimeout(this.expiryTimer);
    clearTimeout(this.retryTimer);
    this.pendingMembers = null;
    this.worker.terminate();
  }
}
