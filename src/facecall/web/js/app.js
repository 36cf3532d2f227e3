// The facecall web client: sign in, register this browser as a device, then calls.

import { AccountPanel } from "./account.js";
import { CallAlerts } from "./alerts.js";
import { Api, tooManyMessage } from "./api.js";
import { CALL_LIMITS, Calls } from "./calls.js";
import { HandoffBar } from "./handoff.js";
import { Home } from "./home.js";
import { deviceIdentity, forgetKeys, newKeys, saveKeys } from "./identity.js";
import { Signaling } from "./signaling.js";
import { DeviceLock } from "./tabs.js";
import { unlockAudio } from "./ringtone.js";
import { CallView, Messages } from "./ui.js";
import { relayOnly, setRelayOnly, store } from "./settings.js";
import { prepareWorker } from "./sframe-workers.js";

const $ = (id) => document.getElementById(id);
const api = new Api("");
const messages = new Messages();
const alerts = new CallAlerts();

const state = { session: null, signaling: null, calls: null, home: null, account: null, lock: null,
  handoff: null, replacedAt: [] };
// a tab holding the device's lock that is replaced takes the device back after this long, at
// most this many times in this window (see replaced())
const REPLACED_RETRY_MS = 300;
const REPLACED_RETRIES = 3;
const REPLACED_WINDOW_MS = 10000;
// a waiting tab that gets the device waits this long before it runs it: a tab that is only
// reloading takes it back meanwhile (see takeDevice)
const TAKEOVER_DELAY_MS = 1500;
// this tab ran the device when it was last unloaded (sessionStorage survives a reload, not a close)
const RAN_DEVICE = "facecall.ranDevice";
// a tab unloaded in a call, maybe reloading (however slowly): until when other tabs leave the
// device to it (the server keeps the call for FACECALL_UNLOAD_GRACE, 10 s by default, then
// hangs up; a tab that took the device meanwhile would end the call at once)
const RELOADING = "facecall.reloadingInCall";
const UNLOAD_GRACE_MS = 10000;

/** Until when a tab that unloaded in a call may come back for device ``deviceId`` (0: none). */
function reloadingUntil(deviceId) {
  try {
    const mark = JSON.parse(localStorage.getItem(RELOADING) || "null");
    return mark && mark.device === deviceId ? mark.until : 0;
  } catch {
    return 0;
  }
}
// the code of an invitation link this tab was opened with, until an account is made with it
const INVITE = "facecall.invite";
const INVITE_CODE = /^[A-Za-z0-9_-]{16,64}$/; // as the server checks it (schemas.InviteCode)

function showView(name) {
  for (const view of ["auth", "home", "call", "elsewhere"]) $(`${view}-view`).hidden = view !== name;
  document.body.dataset.view = name;
  if (name === "home" && state.home) state.home.refresh();
  if (name === "home" && state.account) state.account.show();
  // focus that was in a view now hidden (or nowhere) goes to the heading of the view shown,
  // not to <body>: keyboard and screen-reader users go on from the top of the new screen
  const focused = document.activeElement;
  if (!focused || focused === document.body || !focused.checkVisibility()) {
    const heading = $(`${name}-title`);
    if (heading) heading.focus({ preventScroll: true });
  }
}

/** Whether the server has a TURN relay (null: not known yet): relay-only media needs one. */
function showRelay(available) {
  const box = $("relay-only");
  box.disabled = available === false;
  box.checked = available !== false && relayOnly();
  $("relay-none").hidden = available !== false;
  if (available === false) box.setAttribute("aria-describedby", "relay-none");
  else box.removeAttribute("aria-describedby");
}

function session() {
  return state.session;
}

function defaultDeviceName() {
  const ua = navigator.userAgent;
  const browser = /Edg\//.test(ua) ? "Edge" : /Firefox\//.test(ua) ? "Firefox"
    : /Chrom(e|ium)\//.test(ua) ? "Chromium" : /Safari\//.test(ua) ? "Safari" : "Browser";
  const os = /Android/.test(ua) ? "Android" : /iPhone|iPad/.test(ua) ? "iOS" : /Mac OS/.test(ua) ? "macOS"
    : /Windows/.test(ua) ? "Windows" : /Linux/.test(ua) ? "Linux" : "";
  return os ? `${browser} on ${os}` : browser;
}

