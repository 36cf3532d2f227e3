// Per-sender media keys (docs/sframe.md, "Key distribution (the core)"): agreement keys (X25519,
// RFC 7748) certified by the device's identity key, a sender's SFrame base_key sealed to each
// device of the call, and opened by each. The twin of src/facecall/e2ee/agreement.py and
// media_keys.py, which hold the spec: the same statements, HKDF info, AAD, wire form, limits
// and error names; tests/web/test_media_keys_js.py checks the same known answer in both and
// opens each one's messages with the other.
//
// WebCrypto only (X25519 deriveBits, HKDF, AES-GCM, Ed25519), so the API is async. Private keys
// are made non-extractable: an agreement private key cannot be read out of the page.
// KIDs are Numbers (they are below 2^48); bytes are Uint8Array.
//
// The rotation rules are here too (SenderKeys, ReceivedKeys), with the same results and errors.

import { keyBytes, toBase64url } from "./identity.js";

export const AGREEMENT_DOMAIN = "facecall agreement v1\n";
export const SEAL_DOMAIN = "facecall sender key seal v1\n";
export const SIGN_DOMAIN = "facecall sender key v1\n";
export const VERSION = "1";
export const MAX_RECIPIENTS = 64;
export const BASE_KEY_BYTES = 32;
const SEALED_BYTES = BASE_KEY_BYTES + 16;
export const MAX_KID = 2 ** 48 - 1;
const MAX_NUMBER = 0xffff;
export const GRACE = 5.0; // seconds a sender's previous key is kept once a new one came
export const MAX_SENDERS = 256;
const MAX_RETIRED_TAGS = 8;
const MESSAGE_FIELDS = ["v", "call_id", "sender_user", "sender_device", "kid", "epk", "recipients", "signature"];
const ENTRY_FIELDS = ["user", "device", "sealed"];
const CERTIFICATE_FIELDS = ["user_id", "device_id", "key", "signature"];
const ID = /^[!-~]{1,64}$/;
const KID = /^(0|[1-9][0-9]{0,14})$/;
const X25519 = { name: "X25519" };
const ED25519 = { name: "Ed25519" };
// RFC 7748 §4.1's prime and the u-coordinates of small order (as agreement.py's SMALL_ORDER_U)
const P = 2n ** 255n - 19n;
const SMALL_ORDER_U = new Set([0n, 1n, P - 1n,
  325606250916557431795983626356110631294008115727848805560023387167927233504n,
  39382357235489614581723060781553021112529911719440698176882885853963445705823n]);

// -- errors: the names of the Python classes ----------------------------------------------------
export class MediaKeyError extends Error {
  constructor(message) {
    super(message);
    this.name = new.target.name;
  }
}
export class MalformedMessage extends MediaKeyError {}
export class MessageTooLarge extends MediaKeyError {}
export class SmallOrderKey extends MediaKeyError {}
export class UncertifiedKey extends MediaKeyError {}
export class BadSignature extends MediaKeyError {}
export class WrongCall extends MediaKeyError {}
export class NotAddressedToMe extends MediaKeyError {}
export class UndecryptableEntry extends MediaKeyError {}
export class StaleKey extends MediaKeyError {}
export class KeyConflict extends MediaKeyError {}
export class TooManySenders extends MediaKeyError {}
export class KeysExhausted extends MediaKeyError {}

// -- encodings -----------------------------------------------------------------------------------
const ascii = (text) => new TextEncoder().encode(text);

/** The ``size`` bytes of an unpadded, canonical base64url string; MalformedMessage otherwise. */
export function unb64(text, size, what) {
  const chars = Math.floor((size * 4 + 2) / 3);
  if (typeof text !== "string" || text.length !== chars || !/^[A-Za-z0-9_-]*$/.test(text)) {
    throw new MalformedMessage(`${what} must be ${chars} base64url characters`);
  }
  const binary = atob(text.replaceAll("-", "+").replaceAll("_", "/") + "=".repeat((4 - (text.length % 4)) % 4));
  const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
  if (bytes.length !== size || toBase64url(bytes) !== text) {
    throw new MalformedMessage(`${what} is not the canonical base64url of ${size} bytes`);
  }
  return bytes;
}

