// One call of this device, under the Calls controller (calls.js): its phase, its peer connection
// to the other person's device and the timers that watch it, the events that came before its
// id was known, and what lets it outlive a reload of the page (docs/protocol.md, "Rejoining
// the media"; what the page keeps meanwhile: kept-call.js). Who is in it, and its group media
// once it has three or more people: group-join.js.

import { Peer } from "./peer.js";
import { SignalingError } from "./signaling.js";
import { NO_CONNECT, NO_RECONNECT, endMessage, formatDuration, identityFailedMessage } from "./call-text.js";
import { certificateLines, peerSecurityCode } from "./security-code.js";
import { GroupJoin } from "./group-join.js";
import { CallProtection } from "./p2p-e2ee.js";

const STATS_EVERY_MS = 1000;
// How long a call may wait for its media to connect, and to come back once it was lost, before
// it is given up (never "Connecting…" for ever). Tests shorten them (window.facecall.callLimits).
export const CALL_LIMITS = { connectMs: 30000, reconnectMs: 30000 };

/**
 * What a Call uses of the controller that owns it (the Calls controller is one).
 * @typedef {object} CallHost
 * @property {import('./signaling.js').Signaling} signaling
 * @property {import('./media.js').LocalMedia} media  this device's camera and microphone
 * @property {import('./identity.js').Identity} identity  signs what this device sends, checks
 *   what it gets
 * @property {object} view  the UI (ui.js CallView)
 * @property {import('./ringtone.js').Tone} ringback
 * @property {import('./api.js').Api} api
 * @property {() => Promise<object[]>} iceServers  the ICE servers (fresh TURN credentials)
 * @property {() => {account: string, device: string, userId: string}} tokens
 * @property {Call|null} active  the call this device is in
 * @property {() => boolean} useRelayOnly
 * @property {import('./watch-together.js').WatchTogether} watch  shared playback: each peer
 *   connection's data channel goes to it
 * @property {(call: Call, reason: string|null, message: string|null, options?: object) => void} finish
 *   end the call here (and, with ``notify``, on the server)
 */

/**
 * One call: who it is with, where it stands (`phase`: calling → ringing → connecting → active),
 * and its media path — the peer connection to ``remoteDevice``, the other person's device in
 * it. That device can change under a call that goes on: a reloaded page on either side gets a
 * new peer connection (`renewPeer`), and so would a call the other person moves to another of
 * their devices (`renewPeer(newDevice)`). A call with three or more people in it is a group
 * call (the SDK's rule, facecall.client.group): its media goes through the SFU (`group`, a
 * GroupCall), its P2P connection closes and P2P negotiation is ignored from then on; who is in
 * the call and when it goes to the SFU is `groupJoin`'s (group-join.js).
 */
export class Call {
  /**
   * @param {CallHost} host
   * @param {object} fields  id (null while it is being placed), role, peerId, name, media, and
   *   whatever else starts otherwise than a new call (phase, remoteDevice…)
   */
  constructor(host, fields) {
    this.host = host;
    this.id = null;
    this.role = "caller";
    this.peerId = null; // the other person's user id
    this.name = "";
    this.media = "video";
    this.phase = "calling";
    this.remoteDevice = null; // the other person's device in the call, once known
    this.peer = null; // the peer connection to remoteDevice
    this.group = null; // the media through the SFU, once the call has three or more people
    this.groupJoin = new GroupJoin(this); // who is in the call; when it goes to the SFU
    this.protection = new CallProtection(this); // SFrame on the P2P media (p2p-e2ee.js)
    this.connectedAt = null; // when the media first connected (the duration counts from it)
    this.inCallFor = 0; // seconds the user was in this call on another device before it moved here
    this.iceServers = null;
    this.connectTimer = null; // gives the call up unless its media connects in time
    this.clockTimer = null; // the duration on screen
    this.statsTimer = null; // the network-quality indicator
    this.lastStats = null;
    // the security code of the connected peer connection (security-code.js): null until it
    // connects, and again while another connection replaces it (a new certificate, a new code)
    this.securityCode = null;
    this.remoteCertificates = null; // the fingerprint lines of the other side's last description
    // after a reload (ours or theirs): until that device's new offer, what it sends belongs to
    // the connection that was lost
    this.awaitingOffer = null;
    this.renewed = false; // a new peer connection replaces one that worked: "Reconnected"
    this.moved = false; // …because the other person moved the call to another device: say nothing
    this.preparing = false; // rejoining: the camera and the ICE servers are not ready yet
    this.renewAsked = false; // …and the other device asked for the media anew meanwhile
    this.ended = false;
    // what the other device says it sends (screen: its video is a shared screen)
    this.remoteMedia = { audio: true, video: true, screen: false };
    this.early = []; // events that came while this call was placed, before its id was known
    // relayed events that came while a description's identity is checked: they wait for it
    this.held = null;
    this.ring = null; // Accept was pressed: the ring, live on the server until call.answer
    this.ringStopped = null; // …and why it stopped ringing meanwhile
    Object.assign(this, fields);
    // the keys (and a worker from sframe-workers.js) are ready before the first peer
    // connection, which may be made as the node goes down (a restart)
    if (this.id) this.protection.keys();
  }

