// The DOM side of calls: incoming screen, call waiting, in-call screen (a group call's tiles,
// "Add person"), messages.

import { canShareScreen } from "./media.js";

const $ = (id) => document.getElementById(id);

export function initials(name) {
  return (name || "?").trim().slice(0, 1).toUpperCase() || "?";
}

/** An empty tile of a group call for ``device``: its picture (or avatar) and its name. */
function groupTile(device) {
  const tile = document.createElement("figure");
  tile.className = "tile";
  tile.setAttribute("role", "listitem");
  tile.dataset.device = device;
  const video = document.createElement("video");
  video.autoplay = true;
  video.playsInline = true;
  video.muted = true; // the audio slots play in their own elements
  const avatar = document.createElement("div");
  avatar.className = "avatar big";
  avatar.setAttribute("aria-hidden", "true");
  const caption = document.createElement("figcaption");
  const name = document.createElement("span");
  name.className = "tile-name";
  const note = document.createElement("span");
  note.className = "tile-note";
  caption.append(name, note);
  tile.append(video, avatar, caption);
  return tile;
}

const NOTICE_MS = 6000;
// an error that only says the server cannot be reached: it goes once the connection is back
const UNREACHABLE = /^The server cannot be reached/;

/**
 * Messages: `status` (polite, screen readers only), `error` (red, role=alert, stays until
 * dismissed or superseded), `notice` (neutral, role=status: "Call ended", "Missed call from …";
 * goes by itself), and the connection banner.
 */
export class Messages {
  constructor() {
    this.statusEl = $("status");
    this.alertEl = $("alert");
    this.alertText = $("alert-text");
    this.noticeEl = $("notice");
    this.noticeText = $("notice-text");
    this.connectionEl = $("connection");
    this.timer = null;
    $("alert-close").addEventListener("click", () => this.dismiss());
    $("notice-close").addEventListener("click", () => this.dismissNotice());
    document.addEventListener("keydown", (e) => {
      if (e.key !== "Escape" || !$("incoming").hidden) return; // the ringing screen ignores Escape
      if (!this.alertEl.hidden) this.dismiss();
      else if (!this.noticeEl.hidden) this.dismissNotice();
    });
  }

  status(text) {
    this.statusEl.textContent = "";
    // a fresh text node so that repeated messages are announced again
    requestAnimationFrame(() => {
      this.statusEl.textContent = text;
    });
  }

  error(text) {
    this.dismissNotice();
    this.alertText.textContent = text;
    this.alertEl.dataset.kind = UNREACHABLE.test(text) ? "unreachable" : "error";
    this.alertEl.hidden = false;
  }

  /** An informational message (role=status, announced politely), gone after a few seconds.
   *  Not over the incoming-call screen: the ring says what matters there. */
  notice(text, { kind } = {}) {
    clearTimeout(this.timer);
    this.noticeText.textContent = text;
    this.noticeEl.dataset.kind = kind || "notice";
    this.noticeEl.hidden = !$("incoming").hidden;
    if (this.noticeEl.hidden) this.status(text);
    this.timer = setTimeout(() => this.dismissNotice(), NOTICE_MS);
  }

  dismiss() {
    this.alertEl.hidden = true;
  }

  dismissNotice() {
    clearTimeout(this.timer);
    this.noticeEl.hidden = true;
  }

  /** The server answers again: an error that said it could not be reached is stale. */
  reachable() {
    if (!this.alertEl.hidden && this.alertEl.dataset.kind === "unreachable") this.dismiss();
  }

  connection(text) {
    this.connectionEl.textContent = text || "";
    this.connectionEl.hidden = !text;
    if (!text) this.reachable();
  }
}

export class CallView {
  /**
   * @param {Messages} messages  @param {(view: string) => void} showView
   * @param {import("./alerts.js").CallAlerts} alerts  rings and missed calls, told outside the page
   */
  constructor(messages, showView, alerts) {
    this.messages = messages;
    this.showView = showView;
    this.alerts = alerts;
    this.handlers = {};
    this.incomingId = null;
    this.waitingId = null;
    this.previousFocus = null;
    this.callFocus = null;
    this.remote = $("remote-video");
    this.local = $("local-video");
  }

