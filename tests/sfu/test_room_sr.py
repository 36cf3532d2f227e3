"""Sender reports for the SFU's slots (facecall.sfu.reports): a publisher's SR reaches the
subscriber of every slot its source feeds, with the slot's SSRC, the publisher's NTP
timestamp, the RTP timestamp moved into the slot's timestamp space and the slot's own counts
(RFC 3550 §6.4.1, §7.2) — real aiortc peers, then the Room's RTCP handler driven directly."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import AsyncIterator

import pytest
from aiortc import clock
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.rtp import (
    RTCP_RTPFB_NACK,
    AnyRtcpPacket,
    RtcpReceiverInfo,
    RtcpRtpfbPacket,
    RtcpSenderInfo,
    RtcpSrPacket,
    RtpPacket,
)

from facecall.sfu import reports
from facecall.sfu import room as room_module
from facecall.sfu.reports import SR_INTERVAL
from facecall.sfu.room import Room, Slot
from tests.sfu.test_room import join, room
from tests.sfu.test_room_audit import (
    KEY,
    FakeTransport,
    enter,
    fake,
    fake_room,
    feedback,
    make_offer,
    publish,
    video,
    video_slot,
)
from tests.sfu.test_transport import until

__all__ = ["fake_room", "room"]  # the fixtures, shared with test_room.py and test_room_audit.py
TS_MOD = 1 << 32

# --- real aiortc peers


class RtcpSpy:
    """What the aiortc peers send and receive: every SR an ``RTCRtpSender`` sends, and for
    every SR an ``RTCRtpReceiver`` gets, how many RTP packets it had received on that SSRC by
    then; the (sequence number, timestamp) of each RTP packet received per SSRC."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sent: dict[int, list[RtcpSenderInfo]] = defaultdict(list)  # publisher SSRC → SRs
        self.got: dict[int, list[tuple[RtcpSenderInfo, int]]] = defaultdict(list)  # slot SSRC
        self.rtp: dict[int, list[tuple[int, int]]] = defaultdict(list)
        send_rtcp, handle_rtcp = RTCRtpSender._send_rtcp, RTCRtpReceiver._handle_rtcp_packet
        handle_rtp = RTCRtpReceiver._handle_rtp_packet

        async def sender_send_rtcp(sender: RTCRtpSender, packets: list[AnyRtcpPacket]) -> None:
            for packet in packets:
                if isinstance(packet, RtcpSrPacket):
                    self.sent[packet.ssrc].append(packet.sender_info)
            await send_rtcp(sender, packets)

        async def receiver_handle_rtcp(receiver: RTCRtpReceiver, packet: AnyRtcpPacket) -> None:
            if isinstance(packet, RtcpSrPacket):
                self.got[packet.ssrc].append((packet.sender_info, len(self.rtp[packet.ssrc])))
            await handle_rtcp(receiver, packet)

        async def receiver_handle_rtp(receiver: RTCRtpReceiver, packet: RtpPacket,
                                      arrival_time_ms: int) -> None:
            self.rtp[packet.ssrc].append((packet.sequence_number, packet.timestamp))
            await handle_rtp(receiver, packet, arrival_time_ms)

        monkeypatch.setattr(RTCRtpSender, "_send_rtcp", sender_send_rtcp)
        monkeypatch.setattr(RTCRtpReceiver, "_handle_rtcp_packet", receiver_handle_rtcp)
        monkeypatch.setattr(RTCRtpReceiver, "_handle_rtp_packet", receiver_handle_rtp)


def slot_offset(room: Room, slot: Slot, received: list[tuple[int, int]]) -> tuple[int, int]:
    """(source SSRC, slot timestamp - source timestamp) from a packet the subscriber received:
    the source packet it was made from is found through the room's munger and its cache."""
    for seq, ts in reversed(received):
        origin = slot.munger.source_of(seq)
        feed = slot.feed
        if origin is None or feed is None or (source := feed.caches[origin[0]].get(origin[1])) is None:
            continue
        return origin[0], (ts - source.timestamp) % TS_MOD
    raise AssertionError("no received packet found in the room's cache")