// -- sign in ---------------------------------------------------------------------------------
let mode = "signin";
let signUpClosed = false;

/**
 * The code of the invitation this tab was opened with: `#invite=CODE` (a fragment: browsers
 * never send it to the server, so it stays out of access logs), moved out of the address bar
 * into sessionStorage at once, so that a reload keeps it and a bookmark does not.
 */
function takeInvite() {
  const given = new URLSearchParams(location.hash.slice(1)).get("invite");
  if (given !== null) {
    history.replaceState(null, "", location.pathname + location.search);
    // what mail and chat programs add after a link: ".", ")", ">", a space…
    const code = given.trim().replace(/[^A-Za-z0-9_-]+$/, "");
    if (INVITE_CODE.test(code)) sessionStorage.setItem(INVITE, code);
    else brokenInvite();
  }
  return sessionStorage.getItem(INVITE);
}

/** An invitation link that lost part of its code on the way. */
function brokenInvite() {
  dropInvite();
  $("invite-problem").hidden = false;
}

/** Show the invitation, if this tab has one: "Create account" comes first, open or closed. */
function showInvite() {
  const invited = !!sessionStorage.getItem(INVITE);
  $("invite-hint").hidden = !invited;
  if (invited) {
    $("tab-signup").hidden = false;
    $("sign-up-closed").hidden = true;
    setMode("signup");
  } else if (signUpClosed) {
    closeSignUp();
  }
}

/** The invitation was used, or cannot be. */
function dropInvite() {
  sessionStorage.removeItem(INVITE);
  $("invite-hint").hidden = true;
}

/** Sign-up is closed on this server (its administrator makes accounts): sign in only, unless
 *  this tab was opened with an invitation. */
function closeSignUp() {
  signUpClosed = true;
  if (sessionStorage.getItem(INVITE)) return;
  setMode("signin");
  $("tab-signup").hidden = true;
  $("sign-up-closed").hidden = false;
}

function setMode(next) {
  mode = next;
  const signup = mode === "signup";
  $("tab-signin").setAttribute("aria-selected", String(!signup));
  $("tab-signup").setAttribute("aria-selected", String(signup));
  $("tab-signin").tabIndex = signup ? -1 : 0;
  $("tab-signup").tabIndex = signup ? 0 : -1;
  $("auth-form").setAttribute("aria-labelledby", signup ? "tab-signup" : "tab-signin");
  $("display-name-row").hidden = !signup;
  $("auth-password").autocomplete = signup ? "new-password" : "current-password";
  $("auth-submit").textContent = signup ? "Create account" : "Sign in";
  $("auth-error").textContent = "";
}

function authError(text) {
  $("auth-error").textContent = text;
}

