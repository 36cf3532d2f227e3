"""The SFU against a hostile participant (facecall.sfu): it controls its SDP and every byte of
its RTP and RTCP. Amplification (NACK, PLI/FIR floods), spoofing (someone else's SSRC, payload
types its offer did not declare), resource exhaustion (SSRC floods, oversized packets, offers at
the limits, participants that never connect, churn) and errors escaping the packet handlers.

Most tests drive the Room's packet handlers directly, with a fake transport standing for
:class:`~facecall.sfu.transport.SfuTransport` (it serializes what it is given, as the real one
does); what lives in aiortc's DTLS-SRTP path uses real aiortc peers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import AsyncIterator, Sequence

import pytest
from aiortc.rtcdtlstransport import RTCDtlsFingerprint
from aiortc.rtcicetransport import RTCIceCandidate, RTCIceParameters
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpReceiveParameters
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    AnyRtcpPacket,
    HeaderExtensionsMap,
    RtcpByePacket,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSrPacket,
    RtpPacket,
    pack_remb_fci,
)
from hypothesis import given
from hypothesis import strategies as st

from facecall.client.ice import host_addresses
from facecall.sfu import room as room_module
from facecall.sfu.feedback import RETRANSMIT_BURST, RETRANSMIT_SHARE
from facecall.sfu.munger import HISTORY, RtpMunger, Vp8Munger
from facecall.sfu.room import PLI_INTERVAL, Room, RoomError
from facecall.sfu.sdp import MAX_CANDIDATES, MAX_OFFER_BYTES, SfuOfferError, parse_offer
from facecall.sfu.transport import MAX_INBOUND_SSRCS, SfuTransport
from facecall.sfu.vp8 import is_keyframe, picture_numbers
from tests.sfu.test_room import decodes_from, join, offer, without
from tests.sfu.test_transport import Client, until

__all__ = ["offer"]  # the fixture, shared with test_room.py

KEY = b"\x90\x80\x01" + b"\x00" + b"k" * 100  # X, S, PID 0; I with a 7-bit PictureID; P = 0
DELTA = b"\x90\x80\x02" + b"\x01" + b"d" * 100  # the same, P = 1: not a key frame


class FakeTransport:
    """Stands for SfuTransport in the Room: connects at once, serializes what it sends with
    the participant's negotiated header extension IDs (as the real one does), records it."""

    def __init__(self, handler: Room, *, ice_servers: Sequence[object] = ()) -> None:
        self.handler = handler
        self.state = self.ice_state = "new"
        self.rtcp_ssrc = 0xFEED
        self.sent: list[RtpPacket] = []
        self.rtcp: list[AnyRtcpPacket] = []
        self.broken = False
        self._map = HeaderExtensionsMap()
        self.ice_parameters = RTCIceParameters(usernameFragment="fake", password="f" * 22)
        self.candidates = [RTCIceCandidate(component=1, foundation="1", ip="127.0.0.1", port=9,
                                           priority=1, protocol="udp", type="host")]
        self.fingerprints = [RTCDtlsFingerprint(algorithm="sha-256", value=":".join(["AB"] * 32))]

    async def gather(self) -> None:
        await asyncio.sleep(0)

    def configure(self, header_extensions: Sequence[RTCRtpHeaderExtensionParameters],
                  payload_types: Sequence[int], sent_ssrcs: Sequence[int]) -> None:
        self._map.configure(RTCRtpReceiveParameters(headerExtensions=list(header_extensions)))

    async def connect(self, *args: object) -> bool:
        self.state = "connected"
        return True

    async def send_rtp(self, packet: RtpPacket) -> bool:
        if self.state != "connected":
            return False
        if self.broken:
            raise RuntimeError("this subscriber's transport is broken")
        self.sent.append(RtpPacket.parse(packet.serialize(self._map), self._map))
        return True

    async def send_rtcp(self, packets: Sequence[AnyRtcpPacket]) -> bool:
        self.rtcp.extend(packets)
        return True

    async def close(self) -> None:
        if self.state != "closed":
            self.state = "closed"
            self.handler.handle_closed(self)  # type: ignore[arg-type]


