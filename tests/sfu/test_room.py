"""A room of the SFU (facecall.sfu.room) with real aiortc peers on 127.0.0.1: everyone decodes
everyone else, through the slots; leaving, joining, vanishing; bad offers; packets from unknown
SSRCs; no decoder on the SFU's side."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable

import pytest
from aiortc.rtp import (
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpPsfbPacket,
    RtcpRtpfbPacket,
    RtpPacket,
)

from facecall.client.ice import host_addresses
from facecall.media.sources import SyntheticAudioTrack
from facecall.sfu.room import Room, RoomError
from facecall.sfu.sdp import SfuOfferError, parse_offer
from tests.sfu.test_transport import (
    LOOPBACK,
    Client,
    ReceiverSpy,
    TalkingAudioTrack,
    receivers,
    until,
)

__all__ = ["receivers"]  # the fixture, shared with test_transport.py
NAMES = {1: "alice", 2: "bob", 3: "carol", 4: "dave"}


@pytest.fixture
async def room() -> AsyncIterator[Room]:
    room = Room(slots=3, silence_timeout=2.0)
    yield room
    await room.close()


async def join(room: Room, mark: int, slots: int = 3, audio: SyntheticAudioTrack | None = None,
               spoil: Callable[[str], str] = str) -> Client:
    client = Client(NAMES[mark], mark, slots, audio=audio)
    offer = spoil(await client.offer())
    with host_addresses(LOOPBACK):
        answer = await room.join(client.name, offer)
    await client.accept(answer)
    return client


def video_slots(room: Room, client: Client) -> dict[str, str]:
    """The client's video slot mids that the room fills now, and with whom."""
    kinds = {t.mid: t.kind for t in client.pc.getTransceivers()}
    return {mid: who for mid, who in room.slot_sources(client.name).items()
            if who is not None and kinds[mid] == "video"}


def decodes_from(room: Room, client: Client, *marks: int) -> bool:
    """The client's latest decoded video frame in each slot the room fills is from the sender
    the room put there, and these senders are exactly ``marks`` (never the client itself)."""
    assert client.mark not in client.seen()
    latest = {mid: client.marks[mid][-1] for mid in video_slots(room, client) if client.marks.get(mid)}
    slots = video_slots(room, client)
    return (sorted(latest.values()) == sorted(marks)
            and all(NAMES[mark] == slots[mid] for mid, mark in latest.items()))


def hears(client: Client, count: int) -> bool:
    return sum(1 for frames in client.audio_frames.values() if frames > 10) >= count


async def test_three_decode_each_other_then_one_leaves_and_a_fourth_joins(
        room: Room, receivers: ReceiverSpy) -> None:
    clients = [await join(room, mark) for mark in (1, 2, 3)]
    alice, bob, carol = clients
    try:
        for client in clients:
            others = [c.mark for c in clients if c is not client]
            await until(lambda c=client, o=others: decodes_from(room, c, *o) and hears(c, 2),
                        what=f"{client.name} decoding {others}")
        assert all(m in (2, 3) for marks in alice.marks.values() for m in marks)  # never its own
        assert room.stats.forwarded > 0
        # the SFU built no RTCRtpReceiver, hence no decoder; the clients did
        sfu_dtls = {p.transport._dtls for p in room.participants.values()}
        assert not sfu_dtls & set(receivers.transports) and receivers.transports

        await room.leave("carol")
        await carol.close()
        assert "carol" not in room.participants
        assert "carol" not in room.slot_sources("alice").values()  # her slot is free
        for client in (alice, bob):
            client.reset()
        await until(lambda: decodes_from(room, alice, 2) and decodes_from(room, bob, 1),
                    what="alice and bob still decoding each other")

        dave = await join(room, 4)
        clients = [alice, bob, dave]
        for client in clients:
            client.reset()
        await until(lambda: decodes_from(room, dave, 1, 2) and hears(dave, 2), what="dave decoding")
        await until(lambda: decodes_from(room, alice, 2, 4) and decodes_from(room, bob, 1, 4),
                    what="alice and bob decoding dave")
    finally:
        for client in clients:
            await client.close()


