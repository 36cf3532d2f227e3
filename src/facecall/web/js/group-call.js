// Group media in the browser: a call of three or more people sends its media once to the
// server's SFU, which forwards it to the others (docs/sfu.md; docs/protocol.md, "Group media
// (SFU)"). The twin of the SDK's src/facecall/client/group.py, with the same rules:
//
// * one RTCPeerConnection with the SFU in its slot shape (group-offer.js): BUNDLE and rtcp-mux,
//   every candidate in the offer (no trickle); one sendrecv audio m-line and, in a video call,
//   one sendrecv video m-line (this device's microphone and camera, or its shared screen);
//   then SLOTS recvonly audio and (video call) SLOTS recvonly video m-lines: the receive
//   slots, each played by whoever the SFU puts there (`sfu.slots`); Opus and VP8 only; the
//   video goes as simulcast, three layers the SFU picks from per receiver (group-simulcast.js);
// * every frame is SFrame-encrypted end to end (group-e2ee.js): the senders' frames before
//   they leave, the slots' frames before they are decoded; the keys come with `call.key`
//   events and go to the room's members (`sfu.members`);
// * once the SFU took the device (`sfu.join` answered), the call's P2P connection closes and
//   P2P negotiation is ignored from then on (call.js);
// * when the SFU loses the device -- the connection fails, or the SFU closes its DTLS (it
//   dropped the device: nothing heard from it for 15 s, or a server restart) -- or may have
//   lost it (a signaling reconnect the server could not resume: its rooms live in memory), it
//   joins again by itself with a new connection and new keys (a new member for everyone),
//   after the SDK's pauses (REJOIN_PAUSES_MS), then gives up; the tiles of the people it saw
//   stay meanwhile, with their last pictures.
//
// * who is speaking: the room's dominant speaker as the SFU chooses it (from the RFC 6464
//   audio levels in every audio packet), in `sfu.join`'s `ok` and then `sfu.speaker` events;
//   the page highlights that person's tile.
//
// What the server sends is checked before use: a malformed `sfu.slots`, `sfu.members`,
// `sfu.speaker` or `call.key` is counted (`refused`) and changes nothing.

import { fitLayers, sentLayers } from "./group-simulcast.js";
import { KINDS, slotOffer } from "./group-offer.js";
import { Peer } from "./peer.js";
import { GroupE2EE } from "./group-e2ee.js";

/** Receive slots per kind asked for: the SFU's default K (docs/sfu.md). */
export const SLOTS = 3;
const ID = /^[!-~]{1,64}$/;
/** Pauses (ms) before each try to join the SFU again once it lost this device (the SDK's
 *  REJOIN_PAUSES): the first lets signaling say first when the call ended or moved (the SFU
 *  closes the device's connection then too). Then the call's watchdog gives it up. */
export const REJOIN_PAUSES_MS = [500, 1000, 2000, 4000, 8000];
/** `sfu.join` refusals after which joining again is pointless (the SDK's FINAL_REFUSALS). */
const FINAL_REFUSALS = new Set(["call_ended", "not_in_call", "unknown_call", "closed"]);
/** How long the tiles of a lost connection (their last pictures) stay once the new connection
 *  is up, for the slots to fill again (a video slot waits for its sender's key frame). */
export const KEEP_TILES_MS = 5000;

/** A slot entry of `sfu.join`'s `ok` or of `sfu.slots`, as the server must send it. */
function validSlot(entry) {
  return !!entry && typeof entry === "object" && !Array.isArray(entry)
    && typeof entry.mid === "string" && KINDS.includes(entry.kind)
    && (entry.user_id === null || (typeof entry.user_id === "string" && ID.test(entry.user_id)))
    && (entry.device_id === null || (typeof entry.device_id === "string" && ID.test(entry.device_id)))
    && (entry.user_id === null) === (entry.device_id === null);
}

/** The speaker of `sfu.join`'s `ok` or of an `sfu.speaker` event: ``{userId, deviceId}``, null
 *  for nobody, undefined when malformed (two strings, or two nulls). */
