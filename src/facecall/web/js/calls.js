// The call controller: outgoing and incoming calls, answering and declining, adding a person
// to a call, the signaling events of calls, and the 1:1 media convention (the caller offers to
// the device that answered). Each call — its peer connection or group media, timers and reload
// logic — is a Call (call.js); the calls ringing this device, and call waiting, are Rings
// (rings.js).

import { LocalMedia, MediaError } from "./media.js";
import { Tone, unlockAudio } from "./ringtone.js";
import { ApiError } from "./api.js";
import { Call, CALL_LIMITS } from "./call.js";
import { keepCall, takeKeptCall } from "./kept-call.js";
import { NO_CONNECT, endMessage, requestMessage } from "./call-text.js";
import { groupMessage } from "./group-call.js";
import { Rings } from "./rings.js";
import { ScreenShare } from "./screen-share.js";
import { WatchTogether } from "./watch-together.js";

export { CALL_LIMITS };

/**
 * The calls of this device: the one it is in (`active`, a Call), the ones ringing it (`rings`),
 * what the signaling says of them, and the view. One per signed-in session (app.js).
 */
export class Calls extends EventTarget {
  /**
   * @param {object} o
   * @param {import('./signaling.js').Signaling} o.signaling
   * @param {import('./api.js').Api} o.api
   * @param {() => {account: string, device: string, userId: string}} o.tokens
   * @param {() => boolean} o.relayOnly
   * @param {object} o.view  the UI (see ui.js CallView)
   * @param {import('./identity.js').Identity} o.identity  this device's identity key
   */
  constructor({ signaling, api, tokens, relayOnly, view, identity }) {
    super();
    this.signaling = signaling;
    this.api = api;
    this.identity = identity;
    this.tokens = tokens;
    this.relayOnly = relayOnly;
    this.view = view;
    this.names = new Map(); // user id -> name
    this.askedNames = new Set(); // user ids looked up in the history once (nameOf)
    this.active = null; // the call this device is in (or placing)
    this.rings = new Rings({ // the calls ringing here (incoming, not answered yet)
      signaling, view, nameFor: (userId, callId) => this.nameFor(userId, callId), active: () => this.active,
      historyChanged: () => this.dispatchEvent(new CustomEvent("history-changed")),
    });
    // the call whose call.start has not been answered: events for calls not known here wait
    // in it (Call.early), since they may be its own
    this.placing = null;
    this.ringback = new Tone("ringback");
    this.media = new LocalMedia();
    this.screenShare = new ScreenShare(this); // "Share screen" in a video call
    this.watch = new WatchTogether(this); // "Watch together": shared playback over the call's data channel
    this.relayAvailable = null;
    this.kept = takeKeptCall(tokens().userId); // the call this tab was in before it reloaded
    signaling.heldCalls = () => [
      ...(this.active && this.active.id && !this.active.ended ? [this.active.id] : []),
      ...(this.kept ? [this.kept.id] : []),
      ...this.rings.ids(),
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
    const call = new Call(this, { id: null, role: "caller", peerId: user.id, name, media: mediaKind });
    this.active = call;
    this.view.clearError(); // an earlier error (say, a mistyped name) is not about this call
    this.view.showCall(call, this.media);
    this.view.callState(call, "Starting camera…");
    if (!(await this.openMedia(call))) return;
    if (this.active !== call) return; // ended meanwhile
    this.view.showCall(call, this.media);
    this.view.callState(call, "Calling…");
    this.placing = call;
    let reply;
    try {
      call.iceServers = await this.iceServers();
      if (call.ended) { // ended while the ICE servers were fetched: place nothing
        this.placing = null;
        return;
      }
      reply = await this.signaling.request("call.start", { to: [user.id], media: mediaKind });
    } catch (error) {
      this.placing = null;
      this.finish(call, null, requestMessage(error, username));
      return;
    }
    this.placing = null;
    call.id = reply.call_id;
    call.protection.keys(); // ready before the first peer connection (call.js)
    if (call.ended) { // hung up while the call was being placed
      call.takeEarly();
      this.signaling.request("call.hangup", { call_id: call.id }).catch(() => {});
      return;
    }
    this.rings.merged(call.id); // we rang each other: the server merged the two calls into this one
    this.ringback.start();
    for (const event of call.takeEarly()) this.onEvent(event);
  }

  /** Start the camera and microphone for ``call``; false (the call ended here, with the
   *  error) when they cannot be. With ``ring`` (Accept was pressed) the call is only given
   *  back: nothing was answered, so it rings here again (and on the other devices, which
   *  never stopped) for the person to fix the permission and press Accept again, or Decline. */
  async openMedia(call, { ring = null } = {}) {
    try {
      await this.media.open(call.media === "video");
    } catch (error) {
      if (call.ended) return false; // ended while the camera was starting: nothing to say
      const message = error instanceof MediaError ? error.message : String(error);
      const stopped = call.ringStopped; // it stopped ringing meanwhile: nothing to give back
      if (ring && !stopped) this.rings.giveBack(call.id, ring);
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
      keepCall(this.kept);
      return true;
    }
    const call = this.active;
    if (!call || !call.id || call.ended) return false;
    keepCall(call.toKept(this.tokens().userId));
    return true;
  }

  /** The first welcome after a reload: go on in the kept call if the server still has this
   *  device in it (its view, from `welcome.calls`): the camera again, and `call.rejoin` to the
   *  other device, which offers anew; or, still ringing them, wait for the answer as before. */
  async rejoin(kept, view) {
    if (!view || view.state !== "joined") {
      this.view.notice(`The call with ${kept.name} ended while the page was reloading.`);
      this.dispatchEvent(new CustomEvent("history-changed"));
      return;
    }
    const other = (view.participants || []).find((p) => p.user_id === kept.peerId);
    this.remember(kept.peerId, kept.name);
    const call = Call.fromKept(this, kept, other, view.participants || []);
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
    const group = call.groupJoin.was || call.groupJoin.people >= 3;
    if (!other && !group) {
      this.ringback.start(); // call.answered comes as it would have
      return;
    }
    if (group) { // the SFU again (a new join replaces the old one)
      call.preparing = false;
      call.phase = "connecting";
      await call.groupJoin.start();
      return;
    }
    await call.rejoin(other.device_id);
  }

  // -- answering ---------------------------------------------------------------------------
  /** Answer ``callId`` here (ending the call this device is in first, for call waiting). If the
   *  camera or microphone cannot be started, nothing is answered nor declined: it rings on. */
  async accept(callId) {
    unlockAudio();
    const ring = this.rings.answering(callId);
    if (!ring) return;
    if (this.active) await this.hangup();
    const call = new Call(this, {
      id: callId, role: "callee", peerId: ring.from_user, name: ring.name, media: ring.media,
      phase: "connecting", remoteDevice: ring.from_device,
    });
    call.ring = ring; // until call.answer is sent, the ring is still live on the server
    this.active = call;
    this.view.showCall(call, this.media);
    this.view.callState(call, "Connecting…");
    if (!(await this.openMedia(call, { ring }))) return;
    if (this.active !== call) return;
    this.view.showCall(call, this.media);
    call.iceServers = await this.iceServers();
    if (call.ended || this.active !== call) return; // ended meanwhile: answer nothing
    call.ring = null;
    try {
      const reply = await this.signaling.request("call.answer", { call_id: callId });
      const participants = reply.participants || [];
      for (const p of participants) call.groupJoin.noteJoined(p.user_id, p.device_id);
      const other = participants.find((p) => p.user_id === call.peerId);
      if (other) call.remoteDevice = other.device_id;
    } catch (error) {
      const message = error.code === "call_ended" || error.code === "invalid_state" || error.code === "not_in_call"
        ? "The call ended before it could be answered" : requestMessage(error, call.name);
      this.finish(call, null, message);
      return;
    }
    call.watchConnection(CALL_LIMITS.connectMs, NO_CONNECT);
    if (call.groupJoin.people >= 3) call.groupJoin.start(); // invited into a group call: its media is the SFU's
    else call.ensurePeer(call.remoteDevice);
    // what came for it while another call was being placed
    if (this.placing) for (const event of this.placing.takeEarly(call.id)) this.onEvent(event);
    this.rings.refresh();
  }

  /**
   * Move here the call ``entry`` that this user is in on another of their devices (a
   * `welcome.elsewhere` entry or a `call.elsewhere` event): the camera and microphone, then
   * `call.handoff`; the other side offers to this device as to one that has just answered
   * (docs/protocol.md, "Moving a call to another device"). Returns whether the call is here.
   */
  async takeOver(entry) {
    unlockAudio();
    if (this.active) return false; // one call per page
    const other = (entry.participants || [])[0] || { user_id: null, name: null };
    const call = new Call(this, {
      id: entry.call_id, role: entry.role || "callee", peerId: other.user_id,
      name: other.name || (other.user_id ? this.names.get(other.user_id) : null) || "Call",
      media: entry.media, phase: "connecting",
    });
    this.active = call;
    this.view.showCall(call, this.media);
    this.view.callState(call, "Moving the call here…");
    if (!(await this.openMedia(call))) return false;
    if (this.active !== call) return false;
    this.view.showCall(call, this.media);
    call.iceServers = await this.iceServers();
    if (call.ended || this.active !== call) return false;
    let groupMedia = false;
    try {
      const reply = await this.signaling.request("call.handoff", { call_id: call.id });
      groupMedia = reply.group_media === true;
      if (typeof reply.in_call_for === "number") call.inCallFor = reply.in_call_for; // the duration goes on
      const participants = reply.participants || [];
      for (const p of participants) call.groupJoin.noteJoined(p.user_id, p.device_id);
      const peer = participants.find((p) => p.user_id === call.peerId) || participants[0];
      if (peer) {
        call.peerId = peer.user_id;
        call.remoteDevice = call.remoteDevice || peer.device_id; // its offer may be here first
      }
    } catch (error) {
      const gone = error.code === "call_ended" || error.code === "invalid_state" || error.code === "unknown_call";
      this.finish(call, null, gone ? "That call is over or can no longer move here" : requestMessage(error, call.name),
        { error: !gone });
      return false;
    }
    if (!call.ended && this.active === call) {
      call.watchConnection(CALL_LIMITS.connectMs, NO_CONNECT);
      // a group call's media (also one down to two people) is on the SFU: join it there
      if (call.groupJoin.people >= 3 || groupMedia) call.groupJoin.start();
      else if (call.remoteDevice) call.ensurePeer(call.remoteDevice);
    }
    return true;
  }

  /** Decline ``callId`` for every device of mine (``busy``: from call waiting, the caller
   *  hears that I am busy). */
  decline(callId, { busy = false } = {}) {
    return this.rings.decline(callId, { busy });
  }

  /** End (or cancel) the call this device is in, for everyone in it. */
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
    if (this.active) this.active.sendMediaState();
  }