  /** The call a reloaded page goes on in, as the welcome shows it: ``other`` is the other
   *  person's device still in the call (undefined: the call still rings them), ``participants``
   *  every other device joined in it. */
  static fromKept(host, kept, other, participants = []) {
    const present = !!other || participants.length > 0; // someone is there to talk to
    const call = new Call(host, {
      id: kept.id, role: kept.role, peerId: kept.peerId, name: kept.name, media: kept.media,
      connectedAt: present ? kept.connectedAt : null, phase: present ? "connecting" : "ringing",
      remoteDevice: other ? other.device_id : null,
      awaitingOffer: other ? other.device_id : null, renewed: !!other,
      // until the camera and the ICE servers are ready, a call.rejoin from that device (its
      // page reloaded too) waits: an offer made now would carry neither
      preparing: !!other,
    });
    call.groupJoin.was = kept.group === true;
    for (const p of participants) call.groupJoin.noteJoined(p.user_id, p.device_id);
    return call;
  }

  /** What the page that may follow this one needs to go on in this call.
   *  @returns {import('./kept-call.js').KeptCall} */
  toKept(userId) {
    const media = this.host.media;
    return {
      userId, id: this.id, role: this.role, peerId: this.peerId, name: this.name, media: this.media,
      connectedAt: this.connectedAt, muted: media.muted, cameraOff: this.media === "video" && media.cameraOff,
      group: this.groupJoin.was,
    };
  }

  /** Whether this is the call this device is in (not one that ended or was replaced). */
  get current() {
    return this.host.active === this;
  }

  /** The events that came for this call before its id was known, handed back once. */
  takeEarly(callId = undefined) {
    const early = callId === undefined ? this.early : this.early.filter((e) => e.call_id === callId);
    this.early = callId === undefined ? [] : this.early.filter((e) => e.call_id !== callId);
    return early;
  }

  // -- the peer connection ----------------------------------------------------------------------
  /** The peer connection to the other device, made (towards ``remoteDevice`` unless the call
   *  already knows its device) if there is none yet. */
  ensurePeer(remoteDevice) {
    if (this.peer) return this.peer;
    const host = this.host;
    this.remoteDevice = this.remoteDevice || remoteDevice;
    const peer = new Peer({
      iceServers: this.iceServers || [], relayOnly: host.useRelayOnly(), media: host.media,
      video: this.media === "video", callId: this.id, remoteDevice: this.remoteDevice,
      send: (type, fields) => host.signaling.request(type, fields),
      sign: (callId, toDevice, type, sdp) => host.identity.sign(callId, toDevice, type, sdp),
      link: this.protection.link(this.remoteDevice),
    });
    this.peer = peer;
    host.watch.attach(this, peer.channel); // a new connection, a new channel: the state again
    peer.addEventListener("track", () => {
      if (this.peer === peer && !this.group) host.view.showRemote(this, peer.remoteStream);
    });
    peer.addEventListener("state", (e) => {
      if (this.peer === peer && !this.group) this.onMediaState(e.detail);
    });
    peer.addEventListener("sframe", (e) => {
      if (this.peer === peer && !this.group) this.protection.onAgreement(peer, e.detail);
    });
    this.startStats();
    return peer;
  }

  /** Close the peer connection (another takes its place, or none: the call went to the SFU,
   *  and the P2P media's keys go with it). */
  dropPeer() {
    if (this.peer) this.peer.close();
    if (this.group) this.protection.close();
    this.peer = null;
    this.remoteCertificates = null;
    clearInterval(this.statsTimer);
    this.statsTimer = null;
    this.showSecurityCode(null);
  }

