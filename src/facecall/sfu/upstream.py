"""Feedback from the SFU to a publisher: what its own receiver would tell it, so that its
congestion control runs against the publisher → SFU path.

A WebRTC sender sets its rate from its receiver's feedback; an SFU that forwards without
decoding is that receiver. Without feedback a browser stays at its start rate (~300 kbit/s)
and sends only the layers that fit it, so the SFU sends each publisher **receiver reports**
(RFC 3550 §6.4.2) about each of its streams every :data:`REPORT_INTERVAL`: fraction and
cumulative number lost, highest sequence number, interarrival jitter (§6.4.1, A.8), and
LSR/DLSR from its last sender report (§6.4.1), from which it takes the round-trip time. A
browser's loss-based controller raises its rate by some 8 % a second while under 2 % is lost
and backs off above 10 %: its upper layers come within seconds on a clean path.

No REMB (draft-alvestrand-rmcat-remb) goes upstream, though a delay-based estimate would see an
uplink fill before it loses: measured on this SFU (aiortc's port of libwebrtc's abs-send-time
estimator, fed with arrival times taken on the event loop), the estimate followed the
process's own scheduling delays, not the network's — on a busy machine it sent publishers down
to 5-40 kbit/s on a loopback path — and it cost some 4.5 µs of every forwarded packet
(docs/benchmarks.md, session 20). Arrival times stamped by the kernel, or transport-wide
feedback (TWCC) with the estimate on the sender, are what would make one worth sending.

The statistics are aiortc's own (``StreamStatistics``, which its ``RTCRtpReceiver`` keeps for
the same reports: a private name, aiortc pinned in pyproject.toml and the use tested in
tests/sfu/test_simulcast.py).
"""

from __future__ import annotations

import time

from aiortc.rtcrtpreceiver import StreamStatistics
from aiortc.rtp import RtcpReceiverInfo, RtcpRrPacket, RtcpSrPacket, RtpPacket

#: seconds between receiver reports to a publisher (a browser receiver sends them about once a
#: second, RFC 3550 §6.2's minimum 5 s reduced as RFC 8108 §5.2 allows for WebRTC)
REPORT_INTERVAL = 1.0


class Upstream:
    """The receive statistics of one publisher's streams, and the feedback made of them.

    :param rtcp_ssrc: the SSRC the SFU's RTCP towards this publisher goes out under.
    """

    def __init__(self, rtcp_ssrc: int) -> None:
        self.rtcp_ssrc = rtcp_ssrc
        self._streams: dict[int, StreamStatistics] = {}
        self._last_sr: dict[int, tuple[int, float]] = {}
        self._next_report = 0.0

    def add_stream(self, ssrc: int, clock_rate: int) -> None:
        """Keep statistics for one of the publisher's streams from now on."""
        self._streams.setdefault(ssrc, StreamStatistics(clock_rate))

    def on_rtp(self, packet: RtpPacket) -> None:
        """Count a packet of one of its streams (others are not counted)."""
        if (stream := self._streams.get(packet.ssrc)) is not None:
            stream.add(packet)

    def on_sender_report(self, packet: RtcpSrPacket) -> None:
        """Remember a sender report of one of its streams (for LSR and DLSR)."""
        if packet.ssrc in self._streams:
            self._last_sr[packet.ssrc] = ((packet.sender_info.ntp_timestamp >> 16) & 0xFFFFFFFF,
                                          time.monotonic())

    def report(self, now: float) -> RtcpRrPacket | None:
        """A receiver report about every stream that sent something, when one is due."""
        if now < self._next_report:
            return None
        self._next_report = now + REPORT_INTERVAL
        blocks = []
        for ssrc, stream in self._streams.items():
            if stream.max_seq is None:
                continue
            lsr, dlsr = 0, 0
            if (last := self._last_sr.get(ssrc)) is not None:
                lsr, delay = last[0], now - last[1]
                dlsr = int(delay * 65536) if 0 < delay < 65536 else 0
            blocks.append(RtcpReceiverInfo(
                ssrc=ssrc, fraction_lost=stream.fraction_lost, packets_lost=stream.packets_lost,
                highest_sequence=(stream.cycles + stream.max_seq) & 0xFFFFFFFF,
                jitter=stream.jitter, lsr=lsr, dlsr=dlsr))
        return RtcpRrPacket(ssrc=self.rtcp_ssrc, reports=blocks[:31]) if blocks else None
