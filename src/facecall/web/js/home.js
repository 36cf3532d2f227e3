// The home screen: recents (with missed calls) and my devices (rename, remove).

import { store } from "./settings.js";
import { initials } from "./ui.js";

const $ = (id) => document.getElementById(id);
const LIVE_RECHECK_MS = 3000; // how often recents are read again while a call shows "in progress"

function when(seconds) {
  const date = new Date(seconds * 1000);
  const today = new Date();
  const sameDay = date.toDateString() === today.toDateString();
  return sameDay
    ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : date.toLocaleDateString([], { month: "short", day: "numeric" });
}

function duration(seconds) {
  const s = Math.round(seconds);
  return s >= 60 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${s} s`;
}

/** One line of recents, in words. */
export function describeCall(item) {
  const kind = item.media === "video" ? "Video" : "Audio";
  if (item.missed) return `Missed ${kind.toLowerCase()} call`;
  const way = item.direction === "outgoing" ? "Outgoing" : "Incoming";
  // a device refused the other's description (identity.js): whatever its duration, no call was had
  if (item.end_reason === "identity_check_failed") return `${way} ${kind.toLowerCase()} · security check failed`;
  if (item.duration !== null && item.answered_at !== null) return `${way} ${kind.toLowerCase()} · ${duration(item.duration)}`;
  if (item.ended_at === null) return `${way} ${kind.toLowerCase()} · in progress`;
  const reasons = {
    declined: "declined", busy: "busy", ring_timeout: "no answer", unavailable: "unavailable",
    cancelled: "cancelled", glare: "crossed calls", connection_lost: "connection lost",
    no_media: "could not connect",
  };
  const reason = reasons[item.my_end_reason] || reasons[item.end_reason] || "not answered";
  return `${way} ${kind.toLowerCase()} · ${reason}`;
}

/** A copy of the SVG icon of one of the page's buttons. */
function icon(buttonId) {
  const svg = document.getElementById(buttonId).querySelector("svg");
  return svg ? svg.cloneNode(true) : "";
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

export class Home {
  /**
   * @param {object} o
   * @param {import('./api.js').Api} o.api
   * @param {() => object} o.session   {account, device, deviceId, userId}
   * @param {(username: string, media: string, userId: string) => void} o.call
   * @param {(text: string) => void} o.error
   * @param {() => void} o.onThisDeviceRemoved
   */
  constructor({ api, session, call, error, onThisDeviceRemoved }) {
    this.api = api;
    this.session = session;
    this.call = call;
    this.error = error;
    this.onThisDeviceRemoved = onThisDeviceRemoved;
    this.liveTimer = null;
    this.shownHistory = null;
    this.names = new Map(); // user id -> {username, displayName}
    this.devices = []; // My devices as last listed (the handoff bar names them)
  }

  async refresh() {
    await Promise.all([this.refreshRecents(), this.refreshDevices()]);
  }

  async refreshRecents() {
    const s = this.session();
    if (!s) return;
    let history;
    try {
      history = await this.api.history(s.account, 30);
    } catch {
      return;
    }
    if (this.session() !== s) return; // signed out meanwhile
    const list = $("recents");
    // the same history as last time (a call in progress, read again): leave the list alone
    const signature = JSON.stringify(history.items);
    if (signature !== this.shownHistory || !list.isConnected || list.children.length !== history.items.length) {
      this.shownHistory = signature;
      this.renderRecents(list, history.items);
    }
    $("recents-empty").hidden = history.items.length > 0;
    this.lookUpNames(s, history.items);
    // A call shown "in progress" may be going on (or end) on another device of mine, and this
    // one hears nothing of it: look again until none is in progress.
    clearTimeout(this.liveTimer);
    this.liveTimer = null;
    if (history.items.some((item) => item.ended_at === null)) {
      this.liveTimer = setTimeout(() => {
        this.liveTimer = null;
        if (this.session() === s && !$("home-view").hidden) this.refreshRecents();
      }, LIVE_RECHECK_MS);
    }
  }

  /** What recents call a person: their display name (as everywhere else), else the username. */
  nameOf(p) {
    if (!p.username) return "Deleted account";
    const known = this.names.get(p.user_id);
    return known && known.username === p.username && known.displayName ? known.displayName : p.username;
  }

  renderRecents(list, items) {
    list.replaceChildren();
    for (const item of items) {
      const other = item.participants.map((p) => this.nameOf(p)).join(", ") || "Unknown";
      const handles = item.participants.filter((p) => p.username).map((p) => `@${p.username}`).join(", ");
      const first = item.participants.find((p) => p.username); // a deleted account cannot be called back
      const text = describeCall(item);
      const callback = first
        ? el("button", {
          type: "button", class: "callback secondary",
          "aria-label": `Call ${other} (${item.media})`,
          onclick: () => this.call(first.username, item.media, first.user_id),
        }, icon(item.media === "video" ? "video-call" : "audio-call"))
        : "";
      const showHandle = handles && handles !== item.participants.map((p) => `@${this.nameOf(p)}`).join(", ");
      list.append(el("li", { class: item.missed ? "missed" : "", "data-call-id": item.call_id },
        el("span", { class: "avatar", "aria-hidden": "true" }, initials(other)),
        el("span", { class: "who" },
          el("span", { class: "name", title: handles }, other),
          el("span", { class: "meta" }, showHandle ? el("span", { class: "handle" }, `${handles} · `) : "",
            el("span", { class: "kind" }, text), ` · ${when(item.created_at)}`)),
        callback));
    }
  }

  /** Display names of the people in recents (the history has usernames only), each looked up
   *  once; the list is drawn again when one is new. */
  async lookUpNames(s, items) {
    const wanted = new Map();
    for (const item of items) {
      for (const p of item.participants) if (p.username && !this.names.has(p.user_id)) wanted.set(p.user_id, p.username);
    }
    if (wanted.size === 0) return;
    let changed = false;
    await Promise.all([...wanted].map(async ([userId, username]) => {
      this.names.set(userId, { username, displayName: null }); // once, even if it fails
      try {
        const user = await this.api.user(s.account, username);
        // a deleted account's name may be someone else's now: only the same account counts
        if (user.id === userId && user.display_name) {
          this.names.set(userId, { username, displayName: user.display_name });
          changed = changed || user.display_name !== username;
        }
      } catch {
        /* the username it is */
      }
    }));
    if (changed && this.session() === s) {
      this.shownHistory = JSON.stringify(items);
      this.renderRecents($("recents"), items);
    }
  }

  async refreshDevices() {
    const s = this.session();
    if (!s) return;
    let devices;
    try {
      devices = await this.api.devices(s.account);
    } catch {
      return;
    }
    // signed out meanwhile (this device removed during its call, sign-out): nothing to show
    if (this.session() !== s) return;
    this.devices = devices;
    $("devices").replaceChildren(...devices.map((device) => this.deviceRow(device, s)));
  }

  /** One line of My devices: its name, kind and whether it is online; Rename and Remove. */
  deviceRow(device, s) {
    const mine = device.id === s.deviceId;
    const online = device.online || mine;
    return el("li", { "data-device-id": device.id },
      el("span", { class: "who" },
        el("span", { class: "name" }, device.name),
        el("span", { class: `meta ${online ? "online" : "offline"}` },
          `${mine ? "this device" : device.kind} · ${online ? "online" : "offline"}`)),
      el("button", {
        type: "button", class: "rename secondary", "aria-label": `Rename device ${device.name}`,
        onclick: (event) => this.startRename(event.currentTarget.closest("li"), device, s),
      }, "Rename"),
      el("button", {
        type: "button", class: "danger", "aria-label": `Remove device ${device.name}`,
        onclick: () => this.remove(device, mine),
      }, "Remove"));
  }

  /** The device's line becomes a small form: Enter saves, Escape (or Cancel) puts the line
   *  back as it was. */
  startRename(row, device, s) {
    const errorId = `rename-error-${device.id}`;
    const input = el("input", {
      name: "device_name", maxlength: "64", required: "", autocomplete: "off",
      "aria-label": `New name for device ${device.name}`, "aria-describedby": errorId,
    });
    input.value = device.name;
    const error = el("p", { id: errorId, class: "form-error", role: "alert" });
    const cancel = () => {
      const line = this.deviceRow(device, s);
      editor.replaceWith(line);
      line.querySelector(".rename").focus();
    };
    const form = el("form", {
      class: "rename-form", novalidate: "",
      onsubmit: (event) => {
        event.preventDefault();
        this.rename(device, input, error);
      },
      onkeydown: (event) => {
        if (event.key !== "Escape") return;
        event.stopPropagation(); // cancels the rename only, not a message shown meanwhile
        cancel();
      },
    }, input,
    el("button", { type: "submit", class: "secondary" }, "Save"),
    el("button", { type: "button", class: "ghost", onclick: cancel }, "Cancel"),
    error);
    const editor = el("li", { "data-device-id": device.id }, form);
    row.replaceWith(editor);
    input.focus();
    input.select();
  }

  async rename(device, input, error) {
    const refuse = (text) => {
      error.textContent = text;
      input.setAttribute("aria-invalid", "true");
      input.focus();
    };
    const name = input.value.trim();
    if (!name) return refuse("Enter a device name.");
    const s = this.session();
    if (!s) return;
    const save = input.form.querySelector("button[type=submit]");
    save.disabled = true;
    let renamed;
    try {
      renamed = await this.api.renameDevice(s.account, device.id, name);
    } catch (failure) {
      if (failure.status !== 401) refuse(`Could not rename the device: ${failure.message}`); // 401: app.js says so
      return;
    } finally {
      save.disabled = false;
    }
    if (renamed.id === s.deviceId) {
      // this browser's device: the name it registers with again (the sign-in form) follows
      const saved = store.get("device");
      if (saved && saved.id === renamed.id) store.set("device", { ...saved, name: renamed.name });
      $("auth-device-name").value = renamed.name;
    }
    input.closest("li").replaceWith(this.deviceRow(renamed, s)); // at once, even if reading the list fails
    await this.refreshDevices();
    const line = [...$("devices").children].find((li) => li.dataset.deviceId === renamed.id);
    if (line) line.querySelector(".rename").focus();
  }

  async remove(device, mine) {
    const question = mine
      ? "Remove this device? You will be signed out here."
      : `Remove “${device.name}”? It will stop ringing and be signed out.`;
    if (!window.confirm(question)) return;
    const s = this.session();
    if (!s) return;
    try {
      await this.api.removeDevice(s.account, device.id);
    } catch (error) {
      if (error.status !== 401) this.error(`Could not remove the device: ${error.message}`); // 401: app.js says so
      return;
    }
    if (mine) this.onThisDeviceRemoved();
    else await this.refreshDevices();
  }
}
