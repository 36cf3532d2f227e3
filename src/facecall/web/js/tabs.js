// One tab of this browser runs a device's signaling at a time (docs/web.md, "Several tabs").
// Tabs share the device's token, and the server keeps one connection per device: a second tab
// that connected would take the device over from the first (close 4409), which would take it
// back, and so on. A Web Lock named after the device decides instead: the tab holding it runs
// the device; another tab shows "open in another tab" until the user chooses "Use here", which
// steals the lock (the first tab is told and steps back).

export class DeviceLock {
  /** @param {string} deviceId */
  constructor(deviceId) {
    this.name = `facecall-device-${deviceId}`;
    this.release = null;
  }

  /** Whether this browser can coordinate tabs (Web Locks need a secure context: HTTPS or
   *  localhost). Without it the server's 4409 close still stops two tabs from flapping. */
  static get supported() {
    return !!(navigator.locks && navigator.locks.request);
  }

  /** Hold the lock. Resolves true once held; false when another tab holds it (unless `steal`).
   *  `onLost` runs if another tab steals it later. */
  acquire({ steal = false, onLost }) {
    if (!DeviceLock.supported) return Promise.resolve(true);
    return new Promise((resolve) => {
      const options = steal ? { steal: true } : { ifAvailable: true };
      navigator.locks.request(this.name, options, (lock) => {
        if (!lock) {
          resolve(false);
          return undefined;
        }
        resolve(true);
        return new Promise((release) => {
          this.release = release;
        });
      }).catch((error) => {
        this.release = null;
        if (error && error.name === "AbortError") onLost();
      });
    });
  }

  /** Whether this tab holds the lock (never where Web Locks are missing). */
  get held() {
    return this.release !== null;
  }

  /** Let another tab have the device (signed out here). */
  free() {
    if (this.release) this.release();
    this.release = null;
  }
}
