// Safety numbers (docs/security.md, "Safety numbers"): sixty digits for this user and another,
// over the identity keys of all the devices of both, the same on both sides exactly when each
// sees the other's devices as they are. Two people compare it once; from then on this browser
// says when it changed (a new device of either, or someone in the middle).
//
// The spec, version 1, is src/facecall/e2ee/safety_number.py (the SDK computes the same;
// tests/web/test_safety_number.py checks that both agree on its known answer). In short: each
// person's half is SHA-512("facecall safety number v1\n" + user_id + "\n" + keys), ``keys`` the
// person's device keys as published, distinct, sorted and joined by ","; the first 13 bytes as a
// big-endian integer modulo 10^30, in 30 digits. The two halves sorted and joined: 60 digits in
// twelve groups of five.
//
// safetyNumberWith() reads both people's keys from the server and checks them as the SDK does
// (client/identity.py, Identity.safety_number): this device's own key must be listed for its own
// user, and every device of the other person this browser has met (pinned in localStorage by
// identity.js) must be listed with the key it pinned. Then the other person's listed keys are
// pinned, so that a call with any of their devices is checked against the compared keys.

import { IdentityError, MAX_DEVICES, keyBytes, pinKeys, pinnedDevicesOf, setVerified, verifiedNumber }
  from "./identity.js";

export { setVerified, verifiedNumber };

export const DOMAIN = "facecall safety number v1\n";
const HALF_DIGITS = 30;

/** Why there is no safety number: ``unchecked`` when the server could not be asked (or did not
 *  answer), otherwise the keys it lists do not hold (``refused``: someone may be in the middle)
 *  or there are none. */
export class SafetyNumberError extends Error {
  constructor(message, { unchecked = false, refused = false } = {}) {
    super(message);
    this.name = "SafetyNumberError";
    this.unchecked = unchecked;
    this.refused = refused;
  }
}

// -- the derivation ------------------------------------------------------------------------------
/** One person's 30 digits over the public keys of their devices (step 1); IdentityError for a
 *  key that is not one, a person with no key at all, or a user id that cannot be hashed.
 *  @param {string} userId @param {Iterable<string>} keys @returns {Promise<string>} */
export async function half(userId, keys) {
  // plain code-unit order, as Python sorts these ASCII strings
  const distinct = [...new Set(keys)].sort();
  if (!distinct.length) throw new IdentityError(`user ${userId} has no device with an identity key`);
  for (const key of distinct) keyBytes(key);
  if (typeof userId !== "string" || !userId || userId.includes("\n")) {
    throw new IdentityError("a user id is non-empty and has no line break");
  }
  const bytes = new TextEncoder().encode(`${DOMAIN}${userId}\n${distinct.join(",")}`);
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-512", bytes));
  let number = 0n;
  for (const byte of digest.subarray(0, 13)) number = (number << 8n) | BigInt(byte);
  return (number % 10n ** BigInt(HALF_DIGITS)).toString().padStart(HALF_DIGITS, "0");
}

/** The safety number of two people, each ``[userId, keys]``, in either order: sixty digits in
 *  twelve groups of five, "01234 56789 … 56789" (step 2). @returns {Promise<string>} */
export async function safetyNumber(one, other) {
  const digits = [await half(...one), await half(...other)].sort().join("");
  return digits.match(/.{5}/g).join(" ");
}

// -- what this browser remembers -----------------------------------------------------------------
/** "verified" (the marked number, still the same, and no device met as theirs left out of
 *  the list: ``unlisted`` empty), "changed" (one was marked, and the keys changed since, or a
 *  device met as theirs is missing) or "unverified". */
export function statusOf(ownUserId, userId, number, unlisted = []) {
  const marked = verifiedNumber(ownUserId, userId);
  return marked === null ? "unverified" : marked === number && !unlisted.length ? "verified" : "changed";
}

// -- from the server's lists ---------------------------------------------------------------------
/** ``device id → key`` of a ``GET /v1/users/{id}/identity-keys`` answer. */
function listed(answer) {
  const devices = answer && answer.devices;
  if (!Array.isArray(devices)) throw new SafetyNumberError("the server's list of identity keys is malformed");
  if (devices.length > MAX_DEVICES) { // the server allows no more: a list made to evict pins
    throw new SafetyNumberError(`The server lists ${devices.length} devices for one person, more than `
      + `the ${MAX_DEVICES} anyone can have — someone may be in the middle.`, { refused: true });
  }
  const keys = new Map();
  for (const entry of devices) {
    if (entry && typeof entry.device_id === "string" && typeof entry.identity_key === "string") {
      keys.set(entry.device_id, entry.identity_key);
    }
  }
  return keys;
}

/** The keys the server lists for user ``userId`` (``name`` in messages). */
async function keysOf(identity, userId, name) {
  try {
    return listed(await identity.api.identityKeys(identity.token, userId));
  } catch (error) {
    if (error instanceof SafetyNumberError) throw error;
    if (error.status === 404) throw new SafetyNumberError(`${name} has no account on this server any more.`);
    throw new SafetyNumberError(`The keys of ${name} could not be read: ${error.message}`, { unchecked: true });
  }
}

