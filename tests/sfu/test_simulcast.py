"""Simulcast in the SFU (facecall.sfu.sdp, room, layers, upstream): offers with rids, layers
learnt from the RtpStreamId extension and ranked by their key frames' size, one layer per
subscriber chosen from its REMB and receiver reports (and probed back up), a layer that stops
replaced, and the receiver reports a publisher gets.

The Room runs with the fake transport of test_room_audit.py (packets handed to its handlers
directly, what it sends recorded); the offers come from real aiortc peers, made simulcast the
way a browser writes it (aiortc cannot send simulcast: tests/web/test_group_simulcast.py has
Chromium do it for real)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable

import pytest
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_PLI,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtpPacket,
    pack_remb_fci,
)

from facecall.sfu import layers as layers_module
from facecall.sfu.layers import (
    PROBE_STEP,
    PROBE_WAIT_MAX,
    PROBE_WAIT_MIN,
    UNCAPPED,
    Downlink,
    RateMeter,
    allocate,
)
from facecall.sfu.room import PLI_INTERVAL, Room, Slot
from facecall.sfu.sdp import MAX_LAYERS, SfuOfferError, parse_offer
from facecall.sfu.upstream import Upstream
from facecall.sfu.vp8 import keyframe_size
from tests.sfu.test_room import offer, without
from tests.sfu.test_room_audit import DELTA, enter, fake, fake_room, feedback, make_offer, send
from tests.sfu.test_transport import until

__all__ = ["fake_room", "offer"]  # fixtures

RID_EXTENSION = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
LAYERS = {"q": (160, 120), "h": (320, 240), "f": (640, 480)}
#: payload bytes per packet of each layer: rates in the ratio a browser's layers have
SIZES = {"q": 100, "h": 400, "f": 1200}


def simulcast(sdp: str, rids: tuple[str, ...] = ("q", "h", "f"), *,
              extra: Callable[[str], str] = str) -> str:
    """The offer with its sending video m-line made simulcast as Chromium writes it: no
    a=ssrc, the RtpStreamId extension, an a=rid per layer and a=simulcast:send."""
    sections = re.split(r"(?=^m=)", sdp, flags=re.M)
    for i, section in enumerate(sections):
        if section.startswith("m=video") and "a=sendonly" in section:
            section = without(section, r"^a=ssrc")
            lines = [f"a=extmap:9 {RID_EXTENSION}"] + [f"a=rid:{rid} send" for rid in rids] \
                + [f"a=simulcast:send {';'.join(rids)}"]
            sections[i] = extra(section.replace("a=mid:1\r\n",
                                                "a=mid:1\r\n" + "\r\n".join(lines) + "\r\n"))
    return "".join(sections)


def key(width: int, height: int, filler: int = 90) -> bytes:
    """A VP8 payload starting a key frame of this size: descriptor (X, S; I with a 7-bit
    PictureID), frame tag (P = 0), start code, width and height (RFC 6386 §9.1)."""
    return (b"\x90\x80\x01" + b"\x00\x00\x00" + b"\x9d\x01\x2a" + width.to_bytes(2, "little")
            + height.to_bytes(2, "little") + b"k" * filler)


class Publisher:
    """A simulcast publisher in a fake room: packets per layer with their rid, each layer on
    an SSRC of its own, sequence numbers counting per layer."""

    def __init__(self, room: Room, name: str, ssrcs: dict[str, int] | None = None) -> None:
        self.room, self.name = room, name
        self.ssrcs = ssrcs or {"q": 1001, "h": 1002, "f": 1003}
        self.seq = dict.fromkeys(self.ssrcs, 100)

    def packet(self, rid: str, payload: bytes, *, with_rid: bool = True) -> RtpPacket:
        sending = self.room.participants[self.name].offer.sending("video")
        assert sending is not None
        self.seq[rid] += 1
        packet = RtpPacket(payload_type=sending.codec.payloadType,
                           sequence_number=self.seq[rid] % 65536,
                           timestamp=self.seq[rid] * 3000 % 2**32, ssrc=self.ssrcs[rid],
                           payload=payload)
        packet.extensions.mid = sending.mid
        packet.extensions.rtp_stream_id = rid if with_rid else None
        packet.extensions.abs_send_time = int(time.monotonic() * 2**18) & 0xFFFFFF
        return packet

    async def key_frames(self, *rids: str) -> None:
        for rid in rids or tuple(self.ssrcs):
            await send(self.room, self.name, self.packet(rid, key(*LAYERS[rid], SIZES[rid])))

    async def deltas(self, count: int, *rids: str) -> None:
        for _ in range(count):
            for rid in rids or tuple(self.ssrcs):
                await send(self.room, self.name,
                           self.packet(rid, DELTA[:4] + b"d" * SIZES[rid], with_rid=False))


def slot_of(room: Room, subscriber: str, publisher: str = "alice") -> Slot:
    """The subscriber's video slot that carries the publisher (or is to)."""
    return next(slot for slot in room.participants[subscriber].slots["video"]
                if room.participants[publisher] in (slot.feed, slot.pending))


