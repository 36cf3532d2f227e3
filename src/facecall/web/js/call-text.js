// What a call says to the person on this device: why it ended, why a request failed, how
// long it has lasted, and why it was given up.

export const NO_CONNECT = "The call could not connect. Check your network connection and try again"
  + " (a firewall may block calls; the server may offer no relay).";
export const NO_RECONNECT = "The call was lost: the connection did not come back. Call again when your network works.";

/** A call's duration as the in-call screen shows it: "05:07", or "1:01:02" from an hour on. */
export function formatDuration(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const hh = Math.floor(s / 3600);
  const mm = String(Math.floor(s / 60) % 60).padStart(2, "0");
  const ss = String(s % 60).padStart(2, "0");
  return hh > 0 ? `${hh}:${mm}:${ss}` : `${mm}:${ss}`;
}

/** Why a call ended, as the person on this device should read it. */
export function endMessage(reason, name, role) {
  switch (reason) {
    case "hung_up": return "Call ended";
    case "declined": return `${name} declined the call`;
    case "busy": return `${name} is busy on another call`;
    case "ring_timeout": return role === "caller" ? `No answer from ${name}` : `Missed call from ${name}`;
    case "unavailable": return `${name} is unavailable: none of their devices can take calls right now`;
    case "cancelled": return role === "caller" ? "Call cancelled" : `Missed call from ${name}`;
    case "connection_lost": return "Call ended: the connection was lost";
    case "no_media": return NO_CONNECT;
    case "answered_elsewhere": return "Answered on another device";
    case "declined_elsewhere": return "Declined on another device";
    case "glare": return `You and ${name} called each other at the same moment`;
    // this page's own device removed signs it out; a call hears of the other side's
    case "device_removed": return `Call ended: ${name || "the other side"} signed out or removed that device`;
    case "server_shutdown": return "Call ended: the server is restarting";
    case "handed_off": return "The call moved to another device";
    // the other device refused what this one sent: it was not signed by this device's key
    case "identity_check_failed":
      return `Call ended: ${name || "the other side"}'s device could not confirm that the call came from `
        + "your device — someone may be listening in";
    default: return "Call ended";
  }
}

/** Signaling error codes, as sentences. */
export function requestMessage(error, name) {
  switch (error.code) {
    case "unknown_user": return `No user named ${name}`;
    case "not_allowed": return "You cannot call yourself";
    case "call_ended": return "That call has already ended";
    case "call_full": return "The call is full";
    case "rate_limited": return "Too many requests: wait a moment and try again";
    case "timeout": case "connection_lost":
      return "The server cannot be reached right now. Check your connection and try again.";
    default: return error.message || "Something went wrong";
  }
}

/** Why this device ended a call whose description from the other device did not pass the
 *  identity check (identity.js): ``error.unchecked`` when the check could not be made. */
export function identityFailedMessage(name, error) {
  const who = name || "the other side";
  if (error && error.unchecked) {
    return `Call ended: ${who}'s device could not be checked (its key could not be read from the `
      + "server). Call again when your connection works.";
  }
  return `Call ended: ${who}'s device could not prove it is theirs — someone may be listening in`;
}