/**
 * The safety number of this device's user and user ``userId`` (``name``: what to call them in
 * messages, say their username), over the keys the server lists for both, checked against what
 * this browser knows (above); the other person's listed keys are pinned from then on.
 * @param {import('./identity.js').Identity} identity  this device (its api, token, user, key)
 * @returns {Promise<{userId: string, number: string, devices: string[], unlisted: string[],
 *   status: "verified"|"changed"|"unverified"}>}  ``devices``: theirs the number covers;
 *   ``unlisted``: devices met as theirs the list leaves out (the status is then "changed")
 * @throws {SafetyNumberError} why there is no number to show (``refused``: someone may be in
 *   the middle; ``unchecked``: the server did not answer)
 */
export async function safetyNumberWith(identity, userId, name = userId) {
  const [own, theirs] = await Promise.all([
    keysOf(identity, identity.userId, "your account"), keysOf(identity, userId, name)]);
  if (own.get(identity.deviceId) !== identity.publicKey) {
    throw new SafetyNumberError("The server does not list this browser's own key as yours — someone "
      + "may be in the middle.", { refused: true });
  }
  for (const [deviceId, key] of theirs) {
    const pin = identity.pinned(deviceId);
    if (!pin) continue;
    if (pin[0] !== userId) {
      throw new SafetyNumberError(`The server says a device you have called as someone else's is ${name}'s `
        + "— someone may be in the middle.", { refused: true });
    }
    if (pin[1] !== key) {
      throw new SafetyNumberError(`The server lists another key for a device of ${name}'s you have `
        + "called — someone may be in the middle.", { refused: true });
    }
  }
  if (!theirs.size) {
    throw new SafetyNumberError(`${name} has no device that can take calls yet, so there is no safety `
      + "number to compare.");
  }
  let number;
  try {
    number = await safetyNumber([identity.userId, own.values()], [userId, theirs.values()]);
  } catch (error) {
    if (!(error instanceof IdentityError)) throw error;
    throw new SafetyNumberError(`The server lists a key that is not one (${error.message}).`, { refused: true });
  }
  pinKeys(userId, theirs);
  // devices met as theirs that the list leaves out: removed, or hidden by the server
  const unlisted = pinnedDevicesOf(userId).filter((deviceId) => !theirs.has(deviceId));
  return { userId, number, devices: [...theirs.keys()], unlisted,
    status: statusOf(identity.userId, userId, number, unlisted) };
}

// -- showing it ----------------------------------------------------------------------------------
const STYLE = `
.safety-number { display: grid; grid-template-columns: repeat(4, auto); justify-content: start;
  gap: 6px 12px; margin: 10px 0; font: 600 1.25rem/1.25 ui-monospace, "SFMono-Regular", Menlo,
  Consolas, "DejaVu Sans Mono", monospace; letter-spacing: .04em; color: var(--text, #fff); }
.safety-status[data-status=verified] { color: var(--accent, #2fbf71); font-weight: 600; }
.safety-status[data-status=verified]::before { content: "✓ " / ""; }
.safety-status[data-status=changed], .safety-status[data-status=refused] { color: var(--warn, #fc0); font-weight: 600; }
.safety-status[data-status=changed]::before, .safety-status[data-status=refused]::before { content: "⚠ " / ""; }
.safety-actions { display: flex; gap: 10px; flex-wrap: wrap; }
button.link { background: none; border: 0; padding: 0; color: var(--focus, #64d2ff); text-decoration: underline;
  font-weight: 600; border-radius: 4px; }
.call-safety { margin: 6px auto 0; max-width: min(30em, 100%); font-size: .85rem; color: #d6dbe0; }
.call-safety .safety-line { display: inline-block; padding: 3px 12px; border-radius: 999px; background: rgba(0,0,0,.45); }
.call-safety .safety-panel { margin: 6px 0 0; padding: 8px 12px; border-radius: 10px; background: rgba(20,23,28,.88); text-align: left; }
.call-safety .safety-number { justify-content: center; font-size: 1.15rem; }
`;

let styles = null;

/** Add the styles of the safety number's elements to the page, once, as a constructed style
 *  sheet: the page's Content-Security-Policy (style-src 'self') refuses a <style> element, not
 *  the CSSOM. */
export function addStyles() {
  if (styles) return;
  styles = new CSSStyleSheet();
  styles.replaceSync(STYLE);
  document.adoptedStyleSheets = [...document.adoptedStyleSheets, styles];
}

/** Fill ``element`` with ``number``'s twelve groups, four to a line, to read aloud group by
 *  group (screen readers too: one group a cell). */
export function showNumber(element, number) {
  element.classList.add("safety-number");
  element.setAttribute("role", "group");
  element.setAttribute("aria-label", "Safety number");
  element.replaceChildren(...number.split(" ").map((group) => {
    const cell = document.createElement("span");
    cell.textContent = group;
    return cell;
  }));
}

/** An element of ``tag`` with ``props`` (properties such as className, id, textContent, type;
 *  attributes: role, aria-*, data-*) and ``children``. */
export function element(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (name === "role" || name.startsWith("aria-") || name.startsWith("data-")) el.setAttribute(name, value);
    else el[name] = value;
  }
  el.append(...children);
  return el;
}
