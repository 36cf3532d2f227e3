// Watch together: shared playback in a call (docs/shareplay.md). The rules are shareplay.js's;
// this module moves its messages over each peer connection's data channel (peer.js), keeps the
// other device's clock measured, shows the shared video with its own controls, and keeps the
// playing <video> at the shared position. A video the other person shares is loaded only once
// this person says Watch (watch-prompt.js asks): until then the state follows silently.
//
// Keeping in sync (SYNC below): every 100 ms the video's currentTime is compared with the
// shared position at that instant. More than 0.5 s apart: it jumps there (a seek, led by what
// the last seeks took). 40 ms to 0.5 s: it plays 5 % faster or slower until it is back within
// 15 ms (or has crossed over), which a viewer does not notice. Within 40 ms: left alone.

import { MAX_TITLE_CHARS, MAX_URL_CHARS, SharedPlayback, ShareplayError, encode } from "./shareplay.js";
import { WatchPrompt } from "./watch-prompt.js";

const $ = (id) => document.getElementById(id);
const now = () => performance.now();

/** Clock pings when a channel opens (the quickest counts), PING_GAP_MS apart, then one every
 *  PING_EVERY_MS: as the SDK does (facecall.client.shareplay). */
const OPEN_PINGS = 4;
const PING_GAP_MS = 100;
const PING_EVERY_MS = 10000;
/** How the playing video follows the shared position (seconds; `nudge`: the rate change). */
export const SYNC = { everyMs: 100, jump: 0.5, nudgeFrom: 0.04, nudgeTo: 0.015, nudge: 0.05 };
const HAVE_METADATA = 1;

/** "1:05", "1:01:05". */
function clockText(seconds) {
  const s = Math.max(0, Math.floor(seconds || 0));
  const mm = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, "0");
  return s >= 3600 ? `${Math.floor(s / 3600)}:${String(mm).padStart(2, "0")}:${ss}` : `${mm}:${ss}`;
}

/** A title for a video shared without one: the last part of its address. */
function fileName(url) {
  try {
    const path = new URL(url).pathname.split("/").filter(Boolean);
    return decodeURIComponent(path[path.length - 1] || new URL(url).host);
  } catch {
    return url;
  }
}

/** What the person typed as a video's address, checked for the protocol (http or https, no
 *  spaces, at most 2,048 characters), with a sentence for what is wrong. @returns {string} */