function checkId(name, value) {
  if (typeof value !== "string" || !ID.test(value)) {
    throw new MalformedMessage(`${name} must be 1-64 printable ASCII characters without spaces`);
  }
  return value;
}

function kidText(kid) {
  if (!Number.isSafeInteger(kid) || kid < 0 || kid > MAX_KID) {
    throw new MalformedMessage(`a KID is an integer in 0..2^48-1, not ${kid}`);
  }
  return String(kid);
}

function parseKid(text) {
  if (typeof text !== "string" || !KID.test(text) || Number(text) > MAX_KID) {
    throw new MalformedMessage("a KID is the decimal of 0..2^48-1, no leading zeros");
  }
  return Number(text);
}

/** ``tag << 16 | number``: key ``number`` (0-65535) of the sender with the 32-bit ``tag``. */
export function makeKid(tag, number) {
  if (!Number.isInteger(tag) || tag < 0 || tag >= 2 ** 32 || !Number.isInteger(number) || number < 0 ||
      number > 0xffff) {
    throw new RangeError("a tag is 32 bits and a key number 16");
  }
  return tag * 65536 + number;
}

// -- agreement keys (agreement.py) ---------------------------------------------------------------
/** True if X25519 with the 32-byte public key ``raw`` is all zeros for any private key. */
export function isSmallOrder(raw) {
  let u = 0n;
  for (let i = raw.length - 1; i >= 0; i--) u = (u << 8n) | BigInt(raw[i]);
  return SMALL_ORDER_U.has((u & ((1n << 255n) - 1n)) % P);
}

/** The CryptoKey of a written agreement public key; MalformedMessage, or SmallOrderKey. */
export async function agreementPublicFromText(text) {
  const raw = unb64(text, 32, "an agreement key");
  if (isSmallOrder(raw)) throw new SmallOrderKey("an agreement key of small order (its shared secret is all zeros)");
  return crypto.subtle.importKey("raw", raw, X25519, true, []);
}

/** The 43-character text of an agreement public CryptoKey. */
export async function agreementPublicText(publicKey) {
  return toBase64url(await crypto.subtle.exportKey("raw", publicKey));
}

/** A new agreement key pair; the private key is not extractable (RFC 7748 §6.1). */
export async function newAgreementKey() {
  return crypto.subtle.generateKey(X25519, false, ["deriveBits"]);
}

async function sharedSecret(privateKey, publicKey) {
  let bits;
  try {
    bits = new Uint8Array(await crypto.subtle.deriveBits({ name: "X25519", public: publicKey }, privateKey, 256));
  } catch {
    throw new SmallOrderKey("the X25519 shared secret is all zeros (a key of small order)");
  }
  if (bits.every((b) => b === 0)) throw new SmallOrderKey("the X25519 shared secret is all zeros (a key of small order)");
  return bits;
}

export function agreementStatement(userId, deviceId, key) {
  checkId("user_id", userId);
  checkId("device_id", deviceId);
  unb64(key, 32, "an agreement key");
  return ascii(AGREEMENT_DOMAIN + [userId, deviceId, key].join("\n"));
}

/** The certificate of this device's agreement public key, signed with its identity CryptoKey. */
export async function certifyAgreementKey(identity, userId, deviceId, publicKey) {
  const key = await agreementPublicText(publicKey);
  const signature = await crypto.subtle.sign(ED25519, identity, agreementStatement(userId, deviceId, key));
  return { user_id: userId, device_id: deviceId, key, signature: toBase64url(signature) };
}

async function verifies(identityKey, signature, data) {
  try {
    const raw = keyBytes(identityKey); // refuses the keys of small order, as identity.py does
    const key = await crypto.subtle.importKey("raw", raw, ED25519, false, ["verify"]);
    return await crypto.subtle.verify(ED25519, key, signature, data);
  } catch {
    return false;
  }
}