  async setCameraOff(off) {
    const call = this.active;
    if (!call) return;
    if (this.media.screen) { // the screen is sent: this sets whether the camera comes back after it
      this.media.setCameraAfterScreen(!off);
      this.view.controls(call, this.media);
      this.view.status(off ? "Camera off" : "Camera on when you stop sharing your screen");
      return;
    }
    try {
      if (off) {
        this.media.stopCamera();
        await call.replaceVideo(null);
      } else {
        await this.media.startCamera(false, (track) => call.replaceVideo(track));
      }
    } catch (error) {
      this.view.error(error.message);
    }
    this.view.showLocal(this.media);
    this.view.controls(call, this.media);
    this.view.status(this.media.cameraOff ? "Camera off" : "Camera on");
    call.sendMediaState();
  }

  async switchCamera() {
    const call = this.active;
    if (!call || !this.media.canSwitchCamera) return;
    try {
      await this.media.startCamera(true, (track) => call.replaceVideo(track));
      this.view.showLocal(this.media);
      this.view.status("Switched camera");
    } catch (error) {
      this.view.error(error.message);
    }
  }

  // -- events ------------------------------------------------------------------------------
  /** A signaling event (in `seq` order, each once): rings here; the rest to the call it is for. */
  onEvent(event) {
    const call = this.active;
    const mine = call && call.id === event.call_id;
    if (!mine && this.placing && event.type !== "call.ring" && event.type !== "call.stop_ringing") {
      this.placing.early.push(event); // maybe for the call being placed: it does not know its id yet
      return;
    }
    switch (event.type) {
      case "call.ring": this.rings.onRing(event); break;
      case "call.stop_ringing": this.rings.onStopRinging(event); break;
      case "call.ringing": if (mine) call.onRinging(event); break;
      case "call.answered": if (mine) call.onAnswered(event); break;
      case "call.declined":
        if (mine) this.onDeclined(call, event);
        break;
      case "call.participant_left": // 1:1: the call.ended that follows says it all
        if (mine) {
          call.groupJoin.onParticipantLeft(event);
          if (call.group) this.view.notice(`${this.names.get(event.user_id) || "Someone"} left the call`);
        }
        break;
      case "call.ended":
        if (mine) {
          this.finish(call, event.reason, endMessage(event.reason, call.name, call.role),
            // what this side would have said itself; a failed identity check is a warning
            { error: event.reason === "no_media" || event.reason === "identity_check_failed" });
        }
        break;
      case "call.sdp":
        if (mine) call.onRelayed(event);
        else if (call && call.id === null) call.early.push(event);
        break;
      // in order with the descriptions, which wait for their identity check (call.js)
      case "call.candidate": case "call.rejoin": case "call.handed_off": case "call.media":
        if (mine) call.onRelayed(event);
        break;
      // group media (group-call.js): who fills the slots, who is in the room, who is speaking
      case "sfu.slots": case "sfu.members": case "sfu.speaker":
        if (mine) call.groupJoin.onEvent(event);
        break;
      case "call.key": // sender keys: the group media's or the P2P media's (call.js)
        if (mine) call.onKey(event);
        break;
      default:
        break;
    }
  }

