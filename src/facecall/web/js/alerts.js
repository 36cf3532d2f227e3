// Incoming calls while the person is not looking at this tab (another tab, another window).
// The tab's title says who is calling; and when the person turned it on ("Notify me of calls
// …", home screen) and the browser allows it, a system notification does too (Notifications
// API: https://notifications.spec.whatwg.org/), replaced by "Missed call from …" when the
// caller gives up or the ring times out. A ring that began while the person was looking
// notifies when they look away. A notification goes away when the ring stops for any other
// reason (answered, declined, answered on another device) or when the tab is looked at;
// clicking it brings the tab forward, where the incoming screen has Accept and Decline.
// Only the tab that runs the device rings (js/tabs.js), so only it notifies.

import { store } from "./settings.js";

const SETTING = "callNotifications";

export class CallAlerts {
  constructor() {
    this.title = document.title;
    this.shown = new Map(); // call id -> Notification
    this.calling = new Map(); // call id -> the ring (caller's name, media), while it rings here
    this.missed = null; // "Missed call from …" kept in the title until the tab is looked at
    const changed = () => {
      if (this.away) {
        for (const ring of this.calling.values()) this.notifyRing(ring);
        return;
      }
      for (const id of [...this.shown.keys()]) this.close(id);
      this.missed = null;
      this.showTitle();
    };
    window.addEventListener("focus", changed);
    window.addEventListener("blur", changed);
    document.addEventListener("visibilitychange", changed);
  }

  /** Whether this browser can show notifications for this page (they need a secure context). */
  static get supported() {
    return typeof Notification === "function" && window.isSecureContext;
  }

  /** Whether call notifications are on: chosen here, and allowed by the browser. */
  static get on() {
    return CallAlerts.supported && Notification.permission === "granted" && store.get(SETTING) === true;
  }

  /**
   * Turn call notifications on or off. Turning them on asks the browser's permission (call it
   * from a click: browsers ignore requests without one). Resolves to whether they are on.
   */
  static async turn(on) {
    if (!on || !CallAlerts.supported) {
      store.set(SETTING, false);
      return false;
    }
    let permission = Notification.permission;
    if (permission === "default") permission = await Notification.requestPermission();
    store.set(SETTING, permission === "granted");
    return permission === "granted";
  }

  /** Whether the person is elsewhere: the tab is hidden or its window does not have focus. */
  get away() {
    return document.hidden || !document.hasFocus();
  }

  /** A call rings here (the incoming screen or the call-waiting banner shows it). */
  ring(ring) {
    this.calling.delete(ring.call_id);
    this.calling.set(ring.call_id, ring); // the newest ring names the title
    this.showTitle();
    if (this.away) this.notifyRing(ring);
  }

  /** The call stopped ringing here. `missed`: the caller gave up or nobody answered in time. */
  stop(callId, { missed = null } = {}) {
    const rang = this.calling.has(callId);
    this.calling.delete(callId);
    this.close(callId);
    if (missed && rang && this.away) {
      this.missed = missed;
      if (CallAlerts.on) this.notify(callId, missed, "facecall", false);
    }
    this.showTitle();
  }

  /** Nothing rings here any more (a "Missed call" already said stays). */
  stopAll() {
    for (const id of [...this.calling.keys()]) this.stop(id);
  }

  /** Signed out here: nothing of the account stays on screen. */
  clear() {
    for (const id of [...this.shown.keys()]) this.close(id);
    this.calling.clear();
    this.missed = null;
    this.showTitle();
  }

  // -- internals --------------------------------------------------------------------------

  /** A system notification for a ring, once (when they are on). */
  notifyRing(ring) {
    if (!CallAlerts.on || this.shown.has(ring.call_id)) return;
    const kind = ring.media === "video" ? "Incoming video call" : "Incoming audio call";
    this.notify(ring.call_id, ring.name, kind, true);
  }

  showTitle() {
    const rings = [...this.calling.values()];
    const newest = rings[rings.length - 1];
    if (newest !== undefined) document.title = `${newest.name} is calling… — ${this.title}`;
    else if (this.missed) document.title = `${this.missed} — ${this.title}`;
    else document.title = this.title;
  }

  notify(callId, title, body, ringing) {
    this.close(callId);
    let notification;
    try {
      // `silent`: the page's own ringtone is playing; `requireInteraction`: a ring stays on
      // screen until it stops (the browser would otherwise hide it after a few seconds)
      notification = new Notification(title, {
        body, tag: `facecall-call-${callId}`, silent: ringing, requireInteraction: ringing,
      });
    } catch {
      return; // e.g. permission withdrawn a moment ago
    }
    notification.onclick = () => {
      window.focus();
      notification.close();
    };
    this.shown.set(callId, notification);
  }

  close(callId) {
    const notification = this.shown.get(callId);
    if (!notification) return;
    this.shown.delete(callId);
    notification.close();
  }
}