  /** Wire the buttons to a Calls controller. */
  bind(calls) {
    this.calls = calls;
    // assigned, not added: signing in again in this page binds a new view, and the buttons
    // must act on the new calls only
    $("accept").onclick = () => this.incomingId && calls.accept(this.incomingId);
    $("decline").onclick = () => this.incomingId && calls.decline(this.incomingId);
    $("waiting-accept").onclick = () => this.waitingId && calls.accept(this.waitingId);
    $("waiting-decline").onclick = () => this.waitingId && calls.decline(this.waitingId, { busy: true });
    $("hangup").onclick = () => calls.hangup();
    $("mute").onclick = () => calls.setMuted(!calls.media.muted);
    $("camera").onclick = () => calls.setCameraOff(!calls.media.cameraOff);
    $("switch-camera").onclick = () => calls.switchCamera();
    $("share-screen").onclick = () => calls.screenShare.toggle();
    $("watch-together").onclick = () => calls.watch.ask();
    $("incoming").onkeydown = (e) => this.trapFocus(e);
    $("add-person").onclick = () => ($("add-ask").hidden ? this.openAddPerson() : this.closeAddPerson());
    $("add-cancel").onclick = () => this.closeAddPerson();
    $("add-ask").onkeydown = (e) => {
      if (e.key === "Escape") { // closes the form, not the messages on screen
        e.preventDefault();
        e.stopPropagation();
        this.closeAddPerson();
      }
    };
    $("add-form").onsubmit = async (e) => {
      e.preventDefault();
      const send = $("add-send");
      if (send.disabled) return;
      send.disabled = true;
      $("add-error").textContent = "";
      try {
        const problem = await calls.invite($("add-username").value);
        if (problem) {
          $("add-error").textContent = problem;
          $("add-username").focus();
        } else {
          this.closeAddPerson();
        }
      } finally {
        send.disabled = false;
      }
    };
  }

  // -- adding a person -------------------------------------------------------------------
  openAddPerson() {
    $("add-error").textContent = "";
    $("add-username").value = "";
    $("add-ask").hidden = false;
    $("add-person").setAttribute("aria-expanded", "true");
    $("add-username").focus();
  }

  closeAddPerson({ focus = true } = {}) {
    if ($("add-ask").hidden) return;
    $("add-ask").hidden = true;
    $("add-person").setAttribute("aria-expanded", "false");
    if (focus && !$("add-person").disabled) $("add-person").focus();
  }

  status(text) { this.messages.status(text); }
  error(text) { this.messages.error(text); }
  clearError() { this.messages.dismiss(); }
  notice(text, options) { this.messages.notice(text, options); }
  connection(text) { this.messages.connection(text); }

  // -- incoming ------------------------------------------------------------------------
  showIncoming(ring) {
    const el = $("incoming");
    const fresh = this.incomingId !== ring.call_id;
    this.incomingId = ring.call_id;
    $("incoming-name").textContent = ring.name;
    $("incoming-avatar").textContent = initials(ring.name);
    const kind = ring.media === "video" ? "Incoming video call" : "Incoming audio call";
    $("incoming-kind").textContent = ring.call_waiting ? `${kind} · you are in a call on another device` : kind;
    if (fresh) {
      // Focus goes to the dialog itself, never to Accept: a key being typed elsewhere (Enter,
      // Space) must not answer the call. The page behind is inert while it rings (the dialog
      // is modal); focus goes back where it was when the ringing stops.
      if (el.hidden) this.previousFocus = document.activeElement;
      el.hidden = false;
      $("main").inert = true;
      this.messages.dismissNotice();
      el.focus({ preventScroll: true });
      this.status(`${kind} from ${ring.name}`);
    }
    this.alerts.ring(ring);
  }

  /** Nothing rings here any more. (Hiding the screens alone, as a call ends, leaves the rings
   *  that go on — a call-waiting ring becomes the incoming screen — notified as they were.) */
  noRings() {
    this.alerts.stopAll();
    this.hideIncoming(null);
  }

