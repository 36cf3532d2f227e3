// Device identity keys (docs/security.md, "Device identity keys"): this browser's device signs
// every SDP it sends with an Ed25519 key of its own, and checks every SDP it gets against the
// key of the device that sent it, so that a server that changes a description (its own DTLS
// fingerprint in place of the other device's) is caught before the description is applied.
//
// The spec, version 1, is src/facecall/e2ee/identity.py (the Python SDK signs and checks the
// same): keys are the unpadded base64url of their 32 raw bytes (43 characters), signatures of
// their 64 bytes (86 characters), and a signature covers the UTF-8 of
// "facecall sdp v1\n" + call_id + "\n" + from_user + "\n" + from_device + "\n" + to_device +
// "\n" + type + "\n" + sdp, the SDP exactly as sent.
//
// The private key is made here with WebCrypto, not extractable (no script can read it out), and
// kept in IndexedDB under the device's id (CryptoKey objects are structured-cloneable); other
// devices' keys are pinned in localStorage on first use (trust on first use: a device's key
// never changes, so a server that later hands out another one is refused).

export const DOMAIN = "facecall sdp v1\n";
import { certifyAgreementKey, newAgreementKey } from "./media-keys.js"; // (imports from here too:
// a cycle ES modules allow, as neither uses the other while it loads)

const ED25519 = { name: "Ed25519" };
const KEY_BYTES = 32;
const SIGNATURE_BYTES = 64;
// how many other devices' keys this browser keeps; past it the oldest pins are forgotten (a
// device forgotten is trusted on first use again), as the SDK does
const MAX_PINNED = 4096;
const PINS = "facecall.pinnedKeys"; // localStorage: device id -> [user id, key]
// the safety numbers this browser's users marked as compared (safety-number.js): own user id ->
// {other user id -> number}; pins of those users are never evicted
const VERIFIED = "facecall.verifiedNumbers";
// the most devices a user has (the server refuses more): a longer list of keys is not one
export const MAX_DEVICES = 32;
// the pauses (ms) between tries to read a user's keys while the server does not answer
// (unreachable, a 5xx — a node restarting — or 429): about 12 s in all, as the SDK does
export const KEY_LOOKUP_PAUSES = [250, 500, 1000, 2000, 4000, 4000];
// the eight points of small order (RFC 8032 §5.1.7 accepts them; a key that is one verifies
// forged signatures): refused as keys, as facecall/e2ee/identity.py does
const SMALL_ORDER = new Set([
  "0100000000000000000000000000000000000000000000000000000000000000",
  "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
  "0000000000000000000000000000000000000000000000000000000000000000",
  "0000000000000000000000000000000000000000000000000000000000000080",
  "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
  "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
  "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
  "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
]);
const DB_NAME = "facecall-identity";
const DB_STORE = "keys"; // IndexedDB: {deviceId, userId, privateKey, publicKey, published}

/** A key or signature that is malformed, a signature that does not verify, or a device whose
 *  key cannot be had. ``unchecked``: the check could not be made (the server did not answer),
 *  which is not the same as a check that failed. */
export class IdentityError extends Error {
  constructor(message, { unchecked = false } = {}) {
    super(message);
    this.name = "IdentityError";
    this.unchecked = unchecked;
  }
}

