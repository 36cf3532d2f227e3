// The call controller: outgoing and incoming calls, ringing on every device, call waiting,
// and the 1:1 media convention (the caller offers to the device that answered).

import { LocalMedia, MediaError } from "./media.js";
import { Peer } from "./peer.js";
import { Tone, unlockAudio } from "./ringtone.js";
import { ApiError } from "./api.js";
import { SignalingError } from "./signaling.js";
import { NO_CONNECT, NO_RECONNECT, endMessage, formatDuration, requestMessage } from "./call-text.js";

const STATS_EVERY_MS = 1000;
// How long a call may wait for its media to connect, and to come back once it was lost, before
// it is given up (never "Connecting…" for ever). Tests shorten them (window.facecall.callLimits).
export const CALL_LIMITS = { connectMs: 30000, reconnectMs: 30000 };
// The call this tab was in when it unloaded (sessionStorage survives a reload, not a close):
// the reloaded page goes on in it (docs/protocol.md, "Rejoining the media").
const KEPT_CALL = "facecall.call";

/** The call kept over a reload by this tab for user ``userId``, once (it is forgotten here). */
function takeKeptCall(userId) {
  let kept = null;
  try {
    kept = JSON.parse(sessionStorage.getItem(KEPT_CALL) || "null");
  } catch {
    /* not ours: ignored */
  }
  sessionStorage.removeItem(KEPT_CALL);
  return kept && kept.userId === userId && typeof kept.id === "string" ? kept : null;
}
export class Calls extends EventTarget {
  /**
   * @param {object} o
   * @param {import('./signaling.js').Signaling} o.signaling
   * @param {import('./api.js').Api} o.api
   * @param {() => {account: string, device: string, userId: string}} o.tokens
   * @param {() => boolean} o.relayOnly
   * @param {object} o.view  the UI (see ui.js CallView)
   */
  constructor({ signaling, api, tokens, relayOnly, view }) {
    super();
    this.signaling = signaling;
    this.api = api;
    this.tokens = tokens;
    this.relayOnly = relayOnly;
    this.view = view;
    this.names = new Map(); // user id -> name
    this.active = null; // the call this device is in (or placing)
    this.rings = new Map(); // call id -> ring (incoming, not answered yet)
    this.early = []; // events for a call whose call.start reply has not come yet
    this.starting = false;
    this.ringtone = new Tone("ring");
    this.ringback = new Tone("ringback");
    this.media = new LocalMedia();
    this.statsTimer = null;
    this.relayAvailable = null;
    this.kept = takeKeptCall(tokens().userId); // the call this tab was in before it reloaded
    signaling.heldCalls = () => [
      ...(this.active && this.active.id && !this.active.ended ? [this.active.id] : []),
      ...(this.kept ? [this.kept.id] : []),
      ...this.rings.keys(),
    ];
    signaling.addEventListener("event", (e) => this.onEvent(e.detail));
    signaling.addEventListener("state", (e) => this.onSignalingState(e.detail));
  }

  // -- names -----------------------------------------------------------------------------
  remember(userId, name) {
    if (userId && name) this.names.set(userId, name);
  }

  /** The caller's name for a ring: the call is already in the history (written before ringing). */
  async nameFor(userId, callId) {
    if (this.names.has(userId)) return this.names.get(userId);
    try {
      const history = await this.api.history(this.tokens().account, 10);
      for (const item of history.items) {
        for (const p of item.participants) if (p.username) this.remember(p.user_id, p.username);
      }
    } catch {
      /* fall through */
    }
    return this.names.get(userId) || "Unknown caller";
  }