@pytest.fixture
async def fake_room(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Room]:
    monkeypatch.setattr(room_module, "SfuTransport", FakeTransport)
    room = Room(slots=2)
    yield room
    await room.close()


async def make_offer(mark: int, slots: int = 2) -> str:
    client = Client(f"c{mark}", mark, slots)
    try:
        return await client.offer()
    finally:
        await client.close()


async def enter(room: Room, *names: str, offers: dict[str, str] | None = None) -> None:
    for i, name in enumerate(names):
        await room.join(name, (offers or {}).get(name) or await make_offer(i + 1))
    await until(lambda: all(p.transport.state == "connected" for p in room.participants.values()),
                what="all connected")
    await asyncio.sleep(0.01)  # _connect's _assign


def fake(room: Room, name: str) -> FakeTransport:
    transport = room.participants[name].transport
    assert isinstance(transport, FakeTransport)
    return transport


def video(room: Room, name: str, seq: int, payload: bytes = DELTA, *, ssrc: int | None = None,
          payload_type: int | None = None, mid: str | None = None) -> RtpPacket:
    sending = room.participants[name].offer.sending("video")
    assert sending is not None
    packet = RtpPacket(payload_type=sending.codec.payloadType if payload_type is None else payload_type,
                       sequence_number=seq % 65536, timestamp=seq * 3000 % 2**32,
                       ssrc=sending.ssrc if ssrc is None else ssrc, payload=payload)
    packet.extensions.mid = mid
    return packet


async def send(room: Room, name: str, packet: RtpPacket) -> None:
    await room.handle_rtp(room.participants[name].transport, packet, time.monotonic())  # type: ignore[arg-type]


async def feedback(room: Room, name: str, packet: AnyRtcpPacket) -> None:
    await room.handle_rtcp(room.participants[name].transport, packet)  # type: ignore[arg-type]


async def publish(room: Room, name: str, first: int, count: int) -> None:
    """A key frame at ``first``, then delta packets."""
    for seq in range(first, first + count):
        await send(room, name, video(room, name, seq, KEY if seq == first else DELTA))


def video_slot(room: Room, subscriber: str, publisher: str) -> room_module.Slot:
    return next(s for s in room.participants[subscriber].slots["video"]
                if s.feed is room.participants[publisher])


def nack(slot: room_module.Slot, lost: list[int]) -> RtcpRtpfbPacket:
    return RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=1, media_ssrc=slot.munger.ssrc, lost=lost)


# --- amplification


async def test_a_nack_flood_is_answered_within_the_slots_retransmission_budget(fake_room: Room) -> None:
    room = fake_room
    await enter(room, "alice", "bob")
    await publish(room, "alice", 1000, 100)
    slot = video_slot(room, "bob", "alice")
    bob = fake(room, "bob")
    forwarded = [p.sequence_number for p in bob.sent if p.ssrc == slot.munger.ssrc]
    assert len(forwarded) == 100
    # one number named 500 times in one NACK is resent once
    await feedback(room, "bob", nack(slot, [forwarded[-1]] * 500))
    assert room.stats.nacks_answered == 1
    # twenty NACKs for everything: no more than the budget a slot may hold
    for _ in range(20):
        await feedback(room, "bob", nack(slot, forwarded))
    assert room.stats.nacks_answered <= RETRANSMIT_BURST
    assert room.stats.nacks_refused > 0
    assert len(bob.sent) <= 100 + RETRANSMIT_BURST
    # the budget comes back with what the slot forwards: a share of it, no more
    answered = room.stats.nacks_answered
    await publish(room, "alice", 1100, 100)
    for _ in range(5):
        await feedback(room, "bob", nack(slot, forwarded[-50:]))
    assert 1 <= room.stats.nacks_answered - answered <= 100 * RETRANSMIT_SHARE