async def test_subscribers_get_sender_reports_mapping_the_publishers_clock_onto_their_slots(
        room: Room, monkeypatch: pytest.MonkeyPatch) -> None:
    spy = RtcpSpy(monkeypatch)
    alice, bob = await join(room, 1, slots=1), await join(room, 2, slots=1)
    try:
        slots = [(name, slot) for name in ("alice", "bob")
                 for slot in room_module.all_slots(room.participants[name])]
        await until(lambda: all(len(spy.got[slot.munger.ssrc]) >= 2 for _, slot in slots),
                    timeout=8, what="two SRs on every slot")
        for name, slot in slots:
            publisher = bob if name == "alice" else alice
            sender = next(t.sender for t in publisher.pc.getTransceivers() if t.kind == slot.kind
                          and t.direction == "sendonly")
            source, offset = slot_offset(room, slot, spy.rtp[slot.munger.ssrc])
            assert source == sender._ssrc
            published = {info.ntp_timestamp: info for info in spy.sent[source]}
            for info, received in spy.got[slot.munger.ssrc]:
                # the publisher's own SR, its RTP timestamp moved by the slot's offset
                mapping = published[info.ntp_timestamp]
                assert info.rtp_timestamp == (mapping.rtp_timestamp + offset) % TS_MOD
                assert info.rtp_timestamp == slot.munger.to_slot_timestamp(source, mapping.rtp_timestamp)
                # the slot's counts, not the publisher's: what the subscriber got before the SR
                # (sent before it on the same path; a packet lost on loopback at most)
                assert 0 <= info.packet_count - received <= 3
                assert info.packet_count <= slot.sender.packets and info.octet_count <= slot.sender.octets
            assert slot.sender.last_report is not None
        # aiortc turns them into remote-outbound-rtp stats of the slot's receiver
        for client, name in ((alice, "alice"), (bob, "bob")):
            for transceiver in client.pc.getTransceivers():
                if transceiver.direction != "recvonly":
                    continue
                stats = [s for s in (await transceiver.receiver.getStats()).values()
                         if s.type == "remote-outbound-rtp"]
                slot = next(s for s in room_module.all_slots(room.participants[name])
                            if s.mid == transceiver.mid)
                assert [s.ssrc for s in stats] == [slot.munger.ssrc]
                last, _ = spy.got[slot.munger.ssrc][-1]
                assert (stats[0].packetsSent, stats[0].bytesSent) == (last.packet_count, last.octet_count)
                assert stats[0].remoteTimestamp == clock.datetime_from_ntp(last.ntp_timestamp)
        assert room.stats.sender_reports >= 8
    finally:
        await alice.close()
        await bob.close()


# --- the Room's RTCP handler driven directly (fake transports)


@pytest.fixture
def no_sr_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    """SRs to one slot in quick succession all go (the flood limit is tested on its own)."""
    monkeypatch.setattr(reports, "SR_INTERVAL", 0.0)


@pytest.fixture
async def one_slot_room(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Room]:
    monkeypatch.setattr(room_module, "SfuTransport", FakeTransport)
    room = Room(slots=1)
    yield room
    await room.close()


def sr(room: Room, name: str, ntp: int, rtp: int, kind: str = "video") -> RtcpSrPacket:
    """An SR from ``name`` about its ``kind`` source, with counts and a report block that are
    the publisher's own (none of which may reach a subscriber)."""
    ssrc = room.participants[name].source(kind)
    assert ssrc is not None
    return RtcpSrPacket(ssrc=ssrc, sender_info=RtcpSenderInfo(ntp, rtp, 123456, 7654321),
                        reports=[RtcpReceiverInfo(ssrc=1, fraction_lost=0, packets_lost=0,
                                                  highest_sequence=0, jitter=0, lsr=0, dlsr=0)])


def reports_to(room: Room, name: str) -> list[RtcpSrPacket]:
    return [p for p in fake(room, name).rtcp if isinstance(p, RtcpSrPacket)]


def expected(room: Room, subscriber: str, slot: Slot, first_source_seq: int, ntp: int,
             source_rtp: int) -> RtcpSrPacket:
    """The SR the subscriber should get in ``slot``: the offset from the first packet it got
    there after the feed started at ``first_source_seq`` (test packets: timestamp = seq * 3000),
    the counts from everything it got there."""
    sent = [p for p in fake(room, subscriber).sent if p.ssrc == slot.munger.ssrc]
    first = next(p for p in sent if slot.munger.source_of(p.sequence_number)[1] == first_source_seq)  # type: ignore[index]
    offset = (first.timestamp - first_source_seq * 3000) % TS_MOD
    return RtcpSrPacket(ssrc=slot.munger.ssrc, sender_info=RtcpSenderInfo(
        ntp, (source_rtp + offset) % TS_MOD, len(sent), sum(len(p.payload) for p in sent)))


@pytest.mark.usefixtures("no_sr_interval")
async def test_an_sr_goes_translated_to_each_slot_its_source_feeds(fake_room: Room) -> None:
    room = fake_room
    await enter(room, "alice", "bob")
    await publish(room, "alice", 1000, 10)
    slot = video_slot(room, "bob", "alice")
    await feedback(room, "alice", sr(room, "alice", 0x1234_5678_9ABC_DEF0, 3_000_000 + 1500))
    assert reports_to(room, "bob") == [expected(room, "bob", slot, 1000, 0x1234_5678_9ABC_DEF0, 3_001_500)]
    assert reports_to(room, "alice") == [] and room.stats.sender_reports == 1
    assert slot.sender.last_report == reports_to(room, "bob")[0].sender_info
    # a retransmission counts in the slot's packets; the publisher's counts never show
    await feedback(room, "bob", RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=1, media_ssrc=slot.munger.ssrc,
                                                lost=[fake(room, "bob").sent[-1].sequence_number]))
    await feedback(room, "alice", sr(room, "alice", 2 << 32, 2**32 - 10))  # RTP timestamps wrap
    assert reports_to(room, "bob")[-1] == expected(room, "bob", slot, 1000, 2 << 32, 2**32 - 10)
    assert reports_to(room, "bob")[-1].sender_info.packet_count == 11
    # an SR without a wallclock (NTP 0), one about another's SSRC, one about an SSRC of none
    count = len(reports_to(room, "bob"))
    await feedback(room, "alice", sr(room, "alice", 0, 1))
    await feedback(room, "bob", sr(room, "alice", 3 << 32, 1))  # bob speaking for alice
    await feedback(room, "alice", RtcpSrPacket(ssrc=0xBAD, sender_info=RtcpSenderInfo(4 << 32, 1, 1, 1)))
    assert len(reports_to(room, "bob")) == count and reports_to(room, "alice") == []