  /** The security code of ``peer`` once its media connected (security-code.js); shown unless
   *  the peer connection was replaced or the call ended meanwhile. */
  async updateSecurityCode(peer) {
    let code = null;
    try {
      code = await peerSecurityCode(peer.pc);
    } catch (error) {
      console.warn("facecall: security code", error);
    }
    if (this.peer === peer && !peer.closed && !this.group) this.showSecurityCode(code);
  }

  showSecurityCode(code) {
    if (code === this.securityCode) return;
    this.securityCode = code;
    if (this.current && !this.ended) this.host.view.securityCode(code, this.remoteDevice);
  }

  /** Someone answered (`call.answered`): one more person in the call, which may make it a
   *  group call. The caller's side once the callee answered on ``event.device_id``: offer to
   *  that device. */
  onAnswered(event) {
    this.groupJoin.noteJoined(event.user_id, event.device_id);
    this.offerTo(event);
    this.groupJoin.maybe();
  }

  offerTo(event) {
    // once: after a reconnect it may come from the welcome and again from the mailbox
    if (this.role !== "caller" || event.user_id !== this.peerId || this.group
        || (this.phase !== "calling" && this.phase !== "ringing")) return;
    this.host.ringback.stop();
    this.phase = "connecting";
    this.remoteDevice = event.device_id;
    this.host.view.callState(this, "Connecting…");
    this.watchConnection(CALL_LIMITS.connectMs, NO_CONNECT);
    const peer = this.ensurePeer(event.device_id);
    peer.offer().catch((error) => {
      // lost with a connection the server could not resume: the welcome says whether the
      // call goes on, and then resync() offers again (an ICE restart)
      if (error instanceof SignalingError && error.code === "connection_lost") return;
      this.host.finish(this, "error", `The call could not connect: ${error.message}`, { error: true, notify: true });
    });
  }

  /** The other person's devices ring (the caller's side). */
  onRinging(event) {
    if (this.phase !== "calling") return;
    this.phase = "ringing";
    this.host.view.callState(this, event.online === 0
      ? `${this.name || "They"} ${this.name ? "is" : "are"} offline — ringing their devices anyway…`
      : "Ringing…");
  }

  // -- what the other device sends, in order ------------------------------------------------
  /**
   * A relayed event about the media path (`call.sdp`, `call.candidate`, `call.rejoin`,
   * `call.handed_off`, `call.media`), applied in the order it came. A description is applied
   * only once its signature is checked (identity.js: signed by the identity key of the device
   * it comes from): meanwhile whatever comes after it waits (a candidate must not overtake its
   * description, nor a handoff the description before it).
   */
  onRelayed(event) {
    if (this.group && (event.type === "call.sdp" || event.type === "call.candidate" || event.type === "call.rejoin")) {
      return; // a group call: no P2P here any more
    }
    if (this.held) {
      this.held.push(event);
      return;
    }
    if (event.type === "call.sdp" || event.type === "call.candidate") {
      // only from the call's other device, as the other person: a description signed by some
      // other device (of an account the server owns, say) must not be applied at all
      const known = this.remoteDevice;
      if ((known && event.from_device !== known) || (!known && event.from_user !== this.peerId)) {
        console.warn("facecall: ignored a", event.type, "from", event.from_user, event.from_device);
        return;
      }
      if (event.from_user !== this.peerId) { // the call's device, claimed as another's
        this.refuseIdentity(new Error(`device ${known} is in this call as ${this.name}'s, but its `
          + `description comes as user ${event.from_user}'s`));
        return;
      }
    }
    if (event.type !== "call.sdp") {
      this.apply(event);
      return;
    }
    this.held = [];
    this.checkIdentity(event).then((ok) => {
      const waiting = this.held;
      this.held = null;
      if (!ok || this.ended) return;
      this.onSdp(event);
      while (waiting.length && !this.ended) {
        if (this.held) { // another description is being checked: the rest waits behind it
          this.held.push(...waiting);
          return;
        }
        this.onRelayed(waiting.shift());
      }
    });
  }

