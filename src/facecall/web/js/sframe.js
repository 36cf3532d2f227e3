// SFrame, RFC 9605: per-frame authenticated encryption of media with per-sender keys, for the
// browser. The twin of src/facecall/e2ee/sframe.py (the same header codec, cipher suites, key
// schedule, limits, replay window and error names); tests/web/test_sframe_js.py runs the RFC's
// test vectors through both and decrypts each one's frames with the other.
//
// WebCrypto only: HKDF, AES-GCM, AES-CTR and HMAC of crypto.subtle, so the whole API is async.
// KIDs and CTRs are 64-bit: they are taken as a BigInt or a safe integer Number and given back as
// BigInt. Bytes are taken as an ArrayBuffer or any view of one, and given back as Uint8Array.
//
// Key distribution and rotation (RFC 9605 §5) are in media-keys.js and group-e2ee.js; the
// encoded-transform wiring in sframe-worker.js (docs/sframe.md, "In the browser").

/** The cipher suites of RFC 9605 §4.5 with their IANA ids (§8.1). */
export const CipherSuite = Object.freeze({
  AES_128_CTR_HMAC_SHA256_80: 1,
  AES_128_CTR_HMAC_SHA256_64: 2,
  AES_128_CTR_HMAC_SHA256_32: 3,
  AES_128_GCM_SHA256_128: 4,
  AES_256_GCM_SHA512_128: 5,
});

// Table 1 of §4.5: Nh, Nka (0: AES-GCM), Nk, Nn, Nt, and the hash
const SUITES = new Map([
  [1, { nh: 32, nka: 16, nk: 48, nn: 12, nt: 10, hash: "SHA-256" }],
  [2, { nh: 32, nka: 16, nk: 48, nn: 12, nt: 8, hash: "SHA-256" }],
  [3, { nh: 32, nka: 16, nk: 48, nn: 12, nt: 4, hash: "SHA-256" }],
  [4, { nh: 32, nka: 0, nk: 16, nn: 12, nt: 16, hash: "SHA-256" }],
  [5, { nh: 64, nka: 0, nk: 32, nn: 12, nt: 16, hash: "SHA-512" }],
]);

export const MAX_VALUE = (1n << 64n) - 1n;
export const MAX_HEADER_LENGTH = 17;
/** The largest plaintext (and metadata) by default: 1 MiB, as in Python. */
export const MAX_FRAME = 1 << 20;
/** Frames per KID in a Receiver's replay window: as in Python (a sender's audio and all its
 *  simulcast layers share one counter, some 140 frames a second). */
export const DEFAULT_REPLAY_WINDOW = 1024;
export const MIN_BASE_KEY = 16;

// -- errors: the same names as the Python classes -----------------------------------------------
export class SFrameError extends Error {
  constructor(message) {
    super(message);
    this.name = new.target.name;
  }
}
export class MalformedFrame extends SFrameError {}
export class MalformedHeader extends MalformedFrame {}
export class InvalidInput extends SFrameError {}
export class ValueOutOfRange extends SFrameError {}
export class UnknownKeyId extends SFrameError {}
export class KeyIdInUse extends SFrameError {}
export class AuthenticationFailed extends SFrameError {}
export class ReplayedFrame extends SFrameError {}
export class FrameTooLarge extends SFrameError {}
export class CounterExhausted extends SFrameError {}
export class CounterReused extends SFrameError {}

// -- checks --------------------------------------------------------------------------------------
/** A KID or CTR as a BigInt in 0..2^64-1. */
function checkValue(name, value) {
  if (typeof value === "number" && Number.isSafeInteger(value)) value = BigInt(value);
  if (typeof value !== "bigint") throw new InvalidInput(`the ${name} must be a BigInt or a safe integer`);
  if (value < 0n || value > MAX_VALUE) throw new ValueOutOfRange(`the ${name} must be in 0..2^64-1, not ${value}`);
  return value;
}

/** Bytes as a Uint8Array (a view, not a copy, of a view's bytes). */
function checkBytes(name, value) {
  if (value instanceof Uint8Array) return value;
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  throw new InvalidInput(`the ${name} must be bytes, not ${value === null ? "null" : typeof value}`);
}

