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
  const dtls = transports.find((t) => t && typeof t.getRemoteCertificates === "function");
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