  showWaiting(ring) {
    this.waitingId = ring.call_id;
    $("waiting-text").textContent =
      `${ring.name} is calling (${ring.media === "video" ? "video" : "audio"})`;
    $("call-waiting").hidden = false;
    this.status(`Call waiting: ${ring.name} is calling`);
    this.alerts.ring(ring);
  }

  /**
   * Stop showing a ring (`callId`: it stopped ringing), or the incoming screen and banner
   * (null). `missed`: what to tell the person if they are away ("Missed call from …").
   */
  hideIncoming(callId, { missed = null } = {}) {
    if (callId !== null) this.alerts.stop(callId, { missed });
    if (callId === null || this.incomingId === callId) {
      if (!$("incoming").hidden) {
        $("incoming").hidden = true;
        $("main").inert = false;
        const back = this.previousFocus;
        this.previousFocus = null;
        if (back && back.isConnected && back.focus && back.checkVisibility()) back.focus({ preventScroll: true });
      }
      this.incomingId = null;
    }
    if (callId === null || this.waitingId === callId) {
      $("call-waiting").hidden = true;
      this.waitingId = null;
    }
  }

  trapFocus(e) {
    if (e.key === "Escape") { // not an answer, and not a dismissal of the ring either
      e.preventDefault();
      return;
    }
    if (e.key !== "Tab") return;
    const buttons = [$("decline"), $("accept")];
    const index = buttons.indexOf(document.activeElement);
    e.preventDefault();
    buttons[(index + (e.shiftKey ? buttons.length - 1 : 1)) % buttons.length].focus();
  }

  // -- in call -------------------------------------------------------------------------
  showCall(call, media) {
    const focused = document.activeElement;
    if (!this.callFocus && focused && focused !== document.body && !$("call-view").contains(focused)) {
      this.callFocus = focused; // where focus goes back when the call ends
    }
    this.showView("call");
    $("call-peer").textContent = call.name;
    $("remote-avatar").textContent = initials(call.name);
    $("remote-avatar").hidden = false;
    $("remote-note").hidden = true;
    this.remote.classList.toggle("audio-only", true);
    this.remote.classList.remove("screen");
    this.remote.srcObject = null;
    this.showLocal(media);
    this.controls(call, media);
    this.quality({ quality: "unknown" });
    this.securityCode(call.securityCode, call.remoteDevice);
    $("hangup").focus();
  }

  /** The call's security code ("01234 56789 01234 56789"), or none (null: not connected, or
   *  another connection is replacing this one), and the other device it is the code with
   *  (``data-device``: the safety number's line checks that device, security-code.js). */
  securityCode(code, device = null) {
    $("security-code").textContent = code || "";
    const el = $("security");
    el.dataset.device = (code && device) || "";
    if (!code) el.open = false;
    el.hidden = !code;
  }

  /** My picture: the camera (mirrored, as in a mirror), or the screen I share (whole and
   *  unmirrored), or nothing (camera off). */
  showLocal(media) {
    const screen = !!media.screen;
    const hasVideo = screen || (!!media.videoTrack && !media.cameraOff);
    const stream = screen ? media.screenStream : media.stream;
    this.local.classList.toggle("off", !hasVideo);
    this.local.classList.toggle("screen", screen);
    this.local.setAttribute("aria-label", screen ? "Your shared screen" : "Your camera");
    if (hasVideo) {
      if (this.local.srcObject !== stream) this.local.srcObject = stream;
      else {
        this.local.srcObject = null;
        this.local.srcObject = stream;
      }
    } else {
      this.local.srcObject = null;
    }
  }

  showRemote(call, stream) {
    if (this.remote.srcObject !== stream) this.remote.srcObject = stream;
    this.remoteMedia(call);
    this.remote.play().catch(() => {});
  }

