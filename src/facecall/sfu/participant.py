"""What a room of the SFU keeps per participant and per receive slot, and what it counts
(:mod:`facecall.sfu.room` does the forwarding with them).

* :class:`Participant`: one device in the room: its transport and offer, its own streams
  (learnt from the offer, its MID or its simulcast rids, RFC 8852), their NACK caches and rates,
  its simulcast layers ranked by key frame size, its receive slots, the receiver reports it
  gets (:mod:`facecall.sfu.upstream`) and what its downlink carries (:mod:`facecall.sfu.layers`).
* :class:`Slot`: one of its ``recvonly`` m-lines: the publisher (and stream) it forwards now,
  the one it moves to at the next key frame, its munger, its retransmission credit.
* :class:`RoomStats`: the room's counts (:mod:`facecall.sfu.metrics` exports them).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from aiortc.rtp import RtcpRrPacket, RtcpSrPacket, unpack_remb_fci

from facecall.sfu.feedback import RETRANSMIT_BURST, PacketCache
from facecall.sfu.layers import Downlink, RateMeter
from facecall.sfu.munger import RtpMunger, Vp8Munger
from facecall.sfu.reports import SlotSender
from facecall.sfu.sdp import Offer
from facecall.sfu.transport import SfuTransport
from facecall.sfu.upstream import Upstream

KINDS = ("audio", "video")
CLOCK_RATES = {"audio": 48000, "video": 90000}
#: SSRCs looked at in one REMB (a subscriber names at most its 2K slots)
MAX_REMB_SSRCS = 16


@dataclass(eq=False, slots=True)
class Slot:
    """One receive slot of a subscriber (one of its ``recvonly`` m-lines)."""

    owner: Participant
    mid: str
    kind: str
    payload_type: int
    munger: RtpMunger
    vp8: Vp8Munger | None
    feed: Participant | None = None
    """The publisher being forwarded now (its stream: ``munger.source``)."""
    pending: Participant | None = None
    """The publisher the slot moves to at its next key frame (video)."""
    pending_ssrc: int | None = None
    """The stream of ``pending`` it moves to: its layer, when it sends simulcast."""
    rate: RateMeter = field(default_factory=RateMeter)
    """What the slot sends (bit/s): the subscriber's feedback is weighed against it."""
    credit: float = RETRANSMIT_BURST
    """Retransmissions the slot may still send (:data:`RETRANSMIT_SHARE`)."""
    sender: SlotSender = field(default_factory=SlotSender)
    """What the slot sent, and its last sender report (RFC 3550 §6.4.1)."""
    failures: int = 0
    """Packets that could not be forwarded to it because of an error (logged sparsely)."""

    @property
    def target(self) -> Participant | None:
        return self.pending or self.feed