function wireSpeaker(entry) {
  if (entry === null) return null;
  if (!entry || typeof entry !== "object" || Array.isArray(entry)) return undefined;
  const { user_id: userId, device_id: deviceId } = entry;
  if (userId === null && deviceId === null) return null;
  const valid = typeof userId === "string" && ID.test(userId) && typeof deviceId === "string" && ID.test(deviceId);
  return valid ? { userId, deviceId } : undefined;
}

/** A member entry of `sfu.join`'s `ok` or of `sfu.members`. */
function validMember(entry) {
  return !!entry && typeof entry === "object" && !Array.isArray(entry)
    && typeof entry.user_id === "string" && ID.test(entry.user_id)
    && typeof entry.device_id === "string" && ID.test(entry.device_id)
    && Number.isSafeInteger(entry.joined) && entry.joined >= 0;
}

/** `call.invite` and `sfu.join` refusals, as sentences (docs/protocol.md, "Errors"). */
export function groupMessage(error, name) {
  switch (error && error.code) {
    case "unknown_user": return `No user named ${name}`;
    case "invalid_state": return `${name} is already in this call or being called`;
    case "not_allowed": return `${name} cannot be added to this call from this device`;
    case "call_full": return "The call is full: no one else can be added";
    case "call_ended": return "The call has ended";
    case "rate_limited": return "Too many requests: wait a moment and try again";
    case "sfu_full": return "Group calls are full on this server right now: try again later";
    case "sfu_unavailable": return "This server cannot hold group calls (it runs on several nodes)";
    case "offer_refused": return `The server refused this browser's group media: ${error.message}`;
    case "timeout": case "connection_lost":
      return "The server cannot be reached right now. Check your connection and try again.";
    default: return (error && error.message) || "Something went wrong";
  }
}

/**
 * This device's place in its call's group media. Made for a Call (call.js) by its GroupJoin
 * (group-join.js), which routes `sfu.slots`, `sfu.members`, `sfu.speaker` and `call.key` to it.
 * Dispatches "slots" (the slots changed hands: redraw the tiles), "members" (the room's
 * devices changed), "speaker" (someone else is speaking, or nobody), "state" (the connection
 * with the SFU: detail is RTCPeerConnection.connectionState) and "rejoined".
 */
export class GroupCall extends EventTarget {
  /**
   * @param {object} o
   * @param {import('./call.js').Call} o.call
   * @param {number} [o.slots]  receive slots per kind
   */
  constructor({ call, slots = SLOTS }) {
    super();
    this.call = call;
    this.host = call.host;
    this.slotsPerKind = slots;
    this.pc = null;
    this.e2ee = null;
    this.closed = false;
    this.joined = false; // the SFU answered sfu.join (once: P2P is over for this call here)
    this.live = false; // …for the connection in use, which has not been lost since
    this.joinedAs = null; // this device's `joined` number in the room (the current join's)
    this.rejoining = null; // the joins again, while they go on
    this.rejoins = 0; // joins again that succeeded
    this.gaveUp = false; // joining again failed every time
    this.held = null; // the people shown when the connection was lost (their last pictures)
    this.heldTimer = null;
    this.slots = new Map(); // mid -> {mid, kind, userId, deviceId, track}
    this.members = []; // [{user_id, device_id, joined}] as the server last listed them
    this.remoteMedia = new Map(); // device id -> {audio, video, screen}, from call.media
    this.speaker = null; // {userId, deviceId}: the room's dominant speaker as the SFU says, or null
    this.refused = { slots: 0, members: 0, speaker: 0, keys: 0 }; // malformed events from the server
    this.waiting = []; // sfu.members events that came before the reply to sfu.join
    this.senders = { audio: null, video: null };
    this.fitting = Promise.resolve(); // the video sender's layers being sized (fitVideo)
    // what peer.js's statistics and grading read (see stats(), measure())
    this.previous = null;
    this.quality = "unknown";
  }

  // -- joining ------------------------------------------------------------------------------
  /**
   * Offer to the SFU (`sfu.join`) and apply its answer. Throws (the SignalingError of a
   * refusal, or why it could not start) and closes itself if that fails; the call's P2P
   * media, if any, is the caller's to close once this resolves.
   */
  async join() {
    try {
      await this.connect();
    } catch (error) {
      this.close();
      throw error;
    }
  }