  /** The other side's picture, or their avatar when they send none (an audio call, their
   *  camera off), and a note when their camera is off or their microphone muted. A shared
   *  screen is shown whole (not cropped to fill the window), with a note saying it is one. */
  remoteMedia(call) {
    const stream = this.remote.srcObject;
    const { audio, video, screen } = call.remoteMedia;
    const hasVideo = !!stream && stream.getVideoTracks().length > 0 && call.media === "video" && video;
    const sharing = hasVideo && !!screen;
    this.remote.classList.toggle("audio-only", !hasVideo);
    this.remote.classList.toggle("screen", sharing);
    this.remote.setAttribute("aria-label", sharing ? `${call.name}'s shared screen` : "Remote video");
    $("remote-avatar").hidden = hasVideo;
    const notes = [];
    if (call.media === "video" && !video) notes.push("camera off");
    if (!audio) notes.push("muted");
    const note = $("remote-note");
    if (sharing) {
      note.textContent = `${call.name} is sharing their screen${audio ? "" : " (muted)"}`;
    } else {
      note.textContent = notes.length ? `${call.name}: ${notes.join(", ")}` : "";
    }
    note.classList.toggle("screen", sharing);
    note.hidden = !sharing && notes.length === 0;
  }

  controls(call, media) {
    const mute = $("mute");
    mute.setAttribute("aria-pressed", String(media.muted));
    mute.querySelector(".label").textContent = media.muted ? "Unmute" : "Mute";
    const camera = $("camera");
    const video = call && call.media === "video";
    camera.hidden = !video;
    camera.setAttribute("aria-pressed", String(media.cameraOff));
    camera.disabled = media.videoDevices.length === 0;
    camera.title = camera.disabled ? "No camera was found" : "";
    camera.querySelector(".label").textContent = media.cameraOff ? "Camera on" : "Camera off";
    if (media.screen) camera.title = media.cameraOff ? "Your camera stays off when you stop sharing your screen"
      : "Your camera comes back when you stop sharing your screen";
    const sw = $("switch-camera");
    sw.hidden = !video;
    sw.disabled = !media.canSwitchCamera;
    sw.title = media.screen ? "Not while you share your screen"
      : media.canSwitchCamera ? "Use the next camera" : "This device has only one camera";
    const share = $("share-screen");
    share.hidden = !canShareScreen();
    const capturing = !!media.audioTrack; // not while the camera and microphone are starting
    share.disabled = !video || !capturing;
    share.title = !video ? "Screen sharing needs a video call: an audio call sends no video"
      : media.screen ? "Stop sharing your screen: your camera comes back as it was"
        : capturing ? "Show your screen instead of your camera" : "";
    share.setAttribute("aria-pressed", String(!!media.screen));
    share.querySelector(".label").textContent = media.screen ? "Stop sharing" : "Share screen";
    // a video to watch together (watch-together.js), once the call's media connected
    const watch = $("watch-together");
    const group = !!call && !!call.group;
    watch.disabled = !call || !call.connectedAt || group;
    watch.title = group ? "Not in group calls yet: watching together is for calls of two"
      : watch.disabled ? "Once the call is connected" : "Watch a video together";
    // ring someone else into the call (call.invite): once it is connected
    const add = $("add-person");
    add.disabled = !call || !call.id || !call.connectedAt || call.ended;
    add.title = add.disabled ? "You can add a person once the call is connected" : "Ring someone else into this call";
    if (add.disabled) this.closeAddPerson({ focus: false });
  }

  // -- a group call ----------------------------------------------------------------------
  /** The call's media goes through the SFU now: tiles for the people in the receive slots
   *  instead of the one other picture. */
  showGroup(call, group) {
    $("call-view").classList.add("group");
    this.remote.srcObject = null;
    $("remote-avatar").hidden = true;
    $("remote-note").hidden = true;
    this.securityCode(null);
    const audio = $("group-audio");
    audio.replaceChildren(...group.audioTracks().map((track) => {
      const el = document.createElement("audio");
      el.autoplay = true;
      el.srcObject = new MediaStream([track]);
      el.play().catch(() => {});
      return el;
    }));
    $("group-tiles").hidden = false;
    this.groupTiles(call, group);
    this.controls(call, this.calls.media);
  }