// -- the encoding and the statement -----------------------------------------------------------
/** Unpadded base64url (RFC 4648 §5) of ``bytes``. */
export function toBase64url(bytes) {
  let binary = "";
  for (const byte of new Uint8Array(bytes)) binary += String.fromCharCode(byte);
  return btoa(binary).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

/** The bytes of an unpadded base64url string that must hold exactly ``size`` bytes, in its one
 *  canonical spelling (the last character's spare bits 0); IdentityError otherwise. */
export function fromBase64url(text, size, what) {
  const chars = Math.floor((size * 4 + 2) / 3);
  if (typeof text !== "string" || text.length !== chars) {
    throw new IdentityError(`${what} must be ${chars} base64url characters`);
  }
  if (!/^[A-Za-z0-9_-]*$/.test(text)) throw new IdentityError(`${what} is not base64url`);
  const binary = atob(text.replaceAll("-", "+").replaceAll("_", "/") + "=".repeat((4 - (text.length % 4)) % 4));
  const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
  if (bytes.length !== size || toBase64url(bytes) !== text) {
    throw new IdentityError(`${what} is not the canonical base64url of ${size} bytes`);
  }
  return bytes;
}

/** The 32 bytes of a published identity key; IdentityError if it is malformed or of small order. */
export function keyBytes(text) {
  const raw = fromBase64url(text, KEY_BYTES, "an identity key");
  const hex = Array.from(raw, (b) => b.toString(16).padStart(2, "0")).join("");
  if (SMALL_ORDER.has(hex)) throw new IdentityError("an identity key of small order (it would verify anything)");
  return raw;
}

/** The bytes a device signs for a description it sends (version 1, above). */
export function statement(callId, fromUser, fromDevice, toDevice, type, sdp) {
  const ids = { call_id: callId, from_user: fromUser, from_device: fromDevice, to_device: toDevice };
  for (const [name, value] of Object.entries(ids)) {
    if (typeof value !== "string" || !value || /[\r\n]/.test(value)) {
      throw new IdentityError(`${name} must be a non-empty id without line breaks`);
    }
  }
  if (type !== "offer" && type !== "answer") {
    throw new IdentityError(`a description's type is offer or answer, not ${type}`);
  }
  if (typeof sdp !== "string") throw new IdentityError("a description's sdp is a string");
  return new TextEncoder().encode(DOMAIN + [callId, fromUser, fromDevice, toDevice, type, sdp].join("\n"));
}

/** The ``signature`` of a ``call.sdp`` (RFC 8032 §5.1.6) with the CryptoKey ``privateKey``. */
export async function signDescription(privateKey, callId, fromUser, fromDevice, toDevice, type, sdp) {
  const data = statement(callId, fromUser, fromDevice, toDevice, type, sdp);
  return toBase64url(await crypto.subtle.sign(ED25519, privateKey, data));
}

/** Check a relayed description's ``signature`` with the sending device's published ``key``
 *  (RFC 8032 §5.1.7); IdentityError says why it does not hold. */
export async function verifyDescription(key, signature, callId, fromUser, fromDevice, toDevice, type, sdp) {
  const raw = keyBytes(key);
  if (signature === null || signature === undefined) {
    throw new IdentityError(`device ${fromDevice} sent a description without a signature`);
  }
  if (typeof signature !== "string") throw new IdentityError("a signature is a base64url string");
  const bytes = fromBase64url(signature, SIGNATURE_BYTES, "a signature");
  const data = statement(callId, fromUser, fromDevice, toDevice, type, sdp);
  let publicKey;
  try {
    publicKey = await crypto.subtle.importKey("raw", raw, ED25519, false, ["verify"]);
  } catch (error) {
    throw new IdentityError(`not an Ed25519 public key: ${error.message}`);
  }
  let valid = false;
  try {
    valid = await crypto.subtle.verify(ED25519, publicKey, bytes, data);
  } catch {
    valid = false;
  }
  if (!valid) throw new IdentityError(`the description from device ${fromDevice} is not signed by its identity key`);
}

// -- this device's key pair, in IndexedDB -------------------------------------------------------
// the records this page made or read, also when IndexedDB cannot keep them (a private window
// of some browsers): this page goes on signing with them
const kept = new Map();

/** A new key pair for a device: ``{privateKey, publicKey}``, the private key a CryptoKey that
 *  cannot be exported, the public key as it is published. A clear Error where the browser has
 *  no Ed25519 (it could not take part in calls: the other side refuses what it does not sign). */
export async function newKeys() {
  let pair;
  try {
    pair = await crypto.subtle.generateKey(ED25519, false, ["sign", "verify"]);
  } catch {
    throw new Error("This browser cannot make the key that secures your calls (it lacks Ed25519 "
      + "signatures). Update it, or use another browser.");
  }
  const raw = await crypto.subtle.exportKey("raw", pair.publicKey); // a public key always exports
  return { privateKey: pair.privateKey, publicKey: toBase64url(raw) };
}

function database() {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DB_NAME, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(DB_STORE, { keyPath: "deviceId" });
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
    request.onblocked = () => reject(new Error("IndexedDB is blocked"));
  });
}

