"""What the SFU keeps and spends to answer a subscriber's feedback (RFC 4585): the packets
cached per source for NACKs, and the limits that keep a subscriber's NACKs from turning the
SFU into an amplifier (:mod:`facecall.sfu.room` applies them)."""

from __future__ import annotations

from collections import OrderedDict

from aiortc.rtp import RtpPacket

#: packets kept per source to answer NACKs (about 3 s of 720p video)
CACHE_PACKETS = 512
#: retransmissions a slot earns per packet it forwards: a subscriber's NACKs can make the SFU
#: send it at most this share on top of its stream (plus :data:`RETRANSMIT_BURST`), however
#: often and for however many numbers it asks. RFC 4585 §3.4 lets a receiver send feedback
#: at will in immediate mode, so the bound is the sender's; libwebrtc likewise caps its
#: retransmission rate against its send rate (its RateLimiter)
RETRANSMIT_SHARE = 0.5
#: retransmissions a slot may have in hand (a lost key frame of 720p is some 20-50 packets)
RETRANSMIT_BURST = 64
#: sequence numbers looked at per NACK (RFC 4585 §6.2.1: 17 per FCI entry). The munger maps
#: back no more than its history (munger.HISTORY), so more cannot be answered anyway
MAX_NACK_SEQS = 1024


class PacketCache(OrderedDict[int, RtpPacket]):
    """The last :data:`CACHE_PACKETS` packets of one source by sequence number (RFC 4585 §6.2.1),
    and the last numbers NACKed to the publisher."""

    def __init__(self) -> None:
        super().__init__()
        self.requested: OrderedDict[int, None] = OrderedDict()

    def put(self, packet: RtpPacket) -> None:
        self[packet.sequence_number] = packet
        self.move_to_end(packet.sequence_number)
        if len(self) > CACHE_PACKETS:
            self.popitem(last=False)

    def first_request(self, seq: int) -> bool:
        """Whether ``seq`` is to be NACKed to the publisher: not asked for lately (so however
        many subscribers ask, a publisher resends a packet once)."""
        if seq in self.requested:
            return False
        self.requested[seq] = None
        if len(self.requested) > CACHE_PACKETS:
            self.requested.popitem(last=False)
        return True