def layer_of(room: Room, subscriber: str, publisher: Publisher) -> str | None:
    """The rid whose stream feeds the subscriber's slot of that publisher now."""
    source = slot_of(room, subscriber, publisher.name).munger.source
    return next((rid for rid, ssrc in publisher.ssrcs.items() if ssrc == source), None)


def remb(room: Room, subscriber: str, bitrate: int) -> RtcpPsfbPacket:
    slot = slot_of(room, subscriber)
    return RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=7, media_ssrc=0,
                          fci=pack_remb_fci(bitrate, [slot.munger.ssrc]))


async def joined(room: Room, *subscribers: str) -> Publisher:
    """Alice publishing simulcast (learnt, all three layers sent once with key frames) and
    the subscribers forwarding her best layer."""
    await room.join("alice", simulcast(await make_offer(1)))
    await enter(room, *subscribers)
    alice = Publisher(room, "alice")
    await alice.key_frames()
    await alice.deltas(5)
    return alice


# --- the offer and the answer


async def test_an_offer_with_rids_is_answered_with_every_layer(offer: str) -> None:
    parsed = parse_offer(simulcast(offer), slots=3)
    sending = parsed.sending("video")
    assert sending is not None and sending.rids == ("q", "h", "f") and sending.ssrc is None

    room = Room(slots=3)
    try:
        from facecall.client.ice import host_addresses
        from tests.sfu.test_transport import LOOPBACK
        with host_addresses(LOOPBACK):
            answer = await room.join("alice", simulcast(offer))
    finally:
        await room.close()
    video = next(s for s in re.split(r"(?=^m=)", answer, flags=re.M) if "a=mid:1\r\n" in s)
    assert "a=rid:q recv\r\na=rid:h recv\r\na=rid:f recv\r\na=simulcast:recv q;h;f\r\n" in video
    assert f"a=extmap:9 {RID_EXTENSION}" in video
    assert "goog-remb" in video
    slot = next(s for s in re.split(r"(?=^m=)", answer, flags=re.M) if "a=mid:7\r\n" in s)
    assert "a=rid" not in slot and RID_EXTENSION not in slot and "goog-remb" in slot


async def test_alternatives_keep_their_first_and_a_paused_layer_is_taken(offer: str) -> None:
    spoilt = simulcast(offer, ("q", "h"), extra=lambda s: s.replace(
        "a=simulcast:send q;h", "a=simulcast:send q,h;~f").replace(
        "a=rid:h send", "a=rid:h send\r\na=rid:f send pt=97;max-width=1280"))
    sending = parse_offer(spoilt, slots=3).sending("video")
    assert sending is not None and sending.rids == ("q", "f")


def _on_audio(s: str) -> str:
    return s.replace("a=mid:0\r\n", "a=mid:0\r\na=rid:a send\r\na=simulcast:send a\r\n")