async def test_a_publisher_is_nacked_for_a_packet_once_however_often_subscribers_ask(
        fake_room: Room) -> None:
    room = fake_room
    await enter(room, "alice", "bob", "carol")
    await publish(room, "alice", 7, 20)
    alice_ssrc = room.participants["alice"].source("video")
    assert alice_ssrc is not None
    room.participants["alice"].caches[alice_ssrc].clear()  # nothing to answer from: upstream
    for subscriber in ("bob", "carol"):
        slot = video_slot(room, subscriber, "alice")
        numbers = [p.sequence_number for p in fake(room, subscriber).sent if p.ssrc == slot.munger.ssrc]
        for _ in range(5):
            await feedback(room, subscriber, nack(slot, numbers))
    asked = [seq for p in fake(room, "alice").rtcp if isinstance(p, RtcpRtpfbPacket) for seq in p.lost]
    assert sorted(asked) == list(range(7, 27))


async def test_pli_and_fir_floods_reach_the_publisher_at_most_once_per_interval(fake_room: Room) -> None:
    room = fake_room
    await enter(room, "alice", "bob")
    await publish(room, "alice", 1, 5)
    alice = fake(room, "alice")
    slot = video_slot(room, "bob", "alice")

    def plis() -> int:
        return sum(isinstance(p, RtcpPsfbPacket) and p.fmt == RTCP_PSFB_PLI for p in alice.rtcp)

    room._last_pli.clear()  # the PLI of alice's first slot went lately
    before, start = plis(), time.monotonic()
    fci = (slot.munger.ssrc.to_bytes(4, "big") + bytes([1, 0, 0, 0])) * 50
    for _ in range(200):
        await feedback(room, "bob", RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=1, media_ssrc=slot.munger.ssrc))
        await feedback(room, "bob", RtcpPsfbPacket(fmt=RTCP_PSFB_FIR, ssrc=1, media_ssrc=0, fci=fci))
    assert 1 <= plis() - before <= 1 + (time.monotonic() - start) / PLI_INTERVAL + 1
    # a PLI naming an audio slot asks nobody for a video key frame
    room._last_pli.clear()
    audio_slot = room.participants["bob"].slots["audio"][0]
    before = plis()
    await feedback(room, "bob", RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=1, media_ssrc=audio_slot.munger.ssrc))
    assert plis() == before
    # REMB, reports, SDES, BYE, a FIR cut short: nothing sent, nothing raised, nobody removed
    sent, rtcp = len(fake(room, "bob").sent), len(alice.rtcp)
    for packet in (
            RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=1, media_ssrc=0,
                           fci=pack_remb_fci(10**9, [slot.munger.ssrc] * 200)),
            RtcpRrPacket(ssrc=1), RtcpSrPacket(ssrc=1, sender_info=RtcpSenderInfo(1, 2, 3, 4)),
            RtcpSdesPacket(), RtcpByePacket(sources=[slot.munger.ssrc]),
            RtcpPsfbPacket(fmt=RTCP_PSFB_FIR, ssrc=1, media_ssrc=0, fci=b"\x01\x02\x03"),
            RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=1, media_ssrc=0xBAD, lost=list(range(5000)))):
        await feedback(room, "bob", packet)
    assert (len(fake(room, "bob").sent), len(alice.rtcp)) == (sent, rtcp)
    assert set(room.participants) == {"alice", "bob"}


# --- spoofing


