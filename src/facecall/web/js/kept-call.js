// The call a tab was in when it unloaded, kept for the page that follows if it was a reload
// (sessionStorage survives a reload, not a closed tab): the reloaded page goes on in it
// (calls.js; docs/protocol.md, "Rejoining the media"). What a Call keeps: Call.toKept, and
// Call.fromKept to go on in it (call.js).

// its sessionStorage key
const KEPT_CALL = "facecall.call";

/**
 * A call kept over a reload: what the next page needs to go on in it.
 * @typedef {object} KeptCall
 * @property {string} userId  whose call (a page signed in as someone else ignores it)
 * @property {string} id @property {"caller"|"callee"} role @property {string} peerId
 * @property {string} name @property {"audio"|"video"} media
 * @property {number|null} connectedAt  when the media first connected (the duration goes on)
 * @property {boolean} muted @property {boolean} cameraOff
 * @property {boolean} group  the call's media went through the SFU (group-call.js)
 */

/** The call kept over a reload by this tab for user ``userId``, once (it is forgotten here).
 *  @returns {KeptCall|null} */
export function takeKeptCall(userId) {
  let kept = null;
  try {
    kept = JSON.parse(sessionStorage.getItem(KEPT_CALL) || "null");
  } catch {
    /* not ours: ignored */
  }
  sessionStorage.removeItem(KEPT_CALL);
  return kept && kept.userId === userId && typeof kept.id === "string" ? kept : null;
}

/** Keep ``kept`` for the page that follows this one, if it is a reload. @param {KeptCall} kept */
export function keepCall(kept) {
  sessionStorage.setItem(KEPT_CALL, JSON.stringify(kept));
}
