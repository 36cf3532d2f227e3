// Local camera and microphone: capture, clear errors, camera off/on and switching cameras;
// and the capture of a shared screen (screen-share.js decides when).

export class MediaError extends Error {
  constructor(kind, message) {
    super(message);
    // permission | no_device | busy | insecure | unknown | closed; for a screen: cancelled
    // (the picker was closed or refused) | unsupported
    this.kind = kind;
  }
}

/** Map a getUserMedia failure to a message a person can act on. ``wantVideo``: true (camera
 *  and microphone asked for), false (the microphone) or "camera" (the camera alone). */
export function explain(error, wantVideo) {
  const what = wantVideo === "camera" ? "camera" : wantVideo ? "camera and microphone" : "microphone";
  switch (error && error.name) {
    case "NotAllowedError":
    case "SecurityError":
      return new MediaError("permission",
        `Permission to use the ${what} was denied. Allow it in the browser's site settings, then try again.`);
    case "NotFoundError":
    case "OverconstrainedError":
      return new MediaError("no_device", wantVideo === "camera" ? "No camera was found. Connect one and try again."
        : wantVideo ? "No camera or microphone was found. Connect one and try again."
          : "No microphone was found. Connect one and try again.");
    case "NotReadableError":
    case "AbortError":
      return new MediaError("busy",
        `The ${what} could not be started: another application may be using it.`);
    default:
      return new MediaError("unknown", `The ${what} could not be started (${error && error.message}).`);
  }
}

/** Map a getDisplayMedia failure to a message. A picker the person closed or refused is not
 *  an error (kind "cancelled": a notice says so); anything else is. */
export function explainScreen(error) {
  switch (error && error.name) {
    case "NotAllowedError":
    case "AbortError":
      return new MediaError("cancelled", "Screen sharing was cancelled: the call goes on as before.");
    case "NotReadableError":
      return new MediaError("busy",
        "Your screen could not be shared: the system did not let the browser capture it.");
    case "NotFoundError":
      return new MediaError("no_device", "Your screen could not be shared: there is nothing to share.");
    default:
      return new MediaError("unknown", `Your screen could not be shared (${error && error.message}).`);
  }
}

/** Whether this browser can share a screen (not on phones, nor outside a secure context). */
export function canShareScreen() {
  return !!(navigator.mediaDevices && navigator.mediaDevices.getDisplayMedia);
}

/** The state of the site's permission ``name`` ("granted", "denied", "prompt"), or null where
 *  the browser cannot say (no Permissions API, or no such permission name there). */
async function permissionState(name) {
  try {
    return (await navigator.permissions.query({ name })).state;
  } catch {
    return null;
  }
}

/**
 * A video call's capture failed with ``error``: whether to try the microphone alone (the call
 * goes on with audio only). Yes when the camera is missing or busy; when permission was refused,
 * yes unless the microphone is known to be refused as well (Chromium refuses a request for
 * both with the same NotAllowedError when only the camera is blocked for the site), or nothing
 * was decided (the question was dismissed: asking again for the microphone alone would be a
 * second question the person has just closed).
 */
async function worthAudioOnly(error) {
  if (error.name === "NotFoundError" || error.name === "NotReadableError" || error.name === "OverconstrainedError") {
    return true;
  }
  if (error.name !== "NotAllowedError") return false;
  const [camera, microphone] = await Promise.all([permissionState("camera"), permissionState("microphone")]);
  if (microphone === "denied") return false;
  return !(camera === "prompt" && microphone === "prompt");
}

const AUDIO_ONLY = {
  NotFoundError: "No camera was found: the call continues with audio only.",
  OverconstrainedError: "No camera was found: the call continues with audio only.",
  NotReadableError: "The camera is in use by another application: the call continues with audio only.",
  NotAllowedError: "Camera access is blocked: the call continues with audio only. Allow the camera "
    + "in the browser's site settings to turn it on.",
};

const VIDEO = { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 30 } };

export class LocalMedia {
  constructor() {
    this.stream = new MediaStream();
    this.videoDevices = [];
    this.deviceIndex = 0;
    this.cameraOff = false;
    this.muted = false;
    this.notice = null; // a message to show (e.g. continuing without a camera)
    this.generation = 0; // bumped by close(): a capture that resolves after it is stopped
    // the shared screen, while it is: its video track is sent instead of the camera's, and
    // the camera is released meanwhile (cameraOff then says whether it comes back afterwards)
    this.screen = null;
    this.screenStream = null;
  }

  get audioTrack() {
    return this.stream.getAudioTracks()[0] || null;
  }

  /** The camera's track (none while it is off, or released for a shared screen). */
  get videoTrack() {
    return this.stream.getVideoTracks()[0] || null;
  }

  /** The video track to send: the shared screen, else the camera (null: none). */
  get sentVideo() {
    return this.screen || this.videoTrack;
  }

