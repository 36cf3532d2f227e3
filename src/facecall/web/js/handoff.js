// "In a call on your other device — Move call here": the answered calls this user is in on
// another of their devices (welcome.elsewhere, call.elsewhere), and the button that moves one
// to this device (call.handoff; docs/protocol.md, "Moving a call to another device").

const $ = (id) => document.getElementById(id);

/** What the handoff bar says of a call elsewhere: who it is with and on which device. */
export function elsewhereText(entry, deviceName) {
  const names = (entry.participants || []).map((p) => p.name || "someone");
  const who = names.length === 0 ? "a call"
    : names.length === 1 ? `a call with ${names[0]}`
      : `a call with ${names.slice(0, -1).join(", ")} and ${names[names.length - 1]}`;
  const where = deviceName ? `on ${deviceName}` : "on another of your devices";
  return `You are in ${who} ${where}.`;
}

/** Keeps the calls of this user on other devices and shows the newest under the home header,
 *  with a button that moves it here. `busy()` says whether this device is in a call itself
 *  (then the bar stays hidden: one call per page); `take(entry)` moves the call here. */
export class HandoffBar {
  constructor({ signaling, busy, take, deviceName }) {
    this.signaling = signaling;
    this.busy = busy;
    this.take = take;
    this.deviceName = deviceName;
    this.calls = new Map(); // call id -> the latest welcome.elsewhere entry / call.elsewhere
    this.taking = null;
    this.closed = false;
    signaling.addEventListener("state", (e) => {
      if (e.detail.state !== "open") return;
      const welcome = signaling.welcome || {};
      this.calls = new Map((welcome.elsewhere || []).map((entry) => [entry.call_id, entry]));
      this.render();
    });
    signaling.addEventListener("event", (e) => this.onEvent(e.detail));
    $("handoff-take").onclick = () => this.onTake(); // one bar per signed-in session
  }

  onEvent(event) {
    if (event.type !== "call.elsewhere") return;
    // a resume replays events older than its welcome, whose list is newer: those are stale
    const welcome = this.signaling.welcome;
    if (welcome && typeof event.seq === "number" && event.seq <= welcome.last_seq) return;
    if (event.state === "active") this.calls.set(event.call_id, event);
    else this.calls.delete(event.call_id);
    this.render();
  }

  /** The call the bar offers: the one that became active last. */
  get current() {
    let last = null;
    for (const entry of this.calls.values()) last = entry;
    return last;
  }

  render() {
    const entry = this.current;
    const show = Boolean(entry) && !this.closed && !this.busy();
    $("handoff").hidden = !show;
    if (!show) return;
    $("handoff-text").textContent = elsewhereText(entry, this.deviceName(entry.device_id));
    $("handoff-take").disabled = this.taking !== null;
    $("handoff-take").textContent = entry.media === "video" ? "Move video call here" : "Move call here";
  }

  async onTake() {
    const entry = this.current;
    if (!entry || this.taking) return;
    this.taking = entry.call_id;
    this.render();
    try {
      await this.take(entry);
    } finally {
      this.taking = null;
      this.render();
    }
  }

  /** The call moved here or ended: forget it (a call.elsewhere may still say so later). */
  forget(callId) {
    this.calls.delete(callId);
    this.render();
  }

  /** Signed out: show nothing more. */
  close() {
    this.closed = true;
    this.calls.clear();
    $("handoff").hidden = true;
  }
}