async function submitAuth(event) {
  event.preventDefault();
  unlockAudio();
  const username = $("auth-username").value.trim();
  const password = $("auth-password").value;
  const deviceName = $("auth-device-name").value.trim() || defaultDeviceName();
  if (username.length < 3) return authError("Enter a username (at least 3 characters).");
  if (mode === "signup" && !/^[A-Za-z0-9_.-]{3,32}$/.test(username)) {
    return authError("Usernames use letters, digits, “_”, “.” and “-” (3 to 32 characters).");
  }
  if (password.length < (mode === "signup" ? 8 : 1)) {
    return authError(mode === "signup" ? "Choose a password of at least 8 characters." : "Enter your password.");
  }
  $("auth-submit").disabled = true;
  authError("");
  let account = null;
  try {
    const invite = sessionStorage.getItem(INVITE);
    account = mode === "signup"
      ? await api.signUp(username, password, $("auth-display-name").value.trim(), invite)
      : await api.signIn(username, password, (store.get("device") || {}).token || null);
    if (mode === "signup") dropInvite();
    $("invite-problem").hidden = true;
    await openDevice(account, deviceName);
    $("auth-password").value = "";
  } catch (error) {
    if (account && mode === "signup") {
      // the account exists now: creating it again would say "taken"; sign in instead
      setMode("signin");
      $("auth-username").value = username;
      const reason = /[.!?]$/.test(error.message) ? error.message : `${error.message}.`;
      authError(`Your account “${username}” was created, but this device could not be `
        + `registered: ${reason} Correct it and sign in.`);
    } else if (error.deviceLimit) {
      authError(error.message);
    } else if (error.status === 429) {
      authError(tooManyMessage(error));
    } else if (error.status === 401) authError("Wrong username or password.");
    else if (error.status === 422 && mode === "signup" && /^invite\b/.test(error.message)) {
      brokenInvite();
      if (signUpClosed) closeSignUp();
      $("invite-problem").focus();
    } else if (error.status === 403 && mode === "signup" && sessionStorage.getItem(INVITE)) {
      dropInvite(); // used, expired or withdrawn: the server says which way to go
      if (signUpClosed) closeSignUp();
      authError(/[.!?]$/.test(error.message) ? error.message : `${error.message}.`);
    } else if (error.status === 403 && mode === "signup") {
      closeSignUp();
      authError("Sign-up is closed on this server. Ask its administrator for an account.");
    }
    else if (error.status === 409 && mode === "signup") authError(`The username “${username}” is taken.`);
    else authError(error.message);
  } finally {
    $("auth-submit").disabled = false;
  }
}

/** Reuse this browser's device of that user if it still works, else register a new one. */
async function openDevice(account, deviceName) {
  const saved = store.get("device");
  let device = saved && saved.userId === account.user.id ? saved : null;
  if (device) {
    try {
      await api.me(device.token);
    } catch {
      device = null;
    }
  }
  if (!device) device = await newDevice(account.token, account.user.id, deviceName);
  store.set("account", { token: account.token, user: account.user });
  await startWithIdentity({ account: account.token, user: account.user, userId: account.user.id }, device);
}

/** Register this browser as a new device of user ``userId``, with a new identity key. */
async function newDevice(accountToken, userId, name) {
  const keys = await newKeys();
  let registered;
  try {
    registered = await api.registerDevice(accountToken, name, keys.publicKey);
  } catch (error) {
    throw deviceLimit(error);
  }
  const previous = store.get("device"); // a device this browser no longer uses: its key goes
  if (previous && previous.id) forgetKeys(previous.id);
  const device = { id: registered.device.id, name: registered.device.name, token: registered.token, userId };
  store.set("device", device);
  await saveKeys({ deviceId: device.id, userId, ...keys, published: true });
  return device;
}

/** Start session ``s`` on this browser's ``device`` with its identity key (identity.js). A
 *  device whose key this browser lost (its site data was cleared) cannot sign its calls any
 *  more: this browser becomes a new device in its place, and says so. */
async function startWithIdentity(s, device) {
  let identity = await deviceIdentity(api, device);
  if (!identity) {
    const lost = device; // removed first: it frees its place among the account's devices
    await api.removeDevice(s.account, lost.id).catch(() => {});
    device = await newDevice(s.account, s.userId, lost.name);
    identity = await deviceIdentity(api, device);
    messages.notice(`This browser had lost the key that secures the calls of its device “${lost.name}”, `
      + "so it was signed in again as a new device, and the old one was removed from My devices.");
  }
  start({ ...s, device: device.token, deviceId: device.id, identity });
}

/** The server refuses a new device when the account has as many as it may have (409 "at most
 *  N devices per user"): say so, and what to do, instead of the error as it came. */
function deviceLimit(error) {
  const limit = error.status === 409 && /at most (\d+) devices/.exec(error.message || "");
  if (!limit) return error;
  const plain = new Error(`This account already has ${limit[1]} devices, the most it can have, so this `
    + "browser cannot be added. On a device that is still signed in, open “My devices” and remove "
    + "one you no longer use (or ask the server's administrator), then sign in here again.");
  plain.deviceLimit = true;
  return plain;
}

// -- signed in -------------------------------------------------------------------------------
function showMe(user) {
  $("me-name").textContent = user.display_name && user.display_name !== user.username
    ? `${user.display_name} (@${user.username})` : `@${user.username}`;
}

