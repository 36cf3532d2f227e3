// Shared playback (SharePlay), the protocol's core: the state both people in a call agree on
// (the video, playing or not, its speed and position), who changed it last, and the offset
// between the two devices' clocks (docs/shareplay.md, version 1). The same rules as the
// reference, src/facecall/shareplay/playback.py and clock.py; no DOM, no channel: it takes
// messages and the time (ms, this page's `performance.now()`) and hands back messages to send.
// watch-together.js moves them over the call's data channel and plays the video.

/** Largest message accepted, in bytes (UTF-8): a state with the longest URL and title fits. */
export const MAX_MESSAGE_BYTES = 8 * 1024;
export const MAX_URL_CHARS = 2048;
export const MAX_TITLE_CHARS = 200;
export const MIN_RATE = 0.25;
export const MAX_RATE = 4;
/** Positions (s) and times (ms) are finite and at most these. */
export const MAX_POSITION = 10_000_000;
export const MAX_TIME_MS = 1e14;
const MAX_ID_CHARS = 64;
const MAX_VERSION = 2 ** 53;
/** Samples the clock filter keeps (RFC 5905 §10 keeps eight). */
export const CLOCK_SAMPLES = 8;
const URL_PATTERN = /^https?:\/\/[^\s]+$/;

/** A message that is malformed, too large or not version 1, or a local change that makes no
 *  sense (a rate out of range, pausing with nothing shared). */
export class ShareplayError extends Error {
  constructor(message) {
    super(message);
    this.name = "ShareplayError";
  }
}

// -- validation -------------------------------------------------------------------------------
const FIELDS = {
  state: ["v", "type", "n", "by", "activity"],
  "clock.ping": ["v", "type", "t0"],
  "clock.pong": ["v", "type", "t0", "t1", "t2"],
};
const ACTIVITY_FIELDS = ["id", "url", "title", "playing", "position", "rate", "at"];

/** Characters as Python counts them (code points, not UTF-16 units). */
function chars(text) {
  return [...text].length;
}

