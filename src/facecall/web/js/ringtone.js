// Ringtone and ringback tones made with WebAudio (no audio files to ship).

let context = null;

/** The shared AudioContext; call from a user gesture once so that later rings may sound. */
export function unlockAudio() {
  try {
    context = context || new AudioContext();
    if (context.state === "suspended") context.resume().catch(() => {});
  } catch {
    context = null;
  }
  return context;
}

/**
 * A repeating two-tone pattern. `kind` "ring" is the incoming ringtone (two short bursts, a
 * pause); "ringback" is what the caller hears while the other side rings.
 */
export class Tone {
  constructor(kind = "ring") {
    this.kind = kind;
    this.timer = null;
    this.nodes = [];
    this.playing = false;
  }

  start() {
    if (this.playing) return;
    const ctx = unlockAudio();
    if (!ctx) return;
    this.playing = true;
    const period = this.kind === "ring" ? 2000 : 4000;
    const play = () => this.burst(ctx);
    play();
    this.timer = setInterval(play, period);
  }

  burst(ctx) {
    const now = ctx.currentTime;
    const gain = ctx.createGain();
    gain.connect(ctx.destination);
    gain.gain.setValueAtTime(0, now);
    const [f1, f2] = this.kind === "ring" ? [880, 660] : [440, 480];
    const parts = this.kind === "ring" ? [[0, 0.35], [0.5, 0.35]] : [[0, 1.6]];
    for (const [offset, length] of parts) {
      gain.gain.setValueAtTime(0, now + offset);
      gain.gain.linearRampToValueAtTime(0.18, now + offset + 0.02);
      gain.gain.setValueAtTime(0.18, now + offset + length - 0.03);
      gain.gain.linearRampToValueAtTime(0, now + offset + length);
    }
    const end = now + parts[parts.length - 1][0] + parts[parts.length - 1][1] + 0.05;
    for (const frequency of [f1, f2]) {
      const osc = ctx.createOscillator();
      osc.frequency.value = frequency;
      osc.connect(gain);
      osc.start(now);
      osc.stop(end);
      this.nodes.push(osc);
      osc.onended = () => {
        this.nodes = this.nodes.filter((n) => n !== osc);
      };
    }
  }

  stop() {
    this.playing = false;
    clearInterval(this.timer);
    this.timer = null;
    for (const osc of this.nodes) {
      try {
        osc.stop();
      } catch {
        /* already stopped */
      }
    }
    this.nodes = [];
  }
}