/** The account token of this tab stopped working: sign in again. Either the password was
 *  changed elsewhere or the sign-in expired (this browser's device stays registered and is used
 *  again), or the device went too (signed out in another tab, removed): the device token says. */
async function accountTokenEnded(token) {
  const s = state.session;
  if (!s || token !== s.account) return;
  let deviceWorks = true;
  try {
    await api.me(s.device);
  } catch (error) {
    deviceWorks = error.status !== 401;
  }
  if (state.session !== s) return; // dealt with meanwhile (the signaling said "unauthorized")
  signOutLocally();
  messages.error(deviceWorks
    ? "You were signed out here: your password was changed or your session ended. Sign in again."
    : "This device was removed or signed out. Sign in again to use it.");
}

/** The account of session ``s`` was deleted (in this tab, in another browser, or by the
 *  server's administrator): sign out and forget this browser's device of it; then ``say``. */
function accountGone(s, say) {
  if (state.session !== s) return;
  signOutLocally();
  const device = store.get("device");
  if (device && device.userId === s.userId) {
    store.remove("device");
    forgetKeys(device.id);
  }
  say();
}

function start(s) {
  state.session = s;
  showMe(s.user);
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const signaling = new Signaling(`${scheme}//${location.host}/v1/signaling`, s.device);
  const view = new CallView(messages, showView, alerts);
  const calls = new Calls({
    signaling, api, view, relayOnly, identity: s.identity,
    tokens: () => ({ account: s.account, device: s.device, userId: s.userId }),
  });
  calls.remember(s.userId, s.user.username);
  view.bind(calls);
  calls.addEventListener("history-changed", () => state.home && state.home.refreshRecents());
  calls.addEventListener("relay-available", (e) => state.calls === calls && showRelay(e.detail));
  showRelay(null);
  calls.iceServers(); // asks the server for TURN credentials: says whether it has a relay
  if (typeof RTCRtpScriptTransform === "function") prepareWorker(); // a call's SFrame worker, ahead of time
  calls.addEventListener("unauthorized", (e) => {
    if (state.session !== s) return;
    if (e.detail && e.detail.message === "account deleted") {
      accountGone(s, () => messages.error(
        "This account was deleted (from another device or by the server's administrator)."));
      return;
    }
    signOutLocally();
    messages.error("This device was removed or signed out. Sign in again to use it.");
  });
  state.signaling = signaling;
  state.calls = calls;
  state.home = new Home({
    api, session,
    call: (username, media, userId) => calls.start(username, media, userId),
    error: (text) => messages.error(text),
    onThisDeviceRemoved: () => signOutLocally(),
  });
  const askedDevices = new Set(); // device ids looked up in My devices once
  const handoff = new HandoffBar({
    signaling,
    busy: () => Boolean(calls.active),
    take: async (entry) => {
      if (await calls.takeOver(entry)) handoff.forget(entry.call_id);
    },
    deviceName: (id) => {
      const device = state.home && state.home.devices.find((d) => d.id === id);
      if (!device && state.home && !askedDevices.has(id)) { // a device newer than the list
        askedDevices.add(id);
        state.home.refreshDevices().then(() => handoff.render());
      }
      return device ? device.name : null;
    },
  });
  state.handoff = handoff;
  calls.addEventListener("history-changed", () => handoff.render()); // a call ended here
  state.account = new AccountPanel({
    api, session,
    onRenamed: (user) => {
      s.user = user;
      showMe(user);
      const saved = store.get("account");
      if (saved && saved.token === s.account) store.set("account", { ...saved, user });
    },
    onDevicesChanged: () => state.home && state.home.refreshDevices(),
    onDeleted: () => accountGone(s, () => messages.notice("Your account was deleted.")),
  });
  signaling.addEventListener("state", (e) => {
    if (e.detail.state === "open" && e.detail.reconnected && state.home) state.home.refresh();
    if (e.detail.state === "closed" && e.detail.reason === "replaced") replaced(s);
  });
  state.lock = new DeviceLock(s.deviceId);
  takeDevice(s, false);
}

