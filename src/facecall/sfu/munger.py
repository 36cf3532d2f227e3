"""RTP munging: what a selective forwarding unit does to every packet it forwards, so that a
subscriber sees one steady stream per slot while the SFU switches what feeds it — another
simulcast layer of the same publisher as the bandwidth changes, or another publisher when the
dominant speaker changes (the "last-N" video slot).

A receiver takes an RTP stream as one source (RFC 3550 §5.1): its SSRC never changes, its
sequence number goes up by one per packet (a gap is a loss, and is NACKed: RFC 4585 §6.2.1),
its timestamp advances with the media clock. Packets from two sources have unrelated numbers,
so each forwarded packet is rewritten:

* **SSRC** — the slot's own (:attr:`RtpMunger.ssrc`), the one the subscriber's SDP announced;
* **sequence number** — the source's, shifted by an offset fixed when the source starts feeding
  the slot, so that its first packet follows the last one sent; the source's own gaps and
  reordering carry over unchanged, and a retransmission request for a forwarded number maps
  back to the source's (:meth:`RtpMunger.source_of`);
* **timestamp** — the same, with the offset chosen so that the new source's first packet
  advances on the last one sent by the wall-clock time between them (in media clock units), as
  if one source had been sending all along.

Packets of a source that are older than its first forwarded one (late, reordered across the
switch) are dropped: their numbers would collide with what was sent before. Comparisons use
extended sequence numbers (RFC 3550 §A.1), so wrap-around at 2^16 is no discontinuity.

VP8 pictures carry numbers of their own in the payload descriptor (RFC 7741 §4.2: PictureID,
TL0PICIDX), which a decoder uses to find lost references; :class:`Vp8Munger` shifts them the
same way. A switch of video source must land on a key frame (the caller waits for one:
:func:`facecall.sfu.vp8.is_keyframe`), else the subscriber's decoder has no reference.
"""

from __future__ import annotations

import dataclasses
import time
from collections import OrderedDict
from dataclasses import dataclass

from aiortc.rtp import RtpPacket

from facecall.sfu.vp8 import picture_numbers, rewrite_picture_numbers

SEQ_MOD = 1 << 16
TS_MOD = 1 << 32
#: forwarded packets remembered for mapping NACKs back to the source (at 30 fps and ~10
#: packets a picture, about 3 s)
HISTORY = 1024


def _newer(a: int, b: int, modulus: int) -> bool:
    """Whether ``a`` is after ``b`` in a number space that wraps at ``modulus``: within half of
    it ahead (RFC 3550 §A.1's rule for sequence numbers)."""
    return a != b and (a - b) % modulus < modulus // 2


@dataclass(slots=True)
class _Feed:
    """The source feeding the slot now, and the offsets fixed at its first packet. Sequence
    numbers are kept extended (RFC 3550 §A.1: the 16-bit number plus 2^16 per wrap), so that a
    packet from before the first is told apart however long the feed lasts."""

    ssrc: int
    started: bool = False
    first_ext: int = 0
    highest_ext: int = 0
    seq_offset: int = 0
    ts_offset: int = 0

    def extend(self, seq: int) -> int:
        """The extended number of ``seq``: the one nearest the highest seen."""
        delta = (seq - self.highest_ext) % SEQ_MOD
        if delta >= SEQ_MOD // 2:
            delta -= SEQ_MOD
        return self.highest_ext + delta