async def test_a_packet_from_an_unknown_ssrc_is_dropped(room: Room) -> None:
    alice, bob = await join(room, 1, slots=1), await join(room, 2, slots=1)
    try:
        await until(lambda: decodes_from(room, bob, 1), what="bob decoding alice")
        video = next(t for t in alice.pc.getTransceivers() if t.kind == "video")
        sending = parse_offer(alice.pc.localDescription.sdp, slots=1).sending("video")
        assert sending is not None
        stranger = RtpPacket(payload_type=sending.codec.payloadType, sequence_number=1,
                             timestamp=1, ssrc=0xBAD, payload=b"\x10\x00\x00")
        # through alice's real DTLS-SRTP transport, as any packet of hers
        await video.sender.transport._send_rtp(stranger.serialize())
        await until(lambda: room.stats.dropped_unknown >= 1, what="the stranger dropped")
        forwarded = room.stats.forwarded
        await until(lambda: room.stats.forwarded > forwarded + 10, what="forwarding going on")
        assert set(room.participants) == {"alice", "bob"}
    finally:
        await alice.close()
        await bob.close()


async def test_an_offer_without_ssrcs_and_one_that_wants_to_be_the_dtls_server(room: Room) -> None:
    """alice announces no SSRC (the room learns hers from the MID extension, RFC 8843 §9.2); bob
    offers a=setup:passive (the SFU is the DTLS client, RFC 8842 §5.3)."""
    alice = await join(room, 1, slots=1, spoil=lambda s: without(s, r"^a=ssrc"))
    bob = await join(room, 2, slots=1, spoil=lambda s: s.replace("a=setup:actpass", "a=setup:passive"))
    try:
        assert room.participants["alice"].sources == {} and room.participants["bob"].sources
        await until(lambda: decodes_from(room, alice, 2) and decodes_from(room, bob, 1),
                    what="alice and bob decoding each other")
        assert set(room.participants["alice"].sources.values()) == {"audio", "video"}
    finally:
        await alice.close()
        await bob.close()


async def test_the_room_survives_a_participant_vanishing_without_dtls_close(room: Room) -> None:
    alice, bob, carol = [await join(room, mark, slots=2) for mark in (1, 2, 3)]
    try:
        await until(lambda: decodes_from(room, alice, 2, 3) and decodes_from(room, bob, 1, 3),
                    what="all connected")
        # carol's process dies: her sockets close, no DTLS close_notify, no goodbye
        connection = carol.pc.getTransceivers()[0].receiver.transport.transport._connection
        for protocol in connection._protocols:
            protocol.transport.close()
        await until(lambda: "carol" not in room.participants, timeout=15, what="carol removed")
        alice.reset()
        bob.reset()
        await until(lambda: decodes_from(room, alice, 2) and decodes_from(room, bob, 1),
                    what="alice and bob decoding each other after carol vanished")
        assert "carol" not in room.slot_sources("alice").values()
    finally:
        for client in (alice, bob, carol):
            await client.close()


async def test_with_more_publishers_than_slots_the_dominant_speaker_gets_the_slot(room: Room) -> None:
    alice, bob = await join(room, 1, slots=1), await join(room, 2, slots=1)
    carol = None
    try:
        await until(lambda: decodes_from(room, alice, 2) and decodes_from(room, bob, 1),
                    what="alice and bob decoding each other")
        carol = await join(room, 3, slots=1, audio=TalkingAudioTrack())  # she talks, they don't
        await until(lambda: room.speaker.dominant == "carol", what="carol dominant")
        await until(lambda: decodes_from(room, alice, 3) and decodes_from(room, bob, 3),
                    what="alice's and bob's one slot moved to carol")
        assert room.slot_sources("alice") == {"2": "carol", "3": "carol"}
        await until(lambda: decodes_from(room, carol, 1) or decodes_from(room, carol, 2),
                    what="carol decoding one of them")
    finally:
        for client in (alice, bob, carol):
            if client is not None:
                await client.close()


