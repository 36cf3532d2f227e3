"""RTCP sender reports for the SFU's slots, so that a subscriber can synchronise a publisher's
audio with its video (lip sync).

A receiver plays two streams in sync through their sender reports (RFC 3550 §6.4.1): each SR
pairs an NTP timestamp of the sender's wallclock with the RTP timestamp that corresponds to the
same instant, so the RTP timestamps of the audio and the video stream of one sender map onto
one clock. A slot (:mod:`facecall.sfu.room`) is a stream of the SFU's own — its SSRC, its
sequence numbers, its timestamps (:class:`~facecall.sfu.munger.RtpMunger`) — so the
publisher's SRs cannot reach the subscriber as they are. As a translator does with the SRs it
forwards (RFC 3550 §7.2: the sender info is changed where the translation changed the stream),
with the counts of the stream the SFU sends under its own SSRC (as a mixer's, §7.3), each
publisher SR is rewritten for every slot the source feeds now:

* **SSRC** — the slot's;
* **NTP timestamp** — the publisher's, unchanged: the audio and video slots of one publisher
  then share its wallclock, which is what a receiver needs to line them up;
* **RTP timestamp** — the publisher's, moved into the slot's timestamp space by the munger's
  current offset (:meth:`~facecall.sfu.munger.RtpMunger.to_slot_timestamp`). The mapping is
  linear, so an SR describes the slot as exactly as it described the source;
* **packet and octet counts** — what the slot itself has sent (:class:`SlotSender`), not the
  publisher's: a slot carries several publishers in turn, and its receiver compares these
  counts with what it received on the slot's SSRC (§6.4.1: payload octets, no headers);
* **report blocks** — none: the publisher's are about the streams the SFU sends it.

An SR whose source feeds no slot now is dropped, as is one for a slot that is still waiting
for its new publisher's key frame (the munger has no offset for that source yet), one that
carries no wallclock (NTP timestamp zero, §6.4.1), and one from a participant about an SSRC
that is not its own (the room checks that). The SR leaves in a compound packet after the
transport's empty RR (:meth:`~facecall.sfu.transport.SfuTransport.send_rtcp`; §6.1: a compound
packet begins with a report packet). At most one SR goes to a slot per
:data:`SR_INTERVAL`, so a publisher flooding SRs does not multiply them towards everyone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiortc.rtp import RtcpSenderInfo, RtcpSrPacket

if TYPE_CHECKING:
    from facecall.sfu.room import Slot

#: at most one sender report per slot in this many seconds. Senders report about once a
#: second (RFC 3550 §6.2: a 5 s minimum, less at high bandwidth; libwebrtc sends video SRs
#: every second); more often is a publisher flooding the SFU's fan-out
SR_INTERVAL = 0.25
_COUNTER = 0xFFFFFFFF  # packet and octet counts are 32 bits and wrap (RFC 3550 §6.4.1)


@dataclass(slots=True)
class SlotSender:
    """What one slot has sent, for its sender reports (RFC 3550 §6.4.1 sender info)."""

    packets: int = 0
    """RTP packets sent in the slot (retransmissions too: they were sent on its SSRC)."""
    octets: int = 0
    """Their payload octets (no header, no padding)."""
    last_report: RtcpSenderInfo | None = None
    """The sender info of the last SR sent for the slot."""
    last_report_at: float | None = None
    """When it was sent (``time.monotonic``)."""

    def count(self, payload_octets: int) -> None:
        """One packet sent in the slot."""
        self.packets += 1
        self.octets += payload_octets

    def report(self, ssrc: int, ntp_timestamp: int, rtp_timestamp: int) -> RtcpSrPacket:
        """The slot's SR (SSRC ``ssrc``) for this NTP/RTP timestamp pair, with its own counts."""
        return RtcpSrPacket(ssrc=ssrc, sender_info=RtcpSenderInfo(
            ntp_timestamp=ntp_timestamp, rtp_timestamp=rtp_timestamp,
            packet_count=self.packets & _COUNTER, octet_count=self.octets & _COUNTER))


async def relay_sender_report(report: RtcpSrPacket, slots: Iterable[Slot], now: float) -> int:
    """Send a publisher's SR about one of its sources, translated, to the subscriber of every
    slot in ``slots`` (the slots routed from that source) that the source feeds now; returns
    how many were sent. ``now``: ``time.monotonic()``."""
    info = report.sender_info
    if info.ntp_timestamp == 0:  # no wallclock: nothing to synchronise with
        return 0
    sent = 0
    for slot in tuple(slots):  # the room may rebuild its routes while we await
        rtp_timestamp = slot.munger.to_slot_timestamp(report.ssrc, info.rtp_timestamp)
        if rtp_timestamp is None:  # fed by another source, or waiting for this one's key frame
            continue
        sender = slot.sender
        if sender.last_report_at is not None and now - sender.last_report_at < SR_INTERVAL:
            continue
        sr = sender.report(slot.munger.ssrc, info.ntp_timestamp, rtp_timestamp)
        if await slot.owner.transport.send_rtcp([sr]):
            sender.last_report, sender.last_report_at = sr.sender_info, now
            sent += 1
    return sent