/** Run the device in this tab if no other tab does (or take it over: `steal`). A tab that ran
 *  the device before it reloaded takes it back from a tab that got it meanwhile. */
async function takeDevice(s, steal) {
  const lock = state.lock;
  if (sessionStorage.getItem(RAN_DEVICE) === s.deviceId) steal = true;
  sessionStorage.removeItem(RAN_DEVICE);
  const held = await lock.acquire({ steal, onLost: () => inUseElsewhere(s) });
  if (state.session !== s) {
    lock.free(); // signed out meanwhile
    return;
  }
  if (!held) {
    inUseElsewhere(s);
    return;
  }
  if (reloadingUntil(s.deviceId)) localStorage.removeItem(RELOADING); // back: its call is here
  state.signaling.start();
  showView("home");
}

/** Another connection of this device replaced ours (close 4409). A tab that holds the device's
 *  lock takes the device back: the other connection is a tab that has just lost the lock (its
 *  hello crossed ours on the way to the server) and is closing. Without the lock, or when it
 *  keeps happening, step back instead: two holders would take the device from each other. */
function replaced(s) {
  if (state.session !== s) return;
  const now = Date.now();
  state.replacedAt = (state.replacedAt || []).filter((t) => now - t < REPLACED_WINDOW_MS);
  state.replacedAt.push(now);
  if (state.lock && state.lock.held && state.replacedAt.length <= REPLACED_RETRIES) {
    setTimeout(() => {
      if (state.session === s && state.lock && state.lock.held) state.signaling.start();
    }, REPLACED_RETRY_MS);
    return;
  }
  inUseElsewhere(s);
}

/** Another tab or window runs this device now: step back (a call here ends) until "Use here",
 *  or until that tab closes or signs out (then this one takes over by itself). */
function inUseElsewhere(s) {
  if (state.session !== s) return;
  if (state.calls && state.calls.active && state.signaling.state === "open") state.calls.hangup();
  if (state.calls) state.calls.reset();
  if (state.signaling && state.signaling.state !== "closed") state.signaling.close();
  messages.connection(null);
  showView("elsewhere");
  if (DeviceLock.supported) waitForDevice(s);
}