/** Check a certificate with the identity key (text) pinned for the device: the agreement key
 *  ``{userId, deviceId, key, publicKey}``, or MalformedMessage, SmallOrderKey, UncertifiedKey. */
export async function verifyAgreementKey(identityKey, certificate, { userId, deviceId }) {
  if (!isRecord(certificate, CERTIFICATE_FIELDS)) {
    throw new MalformedMessage(`a certificate is an object of exactly ${CERTIFICATE_FIELDS.join(", ")}`);
  }
  const gotUser = checkId("user_id", certificate.user_id);
  const gotDevice = checkId("device_id", certificate.device_id);
  const publicKey = await agreementPublicFromText(certificate.key);
  const signature = unb64(certificate.signature, 64, "a certificate's signature");
  if (gotUser !== userId || gotDevice !== deviceId) {
    throw new UncertifiedKey(`the certificate is for device ${gotDevice} of ${gotUser}, not device ${deviceId} of ${userId}`);
  }
  if (!(await verifies(identityKey, signature, agreementStatement(userId, deviceId, certificate.key)))) {
    throw new UncertifiedKey(`the agreement key of device ${deviceId} is not certified by its identity key`);
  }
  return { userId, deviceId, key: certificate.key, publicKey };
}

function isRecord(value, fields) {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return false;
  const keys = Object.keys(value);
  return keys.length === fields.length && fields.every((f) => Object.hasOwn(value, f));
}

// -- sealing (media_keys.py) ---------------------------------------------------------------------
export function sealContext(callId, senderUser, senderDevice, recipientUser, recipientDevice, kid, epk, recipientKey) {
  const ids = [checkId("call_id", callId), checkId("sender_user", senderUser), checkId("sender_device", senderDevice),
    checkId("user", recipientUser), checkId("device", recipientDevice)];
  return ascii(SEAL_DOMAIN + [...ids, kidText(kid), epk, recipientKey].join("\n"));
}

export function signedStatement(callId, senderUser, senderDevice, kid, epk, recipients) {
  const lines = [callId, senderUser, senderDevice, kidText(kid), epk, String(recipients.length)];
  for (const { user, device, sealed } of recipients) lines.push(user, device, toBase64url(sealed));
  return ascii(SIGN_DOMAIN + lines.join("\n"));
}

/** HKDF-SHA256 of the shared secret (salt empty), info = context: an AES-256-GCM key and nonce. */
async function aead(dh, context) {
  const ikm = await crypto.subtle.importKey("raw", dh, "HKDF", false, ["deriveBits"]);
  const okm = new Uint8Array(await crypto.subtle.deriveBits(
    { name: "HKDF", hash: "SHA-256", salt: new Uint8Array(0), info: context }, ikm, 44 * 8));
  const key = await crypto.subtle.importKey("raw", okm.subarray(0, 32), "AES-GCM", false, ["encrypt", "decrypt"]);
  return { key, params: { name: "AES-GCM", iv: okm.slice(32), additionalData: context, tagLength: 128 } };
}

/** The signed message that gives ``baseKey`` (32 bytes) for ``kid`` to ``recipients`` (as
 *  verifyAgreementKey gives them), in its wire form. ``identity``: the sender's Ed25519 private
 *  CryptoKey; ``ephemeral``: a key pair, for known answers only (by default a fresh one). */