function isObject(value) {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** ``object`` has exactly the keys ``keys`` (none missing, none more). */
function exactly(object, keys, where) {
  const have = Object.keys(object);
  for (const key of keys) if (!Object.hasOwn(object, key)) throw new ShareplayError(`${where}${key}: missing`);
  for (const key of have) if (!keys.includes(key)) throw new ShareplayError(`${where}${key}: not allowed`);
}

function number(value, low, high, where) {
  if (typeof value !== "number" || !Number.isFinite(value) || value < low || value > high) {
    throw new ShareplayError(`${where}: a number from ${low} to ${high}`);
  }
  return value;
}

function string(value, low, high, where) {
  if (typeof value !== "string" || chars(value) < low || chars(value) > high) {
    throw new ShareplayError(`${where}: a string of ${low} to ${high} characters`);
  }
  return value;
}

/** A video's address as the protocol takes it: http(s), no spaces, at most 2,048 characters. */
export function checkUrl(url, where = "url") {
  string(url, 1, MAX_URL_CHARS, where);
  if (!URL_PATTERN.test(url)) throw new ShareplayError(`${where}: an http:// or https:// address without spaces`);
  return url;
}

function checkActivity(a) {
  if (!isObject(a)) throw new ShareplayError("activity: an object or null");
  exactly(a, ACTIVITY_FIELDS, "activity.");
  string(a.id, 1, MAX_ID_CHARS, "activity.id");
  checkUrl(a.url, "activity.url");
  string(a.title, 0, MAX_TITLE_CHARS, "activity.title");
  if (typeof a.playing !== "boolean") throw new ShareplayError("activity.playing: true or false");
  number(a.position, 0, MAX_POSITION, "activity.position");
  number(a.rate, MIN_RATE, MAX_RATE, "activity.rate");
  number(a.at, 0, MAX_TIME_MS, "activity.at");
  return { id: a.id, url: a.url, title: a.title, playing: a.playing, position: a.position, rate: a.rate, at: a.at };
}

/** The reviver that refuses `1.0` or `1e0` where an integer is meant (`v`, `n`): JSON.parse
 *  alone cannot tell them from `1`, the reference (pydantic, strict) does. */
function integersAsWritten(key, value, context) {
  if ((key === "v" || key === "n") && typeof value === "number" && context && typeof context.source === "string"
      && /[.eE]/.test(context.source)) {
    throw new ShareplayError(`${key}: an integer`);
  }
  return value;
}

/**
 * A validated message from the other device (a string, or the bytes of one), or a
 * ShareplayError that says what is wrong with it: at most 8 KiB, JSON, `"v": 1` (the integer),
 * a known `type` with exactly its fields, each of its type and within its range.
 * @returns {{type: "state", n: number, by: string, activity: object|null}
 *   | {type: "clock.ping", t0: number} | {type: "clock.pong", t0: number, t1: number, t2: number}}
 */
export function parseMessage(raw) {
  let text = raw;
  let bytes;
  if (typeof raw === "string") {
    bytes = raw.length > MAX_MESSAGE_BYTES ? Infinity : new TextEncoder().encode(raw).length;
  } else if (raw instanceof ArrayBuffer || ArrayBuffer.isView(raw)) {
    bytes = raw.byteLength;
    if (bytes <= MAX_MESSAGE_BYTES) {
      try {
        text = new TextDecoder("utf-8", { fatal: true }).decode(raw);
      } catch {
        throw new ShareplayError("message: not UTF-8");
      }
    }
  } else {
    throw new ShareplayError("message: text or bytes");
  }
  if (bytes > MAX_MESSAGE_BYTES) throw new ShareplayError(`a message is at most ${MAX_MESSAGE_BYTES} bytes`);
  let message;
  try {
    message = JSON.parse(text, integersAsWritten);
  } catch (error) {
    if (error instanceof ShareplayError) throw error;
    throw new ShareplayError("message: not JSON");
  }
  if (!isObject(message)) throw new ShareplayError("message: a JSON object");
  const fields = Object.hasOwn(FIELDS, message.type) ? FIELDS[message.type] : null;
  if (!fields) throw new ShareplayError("type: state, clock.ping or clock.pong");
  exactly(message, fields, "");
  if (message.v !== 1 || !Number.isInteger(message.v)) throw new ShareplayError("v: must be the integer 1");
  if (message.type === "state") {
    if (!Number.isInteger(message.n) || message.n < 0 || message.n > MAX_VERSION) {
      throw new ShareplayError(`n: an integer from 0 to ${MAX_VERSION}`);
    }
    string(message.by, 1, MAX_ID_CHARS, "by");
    const activity = message.activity === null ? null : checkActivity(message.activity);
    return { type: "state", n: message.n, by: message.by, activity };
  }
  for (const key of fields.slice(2)) number(message[key], 0, MAX_TIME_MS, key);
  return message.type === "clock.ping" ? { type: "clock.ping", t0: message.t0 }
    : { type: "clock.pong", t0: message.t0, t1: message.t1, t2: message.t2 };
}

// -- the other device's clock ---------------------------------------------------------------------
/**
 * The offset between this page's clock and the other device's, from ping/pong exchanges (NTP's
 * on-wire exchange, RFC 5905 §8): this side sends ``t0``; the other notes when the ping arrived
 * (``t1``) and when its pong left (``t2``), on its clock; this side notes the pong's arrival
 * (``t3``). The offset is ``((t1 - t0) + (t2 - t3)) / 2``, wrong by at most half the round trip
 * ``(t3 - t0) - (t2 - t1)``; of the last eight samples the quickest counts (RFC 5905 §10:
 * queueing only ever adds delay).
 */
export class ClockSync {
  constructor() {
    this.samples = [];
  }

  /** Take one exchange; null for one that cannot be right (a pong before its ping, a negative
   *  delay). @returns {{offset: number, delay: number}|null} */
  sample(t0, t1, t2, t3) {
    const delay = (t3 - t0) - (t2 - t1);
    if (t3 < t0 || t2 < t1 || delay < 0) return null;
    const taken = { offset: ((t1 - t0) + (t2 - t3)) / 2, delay };
    this.samples.push(taken);
    if (this.samples.length > CLOCK_SAMPLES) this.samples.shift();
    return taken;
  }

  /** The sample with the smallest delay (the first of equals), or null before any. */
  get best() {
    let best = null;
    for (const s of this.samples) if (best === null || s.delay < best.delay) best = s;
    return best;
  }

  /** Milliseconds to add to this clock to read the other one (0 before any sample). */
  get offset() {
    const best = this.best;
    return best === null ? 0 : best.offset;
  }

  /** A time on the other device's clock, on this one. */
  toLocal(remoteMs) {
    return remoteMs - this.offset;
  }
}

// -- the shared state -------------------------------------------------------------------------------
/** A fresh id for a new activity (12 URL-safe characters, as the reference's token_urlsafe(9)). */
function newId() {
  const bytes = crypto.getRandomValues(new Uint8Array(9));
  return btoa(String.fromCharCode(...bytes)).replaceAll("+", "-").replaceAll("/", "_");
}

/** Whether version ``a`` is newer than ``b``: `n` first, then the device id (as Python compares
 *  strings: by code point). */
export function newer(a, b) {
  if (a.n !== b.n) return a.n > b.n;
  const x = [...a.by].map((c) => c.codePointAt(0));
  const y = [...b.by].map((c) => c.codePointAt(0));
  for (let i = 0; i < Math.min(x.length, y.length); i += 1) if (x[i] !== y[i]) return x[i] > y[i];
  return x.length > y.length;
}

/**
 * One call's shared playback, as this device (``deviceId``) sees it. ``activity`` is what is
 * shared (null: nothing): ``position`` seconds at ``at`` ms — on this page's clock when
 * ``local``, else on the other device's; ``version`` is the state's Lamport version.
 */
export class SharedPlayback {
  constructor(deviceId) {
    this.deviceId = deviceId;
    this.clock = new ClockSync();
    this.activity = null;
    this.version = { n: 0, by: "" };
  }

  /** Seconds into the shared video at ``now`` (ms, this clock), or null if nothing is shared. */
  position(now) {
    const a = this.activity;
    if (a === null) return null;
    if (!a.playing) return a.position;
    const at = a.local ? a.at : this.clock.toLocal(a.at);
    return Math.max(0, a.position + a.rate * (now - at) / 1000);
  }

  /** Share the video at ``url`` (replacing what was shared); the message to send. */
  start(url, title, now, { position = 0, playing = true } = {}) {
    checkUrl(url);
    string(title, 0, MAX_TITLE_CHARS, "title");
    number(position, 0, MAX_POSITION, "position");
    number(now, 0, MAX_TIME_MS, "at");
    return this.set({ id: newId(), url, title, playing: !!playing, position, rate: 1, at: now, local: true });
  }

  play(now) { return this.change(now, { playing: true }); }

  pause(now) { return this.change(now, { playing: false }); }

  seek(position, now) {
    if (!(position >= 0 && position <= MAX_POSITION)) {
      throw new ShareplayError(`a position is 0 to ${MAX_POSITION} seconds`);
    }
    return this.change(now, { position });
  }

  setRate(rate, now) {
    if (!(rate >= MIN_RATE && rate <= MAX_RATE)) throw new ShareplayError(`a rate is ${MIN_RATE} to ${MAX_RATE}`);
    return this.change(now, { rate });
  }

  /** Stop sharing, for both. */
  end() { return this.set(null); }

  /** The current state re-anchored on this clock (same version): sent when a channel opens. */
  stateMessage(now) {
    let a = this.activity;
    if (a !== null && !a.local) a = { ...a, position: this.position(now) || 0, at: now, local: true };
    return stateOf(this.version, a);
  }

  /**
   * A new peer connection: the device at its other end may be another page (a reload) or
   * another device (a handoff), with another clock. What is shared is re-anchored on this clock
   * with the offset measured so far (same version), and the clock is measured anew.
   */
  newPeer(now) {
    const a = this.activity;
    if (a !== null && !a.local && this.clock.best !== null) {
      this.activity = { ...a, position: this.position(now) || 0, at: now, local: true };
    }
    this.clock = new ClockSync();
  }

  ping(now) { return { v: 1, type: "clock.ping", t0: now }; }

  /** Take a message from the other device: ``{reply, changed}`` — a message to send back (a
   *  pong) or null, and whether the shared state changed. A ShareplayError for a bad message
   *  (nothing changes). */
  receive(raw, now) {
    const message = parseMessage(raw);
    if (message.type === "clock.ping") {
      return { reply: { v: 1, type: "clock.pong", t0: message.t0, t1: now, t2: now }, changed: false };
    }
    if (message.type === "clock.pong") {
      this.clock.sample(message.t0, message.t1, message.t2, now);
      return { reply: null, changed: false };
    }
    const version = { n: message.n, by: message.by };
    if (!newer(version, this.version)) return { reply: null, changed: false }; // older, or the same again
    this.version = version;
    this.activity = message.activity === null ? null : { ...message.activity, local: false };
    return { reply: null, changed: true };
  }

  change(now, changes) {
    if (this.activity === null) throw new ShareplayError("nothing is shared");
    const position = "position" in changes ? changes.position : this.position(now) || 0;
    return this.set({ ...this.activity, ...changes, position, at: now, local: true });
  }

  set(activity) {
    this.version = { n: this.version.n + 1, by: this.deviceId };
    this.activity = activity;
    return stateOf(this.version, activity);
  }
}

function stateOf(version, a) {
  const activity = a === null ? null : {
    id: a.id, url: a.url, title: a.title, playing: a.playing, position: a.position, rate: a.rate, at: a.at,
  };
  return { v: 1, type: "state", n: version.n, by: version.by, activity };
}

/** A message as sent on the data channel (JSON text). */
export function encode(message) {
  return JSON.stringify(message);
}