async def test_subscriber_feedback_goes_to_the_cache_or_the_publisher(room: Room) -> None:
    alice, bob = await join(room, 1, slots=1), await join(room, 2, slots=1)
    try:
        await until(lambda: decodes_from(room, bob, 1), what="bob decoding alice")
        slot = room.participants["bob"].slots["video"][0]
        bob_dtls = bob.pc.getTransceivers()[0].sender.transport
        rtcp_ssrc = bob.pc.getTransceivers()[0].sender._ssrc
        # a NACK for a packet just forwarded is answered from the cache (RFC 4585 §6.2.1)
        await until(lambda: slot.munger.forwarded > 20, what="video forwarded")
        recent = (slot.munger._last_seq - 5) % 65536
        assert slot.munger.source_of(recent) is not None
        nack = RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=rtcp_ssrc, media_ssrc=slot.munger.ssrc,
                               lost=[recent])
        await bob_dtls._send_rtp(bytes(nack))
        await until(lambda: room.stats.nacks_answered >= 1, what="the NACK answered")
        # one the cache no longer holds is NACKed to alice in her own numbers
        source = slot.feed.source("video") if slot.feed else None
        assert source is not None
        room.participants["alice"].caches[source].clear()
        await bob_dtls._send_rtp(bytes(nack))
        await until(lambda: room.stats.nacks_forwarded >= 1, what="the NACK forwarded to alice")
        # a PLI, then a FIR (RFC 5104 §4.3.1), on the slot become PLIs to alice
        for packet in (RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=rtcp_ssrc, media_ssrc=slot.munger.ssrc),
                       RtcpPsfbPacket(fmt=RTCP_PSFB_FIR, ssrc=rtcp_ssrc, media_ssrc=0,
                                      fci=slot.munger.ssrc.to_bytes(4, "big") + bytes([1, 0, 0, 0]))):
            await asyncio.sleep(0.6)  # past the PLI throttle
            sent = room.stats.plis_sent
            await bob_dtls._send_rtp(bytes(packet))
            await until(lambda s=sent: room.stats.plis_sent > s, what=f"a PLI to alice after {packet}")
        # feedback about an SSRC that is no slot of bob's changes nothing
        await bob_dtls._send_rtp(bytes(RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=rtcp_ssrc, media_ssrc=0xBAD)))
        await bob_dtls._send_rtp(bytes(RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=rtcp_ssrc,
                                                       media_ssrc=0xBAD, lost=[1, 2])))
        forwarded = room.stats.forwarded
        await until(lambda: room.stats.forwarded > forwarded + 10, what="forwarding going on")
    finally:
        await alice.close()
        await bob.close()


# --- offers the SFU refuses (no network: the offer comes from a real aiortc peer, then is spoilt)


@pytest.fixture
async def offer() -> AsyncIterator[str]:
    client = Client("alice", 1, slots=3)
    try:
        yield await client.offer()
    finally:
        await client.close()


def without(sdp: str, pattern: str) -> str:
    return "".join(line for line in sdp.splitlines(keepends=True) if not re.search(pattern, line))


@pytest.mark.parametrize(("spoil", "message"), [
    (lambda s: without(s, r"^a=group:BUNDLE"), "no BUNDLE group"),
    (lambda s: without(s, r"VP8"), "no VP8 offered"),
    (lambda s: without(s, r"opus"), "no opus offered"),
    (lambda s: without(s, r"^a=rtcp-mux"), "no a=rtcp-mux"),
    (lambda s: without(s, r"^a=candidate"), "no ICE candidates"),
    (lambda s: without(s, r"^a=fingerprint"), "no DTLS fingerprint"),
    (lambda s: without(s, r"^a=ice-pwd"), "no ICE ufrag/pwd"),
    (lambda s: s.replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 1"), "every m-line"),
    (lambda s: s.replace("a=recvonly", "a=sendonly"), "more than one sending audio"),
    (lambda s: "not an SDP at all", "not an SDP offer"),
    (lambda s: "", "empty offer"),
    (lambda s: s.replace("m=audio", "m=audio x", 1), "not an SDP offer"),
    (lambda s: s.replace("a=extmap:2 ", "a=extmap:1 ", 1), "names two extensions"),
    (lambda s: s + "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:9\r\n",
     "too many m-lines"),
])
async def test_a_bad_offer_is_refused_with_a_clear_error(offer: str, spoil, message: str) -> None:
    with pytest.raises(SfuOfferError, match=re.escape(message)):
        parse_offer(spoil(offer), slots=3)


async def test_more_slots_than_the_room_has_are_refused(offer: str) -> None:
    parse_offer(offer, slots=3)
    with pytest.raises(SfuOfferError, match="too many m-lines"):
        parse_offer(offer, slots=1)
    datachannel = offer + "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:9\r\n"
    with pytest.raises(SfuOfferError, match="unsupported m-line kind 'application'"):
        parse_offer(datachannel, slots=4)
    receiver = Client("bob", 2, slots=3, send=False)  # 6 m-lines, all receive slots
    try:
        with pytest.raises(SfuOfferError, match="more than 2 recvonly audio m-lines"):
            parse_offer(await receiver.offer(), slots=2)
    finally:
        await receiver.close()


async def test_a_bad_offer_changes_nothing_in_the_room(room: Room, offer: str) -> None:
    with pytest.raises(SfuOfferError):
        await room.join("mallory", without(offer, r"^a=group:BUNDLE"))
    assert room.participants == {}
    with host_addresses(LOOPBACK):
        await room.join("alice", offer)
        with pytest.raises(RoomError, match="already in the room"):
            await room.join("alice", offer)
    assert list(room.participants) == ["alice"]
