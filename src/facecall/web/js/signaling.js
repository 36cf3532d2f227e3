// The signaling WebSocket (docs/protocol.md): hello/resume, requests with replies, acks, and
// automatic reconnection. Events are delivered in seq order, each once, as "event" CustomEvents.

const RECONNECT_DELAYS_MS = [250, 500, 1000, 2000, 4000];
const ACK_DELAY_MS = 200;
const PING_EVERY_MS = 10000;
const DEAD_AFTER_MS = 25000; // nothing heard for this long (pings included): the connection is dead
const REQUEST_TIMEOUT_MS = 15000;
const MAX_HELD_CALLS = 16; // the most calls a hello may name
// Requests whose outcome is the same when applied twice: resent after a fresh start, when the
// server no longer knows whether it answered them (docs/protocol.md, "Requests across a drop").
const RESENDABLE_AFTER_FRESH_START = new Set(["call.answer", "call.handoff", "call.decline", "call.cancel", "call.hangup", "ping"]);

export class SignalingError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

/** Stop listening to a socket and close it without waiting for the closing handshake. */
function abandon(ws) {
  ws.onopen = ws.onmessage = ws.onclose = null;
  try {
    ws.close(4000, "connection lost");
  } catch {
    /* closing already */
  }
}

export class Signaling extends EventTarget {
  /** @param {string} url  ws(s)://host/v1/signaling  @param {string} token a device token */
  constructor(url, token) {
    super();
    this.url = url;
    this.token = token;
    this.ws = null;
    this.state = "idle"; // idle | connecting | open | reconnecting | closed
    this.lastSeq = null;
    this.pending = new Map(); // id -> {frame, resolve, reject, sent, timer}
    this.nextId = 1;
    this.prefix = Math.random().toString(36).slice(2, 10);
    this.attempt = 0;
    this.ackTimer = null;
    this.pingTimer = null;
    this.reconnectTimer = null;
    this.everConnected = false;
    this.lastHeard = 0;
    // The calls this device holds (ringing or joined), named in hello: if the server cannot
    // resume us (it restarted), we stay in those (docs/protocol.md, "A fresh start").
    this.heldCalls = () => [];
    // The operating system knows first when the network goes away or comes back.
    this.onOffline = () => this.lose();
    this.onOnline = () => {
      if (!this.closedByUs && !this.ws && this.state === "reconnecting") {
        clearTimeout(this.reconnectTimer);
        this.attempt = 0;
        this.connect();
      }
    };
  }

  start() {
    this.closedByUs = false;
    window.addEventListener("offline", this.onOffline);
    window.addEventListener("online", this.onOnline);
    this.connect();
  }

