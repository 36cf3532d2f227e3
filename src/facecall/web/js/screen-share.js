// Sharing this device's screen in a video call ("Share screen"): the browser's picker
// (LocalMedia.captureScreen), the screen's track sent in place of the camera's on the same
// sender (Call.replaceVideo: RTCRtpSender.replaceTrack, no renegotiation), the other side told
// with `call.media {screen: true}`, and back to the camera as it was when the share ends —
// pressed again, the browser's own "Stop sharing" (the track's `ended`), or the call ending
// (LocalMedia.close stops it). A share is not kept over a reload of the page.

import { MediaError } from "./media.js";

export class ScreenShare {
  /** @param {import('./calls.js').Calls} calls  the controller whose call shares */
  constructor(calls) {
    this.calls = calls;
    this.busy = false; // the picker is open, or the camera is starting again
  }

  /** Whether this device sends its screen now. */
  get sharing() {
    return !!this.calls.media.screen;
  }

  /** The Share screen button. */
  toggle() {
    return this.sharing ? this.stop() : this.start();
  }

  /** Ask for a screen and send it instead of the camera. A picker closed or refused leaves the
   *  call as it was, with a notice. */
  async start() {
    const { media, view } = this.calls;
    const call = this.calls.active;
    // (not while the camera and microphone are starting: the button is disabled then)
    if (!call || call.ended || call.media !== "video" || !media.audioTrack || media.screen || this.busy) return;
    this.busy = true;
    try {
      let stream;
      try {
        stream = await media.captureScreen();
      } catch (error) {
        if (!(error instanceof MediaError)) throw error;
        if (error.kind === "cancelled") view.notice(error.message);
        else if (error.kind !== "closed") view.error(error.message);
        return;
      }
      const track = stream.getVideoTracks()[0];
      const stopCapture = () => stream.getTracks().forEach((t) => t.stop());
      if (!call.current || call.ended) return stopCapture();
      try {
        // on the sender before the camera stops: a sender whose track ends under it may stop
        // sending for good. A peer connection replaced meanwhile (the other page reloaded)
        // gets it in turn: the old one was closed under this replaceTrack
        let peer;
        do {
          peer = call.peer;
          try {
            await call.replaceVideo(track);
          } catch (error) {
            if (call.peer === peer || !call.current || call.ended) throw error;
          }
        } while (call.peer !== peer && call.current && !call.ended);
      } catch (error) {
        stopCapture();
        view.error(`Your screen could not be shared (${error.message}).`);
        return;
      }
      if (!call.current || call.ended) return stopCapture();
      media.useScreen(stream);
      // the browser's own "Stop sharing" (or the shared window closed): back to the camera.
      // (track.stop() from this page does not fire it.)
      track.addEventListener("ended", () => {
        if (media.screen === track) this.stop();
      });
      view.showLocal(media);
      view.controls(call, media);
      view.status("You are sharing your screen");
      call.sendMediaState();
    } finally {
      this.busy = false;
    }
  }

  /** Stop sharing: the camera again if it was on (``cameraOff`` says; Camera off/on while
   *  sharing changed only that), else no video. */
  async stop() {
    const { media, view } = this.calls;
    const call = this.calls.active;
    const track = media.screen;
    if (!track || this.busy) return;
    if (!call || call.ended) {
      media.stopScreen();
      return;
    }
    this.busy = true;
    try {
      if (!media.cameraOff) {
        try {
          await media.startCamera(false, (camera) => call.replaceVideo(camera));
        } catch (error) {
          if (error instanceof MediaError && error.kind === "closed") return; // the call ended
          media.stopCamera(); // the share ends all the same, without video
          view.error(`Your camera could not be started again: ${error.message}`);
        }
      }
      if (media.screen !== track || !call.current || call.ended) return;
      if (!media.videoTrack) await call.replaceVideo(null);
      media.stopScreen();
    } finally {
      this.busy = false;
    }
    view.showLocal(media);
    view.controls(call, media);
    view.status(media.cameraOff ? "You stopped sharing your screen; your camera is off"
      : "You stopped sharing your screen");
    call.sendMediaState();
  }
}