@pytest.mark.usefixtures("no_sr_interval")
async def test_an_sr_of_a_source_in_two_slots_goes_to_both_subscribers_each_in_its_own_terms(
        fake_room: Room) -> None:
    room = fake_room
    await enter(room, "alice", "bob", "carol")
    await publish(room, "alice", 500, 7)
    bob_slot, carol_slot = video_slot(room, "bob", "alice"), video_slot(room, "carol", "alice")
    await feedback(room, "alice", sr(room, "alice", 5 << 32, 1_502_000))
    assert reports_to(room, "bob") == [expected(room, "bob", bob_slot, 500, 5 << 32, 1_502_000)]
    assert reports_to(room, "carol") == [expected(room, "carol", carol_slot, 500, 5 << 32, 1_502_000)]
    # each slot has its own SSRC and random timestamp origin: two different translations
    assert reports_to(room, "bob")[0].sender_info.rtp_timestamp \
        != reports_to(room, "carol")[0].sender_info.rtp_timestamp
    assert reports_to(room, "alice") == [] and room.stats.sender_reports == 2


@pytest.mark.usefixtures("no_sr_interval")
async def test_an_sr_of_a_source_in_no_slot_is_dropped_and_a_switch_moves_the_reports(
        one_slot_room: Room) -> None:
    room = one_slot_room
    offers = {name: await make_offer(mark, slots=1) for mark, name in enumerate(("alice", "bob", "carol"), 1)}
    await enter(room, "alice", "bob", "carol", offers=offers)
    for name in ("alice", "bob", "carol"):
        await publish(room, name, 100, 5)
    # one slot each, the earliest joined first: alice feeds bob's and carol's, bob alice's
    feeds = [room.participants[n].slots["video"][0].feed for n in ("alice", "bob", "carol")]
    assert [p.id if p else None for p in feeds] == ["bob", "alice", "alice"]
    await feedback(room, "carol", sr(room, "carol", 1 << 32, 1))
    assert not any(reports_to(room, n) for n in ("alice", "bob", "carol"))  # carol in no slot
    assert room.stats.sender_reports == 0
    # carol becomes the one to see: bob's (and alice's) slot waits for her key frame
    room._recent = ["carol"]
    await room._assign()
    slot = room.participants["bob"].slots["video"][0]
    assert slot.pending is room.participants["carol"]
    await feedback(room, "carol", sr(room, "carol", 2 << 32, 1))
    assert not any(reports_to(room, n) for n in ("alice", "bob", "carol"))  # no offset for her yet
    await feedback(room, "alice", sr(room, "alice", 3 << 32, 100 * 3000))  # alice still feeds it
    assert reports_to(room, "bob") == [expected(room, "bob", slot, 100, 3 << 32, 300_000)]
    # carol's key frame: the slot is hers; alice's SRs no longer come to it, carol's do
    await room.handle_rtp(room.participants["carol"].transport, video(room, "carol", 105, KEY),  # type: ignore[arg-type]
                          time.monotonic())
    assert slot.feed is room.participants["carol"]
    before = {n: len(reports_to(room, n)) for n in ("alice", "bob", "carol")}
    await feedback(room, "alice", sr(room, "alice", 4 << 32, 104 * 3000))
    assert {n: len(reports_to(room, n)) for n in ("alice", "bob", "carol")} \
        == {**before, "carol": before["carol"] + 1}  # alice feeds carol's slot only now
    await feedback(room, "carol", sr(room, "carol", 5 << 32, 105 * 3000))
    assert reports_to(room, "bob")[-1] == expected(room, "bob", slot, 105, 5 << 32, 315_000)
    assert reports_to(room, "bob")[-1].sender_info.packet_count == 6  # alice's 5, carol's 1
    assert reports_to(room, "alice")[-1].ssrc == room.participants["alice"].slots["video"][0].munger.ssrc


async def test_an_sr_flood_reaches_a_slot_at_most_once_per_interval(fake_room: Room) -> None:
    room = fake_room
    await enter(room, "alice", "bob")
    await publish(room, "alice", 1, 3)
    start = time.monotonic()
    for i in range(200):
        await feedback(room, "alice", sr(room, "alice", (i + 1) << 32, i))
    assert 1 <= len(reports_to(room, "bob")) <= 1 + (time.monotonic() - start) / SR_INTERVAL + 1