  /**
   * A connection with the SFU: new sender keys (a new GroupE2EE: whoever held this device's
   * keys drops them when it joins again), a new peer connection in the slot shape, `sfu.join`
   * (which replaces this device's place in the room), its answer. Once answered, it replaces
   * the connection and the keys before it, which are closed. Throws if it cannot be made,
   * leaving nothing of itself behind.
   */
  async connect() {
    const { call, host } = this;
    if (this.closed) throw new Error("the call ended");
    const e2ee = new GroupE2EE({
      callId: call.id, userId: host.tokens().userId, deviceId: host.signaling.welcome.device_id,
      identity: host.identity, api: host.api,
      // one sealed sender key to one member device (the E2EE's frame: type, call_id,
      // to_device, key)
      send: ({ to_device: toDevice, key }) => host.signaling.request("call.key",
        { call_id: call.id, to_device: toDevice, key }),
    });
    let made = null;
    try {
      made = await slotOffer({
        media: host.media, video: call.media === "video", slots: this.slotsPerKind, e2ee,
        iceServers: call.iceServers || [], relayOnly: host.useRelayOnly(),
        onState: (pc) => this.onConnectionState(pc),
      });
      if (this.closed) throw new Error("the call ended");
      // from here the keys sealed to this device go to the new keys (the others may send them
      // before the reply comes); the old ones send nothing more
      const old = this.e2ee;
      this.e2ee = e2ee;
      this.live = false;
      if (old) old.close();
      const reply = await host.signaling.request("sfu.join", { call_id: call.id, sdp: made.sdp });
      if (this.closed) throw new Error("the call ended");
      const replaced = this.pc; // (a lost connection)
      Object.assign(this, { pc: made.pc, slots: made.slots, senders: made.senders, previous: null });
      if (replaced) replaced.close();
      const sent = host.media.sentVideo || null; // the camera or screen changed while it joined
      if (this.senders.video && this.senders.video.track !== sent) {
        this.senders.video.replaceTrack(sent).then(() => this.fitVideo(),
          (error) => console.warn("facecall: group video", error));
      }
      this.joined = true;
      this.live = true;
      const members = Array.isArray(reply.members) ? reply.members : [];
      const own = members.find((m) => validMember(m) && m.device_id === e2ee.deviceId);
      this.joinedAs = own ? own.joined : null;
      this.onMembers({ members: reply.members }); // the keys go to these devices
      this.onSlots({ slots: reply.slots || [] });
      // (an event about the speaker sent before this reply is older than it: not applied)
      this.setSpeaker(reply.speaker === undefined ? null : reply.speaker, { type: "sfu.join" });
      await made.pc.setRemoteDescription({ type: "answer", sdp: reply.sdp });
      this.fitVideo(); // (the answer says how many layers go)
      this.watchTransport(made.pc);
      // lists of this join that came before its reply (the newest counts); sfu.slots that
      // came before it were the old connection's: this one's fill once its media connects
      for (const event of this.waiting.splice(0)) this.onEvent(event);
    } catch (error) {
      if (this.e2ee === e2ee) {
        this.e2ee = null;
        this.live = false;
      }
      e2ee.close();
      if (made) made.pc.close();
      throw error;
    }
  }

  /** The connection with the SFU changed state (``pc``: the one it is about). */
  onConnectionState(pc) {
    if (this.closed || pc !== this.pc || !this.live) return; // (a connection replaced or lost)
    const state = pc.connectionState;
    this.dispatchEvent(new CustomEvent("state", { detail: state }));
    if (state === "failed") this.lost("the connection failed");
    if (state === "connected" && this.held && !this.heldTimer) {
      this.heldTimer = setTimeout(() => this.release(), KEEP_TILES_MS);
    }
  }

  /** The SFU drops a device by closing its DTLS (close_notify): the peer connection's state
   *  says nothing of it for seconds (ICE still answers), its DTLS transport's says it at once. */
  watchTransport(pc) {
    const transport = pc.getSenders().map((sender) => sender.transport).find(Boolean);
    if (!transport) return;
    transport.addEventListener("statechange", () => {
      if (this.closed || pc !== this.pc || !this.live) return;
      if (transport.state === "closed" || transport.state === "failed") this.lost(`its DTLS transport ${transport.state}`);
    });
  }