/** Run ``work(store)`` in one transaction on the keys' store; its request's result. */
async function transact(mode, work) {
  const db = await database();
  try {
    return await new Promise((resolve, reject) => {
      const transaction = db.transaction(DB_STORE, mode);
      const request = work(transaction.objectStore(DB_STORE));
      transaction.oncomplete = () => resolve(request.result);
      transaction.onerror = () => reject(transaction.error);
      transaction.onabort = () => reject(transaction.error || new Error("aborted"));
    });
  } finally {
    db.close();
  }
}

/** The key record of device ``deviceId`` that this browser holds, or null. */
async function loadKeys(deviceId) {
  if (kept.has(deviceId)) return kept.get(deviceId);
  try {
    const record = await transact("readonly", (s) => s.get(deviceId));
    if (record && record.privateKey instanceof CryptoKey && typeof record.publicKey === "string") {
      kept.set(deviceId, record);
      return record;
    }
  } catch (error) {
    console.warn("facecall: cannot read the identity key", error);
  }
  return null;
}

/** Keep the key record of a device (``{deviceId, userId, privateKey, publicKey, published,
 *  agreement, agreementPublished}``). */
export async function saveKeys(record) {
  kept.set(record.deviceId, record);
  try {
    await transact("readwrite", (s) => s.put(record));
  } catch (error) {
    console.warn("facecall: the identity key is kept for this page only", error);
  }
}

/** Forget the key of a device this browser no longer is (signed out, replaced). */
export async function forgetKeys(deviceId) {
  kept.delete(deviceId);
  try {
    await transact("readwrite", (s) => s.delete(deviceId));
  } catch {
    /* nothing kept */
  }
}

/** Run ``work`` with the Web Lock of device ``deviceId``'s key: two tabs that find no key do
 *  not make and publish two (the second would be refused). */
function locked(deviceId, work) {
  if (!(navigator.locks && navigator.locks.request)) return work();
  return navigator.locks.request(`facecall-identity-${deviceId}`, work);
}

/**
 * This browser's identity for its registered ``device`` ({id, userId, token}): the key pair kept
 * for it, published first if the server may not have it yet (a device registered before identity
 * keys existed, or this browser's key store was cleared and the device has none). Null when the
 * device already has another key, which this browser no longer holds: it cannot sign for it.
 * Its X25519 agreement key is made and published too (publishAgreementKey).
 */
export async function deviceIdentity(api, device) {
  return locked(device.id, async () => {
    let record = await loadKeys(device.id);
    if (!record) {
      record = { deviceId: device.id, userId: device.userId, ...(await newKeys()), published: false };
      await saveKeys(record); // before it is published: a page closed meanwhile publishes it later
    }
    if (!record.published) {
      try {
        await api.setIdentityKey(device.token, device.id, record.publicKey);
      } catch (error) {
        if (error.status !== 409) throw error;
        await forgetKeys(device.id);
        return null;
      }
      record = { ...record, published: true };
      await saveKeys(record);
    }
    record = await publishAgreementKey(api, device, record);
    return new Identity({ ...record, userId: device.userId, api, token: device.token });
  });
}

/**
 * The key record with an X25519 agreement key pair (``agreement``: made once, its private key
 * not extractable, kept in IndexedDB with the identity key) whose certificate, signed by the
 * identity key, the server has (``agreementPublished``): others seal group media's SFrame keys
 * to it (docs/sframe.md; media-keys.js makes and certifies it). A refusal is logged, not thrown:
 * 1:1 calls do not need it, and the next page load tries again.
 */