class RtpMunger:
    """One outgoing RTP stream of a subscriber (one slot), fed by one source at a time.

    :param ssrc: the slot's SSRC, as the subscriber's SDP announced it.
    :param clock_rate: the media clock (90000 for video, 48000 for Opus).
    :param first_seq, first_ts: where the slot's numbering starts (random in production,
        RFC 3550 §5.1).
    """

    def __init__(self, ssrc: int, clock_rate: int, *, first_seq: int = 0, first_ts: int = 0) -> None:
        self.ssrc = ssrc
        self.clock_rate = clock_rate
        self._feed: _Feed | None = None
        self._last_seq = (first_seq - 1) % SEQ_MOD
        self._last_ts = (first_ts - 1) % TS_MOD
        self._last_arrival: float | None = None
        self._history: OrderedDict[int, tuple[int, int]] = OrderedDict()
        self.forwarded = 0
        self.dropped = 0

    @property
    def source(self) -> int | None:
        """The SSRC of the source feeding the slot, or None."""
        return None if self._feed is None else self._feed.ssrc

    def switch_to(self, source_ssrc: int | None) -> None:
        """Feed the slot from ``source_ssrc`` from its next packet on (None: from nobody).
        Switching to the source already feeding it changes nothing."""
        if source_ssrc is None:
            self._feed = None
        elif self._feed is None or self._feed.ssrc != source_ssrc:
            self._feed = _Feed(source_ssrc)

    def forward(self, packet: RtpPacket, arrival: float) -> RtpPacket | None:
        """The packet as the subscriber gets it (rewritten in place), or None if it is not
        forwarded (another source's, or older than the feed's first). ``arrival``: seconds on
        any steady clock."""
        feed = self._feed
        if feed is None or packet.ssrc != feed.ssrc:
            return None
        seq = packet.sequence_number
        if not feed.started:
            elapsed = 0.0 if self._last_arrival is None else max(0.0, arrival - self._last_arrival)
            step = max(1, round(elapsed * self.clock_rate))
            feed.started, feed.first_ext, feed.highest_ext = True, seq, seq
            feed.seq_offset = (self._last_seq + 1 - seq) % SEQ_MOD
            feed.ts_offset = (self._last_ts + step - packet.timestamp) % TS_MOD
            ext = seq
        else:
            ext = feed.extend(seq)
            if ext < feed.first_ext:
                self.dropped += 1  # from before the switch: its number was someone else's
                return None
        out_seq = (seq + feed.seq_offset) % SEQ_MOD
        out_ts = (packet.timestamp + feed.ts_offset) % TS_MOD
        if ext >= feed.highest_ext:  # the newest yet: the next feed goes on from it
            feed.highest_ext = ext
            self._last_seq, self._last_ts, self._last_arrival = out_seq, out_ts, arrival
        self._history[out_seq] = (feed.ssrc, seq)
        self._history.move_to_end(out_seq)
        while len(self._history) > HISTORY:
            self._history.popitem(last=False)
        packet.ssrc, packet.sequence_number, packet.timestamp = self.ssrc, out_seq, out_ts
        self.forwarded += 1
        return packet

    def to_slot_timestamp(self, source_ssrc: int, source_ts: int) -> int | None:
        """``source_ts``, an RTP timestamp of ``source_ssrc``, in the slot's timestamp space
        (through the offset fixed at the feed's first packet): how a sender report's RTP
        timestamp is translated for the slot (RFC 3550 §6.4.1, §7.2). None if that source does
        not feed the slot now or has sent nothing through it yet (no offset fixed)."""
        feed = self._feed
        if feed is None or feed.ssrc != source_ssrc or not feed.started:
            return None
        return (source_ts + feed.ts_offset) % TS_MOD

    def source_of(self, out_seq: int) -> tuple[int, int] | None:
        """``(source SSRC, source sequence number)`` of a forwarded packet, for a NACK
        (RFC 4585 §6.2.1) the subscriber sent about ``out_seq``; None if it is not remembered."""
        return self._history.get(out_seq)


class Vp8Munger:
    """The VP8 picture numbers of one slot (RFC 7741 §4.2), shifted at each switch of source
    as :class:`RtpMunger` shifts sequence numbers: the 15-bit PictureID and the 8-bit
    TL0PICIDX go on from the last ones sent."""

    def __init__(self) -> None:
        self._source: int | None = None
        self._picture_offset = 0
        self._tl0_offset = 0
        self._last_picture: int | None = None
        self._last_tl0: int | None = None

    def forward(self, source_ssrc: int, payload: bytes) -> bytes:
        """The payload with its descriptor's numbers shifted for this slot (a payload without
        them, or one that is not VP8, as it is)."""
        numbers = picture_numbers(payload)
        if numbers is None:
            return payload
        picture, tl0 = numbers
        if source_ssrc != self._source:
            self._source = source_ssrc
            if picture is not None:
                after = 0 if self._last_picture is None else self._last_picture + 1
                self._picture_offset = (after - picture) % (1 << 15)
            if tl0 is not None:
                after = 0 if self._last_tl0 is None else self._last_tl0 + 1
                self._tl0_offset = (after - tl0) % (1 << 8)
        new_picture = None if picture is None else (picture + self._picture_offset) % (1 << 15)
        new_tl0 = None if tl0 is None else (tl0 + self._tl0_offset) % (1 << 8)
        if new_picture is not None and (self._last_picture is None or _newer(
                new_picture, self._last_picture, 1 << 15)):
            self._last_picture = new_picture
        if new_tl0 is not None and (self._last_tl0 is None or _newer(new_tl0, self._last_tl0, 1 << 8)):
            self._last_tl0 = new_tl0
        return rewrite_picture_numbers(payload, new_picture, new_tl0)


def abs_send_time() -> int:
    """Now as abs-send-time: NTP seconds in 6.18 fixed point, the low 24 bits (webrtc.org's
    abs-send-time extension, as aiortc's sender writes it). The NTP era's offset from the Unix
    epoch, 2,208,988,800 s, is a multiple of 64 s, so the Unix clock gives the same bits. The
    subscriber's delay-based estimate is then of the path from the SFU, not of the publishers'
    clocks."""
    return int(time.time() * 262144) & 0xFFFFFF


def copy_packet(packet: RtpPacket) -> RtpPacket:
    """A packet to rewrite for one subscriber, leaving the original (cached, and sent to
    others) as it came."""
    out = RtpPacket(payload_type=packet.payload_type, marker=packet.marker,
                    sequence_number=packet.sequence_number, timestamp=packet.timestamp,
                    ssrc=packet.ssrc, payload=packet.payload)
    out.csrc = list(packet.csrc)
    out.extensions = dataclasses.replace(packet.extensions)
    return out