export function videoAddress(typed) {
  let url = typed.trim();
  if (!url) throw new ShareplayError("Enter the address of a video: http://… or https://…");
  url = url.replace(/^https?:\/\//i, (scheme) => scheme.toLowerCase());
  if (!/^https?:\/\//.test(url)) {
    throw new ShareplayError("A video address starts with http:// or https:// — check what was pasted.");
  }
  if (/\s/.test(url)) throw new ShareplayError("A video address has no spaces — check what was pasted.");
  if ([...url].length > MAX_URL_CHARS) {
    throw new ShareplayError(`That address is too long: at most ${MAX_URL_CHARS.toLocaleString("en")} characters.`);
  }
  try {
    if (!new URL(url).host) throw new Error("no host");
  } catch {
    throw new ShareplayError("That is not a whole address: it needs a host, as in https://example.org/video.webm.");
  }
  return url;
}

/** ``a`` and ``b`` are the same shared video: the same activity, at the same address. */
function same(a, b) {
  return !!a && !!b && a.id === b.id && a.url === b.url;
}

/** Why the <video> cannot play what is shared (its MediaError), in a sentence. */
function mediaProblem(error) {
  const code = error ? error.code : 0;
  const why = code === 2 ? "it stopped loading (a network error)"
    : code === 3 ? "it could not be decoded"
      : "the address gives nothing this browser can play (not found, not a video, or a format it does not know)";
  return `This video cannot be played here: ${why}. The call goes on.`;
}

/** Shared playback in this device's calls: one per Calls controller (calls.js). */
export class WatchTogether {
  /** @param {import('./calls.js').Calls} calls */
  constructor(calls) {
    this.calls = calls;
    this.call = null; // the call whose shared playback this is
    this.playback = null; // its SharedPlayback (shareplay.js)
    this.channel = null; // the data channel of its current peer connection
    this.pinger = null;
    this.refused = 0; // messages from the other side refused (malformed, too large)
    this.startedBy = new Map(); // activity id -> the device that started it (as first seen)
    this.timer = null; // the sync loop, while something is shared
    this.loaded = null; // the activity {id, url} the <video> was given
    this.failed = false; // …and it cannot play it
    this.dragging = false; // the person is moving the position slider
    this.nudging = 0; // +1: playing faster to catch up, -1: slower, 0: at the shared rate
    this.seekCost = 0; // ms the last seeks took (an average): a jump leads by it
    this.seekFrom = null;
    this.playing = null; // a play() under way
    this.drift = null; // the video's last distance from the shared position (s)
    // Asking first: the shared video {id, url} this page may load (the person said Watch, or
    // started it here), and the one the person said Not now to. In this page only: a reloaded
    // page asks again.
    this.accepted = null;
    this.declined = null;
    this.seen = false; // something was shared when the screen was last drawn
    this.video = $("watch-video");
    this.prompt = new WatchPrompt({
      watch: () => this.join(), later: () => this.later(), other: () => this.shareOther(),
    });
    this.bind();
  }

  // -- the channel -------------------------------------------------------------------------------
  /** ``call`` made a new peer connection, whose data channel is ``channel``: use it from now on.
   *  When it opens, the state goes to the other side (re-anchored on this clock, same version:
   *  a device that joined late catches up) and the clock is measured. */
  attach(call, channel) {
    if (call !== this.call) this.reset(call);
    else this.playback.newPeer(now());
    this.channel = channel;
    clearTimeout(this.pinger);
    channel.addEventListener("open", () => {
      if (channel !== this.channel || call !== this.call) return;
      // (a state never set, version 0, tells nothing: the reference would refuse its empty `by`)
      if (this.playback.version.n > 0) this.sendOn(channel, this.playback.stateMessage(now()));
      this.ping(channel, 0);
      if (call.current && !call.ended) {
        $("watch-together").disabled = false;
        $("watch-together").title = "Watch a video together";
      }
    });
    channel.addEventListener("message", (event) => {
      if (channel === this.channel && call === this.call) this.receive(channel, event.data);
    });
  }

  /** ``call`` ended: what it shared ends here too. */
  close(call) {
    if (call !== this.call) return;
    this.reset(null);
  }

  reset(call) {
    const welcome = this.calls.signaling.welcome;
    this.call = call;
    this.playback = call ? new SharedPlayback((welcome && welcome.device_id) || crypto.randomUUID()) : null;
    this.channel = null;
    this.refused = 0;
    this.startedBy.clear();
    this.accepted = null;
    this.declined = null;
    clearTimeout(this.pinger);
    this.closeAsk();
    this.render();
  }

  ping(channel, sent) {
    if (channel !== this.channel || channel.readyState !== "open") return;
    this.sendOn(channel, this.playback.ping(now()));
    this.pinger = setTimeout(() => this.ping(channel, sent + 1), sent + 1 < OPEN_PINGS ? PING_GAP_MS : PING_EVERY_MS);
  }

  receive(channel, raw) {
    let result;
    try {
      result = this.playback.receive(raw, now());
    } catch (error) {
      if (!(error instanceof ShareplayError)) throw error;
      this.refused += 1; // dropped: nothing changes
      console.warn("facecall: shared playback message refused:", error.message);
      return;
    }
    if (result.reply) this.sendOn(channel, result.reply);
    if (result.changed) this.changed(false);
  }

  sendOn(channel, message) {
    try {
      channel.send(encode(message));
    } catch {
      /* closing under us: the next channel sends the state */
    }
  }

  /** A change made here: shown at once, sent when the channel is open (else when it opens). */
  send(message) {
    this.changed(true);
    if (this.channel && this.channel.readyState === "open") this.sendOn(this.channel, message);
  }

  // -- what the person does ------------------------------------------------------------------------
  /** Run one local change (``change(playback, now)`` returns the message), if there is a call. */
  act(change) {
    if (!this.playback || !this.call || this.call.ended) return;
    try {
      this.send(change(this.playback, now()));
    } catch (error) {
      if (!(error instanceof ShareplayError)) throw error;
      this.calls.view.error(error.message);
    }
  }

  start(url, title) { this.act((p, t) => p.start(url, title, t)); }

  togglePlay() {
    const a = this.playback && this.playback.activity;
    if (!a) return;
    if (a.playing && !this.atEnd()) this.act((p, t) => p.pause(t));
    else {
      if (this.atEnd()) this.act((p, t) => p.seek(0, t));
      this.act((p, t) => p.play(t));
    }
  }

  seek(position) { this.act((p, t) => p.seek(position, t)); }

  setRate(rate) { this.act((p, t) => p.setRate(rate, t)); }

  stop() { this.act((p) => p.end()); }

  /** The shared state changed (``mine``: here): the screen, the video, and a word about it. */
  changed(mine) {
    const a = this.playback.activity;
    if (mine && a) this.accepted = { id: a.id, url: a.url }; // started (or changed) here: no need to ask
    if (a && !this.startedBy.has(a.id)) {
      const by = mine ? this.playback.deviceId : this.playback.version.by;
      this.startedBy.set(a.id, by);
      if (by !== this.playback.deviceId) {
        this.calls.view.status(`${this.call.name} shared a video: ${a.title || fileName(a.url)}`);
      }
    }
    if (!a && !mine && this.seen) this.calls.view.notice(`${this.call.name} stopped the video`);
    this.render();
  }

  // -- the "Watch together" dialog -------------------------------------------------------------------
  /** Wire the dialog, the controls and the <video> to this controller. Assigned, not added:
   *  signing in again in this page makes a new Calls, and they must act on its calls only. */
  bind() {
    $("watch-form").onsubmit = (event) => {
      event.preventDefault();
      this.submitAsk();
    };
    $("watch-cancel").onclick = () => this.closeAsk(true);
    $("watch-ask").onkeydown = (event) => {
      if (event.key === "Escape") {
        event.stopPropagation();
        this.closeAsk(true);
      }
    };
    $("watch-play").onclick = () => this.togglePlay();
    $("watch-stop").onclick = () => this.stop();
    $("watch-rate").onchange = (e) => this.setRate(Number(e.target.value));
    $("watch-sound").onclick = () => {
      this.video.muted = false;
      $("watch-sound").hidden = true;
    };
    const seek = $("watch-seek");
    seek.oninput = () => {
      this.dragging = true;
      this.showTime(Number(seek.value));
    };
    seek.onchange = () => {
      this.dragging = false;
      this.seek(Number(seek.value));
    };
    const video = this.video;
    video.onerror = () => this.mediaFailed();
    video.onloadedmetadata = () => this.sync();
    video.onseeked = () => {
      if (this.seekFrom === null) return;
      this.seekCost = Math.min(1000, (this.seekCost + (now() - this.seekFrom)) / 2);
      this.seekFrom = null;
    };
  }

  // -- asking first (watch-prompt.js) ---------------------------------------------------------------
  /** The shared video, if this page has not been allowed to load it (null: none, or allowed). */
  unaccepted() {
    const a = this.playback && this.playback.activity;
    return a && !same(a, this.accepted) ? a : null;
  }

  /** Watch: load what the other person shares, at the shared position now. */
  join() {
    const a = this.unaccepted();
    if (!a || !this.call || this.call.ended) return;
    this.accepted = { id: a.id, url: a.url };
    this.declined = null;
    this.render();
  }

  /** Not now: nothing is loaded; the state goes on following, and "Join bob's video" asks again. */
  later() {
    const a = this.unaccepted();
    if (a) this.declined = { id: a.id, url: a.url };
    this.render();
  }

  /** "Share another video" (in a prompt opened again): Not now, then the "Watch together" dialog. */
  shareOther() {
    this.later();
    this.openAsk();
  }

  /** The prompt and the "Watch together" button for what is shared (``a``) and not yet
   *  allowed; ``asked``: the person opened it ("Join bob's video"). */
  offer(a, asked = false) {
    const declined = !!a && !asked && same(a, this.declined);
    const label = declined ? `Join ${this.call.name}'s video` : "Watch together";
    $("watch-together").querySelector(".label").textContent = label;
    if (!a) this.prompt.hide();
    else if (declined) this.prompt.hide($("watch-together"));
    else this.prompt.show(this.call.name, a, a.title || fileName(a.url), { asked });
  }

  /** The "Watch together" button: ask for a video's address (sharing one replaces what is
   *  shared) — or, while the other person shares one not loaded here, ask about it again. */
  ask() {
    const waiting = this.unaccepted();
    if (waiting && this.call && !this.call.ended) {
      this.declined = null;
      this.offer(waiting, true);
      return;
    }
    this.openAsk();
  }

  openAsk() {
    const call = this.call;
    if (!call || !call.current || call.ended) return;
    $("watch-ask-error").textContent = "";
    $("watch-ask").hidden = false;
    $("watch-together").setAttribute("aria-expanded", "true");
    $("watch-url").focus();
  }

  closeAsk(refocus = false) {
    const open = !$("watch-ask").hidden;
    $("watch-ask").hidden = true;
    $("watch-together").setAttribute("aria-expanded", "false");
    if (open && refocus) $("watch-together").focus();
  }

  submitAsk() {
    const error = $("watch-ask-error");
    let url;
    try {
      url = videoAddress($("watch-url").value);
    } catch (problem) {
      error.textContent = problem.message;
      $("watch-url").focus();
      return;
    }
    const title = $("watch-title").value.trim();
    if ([...title].length > MAX_TITLE_CHARS) {
      error.textContent = `A title is at most ${MAX_TITLE_CHARS} characters.`;
      return;
    }
    this.closeAsk();
    $("watch-url").value = "";
    $("watch-title").value = "";
    this.start(url, title);
    $("watch-play").focus();
  }

  // -- the screen and the video ------------------------------------------------------------------------
  render() {
    const shared = this.playback && this.playback.activity;
    const a = this.unaccepted() ? null : shared; // nothing is loaded from an address not allowed
    this.seen = !!shared;
    $("call-view").classList.toggle("watching", !!a);
    $("watch").hidden = !a;
    if (a) this.prompt.hide($("watch-play"));
    else this.offer(shared);
    if (!a) {
      clearInterval(this.timer);
      this.timer = null;
      this.unload();
      return;
    }
    if (!this.loaded || this.loaded.url !== a.url || (this.failed && this.loaded.id !== a.id)) {
      this.loaded = { id: a.id, url: a.url };
      this.failed = false;
      this.nudging = 0;
      $("watch-problem").hidden = true;
      this.video.src = a.url;
    }
    this.loaded.id = a.id;
    $("watch-name").textContent = a.title || fileName(a.url);
    const by = this.startedBy.get(a.id);
    $("watch-by").textContent = by === this.playback.deviceId ? "You shared this video"
      : `Shared by ${this.call.name}`;
    const rate = $("watch-rate");
    if (![...rate.options].some((o) => Number(o.value) === a.rate)) rate.add(new Option(`${a.rate}×`, String(a.rate)));
    rate.value = [...rate.options].find((o) => Number(o.value) === a.rate).value;
    if (!this.timer) this.timer = setInterval(() => this.sync(), SYNC.everyMs);
    this.sync();
  }

  unload() {
    if (!this.loaded) return;
    this.loaded = null;
    this.failed = false;
    this.video.pause();
    this.video.removeAttribute("src");
    this.video.load();
    $("watch-problem").hidden = true;
    $("watch-sound").hidden = true;
  }

  mediaFailed() {
    if (!this.loaded || !this.video.getAttribute("src")) return; // unloaded on purpose
    this.failed = true;
    const problem = $("watch-problem");
    problem.textContent = mediaProblem(this.video.error);
    problem.hidden = false;
  }

  /** The shared position now (s), within the video's length; null while it cannot be known
   *  (nothing shared, or the other device's clock not measured yet). */
  target(t = now()) {
    const p = this.playback;
    const a = p && p.activity;
    if (!a || (!a.local && p.clock.best === null)) return null;
    const position = p.position(t);
    const length = this.video.duration;
    return Number.isFinite(length) ? Math.min(position, length) : position;
  }

  atEnd() {
    const length = this.video.duration;
    const target = this.target();
    return Number.isFinite(length) && target !== null && target >= length - 0.05;
  }

  /** Keep the <video> where the shared position is (the rule at the top of this file). */
  sync() {
    const a = this.playback && this.playback.activity;
    const v = this.video;
    const target = this.target();
    this.showControls(a, target);
    if (!a || this.failed || target === null || v.readyState < HAVE_METADATA) return;
    const playing = a.playing && !this.atEnd();
    if (!playing) {
      this.nudging = 0;
      if (!v.paused) v.pause();
      if (!v.seeking && Math.abs(v.currentTime - target) > 0.01) v.currentTime = target;
      this.drift = v.currentTime - target;
      return;
    }
    if (v.seeking) return;
    const drift = v.currentTime - target;
    this.drift = drift;
    if (Math.abs(drift) > SYNC.jump) {
      this.nudging = 0;
      this.seekFrom = now();
      v.currentTime = Math.min(target + (this.seekCost * a.rate) / 1000, v.duration || Infinity);
    } else if (Math.abs(drift) > SYNC.nudgeFrom) {
      this.nudging = drift < 0 ? 1 : -1; // behind: faster
    } else if (this.nudging && (Math.abs(drift) < SYNC.nudgeTo || Math.sign(drift) === this.nudging)) {
      this.nudging = 0; // back, or crossed over
    }
    const rate = a.rate * (1 + this.nudging * SYNC.nudge);
    if (v.playbackRate !== rate) v.playbackRate = rate;
    if (v.paused && !this.playing) this.play();
  }

  /** Play the video; a browser that refuses sound without a click here plays it muted, with a
   *  "Sound on" button. */
  play() {
    const v = this.video;
    this.playing = v.play().catch((error) => {
      if (error.name !== "NotAllowedError" || v.muted) return;
      v.muted = true;
      $("watch-sound").hidden = false;
      return v.play().catch(() => {});
    }).finally(() => {
      this.playing = null;
    });
  }

  showControls(a, target) {
    if (!a) return;
    const length = this.video.duration;
    const seek = $("watch-seek");
    seek.max = Number.isFinite(length) ? String(length) : "0";
    seek.disabled = !Number.isFinite(length);
    if (!this.dragging && target !== null) {
      seek.value = String(target);
      this.showTime(target);
    }
    const play = $("watch-play");
    const label = a.playing && !this.atEnd() ? "Pause" : "Play";
    if (play.textContent !== label) play.textContent = label;
  }

  showTime(position) {
    const length = this.video.duration;
    $("watch-time").textContent = Number.isFinite(length)
      ? `${clockText(position)} / ${clockText(length)}` : clockText(position);
  }

  /** What tests and the curious read: the shared state, the video, the clock and the channel. */
  diagnostics() {
    const p = this.playback;
    const v = this.video;
    const t = now();
    const a = p && p.activity;
    return {
      activity: a ? { id: a.id, url: a.url, title: a.title, playing: a.playing, rate: a.rate } : null,
      version: p ? [p.version.n, p.version.by] : null,
      position: p ? p.position(t) : null, target: this.target(t),
      currentTime: v.currentTime, paused: v.paused, playbackRate: v.playbackRate, readyState: v.readyState,
      mediaError: v.error ? v.error.code : null, drift: this.drift, nudging: this.nudging, seekCost: this.seekCost,
      now: t, epoch: performance.timeOrigin + t, clock: p ? p.clock.best : null,
      channel: this.channel ? this.channel.readyState : null, refused: this.refused,
      asking: this.prompt.open, allowed: !!a && !this.unaccepted(), declined: !!a && same(a, this.declined),
    };
  }
}