  /** Apply a relayed event that is not a description (onRelayed). */
  apply(event) {
    switch (event.type) {
      case "call.candidate": this.onCandidate(event); break;
      case "call.rejoin": this.onRejoin(event); break;
      case "call.handed_off": this.onHandedOff(event); break;
      case "call.media": this.onRemoteMedia(event); break;
      default: break;
    }
  }

  /** Whether a relayed description is signed by its device's identity key. If not, the call
   *  ends here and for the other side (`identity_check_failed`), before anything of it is
   *  applied: someone between the devices (the server, or whoever runs it) may have changed it. */
  async checkIdentity(event) {
    try {
      await this.host.identity.check(this.id, event);
      return true;
    } catch (error) {
      this.refuseIdentity(error);
      return false;
    }
  }

  /** End the call here and for the other side (`identity_check_failed`): what the other
   *  device sent does not hold (``error`` says why). */
  refuseIdentity(error) {
    console.warn("facecall: identity check failed", error);
    if (!this.ended) {
      this.host.finish(this, "identity_check_failed", identityFailedMessage(this.name, error),
        { error: true, notify: true, why: "identity_check_failed" });
    }
  }

  /** A relayed `call.sdp`, its signature checked. */
  onSdp(event) {
    if (this.awaitingOffer === event.from_device) {
      // after a reload: only the new connection's offer counts (docs/protocol.md)
      if (event.description.type !== "offer" || event.ice_restart) return;
      this.awaitingOffer = null;
    }
    const offer = event.description.type === "offer";
    const certificates = certificateLines(event.description.sdp);
    if (offer && this.peer && this.remoteCertificates !== null && certificates !== this.remoteCertificates) {
      // another certificate: the other side made a new peer connection (the SDK restarts ICE
      // so, aiortc having no ICE restart of its own): so does this side, to answer it
      this.dropPeer();
    }
    const peer = this.peer;
    if (offer && !event.ice_restart && peer && !peer.closed
        && (peer.makingOffer || peer.pc.signalingState === "have-local-offer")) {
      // glare: both pages reloaded and each offers to the other. The device with the smaller
      // id wins (the SDK's rule): it ignores this offer; the other side gives its own up and
      // answers
      const signaling = this.host.signaling;
      const own = (signaling.welcome && signaling.welcome.device_id) || "";
      if (own < event.from_device) return;
      this.dropPeer();
    }
    this.remoteCertificates = certificates;
    this.ensurePeer(event.from_device).onDescription(event.description)
      .catch((error) => console.warn("facecall: sdp", error));
  }

  /** A relayed `call.candidate` (none from a connection a reload left behind). */
  onCandidate(event) {
    if (this.awaitingOffer === event.from_device) return;
    this.ensurePeer(event.from_device).onCandidate(event.candidate);
  }

  /** The other device asks for the media anew (`call.rejoin`: its page reloaded). */
  onRejoin(event) {
    if (event.from_device !== this.remoteDevice || this.phase === "calling" || this.phase === "ringing") return;
    this.awaitingOffer = null; // what that device sends from now on is its new page's
    this.protection.rejoined(event.from_device); // it lost its keys: new ones (a new epoch)
    if (this.preparing) this.renewAsked = true;
    else this.renewPeer();
  }

  /** The other person moved the call to another of their devices (`call.handed_off`): offer
   *  to that device as to one that has just answered, and drop the old one. The call goes on
   *  and nothing is said: the old connection's last picture stays until the new one's media
   *  comes (docs/protocol.md, "Moving a call to another device"). */
  onHandedOff(event) {
    this.groupJoin.onHandedOff(event);
    if (this.group) return; // that device joins the group media itself
    if (event.user_id !== this.peerId || event.from_device !== this.remoteDevice
        || this.phase === "calling" || this.phase === "ringing") return;
    this.awaitingOffer = null;
    this.moved = true;
    this.protection.handedOff(this.remoteDevice, event); // the new device gets a new key
    // the new device has a microphone, camera and screen of its own: nothing is known of them
    // until it says (call.media), so not what the old one last said
    this.remoteMedia = { audio: true, video: this.media === "video", screen: false };
    this.host.view.remoteMedia(this);
    if (this.preparing) { // this page is reloading: offer once its camera is ready (rejoin)
      this.remoteDevice = event.to_device;
      this.renewAsked = true;
      return;
    }
    this.renewPeer(event.to_device);
  }

