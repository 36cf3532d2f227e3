// The HTTP API (see /openapi.json): accounts, devices, users, history, TURN credentials.

export class ApiError extends Error {
  /** `retryAfter`: seconds to wait before trying again (a 429's Retry-After), or null. */
  constructor(status, detail, retryAfter = null) {
    super(detail);
    this.status = status;
    this.detail = detail;
    this.retryAfter = retryAfter;
  }
}

/** "30 seconds", "2 minutes", "1 hour": how long to wait, rounded up. */
export function waitWords(seconds) {
  const s = Math.max(1, Math.ceil(seconds));
  if (s < 60) return `${s} second${s === 1 ? "" : "s"}`;
  const m = Math.ceil(s / 60);
  if (m < 60) return `${m} minute${m === 1 ? "" : "s"}`;
  const h = Math.ceil(m / 60);
  return `${h} hour${h === 1 ? "" : "s"}`;
}

/** A 429 in plain words: what was refused, and how long to wait when the server says. */
export function tooManyMessage(error) {
  const detail = String(error.detail || "");
  const wait = error.retryAfter ? `Try again in ${waitWords(error.retryAfter)}.` : "Wait a while and try again.";
  if (/failed sign-ins/.test(detail)) {
    return `Too many failed sign-ins for this account. ${wait} If you forgot your password, ask the server's administrator to reset it.`;
  }
  return `Too many attempts. ${wait}`;
}

// What a person calls the fields of the API's request bodies.
const FIELD_NAMES = { name: "Device name", display_name: "Display name", username: "Username",
  password: "Password", kind: "Device kind", current_password: "Current password",
  new_password: "New password", identity_key: "Identity key" };

/** A readable sentence for a FastAPI error body (`detail` is a string or a list of issues):
 *  "Device name must not contain the character U+202E.", not pydantic's "name: Value error, …". */
function describe(status, body) {
  const detail = body && body.detail;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail) && detail.length) {
    const issue = detail[0];
    const field = Array.isArray(issue.loc) ? String(issue.loc[issue.loc.length - 1]) : "input";
    const label = FIELD_NAMES[field] || field.replaceAll("_", " ");
    const text = String(issue.msg || "is not valid").replace(/^Value error, /, "");
    return `${label}: ${text}`;
  }
  return `the server answered ${status}`;
}

export class Api {
  constructor(base = "") {
    this.base = base;
    /** Called with the token of every request answered 401 (it no longer works). */
    this.onUnauthorized = null;
  }

  /** `reportUnauthorized`: a 401 means this token no longer works (false: the token only
   *  vouches for the request, which may be refused for another reason). */
  async request(method, path, { token, body, reportUnauthorized = true, timeoutMs = 0 } = {}) {
    const headers = {};
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(this.base + path, {
        method, headers, body: body === undefined ? undefined : JSON.stringify(body),
        signal: timeoutMs ? AbortSignal.timeout(timeoutMs) : undefined,
      });
    } catch {
      throw new ApiError(0, "The server cannot be reached. Check your connection.");
    }
    if (response.status === 204) return null;
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    if (response.status === 401 && token && reportUnauthorized && this.onUnauthorized) {
      this.onUnauthorized(token);
    }
    if (!response.ok) {
      const retry = Number.parseInt(response.headers.get("Retry-After") || "", 10);
      throw new ApiError(response.status, describe(response.status, data), Number.isFinite(retry) ? retry : null);
    }
    return data;
  }

  serverInfo() {
    return this.request("GET", "/v1/server");
  }

  signUp(username, password, displayName, invite) {
    const body = { username, password };
    if (displayName) body.display_name = displayName;
    if (invite) body.invite = invite;
    return this.request("POST", "/v1/accounts", { body });
  }

  /** `deviceToken`: this browser's device, when it has one: a sign-in on a device of the
   *  account is not held back by failed sign-ins that guessers elsewhere spent. */
  signIn(username, password, deviceToken = null) {
    return this.request("POST", "/v1/sessions", {
      body: { username, password }, token: deviceToken, reportUnauthorized: false,
    });
  }

  signOut(token) {
    return this.request("DELETE", "/v1/sessions/current", { token });
  }

  me(token) {
    return this.request("GET", "/v1/me", { token });
  }

  rename(token, displayName) {
    return this.request("PATCH", "/v1/me", { token, body: { display_name: displayName } });
  }

  deleteAccount(token, password) {
    return this.request("DELETE", "/v1/me", { token, body: { password } });
  }

  changePassword(token, currentPassword, newPassword, signOutOthers, thisDeviceId) {
    const body = { current_password: currentPassword, new_password: newPassword };
    if (signOutOthers) Object.assign(body, { sign_out_other_devices: true, this_device_id: thisDeviceId });
    return this.request("PUT", "/v1/me/password", { token, body });
  }

  user(token, username) {
    return this.request("GET", `/v1/users/${encodeURIComponent(username)}`, { token });
  }

  /** Register this browser as a device, with the public key of its identity key pair
   *  (identity.js). */
  registerDevice(token, name, identityKey) {
    return this.request("POST", "/v1/devices", {
      token, body: { kind: "browser", name, identity_key: identityKey },
    });
  }

  /** Publish the identity key of a device registered without one (once: the same key again is
   *  a no-op, another is refused with 409). */
  setIdentityKey(token, id, identityKey) {
    return this.request("PUT", `/v1/devices/${encodeURIComponent(id)}/identity-key`, {
      token, body: { identity_key: identityKey },
    });
  }

  /** Publish the certificate of a device's X25519 agreement key (`{key, signature}`; a newer
   *  one replaces the last): others seal group media's keys to it (docs/sframe.md). */
  setAgreementKey(token, id, key, signature) {
    return this.request("PUT", `/v1/devices/${encodeURIComponent(id)}/agreement-key`, {
      token, body: { key, signature },
    });
  }

  /** `{user_id, devices: [{device_id, identity_key, agreement_key}]}`: the published keys of a
   *  user's devices. */
  /** A user's devices' identity keys. A call's next events wait for this answer (identity.js):
   *  given up after 10 s, as a server that does not answer. */
  identityKeys(token, userId) {
    return this.request("GET", `/v1/users/${encodeURIComponent(userId)}/identity-keys`,
      { token, timeoutMs: 10000 });
  }

  devices(token) {
    return this.request("GET", "/v1/devices", { token });
  }

  renameDevice(token, id, name) {
    return this.request("PATCH", `/v1/devices/${encodeURIComponent(id)}`, { token, body: { name } });
  }

  removeDevice(token, id) {
    return this.request("DELETE", `/v1/devices/${encodeURIComponent(id)}`, { token });
  }

  history(token, limit = 30) {
    return this.request("GET", `/v1/calls/history?limit=${limit}`, { token });
  }

  turnCredentials(deviceToken) {
    return this.request("GET", "/v1/turn/credentials", { token: deviceToken });
  }
}