async function publishAgreementKey(api, device, record) {
  if (!record.agreement) {
    record = { ...record, agreement: await newAgreementKey(), agreementPublished: false };
    await saveKeys(record);
  }
  if (record.agreementPublished) return record;
  try {
    const certificate = await certifyAgreementKey(record.privateKey, device.userId, device.id,
      record.agreement.publicKey);
    await api.setAgreementKey(device.token, device.id, certificate.key, certificate.signature);
  } catch (error) {
    console.warn("facecall: the agreement key is not published; group media cannot be end-to-end "
      + "encrypted to this browser until it is", error);
    return record;
  }
  record = { ...record, agreementPublished: true };
  await saveKeys(record);
  return record;
}

// -- signing and checking -----------------------------------------------------------------------
/** The JSON object kept in localStorage under ``name`` ({} if none, or not an object). */
function readObject(name) {
  try {
    const value = JSON.parse(localStorage.getItem(name) || "{}");
    return value && typeof value === "object" && !Array.isArray(value) ? value : {};
  } catch {
    return {};
  }
}

/** The pins: device id -> [user id, key], oldest first. */
const readPins = () => readObject(PINS);

/** The verified numbers: own user id -> {other user id -> number}. */
const readVerified = () => readObject(VERIFIED);

/** Whether an HTTP status (0: unreachable) means the server did not answer the question. */
const noAnswer = (status) => !(status > 0) || status === 429 || status >= 500;

/** ``GET /v1/users/{id}/identity-keys``, tried again after each of ``pauses`` (ms) while no
 *  answer comes, so that a server restart during a call's set-up does not end the call. Any
 *  other refusal (a 404: no such user) is an answer and is not tried again. IdentityError when
 *  no answer came in time (``unchecked``), or a refusal did. */
async function readKeys(api, token, userId, pauses) {
  for (let attempt = 0; ; attempt += 1) {
    try {
      return await api.identityKeys(token, userId);
    } catch (error) {
      const unanswered = noAnswer(error.status);
      if (!unanswered || attempt >= pauses.length) {
        throw new IdentityError(`cannot read the identity keys of user ${userId}: ${error.message}`,
          { unchecked: unanswered });
      }
    }
    await new Promise((resolve) => setTimeout(resolve, pauses[attempt]));
  }
}

/** The number user ``ownUserId`` marked as compared with ``userId``, or null. */
export function verifiedNumber(ownUserId, userId) {
  const mine = readVerified()[ownUserId];
  const number = mine && typeof mine === "object" ? mine[userId] : null;
  return typeof number === "string" ? number : null;
}

/** Remember ``number`` as the one user ``ownUserId`` compared with ``userId`` (null: forget it,
 *  "Unmark"). ``unlisted``: devices met as ``userId``'s that the compared list left out — the
 *  person vouched for the list as it is, so their pins go (one that calls again is new). */
export function setVerified(ownUserId, userId, number, unlisted = []) {
  const all = readVerified();
  const mine = all[ownUserId] && typeof all[ownUserId] === "object" ? all[ownUserId] : {};
  if (number === null) delete mine[userId];
  else mine[userId] = number;
  all[ownUserId] = mine;
  localStorage.setItem(VERIFIED, JSON.stringify(all));
  if (number !== null && unlisted.length) {
    const pins = readPins();
    for (const deviceId of unlisted) if (pins[deviceId] && pins[deviceId][0] === userId) delete pins[deviceId];
    localStorage.setItem(PINS, JSON.stringify(pins));
  }
}

/** The devices pinned as ``userId``'s. */
export function pinnedDevicesOf(userId) {
  return Object.entries(readPins()).filter(([, pin]) => Array.isArray(pin) && pin[0] === userId)
    .map(([deviceId]) => deviceId);
}

/** Pin the keys of ``userId``'s devices this browser has not met yet: ``entries`` are
 *  ``[deviceId, key]``. Pins already there stay (a device's key never changes); past MAX_PINNED
 *  the oldest go, never those of a user whose number someone here marked as compared. Re-read
 *  first: another tab may have pinned some meanwhile. */