@pytest.mark.parametrize(("spoil", "message"), [
    (lambda s: _on_audio(s), "only on the sending video m-line"),
    (lambda s: simulcast(s, extra=lambda m: m.replace("a=rid:q send", "a=rid:q recv")),
     "must be 'send'"),
    (lambda s: simulcast(s, ("q/x",)), "not 1 to 16 letters"),
    (lambda s: simulcast(s, ("a" * 17,)), "not 1 to 16 letters"),
    (lambda s: simulcast(s, extra=lambda m: without(m, r"^a=simulcast")), "exactly one a=simulcast"),
    (lambda s: simulcast(s, extra=lambda m: m.replace("a=simulcast:send q;h;f",
                                                      "a=simulcast:send q;h;f\r\na=simulcast:send q")),
     "more than one a=simulcast"),
    (lambda s: simulcast(s, extra=lambda m: m.replace("send q;h;f", "send q;h;x")),
     "which no a=rid declares"),
    (lambda s: simulcast(s, extra=lambda m: m.replace("send q;h;f", "send q;q")), "names q twice"),
    (lambda s: simulcast(s, extra=lambda m: m.replace("a=simulcast:send", "a=simulcast:recv")),
     "'send <rid>;<rid>...'"),
    (lambda s: simulcast(s, extra=lambda m: m.replace("a=rid:h send", "a=rid:q send")),
     "declared twice"),
    (lambda s: simulcast(s, ("a", "b", "c", "d")), f"at most {MAX_LAYERS}"),
    (lambda s: simulcast(s, tuple("abcdefg")), "too many a=rid lines"),
    (lambda s: without(simulcast(s), "rtp-stream-id"), "rtp-stream-id header extension"),
    (lambda s: s.replace("a=mid:7\r\n", "a=mid:7\r\na=rid:r send\r\na=simulcast:send r\r\n"),
     "only on the sending video m-line"),
])
async def test_a_bad_simulcast_offer_is_refused_with_a_clear_error(offer: str, spoil,
                                                                   message: str) -> None:
    with pytest.raises(SfuOfferError, match=re.escape(message)):
        parse_offer(spoil(offer), slots=3)


# --- layers in the room


async def test_layers_are_learnt_from_their_rids_and_ranked_by_their_key_frames(
        fake_room: Room) -> None:
    room = fake_room
    await room.join("alice", simulcast(await make_offer(1)))
    await enter(room, "bob")
    # the rids name the layers in the offer's order; sizes say otherwise: sizes win
    alice = Publisher(room, "alice", {"q": 2001, "h": 2002, "f": 2003})
    global LAYERS
    sizes, LAYERS = LAYERS, {"q": (640, 480), "h": (160, 120), "f": (320, 240)}
    try:
        await alice.key_frames()
    finally:
        LAYERS = sizes
    publisher = room.participants["alice"]
    assert publisher.layers() == [2002, 2003, 2001]
    assert publisher.sizes == {2001: 640 * 480, 2002: 160 * 120, 2003: 320 * 240}
    await alice.deltas(3)
    assert layer_of(room, "bob", alice) == "q"  # the biggest: no cap without feedback

    # what bob gets: his slot's SSRC, no rid (his m-line has no such extension), the SFU's
    # own abs-send-time
    out = fake(room, "bob").sent[-1]
    assert out.ssrc == slot_of(room, "bob").munger.ssrc
    assert out.extensions.rtp_stream_id is None and out.extensions.abs_send_time is not None


async def test_a_rid_cannot_be_taken_twice_nor_a_layer_invented(fake_room: Room) -> None:
    room = fake_room
    alice = await joined(room, "bob")
    dropped = room.stats.dropped_unknown
    # a second SSRC claiming a learnt rid, and a rid the offer did not list
    thief = Publisher(room, "alice", {"q": 3001, "x": 3002})
    await send(room, "alice", thief.packet("q", key(160, 120)))
    await send(room, "alice", thief.packet("x", key(160, 120)))
    assert room.stats.dropped_unknown == dropped + 2
    assert set(room.participants["alice"].layer_of) == set(alice.ssrcs.values())
    # another participant cannot take one of alice's layer SSRCs by naming its own mid
    await enter(room, "carol")
    carol = room.participants["carol"]
    assert not set(carol.sources) & set(alice.ssrcs.values())