export async function sealSenderKey(identity, callId, senderUser, senderDevice, kid, baseKey, recipients,
  { ephemeral = null } = {}) {
  if (!(baseKey instanceof Uint8Array) || baseKey.length !== BASE_KEY_BYTES) {
    throw new RangeError(`a base_key is ${BASE_KEY_BYTES} bytes`);
  }
  if (recipients.length < 1 || recipients.length > MAX_RECIPIENTS) {
    throw new MessageTooLarge(`a message has 1 to ${MAX_RECIPIENTS} recipients, not ${recipients.length}`);
  }
  const devices = new Set(recipients.map((r) => r.deviceId));
  if (devices.size !== recipients.length || devices.has(senderDevice)) {
    throw new MalformedMessage("each recipient device once, and never the sender itself");
  }
  const pair = ephemeral || await crypto.subtle.generateKey(X25519, false, ["deriveBits"]);
  const epk = await agreementPublicText(pair.publicKey);
  const entries = [];
  for (const r of recipients) {
    const context = sealContext(callId, senderUser, senderDevice, r.userId, r.deviceId, kid, epk, r.key);
    const { key, params } = await aead(await sharedSecret(pair.privateKey, r.publicKey), context);
    entries.push({ user: r.userId, device: r.deviceId, sealed: new Uint8Array(await crypto.subtle.encrypt(params, key, baseKey)) });
  }
  const statement = signedStatement(callId, senderUser, senderDevice, kid, epk, entries);
  const signature = await crypto.subtle.sign(ED25519, identity, statement);
  return { v: VERSION, call_id: callId, sender_user: senderUser, sender_device: senderDevice, kid: String(kid), epk,
    recipients: entries.map((e) => ({ user: e.user, device: e.device, sealed: toBase64url(e.sealed) })),
    signature: toBase64url(signature) };
}

/** A message's fields, checked for shape and size (not its signature). */
export function parseSenderKey(message) {
  if (!isRecord(message, MESSAGE_FIELDS)) {
    throw new MalformedMessage(`a sender key message is an object of exactly ${MESSAGE_FIELDS.join(", ")}`);
  }
  if (message.v !== VERSION) throw new MalformedMessage(`unknown sender key message version ${message.v}`);
  const entries = message.recipients;
  if (!Array.isArray(entries)) throw new MalformedMessage("recipients is a list");
  if (entries.length > MAX_RECIPIENTS) throw new MessageTooLarge(`${entries.length} recipients, more than ${MAX_RECIPIENTS}`);
  if (!entries.length) throw new MalformedMessage("a sender key message has at least one recipient");
  const senderDevice = checkId("sender_device", message.sender_device);
  const recipients = entries.map((e) => {
    if (!isRecord(e, ENTRY_FIELDS)) throw new MalformedMessage(`a recipient is an object of exactly ${ENTRY_FIELDS.join(", ")}`);
    return { user: checkId("user", e.user), device: checkId("device", e.device), sealed: unb64(e.sealed, SEALED_BYTES, "a sealed key") };
  });
  const devices = new Set(recipients.map((r) => r.device));
  if (devices.size !== recipients.length || devices.has(senderDevice)) {
    throw new MalformedMessage("each recipient device once, and never the sender itself");
  }
  const epk = unb64(message.epk, 32, "an agreement key");
  if (isSmallOrder(epk)) throw new SmallOrderKey("an agreement key of small order (its shared secret is all zeros)");
  return { callId: checkId("call_id", message.call_id), senderUser: checkId("sender_user", message.sender_user),
    senderDevice, kid: parseKid(message.kid), epk: message.epk, recipients,
    signature: unb64(message.signature, 64, "a signature") };
}

/** This device's key from a message: ``{callId, senderUser, senderDevice, kid, baseKey}``.
 *  ``senderKey``: the identity key (text) pinned for the sender device; ``agreement``: this
 *  device's agreement key pair. The checks and their errors are open_sender_key's. */