  /** Someone rung in this call will not join (`call.declined`). Said aloud to screen readers
   *  in a 1:1 call (its end follows); on screen for a person added to the call. */
  onDeclined(call, event) {
    const name = this.names.get(event.user_id) || "They";
    const message = endMessage(event.reason, name, "caller");
    if (event.user_id === call.peerId && call.groupJoin.people < 3 && call.phase !== "active") this.view.status(message);
    else this.view.notice(message);
  }

  // -- adding a person ------------------------------------------------------------------------
  /** Ring ``username`` into the call this device is in (`call.invite`). Returns null once they
   *  ring, else what went wrong, as a sentence for the "Add person" form. */
  async invite(username) {
    const call = this.active;
    username = (username || "").trim().toLowerCase();
    if (!call || !call.id || call.ended) return "You are not in a call";
    if (!username) return "Enter the username of the person to add.";
    let user;
    try {
      user = await this.api.user(this.tokens().account, username);
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) return `No user named ${username}`;
      if (error instanceof ApiError && error.status === 422) return `“${username}” is not a valid username`;
      return error.message;
    }
    if (user.id === this.tokens().userId) return "You are already in this call";
    const name = user.display_name || user.username;
    if (call.groupJoin.others.has(user.id)) return `${name} is already in this call`;
    this.remember(user.id, name);
    try {
      await this.signaling.request("call.invite", { call_id: call.id, to: [user.id] });
    } catch (error) {
      return groupMessage(error, name);
    }
    this.view.notice(`Calling ${name}…`);
    return null;
  }

  /** A person's name for a group call's tile: the one known here, else looked up (the call is
   *  in the history with its people's usernames) and ``then`` called once it is known. */
  nameOf(userId, then) {
    if (this.names.has(userId)) return this.names.get(userId);
    if (this.askedNames.has(userId)) return "Someone"; // not in the history either
    this.askedNames.add(userId);
    this.nameFor(userId).then(() => then());
    return "…";
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
          if (kept.has(call.id)) call.resync(kept.get(call.id));
          else this.finish(call, "connection_lost", endMessage("connection_lost"), { notify: true });
        }
        this.rings.keepOnly(kept);
      }
      if (this.active) this.active.onSignalingOpen();
    } else if (state === "closed" && reason === "unauthorized") {
      this.dispatchEvent(new CustomEvent("unauthorized", { detail: { message } }));
    }
  }

  /** What tests and the curious read: the call's phase, the connection's statistics, its
   *  security code, and what each side sends (`remote`: as the other side's call.media says;
   *  `local`: microphone, camera, shared screen). */
  async diagnostics() {
    const call = this.active;
    const ringtone = this.rings.playing;
    const device = this.signaling.welcome ? this.signaling.welcome.device_id : null;
    if (!call) return { phase: "idle", rings: this.rings.ids(), ringtone, device };
    const group = call.group ? await call.group.diagnostics() : null;
    const source = call.group && call.group.joined ? call.group : call.peer;
    let stats = null;
    try {
      stats = source ? await source.stats() : null;
    } catch {
      /* closed meanwhile */
    }
    const audio = this.media.audioTrack;
    return { phase: call.phase, callId: call.id, media: call.media, role: call.role, device,
      remoteDevice: call.remoteDevice,
      quality: source ? source.quality : "unknown", stats, rings: this.rings.ids(), ringtone,
      group, people: call.groupJoin.people, p2p: call.protection.diagnostics(),
      remote: call.remoteMedia, securityCode: call.securityCode, shareplay: this.watch.diagnostics(),
      local: { muted: !audio || !audio.enabled, camera: !!this.media.videoTrack && !this.media.cameraOff,
        screen: !!this.media.screen,
        cameras: this.media.videoDevices.length,
        cameraLabel: this.media.videoTrack ? this.media.videoTrack.label : null } };
  }

  // -- the end ---------------------------------------------------------------------------------
  /** End ``call`` here; with ``notify``, tell the server too (this page ends it: the other
   *  side must not wait on a call nobody is in any more), hanging up with reason ``why``. */
  finish(call, reason, message, { error = false, notify = false, why = "hung_up" } = {}) {
    if (call.ended) return;
    call.close();
    this.watch.close(call); // what the call shared ends with it
    if (notify && call.id) {
      this.signaling.request("call.hangup", { call_id: call.id, reason: why }).catch(() => {});
    }
    this.ringback.stop();
    this.media.close();
    if (this.active === call) this.active = null;
    this.view.endCall(call, message, { error, reason });
    this.rings.refresh();
    this.dispatchEvent(new CustomEvent("history-changed"));
  }

  /** Sign out: end everything quietly. */
  reset() {
    if (this.active) this.finish(this.active, "hung_up", null);
    this.kept = null; // not rejoined here any more (signed out, or another tab runs the device)
    this.rings.clear();
  }
}