/** Run the device here once the tab that runs it lets it go. */
async function waitForDevice(s) {
  const lock = state.lock;
  if (!lock || !(await lock.acquire({ wait: true, onLost: () => inUseElsewhere(s) }))) return;
  await new Promise((resolve) => setTimeout(resolve, TAKEOVER_DELAY_MS));
  // the tab that let it go unloaded in a call: it may be reloading slowly; give it its time
  while (lock.held && reloadingUntil(s.deviceId) > Date.now()) {
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  if (state.session !== s || state.lock !== lock) {
    lock.free();
    return;
  }
  if (!lock.held) return; // the tab that let it go was only reloading, and took it back
  state.signaling.start();
  showView("home");
}

function signOutLocally() {
  const s = state.session;
  if (state.calls) state.calls.reset();
  if (state.handoff) state.handoff.close();
  state.handoff = null;
  alerts.clear();
  if (state.signaling) state.signaling.close();
  if (state.lock) state.lock.free();
  state.lock = null;
  state.session = null;
  state.signaling = null;
  state.calls = null;
  state.home = null;
  state.account = null;
  // only this tab's session: another tab may have signed in anew since (a new account token)
  const saved = store.get("account");
  if (!s || !saved || saved.token === s.account) store.remove("account");
  messages.connection(null);
  showInvite();
  showView("auth");
  $("auth-username").focus();
}

/** Sign out for good: this browser's device is removed (its token revoked: it stops ringing,
 *  and nobody who later uses this browser can take calls with it), the account token too. */
async function signOut() {
  const s = state.session;
  if (state.calls) await state.calls.hangup();
  signOutLocally();
  const device = store.get("device");
  if (s && device && device.token === s.device) {
    store.remove("device");
    forgetKeys(device.id);
  }
  if (s) {
    api.signOut(s.device).catch(() => {});
    api.signOut(s.account).catch(() => {});
  }
}

async function resume() {
  const account = store.get("account");
  const device = store.get("device");
  if (!account || !device || device.userId !== account.user.id) return false;
  try {
    const user = await api.me(account.token);
    await api.me(device.token);
    await startWithIdentity({ account: account.token, user, userId: user.id }, device);
    return true;
  } catch (error) {
    if (error.status === 401) {
      store.remove("account");
      return false;
    }
    messages.error(error.message);
    return false;
  }
}

// -- wiring ------------------------------------------------------------------------------------
function init() {
  api.onUnauthorized = accountTokenEnded;
  setMode("signin");
  $("auth-device-name").value = (store.get("device") || {}).name || defaultDeviceName();
  $("tab-signin").addEventListener("click", () => setMode("signin"));
  $("tab-signup").addEventListener("click", () => setMode("signup"));
  for (const tab of [$("tab-signin"), $("tab-signup")]) {
    tab.addEventListener("keydown", (e) => {
      if ((e.key === "ArrowRight" || e.key === "ArrowLeft") && !$("tab-signup").hidden) {
        const next = mode === "signin" ? "signup" : "signin";
        setMode(next);
        $(`tab-${next}`).focus();
      }
    });
  }
  $("auth-form").addEventListener("submit", submitAuth);
  $("call-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const media = event.submitter && event.submitter.value === "audio" ? "audio" : "video";
    if (state.calls) state.calls.start($("call-username").value, media);
  });
  $("sign-out").addEventListener("click", signOut);
  $("use-here").addEventListener("click", () => {
    if (state.session) takeDevice(state.session, true);
  });
  $("relay-only").checked = relayOnly();
  $("relay-only").addEventListener("change", (e) => setRelayOnly(e.target.checked));
  $("notify-setting").hidden = !CallAlerts.supported;
  $("call-notifications").checked = CallAlerts.on;
  $("call-notifications").addEventListener("change", async (e) => {
    const wanted = e.target.checked;
    const on = await CallAlerts.turn(wanted);
    e.target.checked = on;
    if (wanted && !on) {
      messages.error("This browser blocks notifications from this site: allow them in its site " +
        "settings, then tick the box again.");
    }
  });
  window.addEventListener("pagehide", () => {
    if (state.lock && state.lock.held && state.session) sessionStorage.setItem(RAN_DEVICE, state.session.deviceId);
    // a call goes on if this is a reload (the page that follows rejoins it); a closed tab's
    // call ends a few seconds later (the server's unload grace), as a hang-up. A page reloaded
    // before the server welcomed it is not in its call yet, but still keeps it (calls.kept).
    if (!state.calls) return;
    if (state.calls.keepForReload()) {
      state.signaling.request("bye").catch(() => {});
      localStorage.setItem(RELOADING, JSON.stringify({
        device: state.session.deviceId, until: Date.now() + UNLOAD_GRACE_MS }));
    } else if (state.calls.active) {
      state.calls.hangup();
    }
  });
  // For diagnostics (and the test-suite): the live call's phase and WebRTC statistics.
  window.facecall = {
    diagnostics: () => (state.calls ? state.calls.diagnostics() : Promise.resolve({ phase: "signed-out" })),
    dropConnection: () => state.signaling && state.signaling.drop(),
    get signaling() { return state.signaling ? state.signaling.state : "closed"; },
    // this browser's device and the public key it signs with (identity.js)
    get identity() {
      const s = state.session;
      return s ? { deviceId: s.deviceId, key: s.identity.publicKey } : null;
    },
    callLimits: CALL_LIMITS, // how long a call may take to connect or to come back (tests shorten them)
  };
  api.serverInfo().then((info) => {
    if (info && info.sign_up === "closed") closeSignUp();
    showInvite();
  }, () => {}); // unreachable now: the sign-in form says so when it is used
  if (takeInvite()) showInvite();
  resume().then((ok) => {
    if (!ok) {
      showView("auth");
      $("auth-username").focus();
    } else if (sessionStorage.getItem(INVITE)) {
      messages.notice("This link invites you to make a new account: sign out first to use it.");
    }
    document.body.dataset.ready = "true";
  });
}

init();
