// The security code of a 1:1 call: twenty digits both people see, the same on both screens
// exactly when their devices' DTLS connection has no one in the middle.
//
// The spec is the Python reference, src/facecall/e2ee/security_code.py (its module docstring,
// version 1); this is the same derivation, and tests/web/test_security_code.py checks that both
// agree. In short: each side's `a=fingerprint:sha-256 HEX` lines (session or media level),
// written `sha-256 UPPERHEX`, distinct, sorted, joined by ","; the two sides' strings sorted;
// SHA-256 of "facecall security code v1\n" + first + "\n" + second (UTF-8); the first 10 bytes
// as a big-endian integer modulo 10^20, in 20 digits as four groups of five.
//
// In a call (peerSecurityCode), this side's fingerprints come from its local description and the
// other side's from the certificate its DTLS presented (RTCDtlsTransport.getRemoteCertificates),
// never from the remote description: Chromium keeps there one a=fingerprint per transport, the
// one it checks (of a peer that lists sha-256, sha-384 and sha-512, as aiortc does, the
// sha-512), and with BUNDLE only the first m-section's transport counts, so other lines prove
// nothing. The SHA-256 of the certificate DTLS accepted is what that peer's sha-256 line says
// when nobody is in the middle, and whatever it presented otherwise. No certificate: no code.

import { SafetyNumberError, addStyles, element, safetyNumberWith, setVerified, showNumber, statusOf } from "./safety-number.js";

const DOMAIN = "facecall security code v1\n";
const DIGITS = 20;
// one whole line of the SDP (RFC 8122 §5: a=fingerprint:<hash function> <fingerprint>)
const FINGERPRINT = /^a=fingerprint:(\S+)[ \t]+([0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2})+)[ \t]*$/;
// where lines end: CRLF or LF in SDP; these are all that Python's str.splitlines() splits at
const LINE_END = /\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]/;

/** The `sha-256` certificate fingerprints of ``sdp`` as the code hashes them: distinct, sorted,
 *  joined by ","; null if it has none. @param {string} sdp @returns {string|null} */
export function sdpFingerprints(sdp) {
  const found = new Set();
  for (const line of String(sdp || "").split(LINE_END)) {
    const match = FINGERPRINT.exec(line);
    if (match && match[1].toLowerCase() === "sha-256") found.add(`sha-256 ${match[2].toUpperCase()}`);
  }
  // plain code-unit order, as Python sorts these ASCII strings
  return found.size ? [...found].sort().join(",") : null;
}

/** Every `a=fingerprint` line of ``sdp``, any hash function, normalised, distinct and sorted,
 *  joined by ","; null if none: what says which certificates a description stands for (a new
 *  peer connection has a new certificate). @param {string} sdp @returns {string|null} */
export function certificateLines(sdp) {
  const found = new Set();
  for (const line of String(sdp || "").split(LINE_END)) {
    const match = FINGERPRINT.exec(line);
    if (match) found.add(`${match[1].toLowerCase()} ${match[2].toUpperCase()}`);
  }
  return found.size ? [...found].sort().join(",") : null;
}

/** The code of two sides' fingerprint strings (as sdpFingerprints writes them), in either
 *  order: "01234 56789 01234 56789". @returns {Promise<string>} */
export async function codeOf(one, other) {
  const [first, second] = [one, other].sort();
  const bytes = new TextEncoder().encode(`${DOMAIN}${first}\n${second}`);
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  let number = 0n;
  for (const byte of digest.subarray(0, 10)) number = (number << 8n) | BigInt(byte);
  const digits = (number % 10n ** BigInt(DIGITS)).toString().padStart(DIGITS, "0");
  return digits.match(/.{5}/g).join(" ");
}

/** The code of a peer connection from its local and remote descriptions' SDP; null while
 *  either has no `sha-256` fingerprint. @returns {Promise<string|null>} */
export async function securityCode(localSdp, remoteSdp) {
  const mine = sdpFingerprints(localSdp);
  const theirs = sdpFingerprints(remoteSdp);
  if (mine === null || theirs === null) return null;
  return codeOf(mine, theirs);
}

/** The sha-256 fingerprint of the certificate the other side's DTLS presented to ``pc``, written
 *  as sdpFingerprints writes it; null where the browser does not say. Chromium may report the
 *  peer connection connected a moment before its DTLS transport: that one is waited for
 *  (``waitMs`` at most: as long as a call waits for its media to connect, however busy the
 *  machine). */