  /** The connection with the SFU as the call sees it: one that was lost is "disconnected"
   *  while this device joins again ("failed" once it gave up), whatever its peer connection
   *  still says (a DTLS the SFU closed leaves it "connected" for seconds). */
  get connectionState() {
    if (this.closed) return "closed";
    if (!this.pc) return "new";
    if (this.live) return this.pc.connectionState;
    return this.gaveUp ? "failed" : "disconnected";
  }

  // -- joining again ----------------------------------------------------------------------------
  /** The SFU lost this device, or may have (``why``): join again (rejoin), unless this is
   *  already under way or the first join is (its own outcome counts). Meanwhile the old
   *  connection sends nothing, and the tiles stay as they were. */
  lost(why) {
    if (this.closed || !this.joined || this.rejoining) return;
    console.warn(`facecall: the group media's connection was lost (${why}): joining the SFU again`);
    this.held = this.people(); // (with those still held from a loss before, if any)
    clearTimeout(this.heldTimer);
    this.heldTimer = null;
    this.live = false; // its lists and slots are over
    this.gaveUp = false;
    try {
      if (this.e2ee) this.e2ee.stopSending(); // not another frame under the old keys
    } catch (error) {
      console.warn("facecall: group keys (stop)", error);
    }
    this.rejoining = this.rejoin().finally(() => {
      this.rejoining = null;
    });
  }

  /** Join the SFU again with a new connection (`connect`), after each of REJOIN_PAUSES_MS,
   *  until it works or the server says this device is out of the call. Dispatches "state"
   *  ``failed`` once the first pause is over (unless the connection said so itself), then
   *  "rejoined" once the new connection is answered (its own "state" events follow). */
  async rejoin() {
    for (let attempt = 0; attempt < REJOIN_PAUSES_MS.length; attempt += 1) {
      await new Promise((resolve) => setTimeout(resolve, REJOIN_PAUSES_MS[attempt]));
      if (this.closed) return; // the call ended or moved
      if (attempt === 0 && this.pc && !["failed", "disconnected"].includes(this.pc.connectionState)) {
        this.dispatchEvent(new CustomEvent("state", { detail: "failed" }));
      }
      try {
        this.call.iceServers = await this.host.iceServers(); // fresh TURN credentials
        if (this.closed) return;
        await this.connect();
      } catch (error) {
        if (this.closed) return;
        console.warn("facecall: joining the SFU again failed", error);
        if (error && FINAL_REFUSALS.has(error.code)) break;
        continue;
      }
      this.rejoins += 1;
      this.dispatchEvent(new CustomEvent("rejoined"));
      return;
    }
    if (this.closed) return;
    console.warn("facecall: gave up joining the SFU again");
    this.gaveUp = true;
    this.dispatchEvent(new CustomEvent("state", { detail: "failed" }));
  }

  /** The tiles of the lost connection go: the new one's slots show who is there. */
  release() {
    clearTimeout(this.heldTimer);
    this.heldTimer = null;
    if (!this.held) return;
    this.held = null;
    if (!this.closed) this.dispatchEvent(new CustomEvent("slots"));
  }

  // -- what the server says -------------------------------------------------------------------
  /** `sfu.slots`, `sfu.members`, `sfu.speaker` or `call.key` for this call. */
  onEvent(event) {
    if (this.closed) return;
    if (event.type === "call.key") {
      // to the keys of the connection in use or being joined (before them: a key of an
      // earlier join of this device, which the others replace once it joins)
      if (this.e2ee) this.onKey(event);
      return;
    }
    if (!this.live) {
      // the reply to sfu.join comes first; sfu.slots (and sfu.speaker) until then are a lost
      // connection's, or older than what the reply says
      if (event.type === "sfu.members") this.waiting = [...this.waiting, event].slice(-16);
      return;
    }
    switch (event.type) {
      case "sfu.slots": this.onSlots(event); break;
      case "sfu.members": this.onMembers(event); break;
      case "sfu.speaker": this.onSpeaker(event); break;
      default: break;
    }
  }

