// One RTCPeerConnection to one remote device: offer/answer over signaling, trickle ICE,
// ICE restart, the call's data channel, whether its media is SFrame-protected (p2p-e2ee.js),
// and the statistics behind the network-quality indicator.

import { declareSFrame, declaresSFrame } from "./p2p-e2ee.js";

/** The call's data channel, negotiated out of band (W3C webrtc §6.2 `negotiated`): both ends
 *  make it with this label and id before the first offer or answer (the SDK too:
 *  facecall.client.peer.DATA_CHANNEL_LABEL), so the SDP carries its SCTP m-section. */
export const DATA_CHANNEL = { label: "facecall", id: 0 };

export class Peer extends EventTarget {
  /**
   * @param {object} o
   * @param {RTCIceServer[]} o.iceServers
   * @param {boolean} o.relayOnly    iceTransportPolicy "relay": media only through TURN
   * @param {import('./media.js').LocalMedia} o.media
   * @param {boolean} o.video        the call has video
   * @param {(type: string, fields: object) => Promise<object>} o.send  a signaling request
   * @param {string} o.callId
   * @param {string} o.remoteDevice
   * @param {(callId: string, toDevice: string, type: string, sdp: string) => Promise<string>} o.sign
   *   this device's signature of a description it sends (identity.js)
   * @param {import('./p2p-e2ee.js').Link|null} [o.link]  this connection's SFrame transforms:
   *   with one, every description sent declares SFrame (null: none does, no frame is protected)
   */
  constructor({ iceServers, relayOnly, media, video, send, callId, remoteDevice, sign, link = null }) {
    super();
    this.link = link;
    // whether the descriptions sent and received declare SFrame, and what that settled (once)
    this.sframe = { sent: null, received: null, agreed: null };
    this.media = media;
    this.video = video;
    this.send = send;
    this.sign = sign;
    this.callId = callId;
    this.remoteDevice = remoteDevice;
    this.pendingCandidates = [];
    this.remoteStream = new MediaStream();
    this.closed = false;
    this.makingOffer = false;
    this.previous = null; // last stats sample, for rates
    this.quality = "unknown";
    this.pc = new RTCPeerConnection({
      iceServers, iceTransportPolicy: relayOnly ? "relay" : "all", bundlePolicy: "max-bundle",
    });
    // shared playback's messages (watch-together.js), end to end over this connection's DTLS
    // (RFC 8831); every peer connection has its own, made before anything is negotiated
    this.channel = this.pc.createDataChannel(DATA_CHANNEL.label, { negotiated: true, id: DATA_CHANNEL.id });
    this.channel.binaryType = "arraybuffer";
    this.pc.onicecandidate = (event) => this.onLocalCandidate(event.candidate);
    this.pc.ontrack = (event) => {
      if (!this.remoteStream.getTracks().includes(event.track)) this.remoteStream.addTrack(event.track);
      this.dispatchEvent(new CustomEvent("track", { detail: event.track }));
    };
    this.pc.onconnectionstatechange = () => {
      this.dispatchEvent(new CustomEvent("state", { detail: this.pc.connectionState }));
    };
  }

  signal(type, fields) {
    return this.send(type, { call_id: this.callId, to_device: this.remoteDevice, ...fields });
  }

  onLocalCandidate(candidate) {
    if (this.closed) return;
    const wire = candidate && candidate.candidate
      ? { candidate: candidate.candidate, sdpMid: candidate.sdpMid, sdpMLineIndex: candidate.sdpMLineIndex }
      : null;
    if (!candidate || wire) this.signal("call.candidate", { candidate: wire }).catch(() => {});
  }