export async function openSenderKey(message, { callId, senderKey, userId, deviceId, agreement }) {
  const m = parseSenderKey(message);
  if (m.callId !== callId) throw new WrongCall(`a sender key for call ${m.callId}, not ${callId}`);
  const statement = signedStatement(m.callId, m.senderUser, m.senderDevice, m.kid, m.epk, m.recipients);
  if (!(await verifies(senderKey, m.signature, statement))) {
    throw new BadSignature(`the sender key of device ${m.senderDevice} is not signed by its identity key`);
  }
  const mine = m.recipients.find((r) => r.device === deviceId);
  if (!mine || mine.user !== userId) throw new NotAddressedToMe(`no entry for device ${deviceId} of ${userId}`);
  const own = await agreementPublicText(agreement.publicKey);
  const context = sealContext(callId, m.senderUser, m.senderDevice, userId, deviceId, m.kid, m.epk, own);
  const epk = await agreementPublicFromText(m.epk);
  const { key, params } = await aead(await sharedSecret(agreement.privateKey, epk), context);
  let baseKey;
  try {
    baseKey = new Uint8Array(await crypto.subtle.decrypt(params, key, mine.sealed));
  } catch {
    throw new UndecryptableEntry(`the entry for device ${deviceId} does not open`);
  }
  return { callId, senderUser: m.senderUser, senderDevice: m.senderDevice, kid: m.kid, baseKey };
}

// -- rotation (media_keys.py's SenderKeys and ReceivedKeys) ---------------------------------------
/** The sending device's keys in one call: a new KID and a fresh base_key on every change of the
 *  call's member devices (rotate), sealed to the members of that moment only. */
export class SenderKeys {
  constructor({ identity, callId, userId, deviceId, tag = null }) {
    this.identity = identity;
    this.callId = checkId("call_id", callId);
    this.userId = checkId("user_id", userId);
    this.deviceId = checkId("device_id", deviceId);
    this.tag = tag === null ? crypto.getRandomValues(new Uint32Array(1))[0] : tag;
    makeKid(this.tag, 0);
    this.next = 0;
    this.kid = null;
    this.baseKey = null;
    this.members = new Set(); // the devices that hold the current key
  }

  /** A new KID and base_key sealed to ``members`` (as verifyAgreementKey gives them). */
  async rotate(members) {
    if (this.next > MAX_NUMBER) throw new KeysExhausted(`sender ${this.deviceId} has used all its KIDs in this call`);
    const kid = makeKid(this.tag, this.next);
    const baseKey = crypto.getRandomValues(new Uint8Array(BASE_KEY_BYTES));
    const message = await sealSenderKey(this.identity, this.callId, this.userId, this.deviceId, kid, baseKey, members);
    this.next += 1;
    this.kid = kid;
    this.baseKey = baseKey;
    this.members = new Set(members.map((m) => m.deviceId));
    return message;
  }

  /** The current key again, only to devices that already hold it. */
  async reseal(members) {
    if (this.kid === null) throw new MediaKeyError("no key yet: rotate first");
    const strangers = members.filter((m) => !this.members.has(m.deviceId)).map((m) => m.deviceId);
    if (strangers.length) throw new MediaKeyError(`devices ${strangers} do not hold the current key: rotate`);
    return sealSenderKey(this.identity, this.callId, this.userId, this.deviceId, this.kid, this.baseKey, members);
  }
}

const sameBytes = (a, b) => a.length === b.length && a.every((v, i) => v === b[i]);

/** The keys this device received in one call, kept apart by sender device: a frame decrypts
 *  only under the keys of the device it comes from (the one the SFU names for its slot), so a
 *  KID need be unique per sender only, and a member cannot take another sender's tag. Every
 *  method returns ``{removed: [[device, kid]], added: [[device, kid, baseKey]]}`` to apply to
 *  that device's SFrame Receiver (RFC 9605 §4.4.1: one per sender here). ``now`` in seconds.
 *  The rules and errors are ReceivedKeys' of media_keys.py: a sender's newest key is current,
 *  its previous one kept for ``grace`` seconds; refused: a key older than one held from that
 *  sender (StaleKey), another key for a KID held (KeyConflict), another call's (WrongCall),
 *  more than ``maxSenders`` senders (TooManySenders). A sender whose tag changes has
 *  restarted: its earlier tags are refused from then on. */