function limit(name, value, max) {
  const bytes = checkBytes(name, value);
  if (bytes.length > max) {
    throw new FrameTooLarge(`the ${name} has ${bytes.length} bytes, more than the limit of ${max}`);
  }
  return bytes;
}

function checkBaseKey(baseKey) {
  baseKey = checkBytes("base_key", baseKey);
  if (baseKey.length < MIN_BASE_KEY) {
    throw new ValueOutOfRange(`a base_key takes at least ${MIN_BASE_KEY} bytes, not ${baseKey.length}`);
  }
  return baseKey;
}

function checkSuite(suite) {
  if (!SUITES.has(suite)) throw new ValueOutOfRange(`unknown SFrame cipher suite ${suite}`);
  return SUITES.get(suite);
}

function checkLimit(maxFrame) {
  if (!Number.isSafeInteger(maxFrame) || maxFrame < 0) {
    throw new ValueOutOfRange(`maxFrame must be a non-negative integer, not ${maxFrame}`);
  }
  return maxFrame;
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

function bigEndian(value, length) {
  const out = new Uint8Array(length);
  for (let i = length - 1; i >= 0; i--, value >>= 8n) out[i] = Number(value & 0xffn);
  return out;
}

// -- the header (§4.3) ---------------------------------------------------------------------------
/** Bytes a value takes after the config byte: none below 8, else the minimum. */
function extensionLength(value) {
  if (value < 8n) return 0;
  let n = 0;
  for (; value > 0n; value >>= 8n) n++;
  return n;
}

/** The (only, minimal) encoding of a header: 1 to 17 bytes. @returns {Uint8Array} */
export function encodeHeader(kid, ctr) {
  const values = [checkValue("KID", kid), checkValue("CTR", ctr)];
  let config = 0;
  const tail = [];
  values.forEach((value, i) => {
    const shift = i === 0 ? 4 : 0;
    const length = extensionLength(value);
    if (length === 0) {
      config |= Number(value) << shift;
    } else {
      config |= (0x8 | (length - 1)) << shift;
      tail.push(bigEndian(value, length));
    }
  });
  return concat(Uint8Array.of(config), ...tail);
}

/** The header at the start of ``data``: ``{ kid, ctr, length }``; MalformedHeader if it is empty,
 *  truncated, or a value is not in its minimal encoding (§4.3: "MUST be encoded with the minimum
 *  number of bytes"). */
export function decodeHeader(data) {
  data = checkBytes("SFrame ciphertext", data);
  if (!data.length) throw new MalformedHeader("empty SFrame ciphertext: no config byte");
  const config = data[0];
  let position = 1;
  const values = [];
  for (const [name, nibble] of [["KID", config >> 4], ["CTR", config & 0x0f]]) {
    if (!(nibble & 0x8)) {
      values.push(BigInt(nibble));
      continue;
    }
    const length = (nibble & 0x7) + 1;
    if (data.length < position + length) {
      throw new MalformedHeader(`truncated SFrame header: the ${name} takes ${length} bytes, ` +
        `${Math.max(0, data.length - position)} left`);
    }
    let value = 0n;
    for (const byte of data.subarray(position, position + length)) value = (value << 8n) | BigInt(byte);
    if (extensionLength(value) !== length) {
      throw new MalformedHeader(`${name} ${value} is not in its minimal encoding (${length} bytes, RFC 9605 §4.3)`);
    }
    values.push(value);
    position += length;
  }
  return { kid: values[0], ctr: values[1], length: position };
}

// -- the key schedule (§4.4.2) -------------------------------------------------------------------
const encoder = new TextEncoder();

/** ``"SFrame 1.0 Secret key " + KID + cipher_suite`` (or ``salt``), KID in 8 bytes, suite in 2. */
export function label(kind, suite, kid) {
  return concat(encoder.encode(`SFrame 1.0 Secret ${kind} `), bigEndian(checkValue("KID", kid), 8),
    bigEndian(BigInt(suite), 2));
}

/** ``{ key, salt }`` of RFC 9605 §4.4.2: HKDF with an empty salt (HKDF-Extract("", base_key)),
 *  expanded with the two labels to AEAD.Nk and AEAD.Nn bytes. */
export async function deriveKeySalt(suite, kid, baseKey) {
  const c = checkSuite(suite);
  const ikm = await crypto.subtle.importKey("raw", checkBytes("base_key", baseKey), "HKDF", false,
    ["deriveBits"]);
  const expand = async (kind, length) => new Uint8Array(await crypto.subtle.deriveBits(
    { name: "HKDF", hash: c.hash, salt: new Uint8Array(0), info: label(kind, suite, kid) }, ikm, length * 8));
  return { key: await expand("key", c.nk), salt: await expand("salt", c.nn) };
}

// -- the AEADs (§4.4.3, §4.5, §4.5.1) ------------------------------------------------------------
function equalInConstantTime(a, b) {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

/** The AEAD of a suite with one key: AES-GCM, or AES-CTR then HMAC truncated to Nt bytes
 *  (§4.5.1). encrypt() gives the ciphertext and tag; decrypt() throws AuthenticationFailed. */
export class Aead {
  static async create(suite, key) {
    const c = checkSuite(suite);
    key = checkBytes("AEAD key", key);
    if (key.length !== c.nk) throw new ValueOutOfRange(`suite ${suite} takes a ${c.nk}-byte AEAD key`);
    const self = new Aead();
    self.c = c;
    if (c.nka === 0) {
      self.gcm = await crypto.subtle.importKey("raw", key, "AES-GCM", false, ["encrypt", "decrypt"]);
    } else { // derive_subkeys: the first Nka bytes for AES-CTR, the remaining Nh for HMAC
      self.aes = await crypto.subtle.importKey("raw", key.subarray(0, c.nka), "AES-CTR", false,
        ["encrypt", "decrypt"]);
      self.mac = await crypto.subtle.importKey("raw", key.subarray(c.nka), { name: "HMAC", hash: c.hash },
        false, ["sign"]);
    }
    return self;
  }

  async tag(nonce, aad, ct) { // compute_tag: HMAC over the three lengths, the nonce, AAD and CT
    const lengths = concat(bigEndian(BigInt(aad.length), 8), bigEndian(BigInt(ct.length), 8),
      bigEndian(BigInt(this.c.nt), 8));
    const mac = await crypto.subtle.sign("HMAC", this.mac, concat(lengths, nonce, aad, ct));
    return new Uint8Array(mac, 0, this.c.nt);
  }

  async aesCtr(nonce, data, decrypt) { // initial_counter = nonce + four zero bytes
    const params = { name: "AES-CTR", counter: concat(nonce, new Uint8Array(4)), length: 32 };
    const out = decrypt ? crypto.subtle.decrypt(params, this.aes, data) : crypto.subtle.encrypt(params, this.aes, data);
    return new Uint8Array(await out);
  }

  async encrypt(nonce, aad, plaintext) {
    if (this.gcm) {
      return new Uint8Array(await crypto.subtle.encrypt(
        { name: "AES-GCM", iv: nonce, additionalData: aad, tagLength: 128 }, this.gcm, plaintext));
    }
    const ct = await this.aesCtr(nonce, plaintext, false);
    return concat(ct, await this.tag(nonce, aad, ct));
  }

  async decrypt(nonce, aad, ciphertext) {
    if (ciphertext.length < this.c.nt) throw new AuthenticationFailed("SFrame authentication failed");
    if (this.gcm) {
      try {
        return new Uint8Array(await crypto.subtle.decrypt(
          { name: "AES-GCM", iv: nonce, additionalData: aad, tagLength: 128 }, this.gcm, ciphertext));
      } catch {
        throw new AuthenticationFailed("SFrame authentication failed");
      }
    }
    const inner = ciphertext.subarray(0, ciphertext.length - this.c.nt);
    const tag = ciphertext.subarray(ciphertext.length - this.c.nt);
    if (!equalInConstantTime(tag, await this.tag(nonce, aad, inner))) {
      throw new AuthenticationFailed("SFrame authentication failed");
    }
    return this.aesCtr(nonce, inner, true);
  }
}

/** One KID's sframe_key and sframe_salt (§4.4.2), and the AEAD with the key. */
export class SFrameKey {
  static async derive(suite, kid, baseKey) {
    checkSuite(suite);
    kid = checkValue("KID", kid);
    const { key, salt } = await deriveKeySalt(suite, kid, checkBaseKey(baseKey));
    const self = new SFrameKey();
    Object.assign(self, { suite, kid, salt, aead: await Aead.create(suite, key) });
    return self;
  }

  /** The sframe_salt XOR the CTR, as an AEAD.Nn-byte big-endian integer (§4.4.3). */
  nonce(ctr) {
    const nonce = bigEndian(ctr, this.salt.length);
    for (let i = 0; i < nonce.length; i++) nonce[i] ^= this.salt[i];
    return nonce;
  }

  /** encrypt(CTR, KID, metadata, plaintext) of §4.4.3: the header, then the AEAD output with
   *  AAD = header + metadata. */
  async seal(ctr, metadata, plaintext) {
    const header = encodeHeader(this.kid, ctr);
    return concat(header, await this.aead.encrypt(this.nonce(ctr), concat(header, metadata), plaintext));
  }

  /** The AEAD decryption of §4.4.4; AuthenticationFailed if the tag is wrong. */
  async open(header, ctr, metadata, ciphertext) {
    try {
      return await this.aead.decrypt(this.nonce(ctr), concat(header, metadata), ciphertext);
    } catch (error) {
      if (error instanceof AuthenticationFailed) {
        throw new AuthenticationFailed(`SFrame authentication failed (KID ${this.kid}, CTR ${ctr})`);
      }
      throw error;
    }
  }
}

// -- senders and receivers (§4.4.1) --------------------------------------------------------------
/** Encryption keys by KID, each with its next CTR; a CTR is never used twice with a KID (§7.4),
 *  and a KID once removed cannot be added again (its counter would restart). */
export class Sender {
  constructor(suite, { maxFrame = MAX_FRAME } = {}) {
    checkSuite(suite);
    this.suite = suite;
    this.maxFrame = checkLimit(maxFrame);
    this.keys = new Map(); // KID -> Promise<SFrameKey>
    this.next = new Map(); // KID -> next CTR (2^64: exhausted)
  }

  /** Adds a key; the KID is taken at once, so encrypt() may be called before this settles. */
  addKey(kid, baseKey) {
    kid = checkValue("KID", kid);
    if (this.next.has(kid)) throw new KeyIdInUse(`KID ${kid} was already used by this sender: take a new KID`);
    checkBaseKey(baseKey);
    const key = SFrameKey.derive(this.suite, kid, baseKey);
    this.keys.set(kid, key);
    this.next.set(kid, 0n);
    key.catch(() => this.keys.get(kid) === key && this.keys.delete(kid));
    return key.then(() => undefined);
  }

  removeKey(kid) {
    if (!this.keys.delete(checkValue("KID", kid))) throw new UnknownKeyId(`no SFrame key for KID ${kid}`);
  }

  nextCtr(kid) {
    kid = checkValue("KID", kid);
    if (!this.keys.has(kid)) throw new UnknownKeyId(`no SFrame key for KID ${kid}`);
    return this.next.get(kid);
  }

  /** The SFrame ciphertext of ``plaintext`` with the KID's key, ``metadata`` authenticated but
   *  not included. The CTR is taken before anything is awaited: concurrent calls never share one. */
  async encrypt(kid, metadata, plaintext, { ctr = null } = {}) {
    const nextCtr = this.nextCtr(kid);
    kid = checkValue("KID", kid);
    metadata = limit("metadata", metadata, this.maxFrame);
    plaintext = limit("plaintext", plaintext, this.maxFrame);
    if (ctr === null) {
      ctr = nextCtr;
    } else if ((ctr = checkValue("CTR", ctr)) < nextCtr) {
      throw new CounterReused(`CTR ${ctr} is below KID ${kid}'s next CTR ${nextCtr}`);
    }
    if (ctr > MAX_VALUE) throw new CounterExhausted(`KID ${kid} has used CTR 2^64-1: take a new KID`);
    this.next.set(kid, ctr + 1n);
    return (await this.keys.get(kid)).seal(ctr, metadata, plaintext);
  }
}

/** Decryption keys by KID, each with a replay window (RFC 9605 §7.4 leaves replay to the
 *  application; this is the sliding window of RFC 4303 §3.4.3): a CTR already accepted, or older
 *  than ``replayWindow`` below the highest accepted, is ReplayedFrame. The window moves only
 *  when a frame authenticates. */
export class Receiver {
  constructor(suite, { replayWindow = DEFAULT_REPLAY_WINDOW, maxFrame = MAX_FRAME } = {}) {
    const c = checkSuite(suite);
    if (!Number.isSafeInteger(replayWindow) || replayWindow < 1) {
      throw new ValueOutOfRange(`the replay window must be a positive integer, not ${replayWindow}`);
    }
    this.suite = suite;
    this.tagLength = c.nt;
    this.replayWindow = BigInt(replayWindow);
    this.maxFrame = checkLimit(maxFrame);
    this.maxCiphertext = this.maxFrame + MAX_HEADER_LENGTH + c.nt;
    this.keys = new Map(); // KID -> Promise<SFrameKey>
    this.windows = new Map(); // KID -> { highest, seen } (bit i of seen: CTR highest - i)
  }

  addKey(kid, baseKey) {
    kid = checkValue("KID", kid);
    if (this.keys.has(kid)) throw new KeyIdInUse(`KID ${kid} already has a key: remove it first`);
    checkBaseKey(baseKey);
    const key = SFrameKey.derive(this.suite, kid, baseKey);
    this.keys.set(kid, key);
    key.catch(() => this.keys.get(kid) === key && this.keys.delete(kid));
    return key.then(() => undefined);
  }

  removeKey(kid) {
    kid = checkValue("KID", kid);
    if (!this.keys.delete(kid)) throw new UnknownKeyId(`no SFrame key for KID ${kid}`);
    this.windows.delete(kid);
  }

  checkReplay(kid, ctr) {
    const window = this.windows.get(kid);
    if (!window || ctr > window.highest) return;
    const age = window.highest - ctr;
    if (age >= this.replayWindow) {
      throw new ReplayedFrame(`KID ${kid} CTR ${ctr} is older than the replay window ` +
        `(${this.replayWindow} frames below CTR ${window.highest})`);
    }
    if ((window.seen >> age) & 1n) throw new ReplayedFrame(`KID ${kid} CTR ${ctr} was already received`);
  }

  accept(kid, ctr) {
    const window = this.windows.get(kid);
    if (!window) {
      this.windows.set(kid, { highest: ctr, seen: 1n });
    } else if (ctr > window.highest) {
      const shift = ctr - window.highest < this.replayWindow ? ctr - window.highest : this.replayWindow;
      window.seen = ((window.seen << shift) | 1n) & ((1n << this.replayWindow) - 1n);
      window.highest = ctr;
    } else {
      window.seen |= 1n << (window.highest - ctr);
    }
  }

  /** decrypt(metadata, sframe_ciphertext) of §4.4.4: ``{ kid, ctr, plaintext }``. */
  async decryptFrame(metadata, ciphertext) {
    ciphertext = limit("SFrame ciphertext", ciphertext, this.maxCiphertext);
    metadata = limit("metadata", metadata, this.maxFrame);
    const { kid, ctr, length } = decodeHeader(ciphertext);
    if (ciphertext.length - length < this.tagLength) {
      throw new MalformedFrame(`the SFrame ciphertext has ${ciphertext.length - length} bytes after its ` +
        `header, fewer than the ${this.tagLength}-byte tag`);
    }
    const pending = this.keys.get(kid);
    if (!pending) throw new UnknownKeyId(`no SFrame key for KID ${kid}`);
    this.checkReplay(kid, ctr);
    const key = await pending;
    const plaintext = await key.open(ciphertext.subarray(0, length), ctr, metadata, ciphertext.subarray(length));
    if (this.keys.get(kid) !== pending) throw new UnknownKeyId(`the key for KID ${kid} was removed`);
    this.checkReplay(kid, ctr); // again: another call may have accepted it while this one awaited
    this.accept(kid, ctr);
    return { kid, ctr, plaintext };
  }

  /** The plaintext of an SFrame ciphertext. @returns {Promise<Uint8Array>} */
  async decrypt(metadata, ciphertext) {
    return (await this.decryptFrame(metadata, ciphertext)).plaintext;
  }
}