  /** The offering side (the caller): one audio and (for video calls) one video transceiver. */
  async offer({ iceRestart = false } = {}) {
    if (!iceRestart) {
      this.pc.addTransceiver(this.media.audioTrack || "audio",
        { direction: "sendrecv", streams: [this.media.stream] });
      if (this.video) {
        this.pc.addTransceiver(this.media.sentVideo || "video",
          { direction: "sendrecv", streams: [this.media.stream] });
      }
      // protected from the first frame: the answer says later whether it stays so
      if (this.link) for (const transceiver of this.pc.getTransceivers()) this.link.prepare(transceiver);
    }
    this.makingOffer = true; // an offer that crosses the other side's is glare (calls.js)
    try {
      const offer = await this.pc.createOffer({ iceRestart });
      await this.pc.setLocalDescription(offer);
    } finally {
      this.makingOffer = false;
    }
    if (this.closed) return; // given up meanwhile (glare: the other side's offer won)
    await this.sendDescription("offer", { ice_restart: iceRestart });
  }

  /** Send the local description as it stands, signed with this device's identity key (the
   *  signature covers the exact SDP string sent: the other side checks it before applying it),
   *  with the line that declares SFrame if this connection protects its frames. */
  async sendDescription(type, fields = {}) {
    let sdp = this.pc.localDescription.sdp; // read once: candidates gathered later change it
    if (this.link) sdp = declareSFrame(sdp);
    const signature = await this.sign(this.callId, this.remoteDevice, type, sdp);
    if (this.closed) return;
    await this.signal("call.sdp", { description: { type, sdp }, signature, ...fields });
    this.noteSFrame("sent", !!this.link);
  }

  /** A description sent or received declares SFrame or not; once one of each is known, the
   *  connection's media is protected iff both did ("sframe" event, detail true or false). That
   *  stays: a later description that does not declare it leaves the frames protected (they
   *  stop decrypting there, none goes out in the clear). */
  noteSFrame(which, declared) {
    const state = this.sframe;
    if (state.agreed !== null) {
      if (state.agreed && !declared) console.warn(`facecall: a description ${which} without SFrame; it stays on`);
      return;
    }
    state[which] = declared;
    if (state.sent === null || state.received === null || this.closed) return;
    state.agreed = state.sent && state.received;
    if (!state.agreed && this.link) this.link.passClear();
    this.dispatchEvent(new CustomEvent("sframe", { detail: state.agreed }));
  }

  /** Restart ICE after the path failed (only the offering side does this). */
  restartIce() {
    if (this.closed) return Promise.resolve();
    return this.offer({ iceRestart: true });
  }

  /** A relayed `call.sdp` from the remote device, its signature already checked (call.js). */
  async onDescription(description) {
    if (this.closed) return;
    const declared = declaresSFrame(description.sdp);
    await this.pc.setRemoteDescription(description);
    this.noteSFrame("received", declared);
    if (description.type === "offer" && this.link && declared && this.sframe.agreed !== false) {
      // the answering side's transceivers are made now: protected before the answer. (An offer
      // that does not declare SFrame gets neither transforms nor codec limits: the media will
      // not be protected, and that device may send no VP8.)
      for (const transceiver of this.pc.getTransceivers()) this.link.prepare(transceiver, { only: true });
    }
    if (description.type === "offer") {
      for (const transceiver of this.pc.getTransceivers()) {
        const kind = transceiver.receiver.track.kind;
        const track = kind === "audio" ? this.media.audioTrack : this.media.sentVideo; // camera or screen
        if (track && transceiver.sender.track !== track) {
          await transceiver.sender.replaceTrack(track);
          transceiver.sender.setStreams(this.media.stream);
        }
        transceiver.direction = "sendrecv";
      }
      const answer = await this.pc.createAnswer();
      await this.pc.setLocalDescription(answer);
      await this.sendDescription("answer");
    }
    const queued = this.pendingCandidates;
    this.pendingCandidates = [];
    for (const candidate of queued) await this.addCandidate(candidate);
  }

  /** A relayed `call.candidate` (null: the remote side has no more candidates). */
  async onCandidate(candidate) {
    if (this.closed) return;
    if (!this.pc.remoteDescription) {
      this.pendingCandidates.push(candidate);
      return;
    }
    await this.addCandidate(candidate);
  }

  async addCandidate(candidate) {
    try {
      await this.pc.addIceCandidate(candidate || undefined);
    } catch (error) {
      console.warn("facecall: candidate refused", error);
    }
  }

