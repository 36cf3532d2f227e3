// Simulcast of this device's video in group calls (group-call.js): the camera (or a shared
// screen) goes to the SFU as three encodings of the same picture, each an RTP stream of its
// own, and the SFU forwards one of them to each receiver, as that receiver's bandwidth allows
// (docs/sfu.md, docs/web.md "Group calls"). Chromium writes the SDP itself from the
// transceiver's sendEncodings: `a=rid:<id> send` per layer (RFC 8851) and `a=simulcast:send
// q;h;f` (RFC 8853), and names each packet's layer in the rtp-stream-id header extension
// (RFC 8852), which it offers by default. One RTCRtpScriptTransform on the sender takes the
// frames of every layer (group-e2ee.js): each is SFrame-encrypted like any other frame.
//
// An SFU that does not answer `a=simulcast` (an older one) gets one stream: Chromium keeps the
// first encoding only, which fitLayers() then gives the whole picture.

/**
 * The layers, lowest first: rid, the picture's size divided by `scaleResolutionDownBy` (a
 * 640×480 camera: 160×120, 320×240, 640×480), and a ceiling on each layer's bitrate (bit/s).
 *
 * Why low → high: RFC 8853 §5.1 reads the order of `a=simulcast:send` as the sender's
 * preference, most preferred first, "of importance if the number of actually sent simulcast
 * streams have to be reduced": the smallest layer is the one every receiver can take, so it is
 * the one to keep (and the one Chromium keeps when the answer declines simulcast). libwebrtc
 * wants it so too: its VP8 simulcast numbers streams from the smallest up, its bandwidth
 * allocation pays for them in that order, and under CPU load it stops the top layers only when
 * their sizes grow in that order.
 *
 * Why these bitrates: each layer has four times the pixels of the one below and gets about
 * three times its bits (a larger picture needs fewer bits per pixel), ending near libwebrtc's
 * own ceilings for such sizes (its VP8 simulcast table: 200 kbit/s at 320×180, 700 at 640×360,
 * 1,200 at 960×540, 2,500 at 1280×720): 2.15 Mbit/s up together, sent once to the SFU. They
 * are ceilings: Chromium shares its bandwidth estimate out from the lowest layer up and pauses
 * a layer it cannot pay for, the top one first (so the whole picture goes only once the
 * estimate has grown: 10–20 s into a call on loopback, with the SFU's feedback).
 */
export const SIMULCAST_LAYERS = Object.freeze([
  Object.freeze({ rid: "q", scaleResolutionDownBy: 4, maxBitrate: 150_000 }),
  Object.freeze({ rid: "h", scaleResolutionDownBy: 2, maxBitrate: 500_000 }),
  Object.freeze({ rid: "f", scaleResolutionDownBy: 1, maxBitrate: 1_500_000 }),
]);

/** `sendEncodings` for the video transceiver (fresh objects: the browser keeps what it gets). */
export function sendEncodings() {
  return SIMULCAST_LAYERS.map((layer) => ({ ...layer }));
}

/**
 * Make the layers the sizes SIMULCAST_LAYERS asks of the picture ``track`` gives now (its
 * settings' width and height), on ``sender`` (no renegotiation).
 *
 * Why: from `scaleResolutionDownBy`, libwebrtc sends only as many layers as its table allows
 * the picture's size (`LimitSimulcastLayerCount`: 3 from 960×540, 2 from 480×270, else 1) and
 * drops the top ones: a 640×480 camera would go out as 160×120 and 320×240 only, and nobody
 * would ever see it whole. Each layer's size given as `scaleResolutionDownTo` (the same sizes:
 * a quarter, a half, all of it) is not limited so. A browser without that member (it is
 * dropped from the parameters) gets the scales back.
 *
 * When the answer declined simulcast, the one encoding left (the first: a quarter of the size
 * at 150 kbit/s) gets the whole picture and the top layer's bitrate instead. A picture whose
 * size changes later (a shared window resized) keeps the sizes it had as ceilings (scaled down
 * to fit, shape kept) until the next track.
 */
export async function fitLayers(sender, track) {
  const { width, height } = (track && track.kind === "video" && track.getSettings()) || {};
  if (!width || !height) return;
  const params = sender.getParameters();
  const top = SIMULCAST_LAYERS[SIMULCAST_LAYERS.length - 1];
  if (params.encodings.length === 1) {
    delete params.encodings[0].scaleResolutionDownTo;
    Object.assign(params.encodings[0], { scaleResolutionDownBy: 1, maxBitrate: top.maxBitrate });
  } else {
    for (const encoding of params.encodings) {
      const layer = SIMULCAST_LAYERS.find((l) => l.rid === encoding.rid);
      if (!layer) return; // not ours
      delete encoding.scaleResolutionDownBy;
      encoding.scaleResolutionDownTo = {
        maxWidth: Math.max(1, Math.round(width / layer.scaleResolutionDownBy)),
        maxHeight: Math.max(1, Math.round(height / layer.scaleResolutionDownBy)),
      };
    }
  }
  await sender.setParameters(params);
  const applied = sender.getParameters();
  if (applied.encodings.length > 1 && !applied.encodings.every((e) => e.scaleResolutionDownTo)) {
    for (const encoding of applied.encodings) { // a browser without it: the scales back
      encoding.scaleResolutionDownBy = SIMULCAST_LAYERS.find((l) => l.rid === encoding.rid).scaleResolutionDownBy;
    }
    await sender.setParameters(applied);
  }
}

const RANK = new Map(SIMULCAST_LAYERS.map((layer, i) => [layer.rid, i]));

/**
 * The video this device sends, layer by layer, from a peer connection's getStats report: one
 * outbound-rtp report per encoding (per rid; one without a rid when simulcast was declined),
 * lowest first: ``{rid, ssrc, active, frameWidth, frameHeight, framesEncoded, framesSent,
 * bytesSent, targetBitrate, qualityLimitationReason}``. A layer Chromium does not send (paused
 * for bandwidth or CPU, or declined: ``active`` false) encodes no frames.
 */
export function sentLayers(report) {
  const layers = [];
  report.forEach((s) => {
    if (s.type !== "outbound-rtp" || s.kind !== "video") return;
    layers.push({
      rid: s.rid ?? null, ssrc: s.ssrc, active: s.active !== false,
      frameWidth: s.frameWidth || 0, frameHeight: s.frameHeight || 0,
      framesEncoded: s.framesEncoded || 0, framesSent: s.framesSent || 0, bytesSent: s.bytesSent || 0,
      targetBitrate: s.targetBitrate || 0, qualityLimitationReason: s.qualityLimitationReason ?? null,
    });
  });
  return layers.sort((a, b) => (RANK.get(a.rid) ?? -1) - (RANK.get(b.rid) ?? -1));
}
