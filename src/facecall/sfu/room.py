"""A room of the SFU: participants join with an offer (:mod:`facecall.sfu.sdp`), and every
participant's audio and video is forwarded, without decoding, to the other participants'
receive slots.

* **Slots.** A participant's ``recvonly`` m-lines are its slots: each is one steady outgoing
  stream (:class:`~facecall.sfu.munger.RtpMunger`: the slot's SSRC, sequence numbers and
  timestamps, RFC 3550 §5.1) fed by one publisher at a time; video slots also shift the VP8
  picture numbers (:class:`~facecall.sfu.munger.Vp8Munger`, RFC 7741 §4.2). Packets leave with
  the slot's payload type and MID (RFC 8843 §9.2).
* **Who goes in a slot.** With no more publishers than slots, everyone gets one and keeps it.
  With more, the slots go to the most recent dominant speakers
  (:class:`~facecall.sfu.speaker.DominantSpeaker`, RFC 6464 levels), then to the earliest
  joined. A slot keeps its publisher while that publisher stays chosen.
* **Key frames.** A video slot moves to a new publisher only at one of its key frames
  (:func:`~facecall.sfu.vp8.is_keyframe`), forwarding the old one until then; the SFU asks for
  it with a PLI (RFC 4585 §6.3.1), repeated while it does not come. A subscriber's PLI or FIR
  (RFC 5104 §4.3.1) on a slot becomes a PLI to the slot's publisher, at most one per
  :data:`PLI_INTERVAL` per publisher.
* **Losses.** A subscriber's NACK (RFC 4585 §6.2.1) is answered from a per-source cache of the
  last :data:`~facecall.sfu.feedback.CACHE_PACKETS` packets; what is not there is NACKed to
  the publisher, whose retransmission is forwarded like any packet. Retransmissions to a slot
  are bounded by a budget earned by what it forwards
  (:data:`~facecall.sfu.feedback.RETRANSMIT_SHARE`), and a publisher is asked for a packet once.
* **Untrusted input.** A participant controls its SDP and every byte of its RTP and RTCP. Its
  packets count only on the SSRCs and payload types of its own sending m-lines, an SSRC is
  one participant's in the room, payloads are at most :data:`MAX_RTP_PAYLOAD`, and a failure
  while forwarding to one slot stays with that slot (docs/sfu.md, "Hardening").
* **Sender reports.** A publisher's SR is sent on, translated, for each slot its source feeds
  (:func:`~facecall.sfu.reports.relay_sender_report`, RFC 3550 §6.4.1, §7.2): lip sync.
* **Liveness.** A participant whose transport closes or fails, or from whom nothing has come
  for ``silence_timeout`` seconds (a crashed client sends no DTLS close), is removed.
* **Simulcast.** A publisher may send its video as up to three layers (RFC 8853; each SSRC
  learnt from its rid, RFC 8852). Each video slot gets the layer its subscriber's downlink
  pays for (:mod:`facecall.sfu.layers`: REMB and receiver reports from the subscriber), moving
  to another at that layer's key frame like to another publisher. Layers are ranked by the size
  of their key frames (:func:`~facecall.sfu.vp8.keyframe_size`), then by rate.
* **Feedback upstream.** Every publisher gets receiver reports about its streams
  (:mod:`facecall.sfu.upstream`), so its congestion control sees the path to the SFU; what
  goes to a subscriber carries the SFU's own abs-send-time, so the subscriber's estimate is
  of the path from the SFU.

Not here yet: TWCC (RFC 8888 / transport-cc), RTX (RFC 4588).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Sequence

from aiortc.rtcicetransport import RTCIceServer
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    AnyRtcpPacket,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSrPacket,
    RtpPacket,
)

from facecall.ice_hosts import gathered_on
from facecall.sfu import metrics
from facecall.sfu.feedback import (
    MAX_NACK_SEQS,
    RETRANSMIT_BURST,
    RETRANSMIT_SHARE,
)
from facecall.sfu.layers import allocate
from facecall.sfu.munger import RtpMunger, Vp8Munger, abs_send_time, copy_packet
from facecall.sfu.participant import CLOCK_RATES, KINDS, Participant, RoomStats, Slot, all_slots
from facecall.sfu.reports import relay_sender_report
from facecall.sfu.sdp import Offer, SfuOfferError, build_answer, parse_offer
from facecall.sfu.speaker import DominantSpeaker
from facecall.sfu.transport import SfuTransport
from facecall.sfu.upstream import Upstream
from facecall.sfu.vp8 import is_keyframe, keyframe_size

logger = logging.getLogger(__name__)

SLOTS = 3
#: at most one PLI per publisher in this many seconds (a PLI storm freezes VP8: notes)
PLI_INTERVAL = 0.5
#: the largest RTP payload taken (bytes); bigger ones are dropped, not cached or forwarded. A
#: WebRTC sender keeps its packets within the path MTU (RFC 8085 §3.2: no IP fragmentation):
#: 1500 octets of Ethernet less the IPv4, UDP and fixed RTP headers. It bounds the cache at
#: CACHE_PACKETS x 1.5 kB per source and the size of every copy sent
MAX_RTP_PAYLOAD = 1500 - 20 - 8 - 12
#: seconds between speaker decisions, PLI repeats and liveness checks
TICK = 0.3


class RoomError(Exception):
    """A participant cannot join (already in the room, or the room is closed)."""


class Room:
    """Participants and the forwarding between them.

    :param slots: receive slots per kind an offer may have (K).
    :param silence_timeout: seconds without any packet after which a participant is removed.
    :param ice_servers: STUN/TURN servers for the SFU's own candidates (default: none).
    :param host_addresses: the addresses its host candidates are gathered on (None: as the
        context it runs in says: :mod:`facecall.ice_hosts`, by default every interface but
        loopback).
    :param on_slots: called (no arguments) whenever slots may have changed hands: read
        :meth:`slot_sources` then (:mod:`facecall.sfu.rooms` tells the devices). Also called
        after every :meth:`leave` (the room's own too: gone silent, transport closed), once
        the participant is out: :mod:`facecall.sfu.rooms` learns there who left.
    :param on_speaker: called (no arguments) whenever :attr:`speaker_id` changed.
    """

    def __init__(self, slots: int = SLOTS, *, silence_timeout: float = 15.0,
                 ice_servers: Sequence[RTCIceServer] = (),
                 host_addresses: Sequence[str] | None = None,
                 on_slots: Callable[[], None] | None = None,
                 on_speaker: Callable[[], None] | None = None) -> None:
        self.slots = slots
        self.on_slots = on_slots
        self.on_speaker = on_speaker
        self._told_speaker: str | None = None
        self.silence_timeout = silence_timeout
        self.ice_servers = list(ice_servers)
        self.host_addresses = tuple(host_addresses) if host_addresses is not None else None
        self.participants: dict[str, Participant] = {}
        self.speaker = DominantSpeaker()
        self.stats = RoomStats()
        self._reported = RoomStats()  # what metrics has of self.stats
        metrics.ROOMS.inc()
        self._by_transport: dict[SfuTransport, Participant] = {}
        self._routes: dict[int, list[Slot]] = {}
        self._recent: list[str] = []
        self._last_pli: dict[int, float] = {}
        self._ticker: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    # --- membership

    async def join(self, participant_id: str, offer_sdp: str) -> str:
        """Add a participant from its offer; returns the SFU's answer. Media flows once ICE and
        DTLS complete (in the background). :class:`~facecall.sfu.sdp.SfuOfferError` for an
        offer that does not fit (nothing changes), :class:`RoomError` for a duplicate id."""
        if self._closed:
            raise RoomError("the room is closed")
        if participant_id in self.participants:
            raise RoomError(f"{participant_id!r} is already in the room")
        offer = parse_offer(offer_sdp, self.slots)
        transport = SfuTransport(self, ice_servers=self.ice_servers)
        try:
            if self.host_addresses is None:  # the caller's choice (the context it runs in)
                await transport.gather()
            else:
                await gathered_on(self.host_addresses, transport.gather())
            answer = self._admit(participant_id, offer, transport)
        except BaseException:  # nothing changed: the gathered sockets go too
            await transport.close()
            raise
        p = self.participants[participant_id]
        p.task = asyncio.ensure_future(self._connect(p))
        if self._ticker is None:
            self._ticker = asyncio.ensure_future(self._tick())
        await self._assign()
        return answer

    def _admit(self, participant_id: str, offer: Offer, transport: SfuTransport) -> str:
        """Add the participant (after the transport gathered: the room may have changed)."""
        if self._closed:
            raise RoomError("the room is closed")
        if participant_id in self.participants:  # joined twice concurrently
            raise RoomError(f"{participant_id!r} is already in the room")
        for m in offer.media:  # one SSRC, one participant: routing goes by SSRC
            if m.sends and m.ssrc is not None and self._ssrc_taken(m.ssrc):
                raise SfuOfferError(f"SSRC {m.ssrc} is already used in this room")
        p = Participant(participant_id, transport, offer, time.monotonic(),
                        upstream=Upstream(transport.rtcp_ssrc))
        for m in offer.media:
            if m.sends:
                p.payload_types[m.kind] = m.codec.payloadType
            if m.sends and m.rids:
                p.rids = {rid: i for i, rid in enumerate(m.rids)}
            elif m.sends and m.ssrc is not None:
                p.add_source(m.ssrc, m.kind)
            elif m.sends:
                p.unlearned[m.mid] = m.kind
        taken = set(p.sources)
        slot_ssrcs: dict[str, int] = {}
        for kind in KINDS:
            p.slots[kind] = []
            for m in offer.slots(kind):
                ssrc = _fresh_ssrc(taken)
                slot = Slot(p, m.mid, kind, m.codec.payloadType,
                            RtpMunger(ssrc, CLOCK_RATES[kind], first_seq=secrets.randbits(16),
                                      first_ts=secrets.randbits(32)),
                            Vp8Munger() if kind == "video" else None)
                p.slots[kind].append(slot)
                p.slot_by_ssrc[ssrc] = slot
                slot_ssrcs[m.mid] = ssrc
        transport.configure(offer.header_extensions, [m.codec.payloadType for m in offer.media],
                            list(slot_ssrcs.values()))
        answer = build_answer(offer, ice=transport.ice_parameters, candidates=transport.candidates,
                              fingerprints=transport.fingerprints, slot_ssrcs=slot_ssrcs,
                              session_id=secrets.randbits(62))
        self.participants[participant_id] = p
        self._by_transport[transport] = p
        metrics.PARTICIPANTS.inc()
        return answer

    async def leave(self, participant_id: str) -> None:
        """Remove a participant: its slots in others' views are freed (or refilled), its
        transport closed."""
        p = self.participants.pop(participant_id, None)
        if p is None:
            return
        metrics.PARTICIPANTS.dec()
        self._by_transport.pop(p.transport, None)
        for ssrc in p.sources:
            self._last_pli.pop(ssrc, None)
        self.speaker.remove(participant_id)
        if participant_id in self._recent:
            self._recent.remove(participant_id)
        for other in self.participants.values():
            for slot in all_slots(other):
                if slot.pending is p:
                    slot.pending = slot.pending_ssrc = None
                if slot.feed is p:
                    slot.feed = None
                    slot.munger.switch_to(None)
        await self._assign()
        self._tell_speaker()
        if p.task is not None and p.task is not asyncio.current_task():
            p.task.cancel()
        await p.transport.close()
        logger.info("sfu room: %s left (%d remain)", participant_id, len(self.participants))

    async def close(self) -> None:
        """Remove everyone and stop."""
        if not self._closed:
            metrics.ROOMS.dec()
        self._closed = True
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        for participant_id in list(self.participants):
            await self.leave(participant_id)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        metrics.report(self.stats, self._reported)

    @property
    def speaker_id(self) -> str | None:
        """The dominant speaker (:class:`~facecall.sfu.speaker.DominantSpeaker`) among the
        participants, or None before anyone spoke and after they left."""
        dominant = self.speaker.dominant
        return dominant if dominant in self.participants else None

    def _tell_speaker(self) -> None:
        if (speaker := self.speaker_id) != self._told_speaker:
            self._told_speaker = speaker
            if self.on_speaker is not None:
                self.on_speaker()

    def slot_sources(self, participant_id: str) -> dict[str, str | None]:
        """Who feeds each of a participant's slots now: mid → participant id (or None)."""
        p = self.participants[participant_id]
        return {s.mid: s.feed.id if s.feed else None for s in all_slots(p)}

    async def _connect(self, p: Participant) -> None:
        ok = await p.transport.connect(p.offer.ice, p.offer.candidates, p.offer.dtls,
                                       p.offer.sfu_dtls_role)
        if self.participants.get(p.id) is not p:
            return
        if not ok:
            logger.info("sfu room: %s could not connect (ICE %s, DTLS %s)", p.id,
                        p.transport.ice_state, p.transport.state)
            await self.leave(p.id)
            return
        p.last_heard = time.monotonic()
        await self._assign()

    # --- PacketHandler (called by the transports)

    async def handle_rtp(self, transport: SfuTransport, packet: RtpPacket, arrival: float) -> None:
        p = self._by_transport.get(transport)
        if p is None:
            return
        kind = p.sources.get(packet.ssrc)
        if kind is None and (kind := await self._learn(p, packet)) is None:
            self.stats.dropped_unknown += 1
            return
        if packet.payload_type != p.payload_types.get(kind) or len(packet.payload) > MAX_RTP_PAYLOAD:
            self.stats.dropped_invalid += 1
            return
        p.last_heard = arrival
        if kind == "audio" and packet.extensions.audio_level is not None:
            voice, level = packet.extensions.audio_level
            # V = 0 from a sender without voice detection (aiortc) means "unknown"
            self.speaker.add(p.id, level, arrival, True if voice else None)
        p.caches[packet.ssrc].put(packet)
        p.rates[packet.ssrc].add(len(packet.payload), arrival)
        if p.upstream is not None:
            p.upstream.on_rtp(packet)
        keyframe = kind == "video" and is_keyframe(packet.payload)
        if keyframe and (size := keyframe_size(packet.payload)) is not None \
                and p.sizes.get(packet.ssrc) != (area := size[0] * size[1]):
            p.sizes[packet.ssrc] = area
            if p.layer_of:  # the layers' ranking may have changed (this key frame can switch)
                await self._assign()
        moved = False
        try:
            for slot in self._routes.get(packet.ssrc, ()):
                if slot.pending_ssrc == packet.ssrc:
                    if not keyframe:
                        continue
                    if slot.feed is p:
                        self.stats.layer_switches += 1
                    slot.feed, slot.pending, slot.pending_ssrc, moved = p, None, None, True
                    slot.munger.switch_to(packet.ssrc)
                elif slot.munger.source != packet.ssrc:
                    continue
                await self._forward(slot, packet, arrival)
        finally:
            if moved:
                self._rebuild_routes()

    async def _learn(self, p: Participant, packet: RtpPacket) -> str | None:
        """The kind of a new SSRC of ``p``'s: a simulcast layer by the rid it carries (RFC 8852
        §3.1, one the offer listed and not learnt yet), else by the MID extension naming one
        of its sending m-lines that announced none (RFC 8843 §9.2); None if neither, the
        payload type is not that m-line's, or another participant has the SSRC."""
        rid = packet.extensions.rtp_stream_id
        if rid is not None and rid in p.rids:
            kind: str | None = "video"
        else:
            rid = None
            kind = p.unlearned.get(packet.extensions.mid or "")
        if kind is None or packet.payload_type != p.payload_types.get(kind) \
                or self._ssrc_taken(packet.ssrc):
            return None
        if rid is not None:
            p.layer_of[packet.ssrc] = p.rids.pop(rid)
        else:
            del p.unlearned[packet.extensions.mid or ""]
        p.add_source(packet.ssrc, kind)
        await self._assign()
        return kind

    def _ssrc_taken(self, ssrc: int) -> bool:
        return any(ssrc in q.sources for q in self.participants.values())

    async def handle_rtcp(self, transport: SfuTransport, packet: AnyRtcpPacket) -> None:
        p = self._by_transport.get(transport)
        if p is None:
            return
        p.last_heard = time.monotonic()
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
            if packet.fmt == RTCP_PSFB_PLI:
                ssrcs = [packet.media_ssrc]
            else:  # FIR FCI entries: SSRC (4 octets), seq nr (1), reserved (3): RFC 5104 §4.3.1.1
                ssrcs = [int.from_bytes(packet.fci[i:i + 4], "big")
                         for i in range(0, len(packet.fci) - 7, 8)]
            for ssrc in ssrcs:
                slot = p.slot_by_ssrc.get(ssrc)
                if slot is not None and slot.kind == "video" and slot.feed is not None \
                        and slot.munger.source is not None:
                    await self._request_keyframe(slot.feed, slot.munger.source)
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
            await self._took_feedback(p.take_remb(packet.fci, time.monotonic()))
        elif isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
            slot = p.slot_by_ssrc.get(packet.media_ssrc)
            if slot is not None:
                await self._answer_nack(slot, packet.lost)
        elif isinstance(packet, RtcpSrPacket) and packet.ssrc in p.sources:  # only its own
            if p.upstream is not None:
                p.upstream.on_sender_report(packet)
            self.stats.sender_reports += await relay_sender_report(
                packet, self._routes.get(packet.ssrc, ()), time.monotonic())
        if isinstance(packet, (RtcpRrPacket, RtcpSrPacket)):
            await self._took_feedback(p.take_losses(packet, time.monotonic()))

    async def _took_feedback(self, congested: bool) -> None:
        """A subscriber's REMB or losses lowered what it gets: count it, share its cap anew."""
        if congested:
            self.stats.congestions += 1
            await self._assign()

    def handle_closed(self, transport: SfuTransport) -> None:
        p = self._by_transport.get(transport)
        if p is not None:
            logger.info("sfu room: %s's transport closed", p.id)
            self._spawn(self.leave(p.id))

    # --- forwarding

    async def _forward(self, slot: Slot, packet: RtpPacket, arrival: float, *,
                       resend: bool = False) -> bool:
        """Send ``packet`` in ``slot``; a retransmission (``resend``) earns no credit. An error
        is the slot's alone: the packet still goes to the other slots."""
        try:
            source_ssrc = packet.ssrc
            out = slot.munger.forward(copy_packet(packet), arrival)
            if out is None:
                return False
            if slot.vp8 is not None:
                out.payload = slot.vp8.forward(source_ssrc, out.payload)
            out.payload_type = slot.payload_type
            out.extensions.mid = slot.mid
            out.extensions.rtp_stream_id = out.extensions.repaired_rtp_stream_id = None
            out.extensions.abs_send_time = abs_send_time()
            if not await slot.owner.transport.send_rtp(out):
                return False
            slot.sender.count(len(out.payload))
            slot.rate.add(len(out.payload), arrival)
        except Exception:
            slot.failures += 1
            self.stats.forward_errors += 1
            if slot.failures & (slot.failures - 1) == 0:  # the 1st, 2nd, 4th...: no log flood
                logger.exception("sfu room: forwarding to %s's slot %s failed (%d times)",
                                 slot.owner.id, slot.mid, slot.failures)
            return False
        if not resend:
            slot.credit = min(RETRANSMIT_BURST, slot.credit + RETRANSMIT_SHARE)
        self.stats.forwarded += 1
        return True

    async def _answer_nack(self, slot: Slot, lost: list[int]) -> None:
        """Resend what the cache holds (through the slot's munger: the same numbers as the
        first time), NACK the rest to the publisher in its own numbers (RFC 4585 §6.2.1). Each
        number answered either way spends one of the slot's credits (:data:`RETRANSMIT_SHARE`);
        a number already NACKed to the publisher is not asked again."""
        feed, ssrc = slot.feed, slot.munger.source
        if feed is None or ssrc is None or ssrc not in feed.caches:
            return
        cache = feed.caches[ssrc]
        upstream: list[int] = []
        now = time.monotonic()
        for out_seq in dict.fromkeys(lost[:MAX_NACK_SEQS]):  # each number once
            origin = slot.munger.source_of(out_seq % 65536)
            if origin is None or origin[0] != ssrc:
                continue  # not remembered, or sent before the slot's last switch
            if slot.credit < 1:
                self.stats.nacks_refused += 1
                continue
            slot.credit -= 1
            cached = cache.get(origin[1])
            if cached is not None and await self._forward(slot, cached, now, resend=True):
                self.stats.nacks_answered += 1
            elif cache.first_request(origin[1]):
                upstream.append(origin[1])
        if upstream:
            nack = RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=feed.transport.rtcp_ssrc,
                                   media_ssrc=ssrc, lost=sorted(set(upstream)))
            if await feed.transport.send_rtcp([nack]):
                self.stats.nacks_forwarded += len(nack.lost)

    async def _request_keyframe(self, publisher: Participant, ssrc: int) -> None:
        """A PLI (RFC 4585 §6.3.1) to ``publisher`` for its video stream ``ssrc`` (a simulcast
        publisher's layer: each has key frames of its own), unless one went lately."""
        now = time.monotonic()
        if now - self._last_pli.get(ssrc, -PLI_INTERVAL) < PLI_INTERVAL:
            return
        self._last_pli[ssrc] = now
        pli = RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=publisher.transport.rtcp_ssrc, media_ssrc=ssrc)
        if await publisher.transport.send_rtcp([pli]):
            self.stats.plis_sent += 1

    # --- slot assignment

    def _ranking(self) -> list[Participant]:
        """Publishers in order of preference: the most recent dominant speakers, then by
        joining order."""
        recent = [self.participants[i] for i in self._recent if i in self.participants]
        return recent + [p for p in self.participants.values() if p not in recent]

    async def _assign(self) -> None:
        """Give every connected subscriber's slots their publishers, and each video slot the
        layer its downlink pays for (:func:`~facecall.sfu.layers.allocate`, dominant speakers
        first); PLI the streams that video slots wait for."""
        ranking = self._ranking()
        now = time.monotonic()
        keyframes: dict[int, Participant] = {}
        for sub in self.participants.values():
            if sub.transport.state != "connected":
                continue  # a key frame now would be lost: slots fill once it connects
            for kind, slots in sub.slots.items():
                chosen = self._publishers_for(sub, kind, slots, ranking)
                if kind == "audio":
                    for slot, q in chosen:
                        slot.feed = q
                        slot.munger.switch_to(None if q is None else q.source(kind))
                    continue
                chosen.sort(key=lambda pair: ranking.index(pair[1]) if pair[1] else len(ranking))
                live = [q.live_layers(now) if q is not None else [] for _, q in chosen]
                current = [next((i for i, (ssrc, _) in enumerate(layers)
                                 if ssrc == slot.munger.source), None)
                           for (slot, _), layers in zip(chosen, live, strict=True)]
                picks = allocate([[rate for _, rate in layers] for layers in live if layers],
                                 sub.downlink.budget(now),
                                 [c for c, layers in zip(current, live, strict=True) if layers])
                pick = iter(picks)
                for (slot, q), layers in zip(chosen, live, strict=True):
                    ssrc = layers[next(pick)][0] if q is not None and layers else None
                    if (wait := self._move(slot, q, ssrc)) is not None:
                        keyframes[wait] = slot.pending  # type: ignore[assignment]
        self._rebuild_routes()
        for ssrc, publisher in keyframes.items():
            await self._request_keyframe(publisher, ssrc)

    def _publishers_for(self, sub: Participant, kind: str, slots: list[Slot],
                        ranking: list[Participant]) -> list[tuple[Slot, Participant | None]]:
        """Who each of ``sub``'s slots of ``kind`` should carry: the first publishers of the
        ranking, a slot keeping its publisher while that one stays among them."""
        wanted = [q for q in ranking if q is not sub and q.source(kind) is not None][:len(slots)]
        targets = {slot.target for slot in slots}
        incoming = [q for q in wanted if q not in targets]
        return [(slot, slot.target if slot.target is not None and slot.target in wanted
                 else (incoming.pop(0) if incoming else None)) for slot in slots]

    def _move(self, slot: Slot, publisher: Participant | None, ssrc: int | None) -> int | None:
        """Point a video slot at ``publisher``'s stream ``ssrc``: at once if it stops, else at
        that stream's next key frame (the old one forwarded until then). The SSRC to PLI for,
        if the slot now waits for one."""
        if publisher is None or ssrc is None:
            slot.feed = slot.pending = slot.pending_ssrc = None
            slot.munger.switch_to(None)
            return None
        if slot.feed is publisher and slot.munger.source == ssrc:  # back to what it forwards
            slot.pending = slot.pending_ssrc = None
            return None
        slot.pending, slot.pending_ssrc = publisher, ssrc
        return ssrc

    def _rebuild_routes(self) -> None:
        routes: dict[int, list[Slot]] = {}
        for sub in self.participants.values():
            for slot in all_slots(sub):
                for ssrc in {slot.munger.source, slot.pending_ssrc} - {None}:
                    assert ssrc is not None
                    routes.setdefault(ssrc, []).append(slot)
        self._routes = routes
        if self.on_slots is not None:  # every change of a slot's feed ends here
            self.on_slots()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            now = time.monotonic()
            try:
                if (dominant := self.speaker.decide(now)) is not None and dominant in self.participants:
                    if dominant in self._recent:
                        self._recent.remove(dominant)
                    self._recent.insert(0, dominant)
                await self._assign()  # also: layers that came or stopped, probes that are due
                self._tell_speaker()
                for p in list(self.participants.values()):
                    if p.upstream is not None and (report := p.upstream.report(now)) is not None:
                        await p.transport.send_rtcp([report])
                metrics.report(self.stats, self._reported)
                for p in list(self.participants.values()):
                    if now - p.last_heard > self.silence_timeout:
                        logger.info("sfu room: nothing from %s for %.0f s: removed", p.id,
                                    now - p.last_heard)
                        await self.leave(p.id)
                for p in list(self.participants.values()):
                    for slot in all_slots(p):
                        if slot.pending is not None and slot.pending_ssrc is not None:
                            await self._request_keyframe(slot.pending, slot.pending_ssrc)
            except Exception:  # one bad tick must not end forwarding for the room
                logger.exception("sfu room: tick failed")

    def _spawn(self, coroutine: object) -> None:
        task = asyncio.ensure_future(coroutine)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _fresh_ssrc(taken: set[int]) -> int:
    while (ssrc := secrets.randbits(32)) in taken or ssrc == 0:
        pass
    taken.add(ssrc)
    return ssrc