  videoSender() {
    const transceiver = this.pc.getTransceivers().find(
      (t) => t.receiver.track.kind === "video" && !t.stopped);
    return transceiver ? transceiver.sender : null;
  }

  /** Send another video track (camera switched or turned back on, a shared screen), or nothing
   *  (camera off). */
  async replaceVideo(track) {
    const sender = this.videoSender();
    if (sender) await sender.replaceTrack(track);
  }

  /** A snapshot of the connection: selected path, decoded frames, loss, round-trip time. */
  async stats() {
    const report = await this.pc.getStats();
    const byId = new Map();
    report.forEach((s) => byId.set(s.id, s));
    const out = {
      connectionState: this.pc.connectionState,
      iceConnectionState: this.pc.iceConnectionState,
      localCandidateType: null, remoteCandidateType: null, relayProtocol: null,
      rtt: null, framesDecoded: 0, framesReceived: 0, frameWidth: 0, frameHeight: 0,
      audioPacketsReceived: 0, audioSamplesDecoded: 0, packetsReceived: 0, packetsLost: 0, bytesSent: 0,
      framesEncoded: 0, sourceFrames: 0,
    };
    let pair = null;
    report.forEach((s) => {
      if (s.type === "transport" && s.selectedCandidatePairId) pair = byId.get(s.selectedCandidatePairId);
    });
    if (!pair) {
      report.forEach((s) => {
        if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") pair = pair || s;
      });
    }
    if (pair) {
      const local = byId.get(pair.localCandidateId);
      const remote = byId.get(pair.remoteCandidateId);
      out.localCandidateType = local ? local.candidateType : null;
      out.relayProtocol = local ? local.relayProtocol || null : null;
      out.remoteCandidateType = remote ? remote.candidateType : null;
      out.rtt = pair.currentRoundTripTime ?? null;
    }
    report.forEach((s) => {
      if (s.type === "inbound-rtp") {
        out.packetsReceived += s.packetsReceived || 0;
        out.packetsLost += Math.max(0, s.packetsLost || 0);
        if (s.kind === "video") {
          out.framesDecoded += s.framesDecoded || 0;
          out.framesReceived += s.framesReceived || 0;
          if (s.frameWidth && s.frameWidth >= out.frameWidth) { // the size of the last decoded frame
            out.frameWidth = s.frameWidth;
            out.frameHeight = s.frameHeight || 0;
          }
        } else if (s.kind === "audio") {
          out.audioPacketsReceived += s.packetsReceived || 0;
          // samples played from what came (not made up by concealment)
          out.audioSamplesDecoded += Math.max(0, (s.totalSamplesReceived || 0) - (s.concealedSamples || 0));
        }
      } else if (s.type === "outbound-rtp") {
        out.bytesSent += s.bytesSent || 0;
        if (s.kind === "video") out.framesEncoded += s.framesEncoded || 0;
      } else if (s.type === "media-source" && s.kind === "video") {
        out.sourceFrames += s.frames || 0;
      }
    });
    return out;
  }

  /** Grade the network since the last sample: "good", "fair", "poor" (or "unknown"). */
  async measure() {
    const now = await this.stats();
    const before = this.previous;
    this.previous = now;
    if (now.connectionState === "disconnected" || now.connectionState === "failed") {
      this.quality = "poor";
    } else if (!before || now.connectionState !== "connected") {
      this.quality = "unknown";
    } else {
      const received = now.packetsReceived - before.packetsReceived;
      const lost = now.packetsLost - before.packetsLost;
      const loss = received + lost > 0 ? lost / (received + lost) : 0;
      const rtt = now.rtt ?? 0;
      if (received === 0) this.quality = "poor";
      else if (loss < 0.02 && rtt < 0.3) this.quality = "good";
      else if (loss < 0.08 && rtt < 0.7) this.quality = "fair";
      else this.quality = "poor";
    }
    now.quality = this.quality;
    return now;
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    this.pc.close();
  }
}