export function pinKeys(userId, entries) {
  const pins = readPins();
  const kept = new Set(Object.values(readVerified()).flatMap((mine) => Object.keys(mine || {})));
  let added = false;
  for (const [deviceId, key] of entries) {
    if (pins[deviceId]) continue;
    const ids = Object.keys(pins);
    if (ids.length >= MAX_PINNED) {
      const old = ids.find((id) => !kept.has(pins[id][0])) || ids[0];
      delete pins[old];
    }
    pins[deviceId] = [userId, key];
    added = true;
  }
  if (added) localStorage.setItem(PINS, JSON.stringify(pins));
}

/** This device's key pair and the keys it trusts for other devices. */
export class Identity {
  /**
   * @param {object} o
   * @param {string} o.deviceId @param {string} o.userId  this device, and whose it is
   * @param {CryptoKey} o.privateKey @param {string} o.publicKey
   * @param {import('./api.js').Api} o.api  to read another user's keys
   * @param {string} o.token  this device's token, for that
   * @param {number[]} [o.lookupPauses]  the pauses (ms) between tries to read them while the
   *   server does not answer (KEY_LOOKUP_PAUSES)
   * @param {{privateKey: CryptoKey, publicKey: CryptoKey}|null} [o.agreement]  this device's
   *   X25519 agreement key pair (group media's keys are sealed to it: group-e2ee.js)
   */
  constructor({ deviceId, userId, privateKey, publicKey, api, token, lookupPauses = KEY_LOOKUP_PAUSES,
    agreement = null }) {
    Object.assign(this, { deviceId, userId, privateKey, publicKey, api, token, lookupPauses, agreement });
  }

  /** The signature of a description this device sends to ``toDevice`` (`call.sdp`'s
   *  ``signature``), over the exact ``sdp`` sent. */
  sign(callId, toDevice, type, sdp) {
    return signDescription(this.privateKey, callId, this.userId, this.deviceId, toDevice, type, sdp);
  }

  /** ``[user id, key]`` pinned for a device, or null. */
  pinned(deviceId) {
    const pin = readPins()[deviceId];
    return Array.isArray(pin) && pin.length === 2 && pin.every((part) => typeof part === "string") ? pin : null;
  }

  /** The key of another device: the pinned one, or (first use) the one the server lists for it,
   *  pinned from then on. IdentityError if the device is pinned as another user's, or the
   *  server lists no key (or no valid key) for it. */
  async keyOf(userId, deviceId) {
    let pin = this.pinned(deviceId);
    if (!pin) {
      const listed = await readKeys(this.api, this.token, userId, this.lookupPauses);
      const devices = (listed && listed.devices) || [];
      if (!Array.isArray(devices) || devices.length > MAX_DEVICES) {
        throw new IdentityError(`the server's list of the keys of user ${userId} is malformed or longer than the ${MAX_DEVICES} devices a user can have`);
      }
      const entry = devices.find((d) => d && d.device_id === deviceId);
      const key = entry ? entry.identity_key : null;
      if (typeof key !== "string") throw new IdentityError(`device ${deviceId} of user ${userId} has no identity key`);
      keyBytes(key); // a key at all
      pinKeys(userId, [[deviceId, key]]);
      pin = this.pinned(deviceId); // another tab's pin, if it pinned this device meanwhile
    }
    if (pin[0] !== userId) {
      throw new IdentityError(`device ${deviceId} is known as a device of user ${pin[0]}, not ${userId}`);
    }
    return pin[1];
  }

  /** Check a relayed `call.sdp` of call ``callId``, addressed to this device: signed by the
   *  identity key of the device it comes from, for this call and this device. IdentityError
   *  says why not. */
  async check(callId, event) {
    const key = await this.keyOf(event.from_user, event.from_device);
    const description = event.description || {};
    await verifyDescription(key, event.signature, callId, event.from_user, event.from_device,
      this.deviceId, description.type, description.sdp);
  }
}