  // -- placing a call --------------------------------------------------------------------
  /** Call ``username``; from recents, ``expectedId`` is the account called before: a name
   *  whose account was deleted may belong to someone else now. */
  async start(username, mediaKind, expectedId = null) {
    unlockAudio();
    username = username.trim().toLowerCase();
    if (this.active) return this.view.error("End the current call first.");
    if (!username) return this.view.error("Enter the username of the person to call.");
    let user;
    try {
      user = await this.api.user(this.tokens().account, username);
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) return undefined; // signed out: app.js says so
      if (error instanceof ApiError && error.status === 404) return this.view.error(`No user named ${username}`);
      if (error instanceof ApiError && error.status === 422) return this.view.error(`“${username}” is not a valid username`);
      return this.view.error(error.message);
    }
    if (expectedId && user.id !== expectedId) {
      return this.view.error(`The account “${username}” in your recents was deleted; that name is someone else's now.`);
    }
    if (user.id === this.tokens().userId) return this.view.error("You cannot call yourself");
    const name = user.display_name || user.username;
    this.remember(user.id, name);
    const call = this.newCall({ id: null, role: "caller", peerId: user.id, name, media: mediaKind });
    this.active = call;
    this.view.clearError(); // an earlier error (say, a mistyped name) is not about this call
    this.view.showCall(call, this.media);
    this.view.callState(call, "Starting camera…");
    if (!(await this.openMedia(call))) return;
    if (this.active !== call) return; // ended meanwhile
    this.view.showCall(call, this.media);
    this.view.callState(call, "Calling…");
    this.starting = true;
    let reply;
    try {
      call.iceServers = await this.iceServers();
      if (call.ended) { // ended while the ICE servers were fetched: place nothing
        this.starting = false;
        return;
      }
      reply = await this.signaling.request("call.start", { to: [user.id], media: mediaKind });
    } catch (error) {
      this.starting = false;
      this.finish(call, null, requestMessage(error, username));
      return;
    }
    this.starting = false;
    call.id = reply.call_id;
    if (call.ended) { // hung up while the call was being placed
      this.early = [];
      this.signaling.request("call.hangup", { call_id: call.id }).catch(() => {});
      return;
    }
    if (this.rings.has(call.id)) { // we rang each other: the server merged the two calls into this one
      this.rings.delete(call.id);
      this.view.hideIncoming(call.id);
      this.refreshIncoming();
    }
    this.ringback.start();
    const early = this.early;
    this.early = [];
    for (const event of early) this.onEvent(event);
  }

  newCall(fields) {
    return {
      remoteDevice: null, peer: null, phase: "calling", connectedAt: null, iceServers: null, connectTimer: null,
      clockTimer: null, awaitingOffer: null, renewed: false, preparing: false, renewAsked: false, ended: false,
      remoteMedia: { audio: true, video: true }, ...fields,
    };
  }

  async openMedia(call) {
    try {
      await this.media.open(call.media === "video");
    } catch (error) {
      if (call.ended) return false; // ended while the camera was starting: nothing to say
      const message = error instanceof MediaError ? error.message : String(error);
      this.finish(call, null, message, { error: true });
      return false;
    }
    if (this.media.notice) this.view.notice(this.media.notice);
    return true;
  }

  async iceServers() {
    try {
      const credentials = await this.api.turnCredentials(this.tokens().device);
      const servers = credentials.ice_servers || [];
      this.setRelayAvailable(servers.some((server) => [].concat(server.urls || [])
        .some((url) => /^turns?:/.test(url))));
      return servers;
    } catch (error) {
      // 503: the server has no TURN relay at all; relay-only calls could never connect
      if (error instanceof ApiError && error.status === 503) this.setRelayAvailable(false);
      return []; // host candidates still work on a local network
    }
  }

  /** Whether the server offers a TURN relay (null: not known yet); the home screen shows it. */
  setRelayAvailable(available) {
    if (this.relayAvailable === available) return;
    this.relayAvailable = available;
    this.dispatchEvent(new CustomEvent("relay-available", { detail: available }));
  }

  /** Relay-only media, when it is chosen and the server has a relay to use. */
  useRelayOnly() {
    return this.relayOnly() && this.relayAvailable !== false;
  }

  // -- a reload --------------------------------------------------------------------------------
  /** The page is unloading, maybe reloading: keep the call this device is in for the page that
   *  may follow (the server keeps the device in it for a short while: `bye`). False when there
   *  is nothing to keep (no call, or one still being placed: that one is hung up). */
  keepForReload() {
    if (this.kept) { // reloaded again before the server answered: still that call
      sessionStorage.setItem(KEPT_CALL, JSON.stringify(this.kept));
      return true;
    }
    const call = this.active;
    if (!call || !call.id || call.ended) return false;
    sessionStorage.setItem(KEPT_CALL, JSON.stringify({
      userId: this.tokens().userId, id: call.id, role: call.role, peerId: call.peerId, name: call.name,
      media: call.media, connectedAt: call.connectedAt, muted: this.media.muted,
      cameraOff: call.media === "video" && this.media.cameraOff,
    }));
    return true;
  }

  /** The first welcome after a reload: go on in the kept call if the server still has this
   *  device in it (its view, from `welcome.calls`): the camera again, and `call.rejoin` to the
   *  other device, which offers anew; or, still ringing them, wait for the answer as before. */
  async rejoin(kept, view) {
    const other = view && view.state === "joined"
      ? (view.participants || []).find((p) => p.user_id === kept.peerId) : undefined;
    if (!view || view.state !== "joined") {
      this.view.notice(`The call with ${kept.name} ended while the page was reloading.`);
      this.dispatchEvent(new CustomEvent("history-changed"));
      return;
    }
    this.remember(kept.peerId, kept.name);
    const call = this.newCall({
      id: kept.id, role: kept.role, peerId: kept.peerId, name: kept.name, media: kept.media,
      connectedAt: other ? kept.connectedAt : null, phase: other ? "connecting" : "ringing",
      remoteDevice: other ? other.device_id : null,
      // until its new offer, what that device sends belongs to the connection that was lost
      awaitingOffer: other ? other.device_id : null, renewed: !!other,
      // until the camera and the ICE servers are ready, a call.rejoin from that device (its
      // page reloaded too) waits: an offer made now would carry neither
      preparing: !!other,
    });
    this.active = call;
    this.view.showCall(call, this.media);
    this.view.callState(call, other ? "Reconnecting…" : "Ringing…");
    if (!(await this.openMedia(call))) {
      this.signaling.request("call.hangup", { call_id: call.id }).catch(() => {});
      return;
    }
    if (this.active !== call) return;
    if (kept.muted) this.media.setMuted(true);
    if (kept.cameraOff) this.media.stopCamera();
    this.view.showCall(call, this.media);
    call.iceServers = await this.iceServers();
    if (call.ended || this.active !== call) return;
    if (!other) {
      this.ringback.start(); // call.answered comes as it would have
      return;
    }
    call.preparing = false;
    this.watchConnection(call, CALL_LIMITS.reconnectMs, NO_RECONNECT);
    if (call.renewAsked) { // that device reloaded too and asked us first: we offer, it answers
      this.renewPeer(call);
      return;
    }
    try {
      await this.signaling.request("call.rejoin", { call_id: call.id, to_device: other.device_id });
    } catch (error) {
      if (error.code === "call_ended" || error.code === "not_in_call") {
        this.finish(call, "hung_up", endMessage("hung_up", call.name, call.role));
      } else {
        this.finish(call, "error", `The call could not reconnect: ${error.message}`, { error: true, notify: true });
      }
    }
  }

  /** The other device asked for the media anew (`call.rejoin`: its page reloaded): a new
   *  peer connection, offered as to a device that has just joined. */
  renewPeer(call) {
    if (call.peer) call.peer.close();
    call.peer = null;
    clearInterval(this.statsTimer);
    call.renewed = true;
    this.view.callState(call, "Reconnecting…");
    if (!call.connectTimer) {
      this.watchConnection(call, call.connectedAt ? CALL_LIMITS.reconnectMs : CALL_LIMITS.connectMs,
        call.connectedAt ? NO_RECONNECT : NO_CONNECT);
    }
    const peer = this.ensurePeer(call, call.remoteDevice);
    peer.offer().catch((error) => {
      if (peer.closed || call.peer !== peer) return; // replaced meanwhile (glare, another rejoin)
      if (error instanceof SignalingError && error.code === "connection_lost") return;
      this.finish(call, "error", `The call could not reconnect: ${error.message}`, { error: true, notify: true });
    });
  }

  // -- answering ---------------------------------------------------------------------------
  async accept(callId) {
    unlockAudio();
    const ring = this.rings.get(callId);
    if (!ring) return;
    this.rings.delete(callId);
    this.ringtone.stop();
    this.view.hideIncoming(callId);
    if (this.active) await this.hangup();
    const call = this.newCall({
      id: callId, role: "callee", peerId: ring.from_user, name: ring.name, media: ring.media,
      phase: "connecting", remoteDevice: ring.from_device,
    });
    this.active = call;
    this.view.showCall(call, this.media);
    this.view.callState(call, "Connecting…");
    if (!(await this.openMedia(call))) {
      this.signaling.request("call.decline", { call_id: callId }).catch(() => {});
      return;
    }
    if (this.active !== call) return;
    this.view.showCall(call, this.media);
    call.iceServers = await this.iceServers();
    if (call.ended || this.active !== call) return; // ended meanwhile: answer nothing
    try {
      const reply = await this.signaling.request("call.answer", { call_id: callId });
      const other = (reply.participants || []).find((p) => p.user_id === call.peerId);
      if (other) call.remoteDevice = other.device_id;
    } catch (error) {
      const message = error.code === "call_ended" || error.code === "invalid_state" || error.code === "not_in_call"
        ? "The call ended before it could be answered" : requestMessage(error, call.name);
      this.finish(call, null, message);
      return;
    }
    this.watchConnection(call, CALL_LIMITS.connectMs, NO_CONNECT);
    this.ensurePeer(call, call.remoteDevice);
    this.flushEarlyMedia(call);
    this.refreshIncoming();
  }

  async decline(callId, { busy = false } = {}) {
    const ring = this.rings.get(callId);
    if (!ring) return;
    this.rings.delete(callId);
    this.view.hideIncoming(callId);
    this.refreshIncoming();
    try {
      await this.signaling.request("call.decline", { call_id: callId, busy });
    } catch {
      /* it stopped ringing anyway */
    }
    this.view.status(`Declined the call from ${ring.name}`);
    this.dispatchEvent(new CustomEvent("history-changed"));
  }

  async hangup() {
    const call = this.active;
    if (!call) return;
    const id = call.id;
    this.finish(call, "hung_up", call.phase === "active" || call.phase === "connecting" || call.role === "callee"
      ? "Call ended" : "Call cancelled");
    if (id) {
      try {
        await this.signaling.request("call.hangup", { call_id: id });
      } catch {
        /* ended already */
      }
    }
  }

  // -- in-call controls ------------------------------------------------------------------
  setMuted(muted) {
    this.media.setMuted(muted);
    this.view.controls(this.active, this.media);
    this.view.status(muted ? "Microphone muted" : "Microphone on");
    this.sendMediaState(this.active);
  }

  async setCameraOff(off) {
    const call = this.active;
    if (!call) return;
    try {
      if (off) {
        this.media.stopCamera();
        if (call.peer) await call.peer.replaceVideo(null);
      } else {
        await this.media.startCamera(false, (track) => call.peer && call.peer.replaceVideo(track));
      }
    } catch (error) {
      this.view.error(error.message);
    }
    this.view.showLocal(this.media);
    this.view.controls(call, this.media);
    this.view.status(this.media.cameraOff ? "Camera off" : "Camera on");
    this.sendMediaState(call);
  }

  async switchCamera() {
    const call = this.active;
    if (!call || !this.media.canSwitchCamera) return;
    try {
      await this.media.startCamera(true, (track) => call.peer && call.peer.replaceVideo(track));
      this.view.showLocal(this.media);
      this.view.status("Switched camera");
    } catch (error) {
      this.view.error(error.message);
    }
  }

  // -- events ------------------------------------------------------------------------------
  onEvent(event) {
    const call = this.active;
    const mine = call && call.id === event.call_id;
    if (!mine && this.starting && event.type !== "call.ring" && event.type !== "call.stop_ringing") {
      this.early.push(event);
      return;
    }
    switch (event.type) {
      case "call.ring": this.onRing(event); break;
      case "call.stop_ringing": this.onStopRinging(event); break;
      case "call.ringing":
        if (mine && call.phase === "calling") {
          call.phase = "ringing";
          this.view.callState(call, event.online === 0
            ? `${call.name || "They"} ${call.name ? "is" : "are"} offline — ringing their devices anyway…`
            : "Ringing…");
        }
        break;
      case "call.answered":
        // once: after a reconnect it may come from the welcome and again from the mailbox
        if (mine && call.role === "caller" && event.user_id === call.peerId
            && (call.phase === "calling" || call.phase === "ringing")) {
          this.ringback.stop();
          call.phase = "connecting";
          call.remoteDevice = event.device_id;
          this.view.callState(call, "Connecting…");
          this.watchConnection(call, CALL_LIMITS.connectMs, NO_CONNECT);
          const peer = this.ensurePeer(call, event.device_id);
          peer.offer().catch((error) => {
            // lost with a connection the server could not resume: the welcome says whether the
            // call goes on, and then resync() offers again (an ICE restart)
            if (error instanceof SignalingError && error.code === "connection_lost") return;
            this.finish(call, "error", `The call could not connect: ${error.message}`, { error: true, notify: true });
          });
        }
        break;
      case "call.declined":
        if (mine) this.view.status(endMessage(event.reason, this.names.get(event.user_id) || "They", "caller"));
        break;
      case "call.participant_left":
        break; // 1:1: the call.ended that follows says it all
      case "call.ended":
        if (mine) {
          this.finish(call, event.reason, endMessage(event.reason, call.name, call.role),
            { error: event.reason === "no_media" }); // what this side would have said itself
        }
        break;
      case "call.sdp":
        if (mine && call.awaitingOffer === event.from_device) {
          // after a reload: only the new connection's offer counts (docs/protocol.md)
          if (event.description.type !== "offer" || event.ice_restart) break;
          call.awaitingOffer = null;
        }
        if (mine && event.description.type === "offer" && !event.ice_restart && call.peer
            && !call.peer.closed && (call.peer.makingOffer || call.peer.pc.signalingState === "have-local-offer")) {
          // glare: both pages reloaded and each offers to the other. The device with the
          // smaller id wins (the SDK's rule): it ignores this offer; the other side gives its
          // own up and answers
          const own = (this.signaling.welcome && this.signaling.welcome.device_id) || "";
          if (own < event.from_device) break;
          call.peer.close();
          call.peer = null;
          clearInterval(this.statsTimer);
        }
        if (mine) {
          const peer = this.ensurePeer(call, event.from_device);
          peer.onDescription(event.description).catch((error) => console.warn("facecall: sdp", error));
        } else if (call && call.id === null) {
          this.early.push(event);
        }
        break;
      case "call.candidate":
        if (mine && call.awaitingOffer !== event.from_device) {
          this.ensurePeer(call, event.from_device).onCandidate(event.candidate);
        }
        break;
      case "call.rejoin":
        if (mine && event.from_device === call.remoteDevice && call.phase !== "calling"
            && call.phase !== "ringing") {
          call.awaitingOffer = null; // what that device sends from now on is its new page's
          if (call.preparing) call.renewAsked = true;
          else this.renewPeer(call);
        }
        break;
      case "call.media":
        if (mine && event.from_device === call.remoteDevice) {
          call.remoteMedia = { audio: event.audio, video: event.video };
          this.view.remoteMedia(call);
        }
        break;
      default:
        break;
    }
  }

  flushEarlyMedia(call) {
    const early = this.early.filter((e) => e.call_id === call.id);
    this.early = this.early.filter((e) => e.call_id !== call.id);
    for (const event of early) this.onEvent(event);
  }

  async onRing(event) {
    if (this.rings.has(event.call_id) || (this.active && this.active.id === event.call_id)) return;
    const ring = { ...event, name: "…" };
    this.rings.set(event.call_id, ring);
    ring.name = event.from_name || await this.nameFor(event.from_user, event.call_id);
    if (!this.rings.has(event.call_id)) return; // stopped while we looked the name up
    this.refreshIncoming();
  }

  onStopRinging(event) {
    const ring = this.rings.get(event.call_id);
    if (!ring) return;
    this.rings.delete(event.call_id);
    const message = endMessage(event.reason, ring.name, "callee");
    const missed = event.reason === "ring_timeout" || event.reason === "cancelled";
    this.view.hideIncoming(event.call_id, { missed: missed ? message : null });
    this.refreshIncoming();
    if (event.reason !== "glare") this.view.notice(message, { kind: event.reason });
    this.dispatchEvent(new CustomEvent("history-changed"));
  }

  /** Show the newest ring: full screen when idle, a call-waiting banner when in a call. */
  refreshIncoming() {
    const rings = [...this.rings.values()].filter((r) => r.name !== "…");
    const ring = rings[rings.length - 1];
    if (!ring) {
      this.ringtone.stop();
      this.view.noRings();
      return;
    }
    if (this.active) {
      this.ringtone.stop();
      this.view.showWaiting(ring);
    } else {
      this.view.showIncoming(ring);
      this.ringtone.start();
    }
  }

  onSignalingState({ state, resumed, reconnected, reason, message, calls }) {
    if (state === "reconnecting") {
      this.view.connection("Connection lost. Reconnecting…");
    } else if (state === "open") {
      this.view.connection(null);
      if (this.kept) {
        const kept = this.kept;
        this.kept = null;
        this.rejoin(kept, (calls || []).find((view) => view.call_id === kept.id));
      }
      if (reconnected) this.view.status("Reconnected");
      if (reconnected && !resumed) {
        // The server could not replay what we missed (it restarted, or we were away too long):
        // we are still in the calls its welcome lists, as they stand now; the others are over.
        const kept = new Map((calls || []).map((view) => [view.call_id, view]));
        const call = this.active;
        if (call && call.id) {
          if (kept.has(call.id)) this.resync(call, kept.get(call.id));
          else this.finish(call, "connection_lost", endMessage("connection_lost"), { notify: true });
        }
        for (const id of [...this.rings.keys()]) {
          if (kept.has(id)) continue;
          this.rings.delete(id);
          this.view.hideIncoming(id);
        }
        this.refreshIncoming();
      }
      if (this.active && this.active.peer && this.active.role === "caller"
          && this.active.peer.pc.connectionState === "failed") {
        this.active.peer.restartIce().catch(() => {});
      }
    } else if (state === "closed" && reason === "unauthorized") {
      this.dispatchEvent(new CustomEvent("unauthorized", { detail: { message } }));
    }
  }

  /** Catch up with a call the server still has us in after a reconnect it could not resume:
   * an answer we missed is taken as one; a negotiation cut short restarts ICE (the caller
   * offers). */
  resync(call, view) {
    const other = (view.participants || []).find((p) => p.user_id === call.peerId);
    if (call.role !== "caller" || view.state !== "joined" || !other) return;
    if (call.phase === "calling" || call.phase === "ringing") {
      this.onEvent({ type: "call.answered", call_id: call.id, user_id: other.user_id,
        device_id: other.device_id });
    } else if (call.peer && call.phase === "connecting") {
      call.peer.restartIce().catch(() => {});
    }
  }

  // -- media path ----------------------------------------------------------------------------
  ensurePeer(call, remoteDevice) {
    if (call.peer) return call.peer;
    call.remoteDevice = call.remoteDevice || remoteDevice;
    const peer = new Peer({
      iceServers: call.iceServers || [], relayOnly: this.useRelayOnly(), media: this.media,
      video: call.media === "video", callId: call.id, remoteDevice: call.remoteDevice,
      send: (type, fields) => this.signaling.request(type, fields),
    });
    call.peer = peer;
    peer.addEventListener("track", () => this.view.showRemote(call, peer.remoteStream));
    peer.addEventListener("state", (e) => this.onPeerState(call, e.detail));
    this.statsTimer = setInterval(() => this.sample(call), STATS_EVERY_MS);
    return peer;
  }

  /** Tell the other device what we send now (docs/protocol.md, `call.media`): without it, a
   *  muted microphone is silence and a camera turned off is a frozen last picture there. */
  sendMediaState(call) {
    if (!call || !call.id || !call.remoteDevice || !call.peer) return;
    const video = call.media === "video" && !this.media.cameraOff && !!this.media.videoTrack;
    this.signaling.request("call.media", {
      call_id: call.id, to_device: call.remoteDevice, audio: !this.media.muted, video,
    }).catch(() => {}); // the call may have ended meanwhile
  }

  /** Give the call up after ``ms`` unless its media connects meanwhile (``what``: the sentence). */
  watchConnection(call, ms, what) {
    clearTimeout(call.connectTimer);
    call.connectTimer = setTimeout(() => {
      call.connectTimer = null;
      if (call.ended || this.active !== call) return;
      if (call.peer && call.peer.pc.connectionState === "connected") return;
      // the other side and the history hear why: it never connected, or it did not come back
      const why = call.connectedAt ? "connection_lost" : "no_media";
      this.finish(call, why, what, { error: true, notify: true, why });
    }, ms);
  }

  onPeerState(call, state) {
    if (call !== this.active) return;
    if (state === "connected") {
      clearTimeout(call.connectTimer);
      call.connectTimer = null;
      if (!call.connectedAt) {
        // muted or camera off before the media connected: say so now
        if (this.media.muted || (call.media === "video" && this.media.cameraOff)) this.sendMediaState(call);
        this.ringback.stop();
        call.connectedAt = Date.now();
        this.view.status(`Connected with ${call.name}`);
      } else if (call.renewed) {
        this.view.status(`Reconnected with ${call.name}`);
      }
      if (call.renewed) {
        call.renewed = false;
        this.sendMediaState(call); // the page that reloaded has forgotten it
      }
      call.phase = "active";
      if (!call.clockTimer) call.clockTimer = setInterval(() => this.tick(call), 1000);
      this.tick(call);
    } else if (state === "disconnected" || state === "failed") {
      this.view.callState(call, "Reconnecting…");
      // a call that never connected keeps its first deadline; one that did gets a new one
      if (call.connectedAt && !call.connectTimer) this.watchConnection(call, CALL_LIMITS.reconnectMs, NO_RECONNECT);
    }
    if (state === "failed") {
      if (call.role === "caller" && this.signaling.state === "open") call.peer.restartIce().catch(() => {});
    }
  }

  tick(call) {
    if (call !== this.active || !call.connectedAt || call.peer.pc.connectionState !== "connected") return;
    this.view.callState(call, formatDuration((Date.now() - call.connectedAt) / 1000), { quiet: true });
  }

  async sample(call) {
    if (call !== this.active || !call.peer) return;
    try {
      const stats = await call.peer.measure();
      call.lastStats = stats;
      this.view.quality(stats);
    } catch {
      /* closed meanwhile */
    }
  }

  /** What tests and the curious read: the call's phase and the connection's statistics. */
  async diagnostics() {
    const call = this.active;
    const ringtone = this.ringtone.playing;
    if (!call) return { phase: "idle", rings: [...this.rings.keys()], ringtone };
    const stats = call.peer ? await call.peer.stats() : null;
    const audio = this.media.audioTrack;
    return { phase: call.phase, callId: call.id, media: call.media, role: call.role,
      quality: call.peer ? call.peer.quality : "unknown", stats, rings: [...this.rings.keys()], ringtone,
      remote: call.remoteMedia,
      local: { muted: !audio || !audio.enabled, camera: !!this.media.videoTrack && !this.media.cameraOff,
        cameras: this.media.videoDevices.length,
        cameraLabel: this.media.videoTrack ? this.media.videoTrack.label : null } };
  }

  // -- the end ---------------------------------------------------------------------------------
  /** End ``call`` here; with ``notify``, tell the server too (this page ends it: the other
   *  side must not wait on a call nobody is in any more), hanging up with reason ``why``. */
  finish(call, reason, message, { error = false, notify = false, why = "hung_up" } = {}) {
    if (call.ended) return;
    call.ended = true;
    if (notify && call.id) {
      this.signaling.request("call.hangup", { call_id: call.id, reason: why }).catch(() => {});
    }
    this.ringback.stop();
    clearInterval(this.statsTimer);
    clearInterval(call.clockTimer);
    clearTimeout(call.connectTimer);
    if (call.peer) call.peer.close();
    this.media.close();
    if (this.active === call) this.active = null;
    this.view.endCall(call, message, { error, reason });
    this.refreshIncoming();
    this.dispatchEvent(new CustomEvent("history-changed"));
  }

  /** Sign out: end everything quietly. */
  reset() {
    if (this.active) this.finish(this.active, "hung_up", null);
    this.rings.clear();
    this.ringtone.stop();
    this.view.noRings();
  }
}