  /** One tile per person in a filled receive slot, labelled with their name; empty slots show
   *  nothing. Tiles are kept per device, so a redraw does not restart a picture. The tile of
   *  whoever is speaking (the SFU's dominant speaker) is highlighted, and its label says so;
   *  a speaker in none of the slots (this device among them) highlights nothing. */
  groupTiles(call, group) {
    if (call.group !== group || group.closed) return;
    const redraw = () => this.groupTiles(call, group);
    const names = [...call.groupJoin.others.keys()].map((id) => this.calls.nameOf(id, redraw));
    $("call-peer").textContent = names.length ? new Intl.ListFormat("en", { type: "conjunction" }).format(names) : call.name;
    const grid = $("group-tiles");
    const tiles = new Map([...grid.children].map((tile) => [tile.dataset.device, tile]));
    const people = group.people();
    const speaking = group.speaker ? group.speaker.deviceId : null;
    for (const person of people) {
      const tile = tiles.get(person.deviceId) || groupTile(person.deviceId);
      tiles.delete(person.deviceId);
      grid.appendChild(tile); // in slot order
      const name = this.calls.nameOf(person.userId, redraw);
      const said = group.remoteMedia.get(person.deviceId) || { audio: true, video: true, screen: false };
      const video = tile.querySelector("video");
      const showsVideo = !!person.video && call.media === "video" && said.video;
      if (person.video && (!video.srcObject || video.srcObject.getVideoTracks()[0] !== person.video)) {
        video.srcObject = new MediaStream([person.video]);
        video.play().catch(() => {});
      }
      video.hidden = !showsVideo;
      video.classList.toggle("screen", showsVideo && said.screen);
      video.setAttribute("aria-label", said.screen ? `${name}'s shared screen` : `${name}'s video`);
      const avatar = tile.querySelector(".avatar");
      avatar.textContent = initials(name);
      avatar.hidden = showsVideo;
      tile.querySelector(".tile-name").textContent = name;
      const notes = [];
      if (said.screen) notes.push("sharing their screen");
      else if (call.media === "video" && !said.video) notes.push("camera off");
      if (!said.audio) notes.push("muted");
      tile.querySelector(".tile-note").textContent = notes.length ? ` · ${notes.join(", ")}` : "";
      const speaks = person.deviceId === speaking;
      tile.classList.toggle("speaking", speaks);
      tile.setAttribute("aria-label", [name, ...notes, ...(speaks ? ["speaking"] : [])].join(", "));
    }
    for (const tile of tiles.values()) tile.remove(); // slots that emptied
    grid.dataset.count = String(people.length);
    $("group-empty").hidden = people.length > 0;
  }

  /** Back to the one-to-one screen (the call ended). */
  hideGroup() {
    $("call-view").classList.remove("group");
    $("group-tiles").replaceChildren();
    $("group-tiles").hidden = true;
    $("group-empty").hidden = true;
    $("group-audio").replaceChildren();
  }

  callState(call, text, { quiet = false } = {}) {
    $("call-state").textContent = text;
    if (!quiet) this.status(`${call.name}: ${text}`);
  }

  quality(stats) {
    const el = $("quality");
    const level = stats.quality || "unknown";
    el.dataset.level = level;
    const words = { good: "Good connection", fair: "Fair connection", poor: "Poor connection", unknown: "" };
    let text = words[level];
    if (stats.localCandidateType === "relay" || stats.remoteCandidateType === "relay") {
      text = text ? `${text} · relayed` : "Relayed";
    }
    $("quality-text").textContent = text;
    el.setAttribute("aria-label", `Network quality: ${level}${text.includes("relayed") ? ", relayed" : ""}`);
  }

  endCall(call, message, { error }) {
    this.securityCode(null);
    this.hideGroup();
    this.closeAddPerson({ focus: false });
    this.remote.srcObject = null;
    this.local.srcObject = null;
    this.hideIncoming(null);
    const back = this.callFocus;
    this.callFocus = null;
    this.showView("home");
    // focus goes back to what started the call (a button in recents is rebuilt: then the
    // username field of "New call"), not to <body>
    if ($("incoming").hidden) {
      const target = back && back.isConnected && back.checkVisibility() && !$("call-view").contains(back)
        ? back : $("call-username");
      target.focus({ preventScroll: true });
    }
    if (message) {
      if (error) this.error(message);
      else this.notice(message);
    }
  }
}
