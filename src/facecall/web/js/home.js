// The home screen: recents (with missed calls) and my devices.

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
  if (item.duration !== null && item.answered_at !== null) return `${way} ${kind.toLowerCase()} · ${duration(item.duration)}`;
  if (item.ended_at === null) return `${way} ${kind.toLowerCase()} · in progress`;
  const reasons = {
    declined: "declined", busy: "busy", ring_timeout: "no answer", unavailable: "unavailable",
    cancelled: "cancelled", glare: "crossed calls", connection_lost: "connection lost",
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
  }

  async refresh() {
    await Promise.all([this.refreshRecents(), this.refreshDevices()]);
  }

  async refreshRecents() {
    let history;
    try {
      history = await this.api.history(this.session().account, 30);
    } catch {
      return;
    }
    const list = $("recents");
    list.replaceChildren();
    for (const item of history.items) {
      const other = item.participants.map((p) => p.username || "Deleted account").join(", ") || "Unknown";
      const first = item.participants.find((p) => p.username); // a deleted account cannot be called back
      const text = describeCall(item);
      const callback = first
        ? el("button", {
          type: "button", class: "callback secondary",
          "aria-label": `Call ${other} (${item.media})`,
          onclick: () => this.call(first.username, item.media, first.user_id),
        }, icon(item.media === "video" ? "video-call" : "audio-call"))
        : "";
      list.append(el("li", { class: item.missed ? "missed" : "", "data-call-id": item.call_id },
        el("span", { class: "avatar", "aria-hidden": "true" }, initials(other)),
        el("span", { class: "who" },
          el("span", { class: "name" }, other),
          el("span", { class: "meta" }, el("span", { class: "kind" }, text), ` · ${when(item.created_at)}`)),
        callback));
    }
    $("recents-empty").hidden = history.items.length > 0;
    // A call shown "in progress" may be going on (or end) on another device of mine, and this
    // one hears nothing of it: look again until none is in progress.
    clearTimeout(this.liveTimer);
    this.liveTimer = null;
    if (history.items.some((item) => item.ended_at === null)) {
      this.liveTimer = setTimeout(() => {
        this.liveTimer = null;
        if (this.session() && !$("home-view").hidden) this.refreshRecents();
      }, LIVE_RECHECK_MS);
    }
  }

  async refreshDevices() {
    let devices;
    try {
      devices = await this.api.devices(this.session().account);
    } catch {
      return;
    }
    const list = $("devices");
    list.replaceChildren();
    for (const device of devices) {
      const mine = device.id === this.session().deviceId;
      const online = device.online || mine;
      list.append(el("li", { "data-device-id": device.id },
        el("span", { class: "who" },
          el("span", { class: "name" }, device.name),
          el("span", { class: `meta ${online ? "online" : "offline"}` },
            `${mine ? "this device" : device.kind} · ${online ? "online" : "offline"}`)),
        el("button", {
          type: "button", class: "danger", "aria-label": `Remove device ${device.name}`,
          onclick: () => this.remove(device, mine),
        }, "Remove")));
    }
  }

  async remove(device, mine) {
    const question = mine
      ? "Remove this device? You will be signed out here."
      : `Remove “${device.name}”? It will stop ringing and be signed out.`;
    if (!window.confirm(question)) return;
    try {
      await this.api.removeDevice(this.session().account, device.id);
    } catch (error) {
      if (error.status !== 401) this.error(`Could not remove the device: ${error.message}`); // 401: app.js says so
      return;
    }
    if (mine) this.onThisDeviceRemoved();
    else await this.refreshDevices();
  }
}