  /** Capture for a call. A video call without a camera — none, one in use elsewhere, or one the
   *  site may not use — continues as audio only, with a notice (a blocked camera starts "off":
   *  Camera on asks for it again once the person allowed it).
   *  If close() runs while the browser is still starting the camera (a permission prompt, a slow
   *  device), the capture is stopped as soon as it arrives and this throws MediaError "closed":
   *  nothing keeps the camera light on for a call that has ended. */
  async open(wantVideo) {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw new MediaError("insecure",
        "This page cannot use the camera or microphone: open it over HTTPS (or on localhost).");
    }
    const generation = this.generation;
    this.notice = null;
    let stream;
    let blocked = false;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: wantVideo ? VIDEO : false });
    } catch (error) {
      if (!wantVideo || !(await worthAudioOnly(error))) throw explain(error, wantVideo);
      try {
        stream = await navigator.mediaDevices.getUserMedia({ audio: true });
      } catch (second) {
        // refused again: the microphone is blocked too, and the first error says it all
        throw error.name === "NotAllowedError" && second.name === "NotAllowedError"
          ? explain(error, true) : explain(second, false);
      }
      blocked = error.name === "NotAllowedError";
      this.notice = AUDIO_ONLY[error.name];
    }
    if (generation !== this.generation) {
      for (const track of stream.getTracks()) track.stop();
      throw new MediaError("closed", "The call ended while the camera was starting.");
    }
    for (const track of this.stream.getTracks()) track.stop(); // never two captures at once
    this.stream = stream;
    if (blocked) this.cameraOff = true; // nothing to turn off; "Camera on" asks again
    await this.listCameras();
    return stream;
  }

  async listCameras() {
    try {
      const devices = await navigator.mediaDevices.enumerateDevices();
      this.videoDevices = devices.filter((d) => d.kind === "videoinput");
      const current = this.videoTrack && this.videoTrack.getSettings().deviceId;
      const index = this.videoDevices.findIndex((d) => d.deviceId === current);
      this.deviceIndex = index >= 0 ? index : 0;
    } catch {
      this.videoDevices = [];
    }
  }

  get canSwitchCamera() {
    return this.videoDevices.length > 1 && !this.cameraOff && !!this.videoTrack && !this.screen;
  }

  setMuted(muted) {
    this.muted = muted;
    if (this.audioTrack) this.audioTrack.enabled = !muted;
  }

  /** Stop the camera (its light goes off); returns the track to send now (null). */
  stopCamera() {
    const track = this.videoTrack;
    if (track) {
      track.stop();
      this.stream.removeTrack(track);
    }
    this.cameraOff = true;
    return null;
  }

  /**
   * Start the camera again (or the next one when `next`); returns the new video track.
   * `use(track)` puts it to work (e.g. on the peer connection's sender) before the old camera
   * is stopped: a sender whose track ends under it may stop sending for good.
   */
  async startCamera(next = false, use = async () => {}) {
    if (next && this.videoDevices.length > 1) {
      this.deviceIndex = (this.deviceIndex + 1) % this.videoDevices.length;
    }
    const device = this.videoDevices[this.deviceIndex];
    const constraints = { ...VIDEO };
    if (device && device.deviceId) constraints.deviceId = { exact: device.deviceId };
    const generation = this.generation;
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: constraints });
    } catch (error) {
      throw explain(error, "camera");
    }
    const track = stream.getVideoTracks()[0];
    if (generation !== this.generation) { // the call ended while the camera was starting
      track.stop();
      throw new MediaError("closed", "The call ended while the camera was starting.");
    }
    const old = this.videoTrack;
    try {
      await use(track);
    } catch (error) {
      track.stop();
      throw error;
    }
    if (old) {
      this.stream.removeTrack(old);
      old.stop();
    }
    this.stream.addTrack(track);
    this.cameraOff = false;
    return track;
  }

  // -- a shared screen -----------------------------------------------------------------------
  /** Ask the browser for a screen to share (its picker: a screen, a window or a tab). Returns
   *  its stream; what is sent does not change until `useScreen`. Throws a MediaError
   *  ("cancelled" when the person closed or refused the picker; "closed" when the call ended
   *  meanwhile: the capture is stopped at once). */
  async captureScreen() {
    if (!canShareScreen()) throw new MediaError("unsupported", "This browser cannot share a screen.");
    const generation = this.generation;
    let stream;
    try {
      stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
    } catch (error) {
      throw explainScreen(error);
    }
    const track = stream.getVideoTracks()[0];
    if (generation !== this.generation || !track) {
      for (const t of stream.getTracks()) t.stop();
      throw generation !== this.generation
        ? new MediaError("closed", "The call ended while the screen was being chosen.")
        : new MediaError("no_device", "Your screen could not be shared: there is nothing to share.");
    }
    // text and lines stay sharp: the encoder lowers the frame rate before the resolution
    if ("contentHint" in track) track.contentHint = "detail";
    return stream;
  }

  /** Send the screen of ``stream`` (already put on the sender): the camera is released (its
   *  light goes off) until the share ends; ``cameraOff`` keeps saying whether it comes back. */
  useScreen(stream) {
    this.screenStream = stream;
    this.screen = stream.getVideoTracks()[0];
    const camera = this.videoTrack;
    if (camera) {
      camera.stop();
      this.stream.removeTrack(camera);
    }
  }

  /** The share is over (its track stopped): the camera's track, if any, is what is sent again. */
  stopScreen() {
    if (this.screenStream) for (const track of this.screenStream.getTracks()) track.stop();
    this.screen = null;
    this.screenStream = null;
  }

  /** While a screen is shared: whether the camera comes back when the share ends. */
  setCameraAfterScreen(on) {
    this.cameraOff = !on;
  }

  close() {
    this.generation += 1;
    this.stopScreen();
    for (const track of this.stream.getTracks()) track.stop();
    this.stream = new MediaStream();
    this.cameraOff = false;
    this.muted = false;
    this.notice = null;
  }
}
