// The calls ringing this device (docs/web.md, "Incoming calls ring on every open device", "Call
// waiting"): each ring from its `call.ring` until this device answers or declines it, or the
// server says it stopped (`call.stop_ringing`: answered or declined on another device, the
// caller gave up, nobody answered), with the caller's name; and how the newest one shows: the
// full-screen incoming call with its ringtone while this device is in no call, else the
// call-waiting banner (no ringtone). Owned by the Calls controller (calls.js), which answers
// them.

import { Tone } from "./ringtone.js";
import { endMessage } from "./call-text.js";

export class Rings {
  /**
   * @param {object} o
   * @param {import('./signaling.js').Signaling} o.signaling
   * @param {object} o.view  the UI (ui.js CallView)
   * @param {(userId: string, callId: string) => Promise<string>} o.nameFor  a caller's name
   * @param {() => import('./call.js').Call|null} o.active  the call this device is in (or placing)
   * @param {() => void} o.historyChanged  a ring ended: the call history has one more entry
   */
  constructor({ signaling, view, nameFor, active, historyChanged }) {
    this.signaling = signaling;
    this.view = view;
    this.nameFor = nameFor;
    this.active = active;
    this.historyChanged = historyChanged;
    this.rings = new Map(); // call id -> ring (incoming, not answered yet)
    this.ringtone = new Tone("ring");
  }

  /** The ids of the calls ringing here. */
  ids() {
    return [...this.rings.keys()];
  }

  /** Whether the ringtone sounds. */
  get playing() {
    return this.ringtone.playing;
  }

  /** This device answers ``callId``: it stops ringing here (the ringtone too). Its ring, or
   *  undefined if it does not ring here. */
  answering(callId) {
    const ring = this.rings.get(callId);
    if (!ring) return undefined;
    this.rings.delete(callId);
    this.ringtone.stop();
    this.view.hideIncoming(callId);
    return ring;
  }

  /** Accept was pressed but nothing was answered (the camera or microphone could not start):
   *  ``callId`` rings here again (and on the other devices, which never stopped). */
  giveBack(callId, ring) {
    this.rings.set(callId, ring);
  }

  /** The call this device placed has the id ``callId`` of a ring: we rang each other, and the
   *  server merged the two calls into that one. */
  merged(callId) {
    if (!this.rings.has(callId)) return;
    this.rings.delete(callId);
    this.view.hideIncoming(callId);
    this.refresh();
  }

  /** Decline ``callId`` for every device of mine (``busy``: from call waiting, the caller
   *  hears that I am busy). */
  async decline(callId, { busy = false } = {}) {
    const ring = this.rings.get(callId);
    if (!ring) return;
    this.rings.delete(callId);
    this.view.hideIncoming(callId);
    this.refresh();
    try {
      await this.signaling.request("call.decline", { call_id: callId, busy });
    } catch {
      /* it stopped ringing anyway */
    }
    this.view.status(`Declined the call from ${ring.name}`);
    this.historyChanged();
  }

  /** `call.ring`: a call rings this device (once its caller's name is known). */
  async onRing(event) {
    const active = this.active();
    if (this.rings.has(event.call_id) || (active && active.id === event.call_id)) return;
    const ring = { ...event, name: "…" };
    this.rings.set(event.call_id, ring);
    ring.name = event.from_name || await this.nameFor(event.from_user, event.call_id);
    if (!this.rings.has(event.call_id)) return; // stopped while we looked the name up
    this.refresh();
  }

  /** `call.stop_ringing`: answered or declined on another device, cancelled, timed out. */
  onStopRinging(event) {
    const ring = this.rings.get(event.call_id);
    const call = this.active();
    if (!ring && call && call.id === event.call_id && call.ring) {
      call.ringStopped = event.reason; // Accept was pressed here, the camera is starting
    }
    if (!ring) return;
    this.rings.delete(event.call_id);
    const message = endMessage(event.reason, ring.name, "callee");
    const missed = event.reason === "ring_timeout" || event.reason === "cancelled";
    this.view.hideIncoming(event.call_id, { missed: missed ? message : null });
    this.refresh();
    if (event.reason !== "glare") this.view.notice(message, { kind: event.reason });
    this.historyChanged();
  }

  /** Show the newest ring: full screen when idle, a call-waiting banner when in a call. */
  refresh() {
    const rings = [...this.rings.values()].filter((r) => r.name !== "…");
    const ring = rings[rings.length - 1];
    if (!ring) {
      this.ringtone.stop();
      this.view.noRings();
      return;
    }
    if (this.active()) {
      this.ringtone.stop();
      this.view.showWaiting(ring);
    } else {
      this.view.showIncoming(ring);
      this.ringtone.start();
    }
  }

  /** After a reconnect the server could not resume: only the calls its welcome lists
   *  (``kept``: their ids) still ring. */
  keepOnly(kept) {
    for (const id of [...this.rings.keys()]) {
      if (kept.has(id)) continue;
      this.rings.delete(id);
      this.view.hideIncoming(id);
    }
    this.refresh();
  }

  /** Sign out: nothing rings here any more. */
  clear() {
    this.rings.clear();
    this.ringtone.stop();
    this.view.noRings();
  }
}