  /** Who fills the slots now (the whole list, or the entries that changed). */
  onSlots(event) {
    const wire = event.slots;
    if (!Array.isArray(wire) || wire.length > 2 * this.slotsPerKind || !wire.every(validSlot)) {
      this.refuse("slots", event);
      return;
    }
    let changed = false;
    for (const entry of wire) {
      const slot = this.slots.get(entry.mid);
      if (!slot || slot.kind !== entry.kind) continue; // not one of ours
      if (slot.userId !== entry.user_id || slot.deviceId !== entry.device_id) {
        slot.userId = entry.user_id;
        slot.deviceId = entry.device_id;
        changed = true;
      }
    }
    this.tellE2EE("setSlots", wire);
    if (changed) this.dispatchEvent(new CustomEvent("slots"));
  }

  /** The devices in the call's room (the keys are sealed to them): the lists of this
   *  device's current join only (they name it with the number of its join; an earlier join's,
   *  which a join again replaced, are over). */
  onMembers(event) {
    const members = event.members;
    if (!Array.isArray(members) || members.length > 64 || !members.every(validMember)) {
      this.refuse("members", event);
      return;
    }
    const own = this.e2ee && members.find((m) => m.device_id === this.e2ee.deviceId);
    if (!own || own.joined !== this.joinedAs) return;
    this.members = members.map((m) => ({ user_id: m.user_id, device_id: m.device_id, joined: m.joined }));
    this.tellE2EE("setMembers", this.members);
    this.dispatchEvent(new CustomEvent("members"));
  }

  /** Who is speaking now (the whole room's dominant speaker: maybe this device, or someone
   *  in none of its slots), or nobody. */
  onSpeaker(event) {
    this.setSpeaker(event.call_id === this.call.id ? event : undefined, event);
  }

  /** The speaker ``wire`` names (an `sfu.speaker` event, or `sfu.join`'s `ok`'s `speaker`);
   *  a malformed one (in ``event``) is counted and changes nothing. */
  setSpeaker(wire, event) {
    const speaker = wireSpeaker(wire);
    if (speaker === undefined) {
      this.refuse("speaker", event);
      return;
    }
    const now = this.speaker;
    if (speaker === now || (speaker && now && speaker.userId === now.userId && speaker.deviceId === now.deviceId)) return;
    this.speaker = speaker;
    this.dispatchEvent(new CustomEvent("speaker"));
  }

  /** A sender key sealed to this device (group-e2ee.js opens it or says why not). */
  async onKey(event) {
    try {
      await this.e2ee.onKey(event);
    } catch (error) {
      this.refuse("keys", event, error);
    }
  }

  tellE2EE(method, value) {
    try {
      this.e2ee[method](value);
    } catch (error) {
      console.warn(`facecall: group keys (${method})`, error);
    }
  }

  refuse(what, event, error = null) {
    this.refused[what] += 1;
    console.warn(`facecall: a malformed ${event && event.type} was ignored`, error ? error.message : "");
  }

  /** What a member device says it sends (`call.media`): its tile's note. */
  onRemoteMedia(event) {
    this.remoteMedia.set(event.from_device, { audio: event.audio, video: event.video, screen: event.screen === true });
    this.dispatchEvent(new CustomEvent("slots"));
  }

  // -- what the page shows -----------------------------------------------------------------------
  /** One entry per device in a filled slot, in slot order: ``{userId, deviceId, video,
   *  audio}`` (video: the MediaStreamTrack of its video slot, or null). */
  people() {
    const byDevice = new Map();
    for (const slot of this.slots.values()) {
      if (!slot.deviceId) continue;
      if (!byDevice.has(slot.deviceId)) {
        byDevice.set(slot.deviceId, { userId: slot.userId, deviceId: slot.deviceId, video: null, audio: false });
      }
      const person = byDevice.get(slot.deviceId);
      if (slot.kind === "video") person.video = slot.track;
      else person.audio = true;
    }
    if (this.held) { // joining again: who was there stays (last picture) until their slot fills
      const inCall = new Set(this.call.groupJoin.others.values());
      for (const person of this.held) {
        if (!byDevice.has(person.deviceId) && inCall.has(person.deviceId)) byDevice.set(person.deviceId, person);
      }
    }
    return [...byDevice.values()];
  }