async def test_a_participant_cannot_take_another_ones_ssrc(fake_room: Room) -> None:
    room = fake_room
    await enter(room, "alice", "bob")
    alice_ssrc = room.participants["alice"].offer.sending("video").ssrc  # type: ignore[union-attr]
    mallory_offer = await make_offer(3)
    her_ssrc = parse_offer(mallory_offer, slots=2).sending("video").ssrc  # type: ignore[union-attr]
    # announced in the offer: refused, nothing changes
    with pytest.raises(SfuOfferError, match=f"SSRC {alice_ssrc} is already used"):
        await room.join("mallory", mallory_offer.replace(str(her_ssrc), str(alice_ssrc)))
    assert set(room.participants) == {"alice", "bob"}
    # not announced, claimed by her first packet (MID learning): not hers, dropped
    await enter(room, "mallory", offers={"mallory": without(mallory_offer, r"^a=ssrc")})
    await publish(room, "alice", 1, 3)
    slot = video_slot(room, "bob", "alice")
    bob = fake(room, "bob")
    sent = len(bob.sent)
    for seq in range(4, 10):
        await send(room, "mallory", video(room, "mallory", seq, b"\x10\x00mallory", ssrc=alice_ssrc, mid="1"))
    assert room.participants["mallory"].sources == {}
    assert len(bob.sent) == sent and room.stats.dropped_unknown == 6
    assert slot.feed is room.participants["alice"]
    # her own SSRC is learnt as ever
    await send(room, "mallory", video(room, "mallory", 1, KEY, ssrc=her_ssrc, mid="1"))
    assert room.participants["mallory"].sources == {her_ssrc: "video"}


async def test_rtp_with_a_payload_type_or_size_the_offer_did_not_declare_is_dropped(
        fake_room: Room) -> None:
    room = fake_room
    await enter(room, "alice", "bob")
    await publish(room, "alice", 1, 3)
    alice, bob = room.participants["alice"], fake(room, "bob")
    audio_pt = alice.offer.sending("audio").codec.payloadType  # type: ignore[union-attr]
    sent, cache = len(bob.sent), alice.caches[alice.source("video")]  # type: ignore[index]
    await send(room, "alice", video(room, "alice", 4, payload_type=audio_pt))
    await send(room, "alice", video(room, "alice", 5, b"\x10\x01" + bytes(2000)))
    assert len(bob.sent) == sent and room.stats.dropped_invalid == 2
    assert 4 not in cache and 5 not in cache
    await send(room, "alice", video(room, "alice", 6, b"\x10\x01" + bytes(1000)))  # an MTU's worth
    assert len(bob.sent) == sent + 1


# --- errors escaping


async def test_an_error_forwarding_to_one_slot_does_not_stop_the_others(fake_room: Room) -> None:
    room = fake_room
    await enter(room, "alice", "bob", "carol")
    fake(room, "bob").broken = True  # bob's slots come first in alice's routes
    await publish(room, "alice", 1, 6)  # the first, a key frame, also moves both slots to alice
    carol_slot, bob_slot = video_slot(room, "carol", "alice"), video_slot(room, "bob", "alice")
    assert sum(p.ssrc == carol_slot.munger.ssrc for p in fake(room, "carol").sent) == 6
    assert bob_slot.failures == room.stats.forward_errors == 6
    routes = room._routes[room.participants["alice"].source("video")]  # type: ignore[index]
    assert bob_slot in routes and carol_slot in routes and bob_slot.pending is None


async def test_a_handler_that_fails_on_every_packet_does_not_flood_the_log(
        caplog: pytest.LogCaptureFixture) -> None:
    class Failing:
        async def handle_rtp(self, transport: SfuTransport, packet: RtpPacket, arrival: float) -> None:
            raise ValueError("bad packet")

        async def handle_rtcp(self, transport: SfuTransport, packet: AnyRtcpPacket) -> None:
            raise ValueError("bad packet")

        def handle_closed(self, transport: SfuTransport) -> None:
            pass

    transport = SfuTransport(Failing())
    try:
        for _ in range(100):  # what aiortc's receive loop does per packet
            await transport._sink._handle_rtp_packet(RtpPacket(ssrc=1), 0)
            await transport._sink._handle_rtcp_packet(RtcpRrPacket(ssrc=1))
    finally:
        await transport.close()
    assert transport.handler_errors == 200
    assert len([r for r in caplog.records if "handler failed" in r.getMessage()]) == 8  # 1, 2, 4… 128


# --- resource exhaustion