  /** A `call.key`: for the group media's keys once the call has (or had) group media, else
   *  for the P2P media's. */
  onKey(event) {
    if (this.group || this.groupJoin.was || this.groupJoin.people >= 3) this.groupJoin.onEvent(event);
    else this.protection.onKey(event);
  }

  /** What the other device sends now (`call.media`: muted, camera off, a shared screen). */
  onRemoteMedia(event) {
    if (this.group) {
      this.group.onRemoteMedia(event);
      return;
    }
    if (event.from_device !== this.remoteDevice) return;
    this.remoteMedia = { audio: event.audio, video: event.video, screen: event.screen === true };
    this.host.view.remoteMedia(this);
  }

  /**
   * A new peer connection to ``device`` (the same one unless told otherwise), offered as to a
   * device that has just joined: the other device's page reloaded and asked for the media anew
   * (`call.rejoin`), or the call has another device on the other side now.
   */
  renewPeer(device = this.remoteDevice) {
    this.dropPeer();
    this.remoteDevice = device;
    this.renewed = true;
    if (!this.moved) this.host.view.callState(this, "Reconnecting…");
    this.watchUnlessWatched();
    const peer = this.ensurePeer(device);
    peer.offer().catch((error) => {
      if (peer.closed || this.peer !== peer) return; // replaced meanwhile (glare, another rejoin)
      if (error instanceof SignalingError && error.code === "connection_lost") return;
      this.host.finish(this, "error", `The call could not reconnect: ${error.message}`, { error: true, notify: true });
    });
  }

  /**
   * This page reloaded and the welcome still has the device in the call, with the other
   * person's device ``device`` in it; the camera and the ICE servers are ready. Ask that
   * device for the media anew (`call.rejoin`): it offers, we answer. If it reloaded too and
   * asked us first, we offer instead.
   */
  async rejoin(device) {
    this.preparing = false;
    this.watchConnection(CALL_LIMITS.reconnectMs, NO_RECONNECT);
    if (this.renewAsked) {
      this.renewPeer();
      return;
    }
    try {
      await this.host.signaling.request("call.rejoin", { call_id: this.id, to_device: device });
    } catch (error) {
      // that device is no longer in the call: the other person moved it (call.handed_off
      // follows, or came meanwhile) or left it (call.ended follows); else the watchdog ends it
      if (error.code === "not_allowed") return;
      if (error.code === "call_ended" || error.code === "not_in_call") {
        this.host.finish(this, "hung_up", endMessage("hung_up", this.name, this.role));
      } else {
        this.host.finish(this, "error", `The call could not reconnect: ${error.message}`, { error: true, notify: true });
      }
    }
  }

  /** Catch up after a reconnect the server could not resume (``view``: the call in its welcome):
   *  an answer we missed is taken as one; a negotiation cut short restarts ICE (the caller
   *  offers). */
  resync(view) {
    if (this.groupJoin.resync(view)) return; // the group media's to catch up (group-join.js)
    const other = (view.participants || []).find((p) => p.user_id === this.peerId);
    if (this.role !== "caller" || view.state !== "joined" || !other) return;
    if (this.phase === "calling" || this.phase === "ringing") {
      this.onAnswered({ type: "call.answered", call_id: this.id, user_id: other.user_id, device_id: other.device_id });
    } else if (this.peer && this.phase === "connecting") {
      this.peer.restartIce().catch(() => {});
    }
  }

  /** The signaling connection is back: a caller whose media path failed meanwhile restarts ICE. */
  onSignalingOpen() {
    if (this.peer && this.role === "caller" && this.peer.pc.connectionState === "failed") {
      this.peer.restartIce().catch(() => {});
    }
  }

  /** Tell the other device what we send now (docs/protocol.md, `call.media`): without it, a
   *  muted microphone is silence and a camera turned off is a frozen last picture there; and a
   *  shared screen would be cropped and mirrored as a face is. */
  sendMediaState() {
    const devices = this.group ? this.group.otherDevices()
      : this.remoteDevice && this.peer ? [this.remoteDevice] : [];
    if (!this.id) return;
    const media = this.host.media;
    const screen = this.media === "video" && !!media.screen;
    const video = screen || (this.media === "video" && !media.cameraOff && !!media.videoTrack);
    for (const device of devices) {
      this.host.signaling.request("call.media", {
        call_id: this.id, to_device: device, audio: !media.muted, video, screen,
      }).catch(() => {}); // the call may have ended meanwhile, or that device left it
    }
  }