async def test_a_congested_subscriber_gets_a_lower_layer_and_the_others_keep_theirs(
        fake_room: Room) -> None:
    room = fake_room
    alice = await joined(room, "bob", "carol")
    await asyncio.sleep(PLI_INTERVAL)  # the PLIs of the join may go again
    await alice.deltas(30)
    assert layer_of(room, "bob", alice) == layer_of(room, "carol", alice) == "f"
    plis = len([p for p in fake(room, "alice").rtcp if isinstance(p, RtcpPsfbPacket)
                and p.fmt == RTCP_PSFB_PLI and p.media_ssrc == alice.ssrcs["q"]])

    # bob's estimate is a fraction of what his slot gets: only the lowest layer fits
    slot = slot_of(room, "bob")
    sent = slot.rate.bps(time.monotonic())
    await feedback(room, "bob", remb(room, "bob", int(sent * 0.1)))
    assert room.participants["bob"].downlink.cap is not None
    assert slot.pending_ssrc == alice.ssrcs["q"]
    assert len([p for p in fake(room, "alice").rtcp if isinstance(p, RtcpPsfbPacket)
                and p.fmt == RTCP_PSFB_PLI and p.media_ssrc == alice.ssrcs["q"]]) == plis + 1

    # the best layer goes on until the lowest's key frame; then the stream goes on unbroken
    switches = room.stats.layer_switches
    before = len(fake(room, "bob").sent)
    await alice.deltas(2)
    assert layer_of(room, "bob", alice) == "f"
    last = fake(room, "bob").sent[-1]
    await alice.key_frames("q")
    await alice.deltas(2)
    assert layer_of(room, "bob", alice) == "q" and room.stats.layer_switches == switches + 1
    after = [p for p in fake(room, "bob").sent[before:] if p.ssrc == last.ssrc]
    numbers = [p.sequence_number for p in after]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    assert keyframe_size(fake(room, "bob").sent[-3].payload) == (160, 120)
    assert layer_of(room, "carol", alice) == "f"  # carol said nothing: she keeps the best


async def test_loss_a_subscriber_reports_lowers_its_layer_one_step(fake_room: Room) -> None:
    room = fake_room
    alice = await joined(room, "bob")
    await alice.deltas(30)
    slot = slot_of(room, "bob")
    report = RtcpRrPacket(ssrc=7, reports=[RtcpReceiverInfo(
        ssrc=slot.munger.ssrc, fraction_lost=80, packets_lost=20, highest_sequence=1,
        jitter=0, lsr=0, dlsr=0)])  # 31 % lost
    await feedback(room, "bob", report)
    assert slot.pending_ssrc == alice.ssrcs["h"]  # 85 % of f pays for h, not for f
    # a little loss is no congestion
    await feedback(room, "carol" if "carol" in room.participants else "bob", RtcpRrPacket(
        ssrc=7, reports=[RtcpReceiverInfo(ssrc=slot.munger.ssrc, fraction_lost=10,
                                          packets_lost=21, highest_sequence=2, jitter=0,
                                          lsr=0, dlsr=0)]))
    assert room.participants["bob"].downlink.congestions == 1


async def test_garbage_remb_and_reports_about_other_ssrcs_change_nothing(fake_room: Room) -> None:
    room = fake_room
    alice = await joined(room, "bob")
    await alice.deltas(10)
    await feedback(room, "bob", RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=7, media_ssrc=0,
                                               fci=b"REMX\x00\x00\x00\x00"))
    await feedback(room, "bob", RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=7, media_ssrc=0,
                                               fci=pack_remb_fci(1, [alice.ssrcs["f"], 99])))
    await feedback(room, "bob", RtcpRrPacket(ssrc=7, reports=[RtcpReceiverInfo(
        ssrc=alice.ssrcs["f"], fraction_lost=255, packets_lost=1, highest_sequence=1,
        jitter=0, lsr=0, dlsr=0)]))
    assert room.participants["bob"].downlink.cap is None
    assert layer_of(room, "bob", alice) == "f"


