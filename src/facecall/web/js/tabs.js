// One tab of this browser runs a device's signaling at a time (docs/web.md, "Several tabs").
// Tabs share the device's token, and the server keeps one connection per device: a second tab
// that connected would take the device over from the first (close 4409), which would take it
// back, and so on. A Web Lock named after the device decides instead: the tab holding it runs
// the device; another tab shows "open in another tab" and waits for the lock (it takes over
// when the first tab closes or signs out), or steals it when the user chooses "Use here" (the
// first tab is told and steps back).

export class DeviceLock {
  /** @param {string} deviceId */
  constructor(deviceId) {
    this.name = `facecall-device-${deviceId}`;
    this.release = null;
    this.waiting = null; // the AbortController of a request that waits for the lock
  }

  /** Whether this browser can coordinate tabs (Web Locks need a secure context: HTTPS or
   *  localhost). Without it the server's 4409 close still stops two tabs from flapping. */
  static get supported() {
    return !!(navigator.locks && navigator.locks.request);
  }

  /** Whether this tab holds the lock (never where Web Locks are missing). */
  get held() {
    return this.release !== null;
  }

  /**
   * Hold the lock: at once if it is free (false when another tab holds it); `steal`: take it
   * from that tab; `wait`: when that tab lets it go (false if the wait is cancelled).
   * `onLost` runs if another tab steals it from us later.
   */
  acquire({ steal = false, wait = false, onLost }) {
    if (!DeviceLock.supported) return Promise.resolve(true);
    this.cancelWait();
    const controller = wait ? new AbortController() : null;
    this.waiting = controller;
    return new Promise((resolve) => {
      const options = steal ? { steal: true } : wait ? { signal: controller.signal } : { ifAvailable: true };
      navigator.locks.request(this.name, options, (lock) => {
        if (this.waiting === controller) this.waiting = null;
        if (!lock) {
          resolve(false);
          return undefined;
        }
        resolve(true);
        return new Promise((release) => {
          this.release = release;
        });
      }).catch((error) => {
        if (controller && controller.signal.aborted) {
          resolve(false); // the wait was cancelled ("Use here", sign out)
          return;
        }
        this.release = null;
        if (error && error.name === "AbortError") onLost();
      });
    });
  }

  /** Stop waiting for the lock. */
  cancelWait() {
    if (this.waiting) this.waiting.abort();
    this.waiting = null;
  }

  /** Let another tab have the device (signed out here). */
  free() {
    this.cancelWait();
    if (this.release) this.release();
    this.release = null;
  }
}