  /** The audio slots' tracks (each played whoever fills it). */
  audioTracks() {
    return [...this.slots.values()].filter((slot) => slot.kind === "audio").map((slot) => slot.track);
  }

  /** The other member devices (call.media goes to them). */
  otherDevices() {
    const own = this.host.signaling.welcome && this.host.signaling.welcome.device_id;
    return this.members.filter((m) => m.device_id !== own).map((m) => m.device_id);
  }

  // -- sending ------------------------------------------------------------------------------
  /** Send another video track (camera on or switched, a shared screen), or none (camera off). */
  async replaceVideo(track) {
    if (this.senders.video && !this.closed) {
      await this.senders.video.replaceTrack(track);
      this.fitVideo();
    }
  }

  /** The video sender's simulcast layers sized for the picture it sends now, once the answer
   *  is applied (it says how many layers go); one change at a time. */
  fitVideo() {
    const { pc, senders: { video: sender } } = this;
    this.fitting = this.fitting.then(() => {
      if (!sender || !sender.track || this.closed || pc.signalingState !== "stable") return null;
      return fitLayers(sender, sender.track);
    }).catch((error) => console.warn("facecall: group video layers", error));
  }

  // -- statistics ---------------------------------------------------------------------------------
  /** The connection's statistics as peer.js reads a peer connection's (summed over the slots),
   *  per slot (``slots``: mid -> frames decoded, size, packets) and per simulcast layer sent
   *  (``sent``: group-simulcast.js). ``framesEncoded`` counts the picture's frames once, not
   *  once per layer (the most any layer encoded). */
  async stats() {
    const out = await Peer.prototype.stats.call(this);
    const report = await this.pc.getStats();
    out.sent = sentLayers(report);
    out.framesEncoded = Math.max(0, ...out.sent.map((layer) => layer.framesEncoded));
    out.slots = {};
    report.forEach((s) => {
      if (s.type !== "inbound-rtp" || !this.slots.has(s.mid)) return;
      out.slots[s.mid] = { kind: s.kind, packetsReceived: s.packetsReceived || 0,
        framesDecoded: s.framesDecoded || 0, frameWidth: s.frameWidth || 0, frameHeight: s.frameHeight || 0,
        // audio: samples played from what came (not made up by concealment)
        samplesDecoded: Math.max(0, (s.totalSamplesReceived || 0) - (s.concealedSamples || 0)) };
    });
    return out;
  }

  /** The network-quality grade (peer.js's rule, over this connection). */
  measure() {
    return Peer.prototype.measure.call(this);
  }

  /** For the page's diagnostics. */
  async diagnostics() {
    let stats = null;
    try {
      stats = this.pc && !this.closed ? await this.stats() : null;
    } catch {
      /* closed meanwhile */
    }
    let e2ee = null;
    try {
      e2ee = this.e2ee ? this.e2ee.stats() : null;
    } catch (error) {
      e2ee = { error: String(error) };
    }
    return {
      state: this.connectionState, joined: this.joined,
      rejoining: !!this.rejoining, rejoins: this.rejoins, gaveUp: this.gaveUp,
      slots: [...this.slots.values()].map((s) => ({ mid: s.mid, kind: s.kind, userId: s.userId, deviceId: s.deviceId,
        ...((stats && stats.slots[s.mid])
          || { packetsReceived: 0, framesDecoded: 0, frameWidth: 0, frameHeight: 0, samplesDecoded: 0 }) })),
      sent: stats ? stats.sent : [], members: this.members, refused: { ...this.refused }, e2ee,
      speaker: this.speaker ? this.speaker.deviceId : null,
    };
  }

  /** Stop the group media here: the call ended here, or moved to another device (the server
   *  takes the device out of the room by itself then). */
  close() {
    if (this.closed) return;
    this.closed = true;
    this.live = false;
    this.waiting = [];
    this.held = null;
    clearTimeout(this.heldTimer);
    try {
      if (this.e2ee) this.e2ee.close();
    } catch (error) {
      console.warn("facecall: group keys (close)", error);
    }
    if (this.pc) this.pc.close();
  }
}
