"""AudioJitterBuffer with a fake clock; OpusPlcDecoder against libopus-encoded packets."""

from __future__ import annotations

import av
import numpy as np

from facecall.media.engine.audio_buffer import AudioBufferConfig, AudioJitterBuffer, SlotKind
from facecall.media.engine.opus import OpusPlcDecoder, load_libopus

PT = 0.02


def feed(buf: AudioJitterBuffer, arrivals: dict[int, float], until: float, step: float = 0.001):
    """Deliver packet n at arrivals[n] and pop every ``step``; return (slot, popped_at) pairs."""
    out = []
    pending = sorted(arrivals.items(), key=lambda kv: kv[1])
    t = 0.0
    while t <= until:
        while pending and pending[0][1] <= t:
            n, at = pending.pop(0)
            buf.add(1000 + n, 960 * n, bytes([n % 256]), at)
        out += [(slot, t) for slot in buf.pop(t)]
        t = round(t + step, 6)
    return out


def test_clean_path_target_falls_from_one_packet_to_the_jitter() -> None:
    buf = AudioJitterBuffer()
    assert buf.target == PT                               # starts at one packet
    slots = feed(buf, {n: 0.005 + n * PT for n in range(150)}, until=3.1)
    assert [s.kind for s, _ in slots][:150] == [SlotKind.PACKET] * 150
    assert buf.target < 0.002
    late = [t - (0.005 + n * PT) for n, (s, t) in enumerate(slots[:150])]
    assert max(late[-50:]) < 0.003


def test_jitter_raises_the_target_and_avoids_concealment() -> None:
    rng = np.random.default_rng(1)
    arrivals = {n: 0.005 + n * PT + float(rng.uniform(0, 0.03)) for n in range(200)}
    for n in range(1, 200):                               # no reordering
        arrivals[n] = max(arrivals[n], arrivals[n - 1])
    buf = AudioJitterBuffer()
    slots = feed(buf, arrivals, until=4.5)
    assert buf.target > 0.02
    kinds = [s.kind for s, _ in slots[100:200]]
    assert kinds == [SlotKind.PACKET] * 100


def test_lost_packet_concealed_or_recovered_by_fec() -> None:
    arrivals = {n: 0.005 + n * PT for n in range(20) if n != 10}
    plain = [s.kind for s, _ in feed(AudioJitterBuffer(), dict(arrivals), until=0.5)][:20]
    assert plain[10] == SlotKind.CONCEAL and plain.count(SlotKind.PACKET) == 19
    fec_slots = feed(AudioJitterBuffer(AudioBufferConfig(fec=True)), dict(arrivals), until=0.5)[:20]
    assert fec_slots[10][0].kind == SlotKind.FEC and fec_slots[10][0].payload == bytes([11])
    assert [s.timestamp for s, _ in fec_slots] == [960 * n for n in range(20)]


def test_late_packet_dropped_and_pause_stops_concealment() -> None:
    arrivals = {n: 0.005 + n * PT for n in range(10)}
    arrivals[5] = 0.5                                     # far too late
    buf = AudioJitterBuffer(AudioBufferConfig(max_conceal=3))
    slots = feed(buf, arrivals, until=1.0)
    kinds = [s.kind for s, _ in slots]
    assert kinds[5] == SlotKind.CONCEAL and buf.counters.late == 1
    assert kinds[10:] == [SlotKind.CONCEAL] * 3           # sender paused: 3 slots, then silence
    buf.add(1000 + 60, 960 * 60, b"x", 1.3)               # resumes later: resynchronised
    assert buf.target > 0.1                               # the late packet's delay counted
    assert [s.kind for s in buf.pop(1.3 + buf.target)] == [SlotKind.PACKET]


def encode_tone(count: int, fec: bool) -> list[bytes]:
    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate, enc.format, enc.layout = 48000, "s16", "stereo"
    enc.bit_rate = 64000
    enc.options = {"application": "voip", "fec": "1" if fec else "0", "packet_loss": "20"}
    t = np.arange(960 * count) / 48000
    pcm = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
    packets = []
    for n in range(count):
        chunk = np.repeat(pcm[960 * n: 960 * (n + 1)], 2).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(chunk, format="s16", layout="stereo")
        frame.sample_rate, frame.pts = 48000, 960 * n
        packets += [bytes(p) for p in enc.encode(frame)]
    return packets


def test_opus_plc_and_fec_through_libopus() -> None:
    assert load_libopus() is not None
    packets = encode_tone(30, fec=True)
    dec = OpusPlcDecoder()
    frames = [dec.decode(p, 960 * n) for n, p in enumerate(packets[:20])]
    assert all(f is not None and f.samples == 960 and f.format.name == "s16" for f in frames)
    concealed = dec.conceal(960, 960 * 20)
    recovered = dec.decode_fec(packets[22], 960, 960 * 21)
    assert concealed is not None and concealed.samples == 960
    assert recovered is not None and recovered.samples == 960 and recovered.pts == 960 * 21
    energy = float(np.abs(recovered.to_ndarray().astype(np.float64)).mean())
    assert energy > 500                                   # the tone, not silence