def sockets() -> int:
    """Sockets open in this process."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return count


async def test_a_participant_that_never_connects_is_removed_and_churn_leaks_nothing() -> None:

    room = Room(slots=1, silence_timeout=1.0)
    tasks, open_sockets = asyncio.all_tasks(), sockets()
    clients = [Client(name, mark, slots=1) for mark, name in ((1, "alice"), (2, "bob"), (3, "carol"))]
    try:
        offers = [await client.offer() for client in clients]
        with host_addresses(["127.0.0.1"]):
            # alice never answers ICE/DTLS; bob and carol join and leave at once, five times
            await asyncio.wait_for(room.join("alice", offers[0]), 10)
            for _ in range(5):
                for name, sdp in (("bob", offers[1]), ("carol", offers[2])):
                    await room.join(name, sdp)
                await room.leave("bob")
                await room.leave("carol")
            await until(lambda: "alice" not in room.participants, timeout=10, what="alice removed")
            # the room closing while someone joins: the join fails, nothing is left behind
            late = asyncio.ensure_future(room.join("bob", offers[1]))
            await asyncio.sleep(0)  # in gather
            await room.close()
            with pytest.raises(RoomError, match="closed"):
                await late
        assert room.participants == {} and room._ticker is None
    finally:
        for client in clients:
            await client.close()
    await until(lambda: sockets() <= open_sockets, timeout=5, what="every socket closed")
    await until(lambda: asyncio.all_tasks() - tasks <= {asyncio.current_task()}, timeout=5,
                what="no task left behind")


async def test_many_ssrcs_from_one_participant_keep_bounded_state() -> None:
    room = Room(slots=1, silence_timeout=5.0)
    alice, bob = await join(room, 1, slots=1), await join(room, 2, slots=1)
    try:
        await until(lambda: decodes_from(room, bob, 1), what="bob decoding alice")
        transport = room.participants["alice"].transport
        dtls = transport._dtls
        sending = parse_offer(alice.pc.localDescription.sdp, slots=1).sending("video")
        assert sending is not None
        alice_dtls = alice.pc.getTransceivers()[0].sender.transport
        flood = range(0x7000_0000, 0x7000_0000 + 300)
        for ssrc in flood:  # authenticated packets on 300 SSRCs, RTP and RTCP
            rtp = RtpPacket(payload_type=sending.codec.payloadType, sequence_number=1, timestamp=1,
                            ssrc=ssrc, payload=DELTA)
            await alice_dtls._send_rtp(rtp.serialize())
            await alice_dtls._send_rtp(bytes(RtcpRrPacket(ssrc=ssrc)))
        await until(lambda: room.stats.dropped_unknown >= 300, what="the flood received")
        assert len(dtls._rtp_router.ssrc_table) <= MAX_INBOUND_SSRCS
        session = getattr(dtls._rx_srtp, "_session", dtls._rx_srtp)
        kept = 0
        for ssrc in flood:  # libsrtp's streams, counted by removing them
            try:
                session.remove_stream(ssrc)
                kept += 1
            except Exception:
                pass
        assert kept <= MAX_INBOUND_SSRCS
        forwarded = room.stats.forwarded
        await until(lambda: room.stats.forwarded > forwarded + 10, what="alice still forwarded")
    finally:
        await alice.close()
        await bob.close()
        await room.close()


def _candidate_at(sdp: str, address: str) -> str:
    return re.sub(r"(a=candidate:\S+ 1 udp \d+) \S+ \d+", rf"\1 {address}", sdp, count=1)


def _bigger(sdp: str, filler: str) -> str:
    return sdp.replace("s=-\r\n", f"s=-\r\ni={filler}\r\n", 1)


@pytest.mark.parametrize(("spoil", "message"), [
    (lambda s: s.replace("a=mid:2\r\n", "a=mid:m23456789abcdefgh\r\n").replace(
        "BUNDLE 0 1 2 ", "BUNDLE 0 1 m23456789abcdefgh "), "not 1 to 16 token characters"),
    (lambda s: s.replace("a=extmap:1 ", "a=extmap:300 "), "out of range"),
    (lambda s: s.replace("a=end-of-candidates", "".join(
        f"a=candidate:{i} 1 udp 1 10.0.{i}.1 9 typ host\r\n" for i in range(MAX_CANDIDATES))
        + "a=end-of-candidates", 1), "too many ICE candidates"),
    (lambda s: re.sub(r"a=ice-ufrag:\S+", "a=ice-ufrag:ab;cd", s), "malformed ICE ufrag"),
    (lambda s: re.sub(r"a=ice-pwd:\S+", "a=ice-pwd:short", s), "malformed ICE ufrag"),
    (lambda s: _bigger(s, "\u00e9" * (MAX_OFFER_BYTES // 2)), "larger than"),
    (lambda s: _candidate_at(s, "127.0.0.1 70000"), "port 70000 out of range"),
    (lambda s: _candidate_at(s, "224.0.0.251 5353"), "not a unicast address"),
    (lambda s: _candidate_at(s, "255.255.255.255 9"), "not a unicast address"),
    (lambda s: _candidate_at(s, "0.0.0.0 9"), "not a unicast address"),
    (lambda s: _candidate_at(s, "evil.example 9"), "not an IP address or an mDNS name"),
])
async def test_an_offer_past_the_limits_is_refused(offer: str, spoil, message: str) -> None:
    with pytest.raises(SfuOfferError, match=re.escape(message)):
        parse_offer(spoil(offer), slots=3)


async def test_an_offer_announcing_one_ssrc_twice_is_refused(offer: str) -> None:
    ssrcs = re.findall(r"a=ssrc:(\d+) ", offer)
    with pytest.raises(SfuOfferError, match="same SSRC"):
        parse_offer(offer.replace(ssrcs[1], ssrcs[0]), slots=3)  # video = audio


async def test_an_offer_with_huge_attribute_lists_is_parsed_or_refused_cleanly(offer: str) -> None:
    """All m-lines there may be (2 + 2K), each with attribute lists up to the byte limit."""
    anchor = "a=rtpmap:97 VP8/90000\r\n"
    room_left = (MAX_OFFER_BYTES - len(offer)) // offer.count(anchor)
    lines, i = "", 0
    while len(lines) < room_left - 60:
        lines += f"a=rtcp-fb:97 x{i}\r\na=ssrc:{i + 1} cname:{i}\r\n"
        i += 1
    fitting = offer.replace(anchor, anchor + lines)
    assert MAX_OFFER_BYTES - 500 < len(fitting.encode()) <= MAX_OFFER_BYTES
    try:
        parse_offer(fitting, slots=3)
    except SfuOfferError:
        pass  # a clear refusal; anything else raised fails the test
    with pytest.raises(SfuOfferError, match="larger than"):
        parse_offer(fitting.replace(anchor, anchor + "a=rtcp-fb:97 y\r\n" * 50, 1), slots=3)


@given(st.binary(max_size=24), st.integers(0, 2**32 - 1))
def test_vp8_garbage_never_raises(payload: bytes, ssrc: int) -> None:
    is_keyframe(payload)
    picture_numbers(payload)
    assert len(Vp8Munger().forward(ssrc, payload)) == len(payload)


@given(st.lists(st.tuples(st.integers(0, 65535), st.integers(0, 2**32 - 1)), max_size=50))
def test_absurd_sequence_numbers_and_timestamps_keep_the_munger_bounded(jumps) -> None:
    munger = RtpMunger(0x51, 90000)
    munger.switch_to(7)
    for i, (seq, ts) in enumerate(jumps * 30):
        out = munger.forward(RtpPacket(payload_type=96, sequence_number=seq, timestamp=ts, ssrc=7),
                             i * 0.001)
        assert out is None or (0 <= out.sequence_number < 65536 and 0 <= out.timestamp < 2**32)
    assert len(munger._history) <= HISTORY