export async function remoteCertificateFingerprint(pc, waitMs = 30000) {
  const transports = [...pc.getReceivers(), ...pc.getSenders(), pc.sctp].map((x) => x && x.transport);
  const found = transports.filter((t) => t && typeof t.getRemoteCertificates === "function");
  // the one that carries the media (BUNDLE: one for all), not one a transceiver added since
  // (not negotiated yet) still holds
  const dtls = found.find((t) => t.state === "connected") || found[0];
  if (!dtls) return null;
  const pending = () => dtls.state === "new" || dtls.state === "connecting";
  if (pending()) {
    await new Promise((resolve) => {
      const stop = () => {
        clearTimeout(timer);
        dtls.removeEventListener("statechange", changed);
        resolve();
      };
      const changed = () => pending() || stop();
      const timer = setTimeout(stop, waitMs);
      dtls.addEventListener("statechange", changed);
    });
  }
  const certificates = dtls.state === "connected" ? dtls.getRemoteCertificates() : [];
  if (!certificates.length) return null;
  // the first is the end entity's (RFC 8122 fingerprints it; WebRTC's are self-signed, alone)
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", certificates[0]));
  return `sha-256 ${[...digest].map((byte) => byte.toString(16).padStart(2, "0").toUpperCase()).join(":")}`;
}

/** The code of a connected RTCPeerConnection ``pc`` (see above); null while it has none, and
 *  where the browser does not tell the certificate the other side presented: the remote
 *  description's lines are not what DTLS checked (with BUNDLE only the first m-section's count),
 *  so a code from them could match with someone in the middle (docs/security.md).
 *  @param {RTCPeerConnection} pc @returns {Promise<string|null>} */
export async function peerSecurityCode(pc) {
  const local = pc.localDescription;
  const mine = sdpFingerprints(local ? local.sdp : "");
  const theirs = await remoteCertificateFingerprint(pc);
  if (mine === null || theirs === null) return null;
  return codeOf(mine, theirs);
}

// -- the safety number, next to the code -----------------------------------------------------------
// Under the security code of a connected call, where the code says "this connection", a line
// says whether the safety number with the other person (safety-number.js) was compared:
// "Verified" (marked, and unchanged), "Safety number changed" (marked, and changed since: a new
// device, or someone in the middle), or a "Verify bob" link that shows the sixty digits to read
// aloud and a "Mark as verified" button. The line follows the code: shown with it, hidden with
// it, computed anew when the code changes (a new connection may be with another device).

/**
 * The safety number's line of the call screen, built after the security code's (#security).
 * One per page: watchCallSafety makes it, or gives it a new session's ``identity``.
 */
class CallSafety {
  /**
   * @param {object} o
   * @param {() => import('./identity.js').Identity|null} o.identity  this device (null: signed out)
   * @param {() => Promise<string|null>} o.remoteDevice  the other person's device in the
   *   connected call; identity.js pinned it with its user when it checked its description
   */
  constructor({ identity, remoteDevice }) {
    Object.assign(this, { identity, remoteDevice });
    this.shown = null; // {userId, name, number, status} on screen
    this.asked = 0; // the latest refresh: an older one's answer is dropped
    addStyles();
    const status = element("span", { id: "call-safety-status", className: "safety-status", tabIndex: -1 });
    const open = element("button", { type: "button", id: "call-safety-open", className: "link",
      "aria-expanded": "false", "aria-controls": "call-safety-panel" });
    const panel = element("div", { id: "call-safety-panel", className: "safety-panel", hidden: true },
      element("p", { id: "call-safety-help" }),
      element("div", { id: "call-safety-number" }),
      element("div", { className: "safety-actions" },
        element("button", { type: "button", id: "call-safety-mark", className: "primary",
          textContent: "Mark as verified" }),
        element("button", { type: "button", id: "call-safety-unmark", className: "ghost",
          textContent: "Unmark" })));
    this.root = element("div", { id: "call-safety", className: "call-safety", hidden: true },
      element("p", { className: "safety-line" }, status, " ", open), panel);
    const code = document.getElementById("security");
    code.after(this.root);
    open.onclick = () => this.toggle(panel.hidden);
    panel.querySelector("#call-safety-mark").onclick = () => this.mark(true);
    panel.querySelector("#call-safety-unmark").onclick = () => this.mark(false);
    // the code's line shown, hidden or changed (ui.js sets it)
    new MutationObserver(() => this.refresh()).observe(code, {
      attributes: true, attributeFilter: ["hidden", "data-device"], childList: true, characterData: true,
      subtree: true });
  }

