"""What rewriting a packet for a subscriber costs the SFU (docs/sfu.md), beside the anchor:
aiortc's own RTP parse and serialize of the same packet, which any forwarding does, measured
in the same run.

Per packet: parse (aiortc ``RtpPacket.parse``), munge (``RtpMunger.forward``: SSRC, sequence,
timestamp, NACK history; ``Vp8Munger.forward``: picture numbers), serialize. The packets are
real VP8 payloads from aiortc's encoder (720p key frame and delta frames), ~1,200 bytes.

    .venv/bin/python bench/sfu_forward.py [--seconds 2]
"""

from __future__ import annotations

import argparse
import fractions
import time

import av
import numpy as np
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.rtp import RtpPacket

from facecall.sfu.munger import RtpMunger, Vp8Munger


def vp8_packets(pictures: int = 30) -> list[bytes]:
    """Serialized RTP packets of ``pictures`` 1280x720 VP8 pictures."""
    encoder = Vp8Encoder()
    out, seq = [], 0
    for i in range(pictures):
        image = np.random.default_rng(i).integers(0, 255, (720, 1280, 3), np.uint8)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts, frame.time_base = i * 3000, fractions.Fraction(1, 90000)
        payloads, timestamp = encoder.encode(frame, force_keyframe=i == 0)
        for payload in payloads:
            out.append(bytes(RtpPacket(payload_type=96, sequence_number=seq, timestamp=timestamp,
                                       ssrc=1234, payload=payload).serialize()))
            seq += 1
    return out


def per_packet_us(packets: list[bytes], seconds: float, munge: bool) -> float:
    munger, vp8 = RtpMunger(5678, 90000), Vp8Munger()
    munger.switch_to(1234)
    count, started, now = 0, time.perf_counter(), 0.0
    while (elapsed := time.perf_counter() - started) < seconds:
        for raw in packets:
            packet = RtpPacket.parse(raw)
            if munge:
                now += 0.001
                packet.sequence_number = count % 65536  # one stream, in order, however long
                sent = munger.forward(packet, now)
                assert sent is not None
                sent.payload = vp8.forward(1234, sent.payload)
                packet = sent
            packet.serialize()
            count += 1
    return elapsed / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement (default 2)")
    args = parser.parse_args()
    packets = vp8_packets()
    size = sum(map(len, packets)) / len(packets)
    ours = per_packet_us(packets, args.seconds, munge=True)
    anchor = per_packet_us(packets, args.seconds, munge=False)
    print(f"{len(packets)} packets, {size:.0f} bytes on average")
    print(f"parse + munge + serialize: {ours:6.2f} µs per packet ({1e6 / ours:,.0f} packets/s on one core)")
    print(f"parse + serialize (aiortc): {anchor:6.2f} µs per packet")
    print(f"ratio: {ours / anchor:.2f}")


if __name__ == "__main__":
    main()