  /** Send another video track (camera on, switched, a shared screen), or none (camera off). */
  async replaceVideo(track) {
    if (this.peer) await this.peer.replaceVideo(track);
    if (this.group) await this.group.replaceVideo(track);
  }

  /** The media connection's state: the SFU's once it took this device, else the peer
   *  connection's (which goes on while the SFU is being joined). */
  connectionState() {
    if (this.group && this.group.joined) return this.group.connectionState;
    return this.peer ? this.peer.pc.connectionState : "new";
  }

  // -- timers ---------------------------------------------------------------------------------
  /** The network-quality indicator, sampled every second (the peer connection's or the SFU's). */
  startStats() {
    this.statsTimer = setInterval(() => this.sample(), STATS_EVERY_MS);
  }

  /** Unless a deadline runs already: give the call up unless its media connects (or, once it
   *  did, comes back) in time. */
  watchUnlessWatched() {
    if (this.connectTimer) return;
    this.watchConnection(this.connectedAt ? CALL_LIMITS.reconnectMs : CALL_LIMITS.connectMs,
      this.connectedAt ? NO_RECONNECT : NO_CONNECT);
  }

  /** Give the call up after ``ms`` unless its media connects meanwhile (``what``: the sentence). */
  watchConnection(ms, what) {
    clearTimeout(this.connectTimer);
    this.connectTimer = setTimeout(() => {
      this.connectTimer = null;
      if (this.ended || !this.current) return;
      if (this.connectionState() === "connected") return;
      // the other side and the history hear why: it never connected, or it did not come back
      const why = this.connectedAt ? "connection_lost" : "no_media";
      this.host.finish(this, why, what, { error: true, notify: true, why });
    }, ms);
  }

  /** The media connection's state changed (the peer connection's, or the SFU's). */
  onMediaState(state) {
    if (!this.current) return;
    const { view, media } = this.host;
    if (state === "connected") {
      clearTimeout(this.connectTimer);
      this.connectTimer = null;
      if (!this.connectedAt) {
        // muted, camera off or a screen shared before the media connected: say so now
        if (media.muted || (this.media === "video" && (media.cameraOff || media.screen))) this.sendMediaState();
        this.host.ringback.stop();
        this.connectedAt = Date.now() - this.inCallFor * 1000;
        view.status(this.group ? "Connected to the group call" : `Connected with ${this.name}`);
      } else if (this.renewed && !this.moved) {
        view.status(this.group ? "Reconnected to the group call" : `Reconnected with ${this.name}`);
      }
      if (this.renewed) {
        this.renewed = false;
        this.moved = false;
        this.sendMediaState(); // the page that reloaded, or the device the call moved to, has not heard it
      }
      this.phase = "active";
      if (!this.group) this.updateSecurityCode(this.peer);
      view.controls(this, media);
      if (!this.clockTimer) this.clockTimer = setInterval(() => this.tick(), 1000);
      this.tick();
    } else if (state === "disconnected" || state === "failed") {
      view.callState(this, "Reconnecting…");
      // a call that never connected keeps its first deadline; one that did gets a new one
      if (this.connectedAt && !this.connectTimer) this.watchConnection(CALL_LIMITS.reconnectMs, NO_RECONNECT);
    }
    if (state === "failed" && !this.group) {
      if (this.role === "caller" && this.host.signaling.state === "open") this.peer.restartIce().catch(() => {});
    }
  }

  /** The duration on screen. */
  tick() {
    if (!this.current || !this.connectedAt || this.connectionState() !== "connected") return;
    this.host.view.callState(this, formatDuration((Date.now() - this.connectedAt) / 1000), { quiet: true });
  }

  /** The network-quality indicator, from the peer connection's statistics. */
  async sample() {
    const source = this.group && this.group.joined ? this.group : this.peer;
    if (!this.current || !source) return;
    try {
      const stats = await source.measure();
      this.lastStats = stats;
      this.host.view.quality(stats);
    } catch {
      /* closed meanwhile */
    }
  }

  /** Stop what this call runs here (timers, the peer connection): it has ended. */
  close() {
    this.ended = true;
    clearInterval(this.statsTimer);
    clearInterval(this.clockTimer);
    clearTimeout(this.connectTimer);
    if (this.peer) this.peer.close();
    this.protection.close();
    if (this.group) this.group.close();
  }
}