  part(id) {
    return this.root.querySelector(`#${id}`);
  }

  /** Show the line for the call's code as it is now (hidden with no code). */
  async refresh() {
    const asked = ++this.asked;
    const code = document.getElementById("security");
    const identity = this.identity();
    if (code.hidden || !identity) return this.show(null);
    let device = null;
    try {
      device = await this.remoteDevice();
    } catch {
      device = null;
    }
    const pin = device ? identity.pinned(device) : null;
    if (asked !== this.asked) return undefined;
    if (!pin) return this.show(null);
    const name = document.getElementById("call-peer").textContent || "them";
    let shown;
    try {
      shown = { ...(await safetyNumberWith(identity, pin[0], name)), name };
      if (!shown.devices.includes(device)) { // the number does not vouch for this call's device
        shown = { name, status: "refused", why: `this call is with a device of ${name}'s that ${name}'s `
          + "list of devices leaves out — someone may be in the middle." };
      }
    } catch (error) {
      if (!(error instanceof SafetyNumberError)) console.warn("facecall: safety number", error);
      // a server that did not answer says nothing about the keys: no line
      shown = error instanceof SafetyNumberError && !error.unchecked ? { name, status: "refused", why: error.message } : null;
    }
    if (asked === this.asked) this.show(shown);
    return undefined;
  }

  /** Show ``shown`` ({userId, name, number, status} or {name, status: "refused", why}), or no line. */
  show(shown) {
    this.shown = shown;
    this.root.hidden = !shown;
    this.toggle(false);
    if (!shown) return;
    const status = this.part("call-safety-status");
    const open = this.part("call-safety-open");
    status.dataset.status = shown.status;
    status.textContent = { verified: "Verified", changed: "Safety number changed",
      refused: `No safety number: ${shown.why}`, unverified: "" }[shown.status];
    status.hidden = !status.textContent;
    open.hidden = shown.status === "refused";
    open.textContent = shown.status === "unverified" ? `Verify ${shown.name}`
      : shown.status === "changed" ? "Compare again" : "Show safety number";
    if (shown.number) {
      showNumber(this.part("call-safety-number"), shown.number);
      this.part("call-safety-help").textContent = shown.status === "changed"
        ? `The safety number with ${shown.name} changed since you verified it: one of you added or `
          + "removed a device, or someone is in the middle. Compare it again: read it aloud, or "
          + "compare screens."
        : `Read these digits to ${shown.name}, or compare screens. If they are the same on both, `
          + "nobody — not even the server — is in the middle of your calls with them.";
      this.part("call-safety-mark").hidden = shown.status === "verified";
      this.part("call-safety-unmark").hidden = shown.status === "unverified";
    }
  }

  /** Open (``open``) or close the panel with the number. */
  toggle(open) {
    this.part("call-safety-panel").hidden = !open;
    this.part("call-safety-open").setAttribute("aria-expanded", String(open));
  }

  /** Mark the number on screen as compared (``on``), or forget the one marked. */
  mark(on) {
    const shown = this.shown;
    const identity = this.identity();
    if (!shown || !shown.number || !identity) return;
    setVerified(identity.userId, shown.userId, on ? shown.number : null, shown.unlisted);
    const unlisted = on ? [] : shown.unlisted; // marking forgets the devices the list left out
    this.show({ ...shown, unlisted, status: statusOf(identity.userId, shown.userId, shown.number, unlisted) });
    const status = this.part("call-safety-status");
    (status.hidden ? this.part("call-safety-open") : status).focus();
  }
}

let callSafety = null;

/** Show the safety number's line under the security code of every connected call (see
 *  CallSafety for the options); again with a new session: its identity from then on. */
export function watchCallSafety(options) {
  if (callSafety) Object.assign(callSafety, options);
  else callSafety = new CallSafety(options);
  return callSafety;
}