  /** Close for good (sign out): no reconnection; unanswered requests fail. */
  close() {
    this.closedByUs = true;
    window.removeEventListener("offline", this.onOffline);
    window.removeEventListener("online", this.onOnline);
    clearTimeout(this.reconnectTimer);
    clearInterval(this.pingTimer);
    this.setState("closed");
    if (this.ws) this.ws.close(1000, "bye");
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(new SignalingError("closed", "signed out"));
      this.pending.delete(id);
    }
  }

  /** Give up on the current connection as if the network had gone (reconnect and resume).
   *  A dead TCP connection may never report its end, so the socket is abandoned, not awaited. */
  lose() {
    const ws = this.ws;
    if (!ws) return;
    abandon(ws);
    this.onClose(ws, { code: 4000 });
  }

  /** For tests and diagnostics: drop the connection the way a network loss does. */
  drop() {
    this.lose();
  }

  setState(state, detail = {}) {
    if (this.state === state) return;
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: { state, ...detail } }));
  }

  connect() {
    clearTimeout(this.reconnectTimer);
    if (this.ws) abandon(this.ws); // never two connections at once
    this.setState(this.everConnected ? "reconnecting" : "connecting");
    // A browser cannot set Authorization on a WebSocket, and a URL ends up in proxy logs: the
    // token rides in a second subprotocol; the server selects facecall.v1 (docs/protocol.md,
    // "Connection"). Tokens are URL-safe base64, characters a subprotocol may hold.
    let ws;
    try {
      ws = new WebSocket(this.url, ["facecall.v1", `facecall.token.${this.token}`]);
    } catch {
      // SyntaxError: not a token the server issued (the error would quote it: not shown)
      this.ws = null;
      this.setState("closed", { reason: "unauthorized", message: "invalid device token" });
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      const hello = { v: 1, id: this.id(), type: "hello", resume_from: this.lastSeq };
      const calls = this.heldCalls().slice(0, MAX_HELD_CALLS);
      if (calls.length) hello.calls = calls;
      ws.send(JSON.stringify(hello));
    };
    ws.onmessage = (message) => this.onFrame(ws, message.data);
    ws.onclose = (event) => this.onClose(ws, event);
  }

  onClose(ws, event) {
    if (ws !== this.ws) return;
    clearInterval(this.pingTimer);
    this.ws = null;
    for (const p of this.pending.values()) p.sent = false;
    if (this.closedByUs) return;
    if (event.code === 4401 || event.code === 4403 || event.code === 4009) {
      // The token was revoked (device removed or signed out elsewhere, 4009 says so at once,
      // with "account deleted" when the whole account went): no point retrying.
      this.setState("closed", { reason: "unauthorized", message: event.reason });
      return;
    }
    if (event.code === 4409) {
      // Another tab or window took this device over: reconnecting would take it back, and the
      // two would take turns for ever. Stay closed until the user asks for the device here.
      this.closedByUs = true;
      window.removeEventListener("offline", this.onOffline);
      window.removeEventListener("online", this.onOnline);
      for (const [id, p] of this.pending) {
        clearTimeout(p.timer);
        p.reject(new SignalingError("replaced", "this device is in use in another tab"));
        this.pending.delete(id);
      }
      this.setState("closed", { reason: "replaced" });
      return;
    }
    this.setState("reconnecting");
    const delay = RECONNECT_DELAYS_MS[Math.min(this.attempt, RECONNECT_DELAYS_MS.length - 1)];
    this.attempt += 1;
    this.reconnectTimer = setTimeout(() => this.connect(), delay);
  }

  onFrame(ws, data) {
    this.lastHeard = Date.now();
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (frame.type === "welcome") {
      this.onWelcome(ws, frame);
      return;
    }
    if (frame.type === "ok" || frame.type === "error" || frame.type === "pong") {
      const p = this.pending.get(frame.re);
      if (!p) return;
      this.pending.delete(frame.re);
      clearTimeout(p.timer);
      if (frame.type === "error") p.reject(new SignalingError(frame.code, frame.message));
      else p.resolve(frame);
      return;
    }
    if (typeof frame.seq === "number") {
      if (this.lastSeq !== null && frame.seq <= this.lastSeq) return; // replayed, already seen
      this.lastSeq = frame.seq;
      this.scheduleAck();
    }
    this.dispatchEvent(new CustomEvent("event", { detail: frame }));
  }

  onWelcome(ws, frame) {
    const resumed = frame.resumed;
    const wasConnected = this.everConnected;
    this.everConnected = true;
    this.attempt = 0;
    this.welcome = frame;
    if (!resumed && this.lastSeq !== null) {
      // The server could not resume, and no longer knows the ids of requests sent before the
      // drop: resend those whose outcome is the same when applied twice, fail the others rather
      // than risk acting twice (docs/protocol.md, "Requests across a drop").
      for (const [id, p] of this.pending) {
        if (p.everSent && !RESENDABLE_AFTER_FRESH_START.has(p.frame.type)) {
          clearTimeout(p.timer);
          p.reject(new SignalingError("connection_lost", "the connection was lost"));
          this.pending.delete(id);
        }
      }
    }
    // Not resumed: nothing was replayed, and the events that follow are numbered after last_seq.
    if (!resumed) this.lastSeq = typeof frame.last_seq === "number" ? frame.last_seq : null;
    this.setState("open", { resumed, reconnected: wasConnected, calls: frame.calls || [] });
    for (const p of this.pending.values()) this.transmit(p);
    clearInterval(this.pingTimer);
    this.pingTimer = setInterval(() => {
      if (Date.now() - this.lastHeard > DEAD_AFTER_MS) this.lose();
      else this.request("ping").catch(() => {});
    }, PING_EVERY_MS);
  }

  scheduleAck() {
    if (this.ackTimer) return;
    this.ackTimer = setTimeout(() => {
      this.ackTimer = null;
      if (this.state === "open" && this.lastSeq !== null) {
        this.ws.send(JSON.stringify({ v: 1, id: this.id(), type: "ack", seq: this.lastSeq }));
      }
    }, ACK_DELAY_MS);
  }

  id() {
    return `${this.prefix}-${this.nextId++}`;
  }

  transmit(p) {
    if (this.state !== "open" || !this.ws || p.sent) return;
    this.ws.send(JSON.stringify(p.frame));
    p.sent = true;
    p.everSent = true;
  }

  /** Send a request; resolves with its `ok`, rejects with a SignalingError. Survives reconnects
   *  (resent with the same id, which the server answers once). */
  request(type, fields = {}) {
    if (this.closedByUs) {
      // closed for good (signed out, or another tab runs the device): a request kept until a
      // later start() would act on a call this page has long given up
      return Promise.reject(new SignalingError("closed", "this page is not connected"));
    }
    const frame = { v: 1, id: this.id(), type, ...fields };
    return new Promise((resolve, reject) => {
      const p = { frame, resolve, reject, sent: false, everSent: false };
      p.timer = setTimeout(() => {
        this.pending.delete(frame.id);
        reject(new SignalingError("timeout", "the server did not answer in time"));
      }, REQUEST_TIMEOUT_MS);
      this.pending.set(frame.id, p);
      this.transmit(p);
    });
  }
}