async def test_a_layer_that_stops_is_replaced_by_the_best_one_still_sent(
        fake_room: Room, monkeypatch: pytest.MonkeyPatch) -> None:
    room = fake_room
    alice = await joined(room, "bob")
    assert layer_of(room, "bob", alice) == "f"
    # the publisher's encoder drops its best layer (a browser does, when its uplink shrinks)
    deadline = time.monotonic() + layers_module.WINDOW + 0.8
    while time.monotonic() < deadline:
        await alice.deltas(1, "q", "h")
        await asyncio.sleep(0.02)
    slot = slot_of(room, "bob")
    assert slot.pending_ssrc == alice.ssrcs["h"]
    await alice.key_frames("h")
    assert layer_of(room, "bob", alice) == "h"


async def test_a_publisher_gets_receiver_reports_about_its_streams(
        fake_room: Room) -> None:
    room = fake_room
    alice = await joined(room, "bob")
    alice.seq["h"] += 5  # five packets of h lost
    sending = time.monotonic() + 1.5  # the estimator wants a second of arrivals for a rate
    while time.monotonic() < sending:
        await alice.deltas(1)
        await asyncio.sleep(0.01)

    def reports() -> list[RtcpRrPacket]:
        return [p for p in fake(room, "alice").rtcp if isinstance(p, RtcpRrPacket) and p.reports]

    before = len(reports())
    await until(lambda: len(reports()) > before, what="a receiver report to the publisher")
    blocks = {b.ssrc: b for b in reports()[-1].reports}
    assert set(blocks) >= set(alice.ssrcs.values())
    assert blocks[alice.ssrcs["h"]].packets_lost == 5 and blocks[alice.ssrcs["f"]].packets_lost == 0
    assert blocks[alice.ssrcs["h"]].highest_sequence == alice.seq["h"]
    # and no REMB: the SFU's own estimate is not sent upstream (facecall.sfu.upstream)
    assert not [p for p in fake(room, "alice").rtcp
                if isinstance(p, RtcpPsfbPacket) and p.fmt == RTCP_PSFB_APP]


# --- the pieces alone


def test_upstream_reports_lsr_and_dlsr_from_the_last_sender_report() -> None:
    from aiortc.rtp import RtcpSenderInfo, RtcpSrPacket
    upstream = Upstream(rtcp_ssrc=5)
    upstream.add_stream(77, 90000)
    assert upstream.report(0.0) is None  # nothing came yet
    upstream.on_rtp(RtpPacket(ssrc=77, sequence_number=10, timestamp=0))
    upstream.on_rtp(RtpPacket(ssrc=99, sequence_number=10, timestamp=0))  # not its stream
    upstream.on_sender_report(RtcpSrPacket(ssrc=77, sender_info=RtcpSenderInfo(
        ntp_timestamp=0x1234_5678_9ABC_DEF0, rtp_timestamp=0, packet_count=1, octet_count=1)))
    upstream.on_sender_report(RtcpSrPacket(ssrc=78, sender_info=RtcpSenderInfo(
        ntp_timestamp=1, rtp_timestamp=0, packet_count=1, octet_count=1)))  # not its stream
    report = upstream.report(time.monotonic() + 0.5)
    assert report is not None and [b.ssrc for b in report.reports] == [77]
    assert report.reports[0].lsr == 0x5678_9ABC and 0.4 * 65536 < report.reports[0].dlsr < 0.7 * 65536
    assert upstream.report(time.monotonic() + 0.6) is None  # not due yet