@dataclass(eq=False, slots=True)
class Participant:
    id: str
    transport: SfuTransport
    offer: Offer
    last_heard: float
    sources: dict[int, str] = field(default_factory=dict)
    """The participant's own streams: SSRC → kind."""
    payload_types: dict[str, int] = field(default_factory=dict)
    """Kind → the payload type of its sending m-line: the only one its packets may carry."""
    unlearned: dict[str, str] = field(default_factory=dict)
    """Sending m-lines without ``a=ssrc``: mid → kind, learnt from the MID extension."""
    slots: dict[str, list[Slot]] = field(default_factory=dict)
    slot_by_ssrc: dict[int, Slot] = field(default_factory=dict)
    caches: dict[int, PacketCache] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None
    rids: dict[str, int] = field(default_factory=dict)
    """Simulcast layers not learnt yet: rid → its place in ``a=simulcast``."""
    layer_of: dict[int, int] = field(default_factory=dict)
    """Video SSRC → its rid's place in ``a=simulcast`` (a simulcast publisher's)."""
    rates: dict[int, RateMeter] = field(default_factory=dict)
    """What comes on each of its streams (bit/s)."""
    sizes: dict[int, int] = field(default_factory=dict)
    """Video SSRC → the area of its last key frame (pixels)."""
    upstream: Upstream | None = None
    downlink: Downlink = field(default_factory=Downlink)

    def source(self, kind: str) -> int | None:
        """Its stream of ``kind`` (a simulcast publisher's: its best video layer)."""
        if kind == "video" and self.layer_of:
            return self.layers()[-1]
        return next((ssrc for ssrc, k in self.sources.items() if k == kind), None)

    def add_source(self, ssrc: int, kind: str) -> None:
        self.sources[ssrc] = kind
        self.caches[ssrc] = PacketCache()
        self.rates[ssrc] = RateMeter()
        if self.upstream is not None:
            self.upstream.add_stream(ssrc, CLOCK_RATES[kind])

    def layers(self) -> list[int]:
        """Its video streams, worst to best: by key frame size, then by rate, then by their
        place in ``a=simulcast`` (a browser lists them low to high)."""
        now = time.monotonic()
        return sorted((ssrc for ssrc, kind in self.sources.items() if kind == "video"),
                      key=lambda ssrc: (self.sizes.get(ssrc, 0), self.rates[ssrc].bps(now),
                                        self.layer_of.get(ssrc, 0)))

    def take_remb(self, fci: bytes, now: float) -> bool:
        """Its REMB (as a subscriber): its estimate for the slots it names
        (draft-alvestrand-rmcat-remb §2), weighed against what those slots send
        (:meth:`Downlink.on_remb`); True if that lowered its cap. Malformed: ignored."""
        try:
            estimate, ssrcs = unpack_remb_fci(fci)
        except ValueError:
            return False
        named = {slot for ssrc in ssrcs[:MAX_REMB_SSRCS]
                 if (slot := self.slot_by_ssrc.get(ssrc)) is not None and slot.kind == "video"}
        return bool(named) and self.downlink.on_remb(
            estimate, sum(s.rate.bps(now) for s in named), self.video_sent(now), now)

    def take_losses(self, report: RtcpRrPacket | RtcpSrPacket, now: float) -> bool:
        """The report blocks about its video slots (RFC 3550 §6.4.2): the worst fraction lost,
        weighed by :meth:`Downlink.on_loss`; True if that lowered its cap."""
        losses = [block.fraction_lost / 256 for block in report.reports
                  if (slot := self.slot_by_ssrc.get(block.ssrc)) is not None
                  and slot.kind == "video"]
        return bool(losses) and self.downlink.on_loss(max(losses), self.video_sent(now), now)

    def video_sent(self, now: float) -> float:
        """What its video slots send it now (bit/s)."""
        return sum(slot.rate.bps(now) for slot in self.slots.get("video", ()))

    def live_layers(self, now: float) -> list[tuple[int, float]]:
        """Its video streams that sent within the rate window, worst to best, with their
        rates; all of them (at rate 0) if none did."""
        layers = [(ssrc, self.rates[ssrc].bps(now)) for ssrc in self.layers()]
        return [layer for layer in layers if layer[1] > 0] or layers


@dataclass(slots=True)
class RoomStats:
    forwarded: int = 0
    dropped_unknown: int = 0
    plis_sent: int = 0
    nacks_answered: int = 0
    nacks_forwarded: int = 0
    dropped_invalid: int = 0
    """Packets on a known SSRC with another payload type, or too large."""
    nacks_refused: int = 0
    """NACKed numbers not answered: the slot's retransmission budget was spent."""
    forward_errors: int = 0
    sender_reports: int = 0
    """Publishers' SRs sent on to subscribers, translated for a slot (one per slot)."""
    congestions: int = 0
    """Subscribers' REMBs and receiver reports that lowered what they get."""
    layer_switches: int = 0
    """Video slots moved to another simulcast layer of the same publisher."""


def all_slots(p: Participant) -> list[Slot]:
    """The participant's receive slots, audio first."""
    return [slot for kind in KINDS for slot in p.slots.get(kind, ())]
