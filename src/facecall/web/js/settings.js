// Settings kept in this browser (localStorage), and URL overrides.

const PREFIX = "facecall.";

export const store = {
  get(key) {
    try {
      return JSON.parse(localStorage.getItem(PREFIX + key));
    } catch {
      return null;
    }
  },
  set(key, value) {
    localStorage.setItem(PREFIX + key, JSON.stringify(value));
  },
  remove(key) {
    localStorage.removeItem(PREFIX + key);
  },
};

/**
 * Relay-only media (`iceTransportPolicy: "relay"`): every packet goes through the server's TURN
 * relay, so the other side never learns this device's addresses. `?relay=1` in the URL turns it
 * on (and `?relay=0` off) for this browser; the checkbox on the home screen does the same.
 */
export function relayOnly() {
  const param = new URLSearchParams(location.search).get("relay");
  if (param === "1" || param === "0") setRelayOnly(param === "1");
  return store.get("relayOnly") === true;
}

export function setRelayOnly(on) {
  store.set("relayOnly", !!on);
}