export class ReceivedKeys {
  constructor(callId, { grace = GRACE, maxSenders = MAX_SENDERS } = {}) {
    this.callId = checkId("call_id", callId);
    this.grace = grace;
    this.maxSenders = maxSenders;
    this.senderStates = new Map(); // device -> {tag, number, kid, baseKey, previous: [kid, until], retired}
  }

  /** Every ``[sender device, kid]`` whose key this receiver holds, by device then KID. */
  held() {
    const out = [];
    for (const [device, s] of this.senderStates) {
      if (s.kid !== null) out.push([device, s.kid]);
      if (s.previous) out.push([device, s.previous[0]]);
    }
    return out.sort(([d1, k1], [d2, k2]) => (d1 < d2 ? -1 : d1 > d2 ? 1 : k1 - k2));
  }

  /** The sender devices whose current key this receiver holds. */
  senders() {
    return new Set([...this.senderStates].filter(([, s]) => s.kid !== null).map(([device]) => device));
  }

  /** Take a key openSenderKey gave; a copy of the current key changes nothing. */
  add(key, now) {
    if (key.callId !== this.callId) throw new WrongCall(`a key for call ${key.callId}, not ${this.callId}`);
    const device = key.senderDevice;
    const tag = Math.floor(key.kid / 65536);
    const number = key.kid % 65536;
    const s = this.senderStates.get(device);
    if (!s) {
      this.makeRoom();
      this.senderStates.set(device, { tag, number, kid: key.kid, baseKey: key.baseKey, previous: null, retired: [] });
      return { removed: [], added: [[device, key.kid, key.baseKey]] };
    }
    if (s.retired.includes(tag) || (tag === s.tag && number < s.number)) {
      throw new StaleKey(`KID ${key.kid} of device ${device} is older than its current key`);
    }
    if (tag === s.tag && number === s.number) {
      if (!sameBytes(key.baseKey, s.baseKey)) throw new KeyConflict(`device ${device} sent two keys for KID ${key.kid}`);
      if (s.kid === null) { // dropped when it left: a replay must not bring it back
        throw new StaleKey(`KID ${key.kid} of device ${device} was dropped when it left`);
      }
      return { removed: [], added: [] };
    }
    const removed = s.previous ? [[device, s.previous[0]]] : [];
    s.previous = s.kid !== null ? [s.kid, now + this.grace] : null;
    if (tag !== s.tag) s.retired = [...s.retired, s.tag].slice(-MAX_RETIRED_TAGS); // the sender restarted
    Object.assign(s, { tag, number, kid: key.kid, baseKey: key.baseKey });
    return { removed, added: [[device, key.kid, key.baseKey]] };
  }

  makeRoom() {
    if (this.senderStates.size < this.maxSenders) return;
    const departed = [...this.senderStates].find(([, s]) => s.kid === null);
    if (!departed) throw new TooManySenders(`keys of more than ${this.maxSenders} sender devices`);
    this.senderStates.delete(departed[0]);
  }

  /** A device left the call: drop its keys now (what it sent is remembered, so a replay of its
   *  keys stays refused if it comes back). */
  removeSender(device) {
    const s = this.senderStates.get(device);
    if (!s || s.kid === null) return { removed: [], added: [] };
    const removed = [[device, s.kid], ...(s.previous ? [[device, s.previous[0]]] : [])];
    s.kid = null;
    s.previous = null;
    return { removed, added: [] };
  }

  /** When handleTimer has a previous key to drop, if ever. */
  getTimer() {
    const times = [...this.senderStates.values()].filter((s) => s.previous).map((s) => s.previous[1]);
    return times.length ? Math.min(...times) : null;
  }

  /** Drop the previous keys whose grace is over. */
  handleTimer(now) {
    const removed = [];
    for (const [device, s] of this.senderStates) {
      if (s.previous && s.previous[1] <= now) {
        removed.push([device, s.previous[0]]);
        s.previous = null;
      }
    }
    return { removed, added: [] };
  }
}