def test_keyframe_size_reads_the_key_frame_header_and_nothing_else() -> None:
    assert keyframe_size(key(1280, 720)) == (1280, 720)
    assert keyframe_size(DELTA) is None
    assert keyframe_size(key(1280, 720)[:10]) is None  # cut short
    assert keyframe_size(key(1280, 720).replace(b"\x9d\x01\x2a", b"\x00\x00\x00")) is None
    # scaling bits (the top two of each 16) are not part of the size
    payload = bytearray(key(640, 360))
    payload[10] |= 0xC0
    assert keyframe_size(bytes(payload)) == (640, 360)


def test_allocate_gives_each_slot_its_lowest_then_the_preferred_ones_more() -> None:
    rates = [[100, 400, 1200], [100, 400, 1200], [100, 400]]
    assert allocate(rates, None) == [2, 2, 1]
    assert allocate(rates, 300) == [0, 0, 0]
    assert allocate(rates, 300 + 300 * 1.2) == [1, 0, 0]  # an upgrade needs its margin
    assert allocate(rates, 300 + 300, current=[1, None, None]) == [1, 0, 0]  # keeping one, not
    assert allocate(rates, 300 + 1100 * 1.2 + 300 * 1.2) == [2, 1, 0]
    assert allocate(rates, 0) == [0, 0, 0]  # below everything: still the lowest each
    assert allocate([], 100) == []


def test_a_rate_meter_counts_the_last_second_only() -> None:
    meter = RateMeter()
    for i in range(10):
        meter.add(125, 100.0 + i * 0.1)  # 10 x 1000 bits within one second
    assert meter.bps(100.95) == pytest.approx(10_000)
    assert meter.bps(101.55) == pytest.approx(4_000)  # the first 6 buckets left the window
    assert meter.bps(250.0) == 0
    meter.add(125, 250.0)
    assert meter.bps(250.0) == 1000


def test_the_downlink_backs_off_on_congestion_and_probes_back_up() -> None:
    downlink = Downlink()
    assert downlink.budget(0.0) is None
    assert not downlink.on_remb(950, sent=1000, total=1000, now=0.0)  # estimate keeps up
    assert downlink.on_remb(500, sent=1000, total=3000, now=0.0)  # one of three slots named
    assert downlink.cap == 1500 and downlink.budget(1.0) == 1500
    assert downlink.budget(PROBE_WAIT_MIN) == 1500 * PROBE_STEP  # the probe
    # congestion right after a probe: the probe failed, the next waits twice as long
    downlink.on_loss(0.3, total=2000, now=PROBE_WAIT_MIN + 0.5)
    assert downlink.cap == 1700  # the lower of the old cap (2250) and 85 % of 2000
    assert downlink.probe_wait == 2 * PROBE_WAIT_MIN
    assert downlink.budget(PROBE_WAIT_MIN + 0.5 + 2 * PROBE_WAIT_MIN - 0.1) == 1700
    assert not downlink.on_loss(0.05, total=2000, now=10.0)
    for _ in range(10):  # failures in a row: the wait stops growing
        downlink.congested(100, downlink.last_probe or 0.0)
        downlink.budget(downlink.next_probe)
    assert downlink.probe_wait == PROBE_WAIT_MAX
    # probes that hold bring the wait back down, and a cap grown past any need goes
    now = downlink.next_probe
    while downlink.cap is not None:
        downlink.budget(now)
        now = downlink.next_probe
    assert downlink.probe_wait < PROBE_WAIT_MAX and downlink.budget(now) is None
    assert UNCAPPED > 3 * 2_500_000


def test_the_abs_send_time_the_sfu_writes_is_the_ntp_clocks() -> None:
    from aiortc.clock import current_ntp_time

    from facecall.sfu.munger import abs_send_time
    for _ in range(5):
        ours, ntp = abs_send_time(), (current_ntp_time() >> 14) & 0xFFFFFF
        assert min((ours - ntp) % 2**24, (ntp - ours) % 2**24) < 2**18 // 100  # within 10 ms
