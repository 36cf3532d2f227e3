"""The SFU's per-participant transport (facecall.sfu.transport): ICE + DTLS-SRTP with a real
aiortc peer on 127.0.0.1, packets handed to our handler and never to a decoder; the aiortc
private names it relies on.

The client helpers here are shared with test_room.py."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import av
import numpy as np
import pytest
from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.rtcdtlstransport import RTCDtlsTransport, RtpRouter
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtp import RTCP_PSFB_PLI, AnyRtcpPacket, RtcpPsfbPacket, RtpPacket

from facecall.client.ice import host_addresses
from facecall.media.sources import SyntheticAudioTrack, SyntheticVideoTrack, now_us
from facecall.media.stamp import read_stamp, stamp_frame
from facecall.sfu.munger import RtpMunger
from facecall.sfu.sdp import build_answer, parse_offer
from facecall.sfu.transport import SfuTransport
from facecall.sfu.vp8 import is_keyframe

LOOPBACK = ["127.0.0.1"]
MARK_SHIFT = 24


class MarkedVideoTrack(SyntheticVideoTrack):
    """The synthetic pattern at 320x180, 15 fps, its stamp's counter carrying the sender's
    ``mark`` in the top byte, so a receiver knows whose frame it decoded."""

    def __init__(self, mark: int) -> None:
        super().__init__(320, 180, fps=15)
        self.mark = mark

    async def recv(self) -> av.VideoFrame:
        frame = await super().recv()
        counter = (self.mark << MARK_SHIFT) | ((self.frames_sent - 1) & 0xFFFFFF)
        return stamp_frame(frame, now_us(), counter)


class TalkingAudioTrack(SyntheticAudioTrack):
    """Someone talking without a pause: a steady tone at about -13 dBov, which the sender's
    RFC 6464 level marks as speech."""

    async def recv(self) -> av.AudioFrame:
        frame = await super().recv()
        n = np.arange(frame.pts, frame.pts + frame.samples)
        tone = (0.3 * 32767 * np.sin(2 * np.pi * 220 * n / self.sample_rate)).astype(np.int16)
        loud = av.AudioFrame.from_ndarray(tone.reshape(1, -1), format="s16", layout="mono")
        loud.sample_rate, loud.pts, loud.time_base = frame.sample_rate, frame.pts, frame.time_base
        return loud


class Client:
    """An aiortc peer shaped for the SFU: sends one audio and one video, receives ``slots`` of
    each; records what it decodes per slot (mid → marks of video frames / audio frame count)."""

    def __init__(self, name: str, mark: int, slots: int = 3, *, send: bool = True,
                 audio: SyntheticAudioTrack | None = None) -> None:
        self.name, self.mark = name, mark
        # max-bundle: with aiortc's default (balanced), a second m-line of a kind stays on a
        # transport of its own even when the answer bundles everything
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        self.video = MarkedVideoTrack(mark)
        self.audio = audio or SyntheticAudioTrack()
        if send:
            self.pc.addTransceiver(self.audio, direction="sendonly")
            self.pc.addTransceiver(self.video, direction="sendonly")
        for kind in ("audio", "video"):
            for _ in range(slots):
                self.pc.addTransceiver(kind, direction="recvonly")
        self.marks: dict[str, list[int]] = defaultdict(list)
        self.audio_frames: dict[str, int] = defaultdict(int)
        self._readers: list[asyncio.Task[None]] = []

    async def offer(self) -> str:
        with host_addresses(LOOPBACK):
            await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def accept(self, answer: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        for transceiver in self.pc.getTransceivers():
            if transceiver.direction == "recvonly":
                self._readers.append(asyncio.ensure_future(self._read(transceiver.mid, transceiver.receiver)))

    async def _read(self, mid: str, receiver: RTCRtpReceiver) -> None:
        while True:
            frame = await receiver.track.recv()
            if receiver.track.kind == "audio":
                self.audio_frames[mid] += 1
            elif (stamp := read_stamp(frame)) is not None:
                self.marks[mid].append(stamp.counter >> MARK_SHIFT)

    def seen(self) -> set[int]:
        """Marks of the senders whose video this client decoded."""
        return {m for marks in self.marks.values() for m in marks}

    def reset(self) -> None:
        self.marks.clear()
        self.audio_frames.clear()

    async def close(self) -> None:
        for task in self._readers:
            task.cancel()
        await self.pc.close()


async def until(condition: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    """Wait for ``condition`` (polling); fail the test with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what or condition}")
        await asyncio.sleep(0.05)


class ReceiverSpy:
    """Records the transport of every ``RTCRtpReceiver`` built (a decoder lives only inside one)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.transports: list[RTCDtlsTransport] = []
        original = RTCRtpReceiver.__init__

        def spy(receiver: RTCRtpReceiver, kind: str, transport: RTCDtlsTransport) -> None:
            self.transports.append(transport)
            original(receiver, kind, transport)

        monkeypatch.setattr(RTCRtpReceiver, "__init__", spy)


@pytest.fixture
def receivers(monkeypatch: pytest.MonkeyPatch) -> Iterator[ReceiverSpy]:
    yield ReceiverSpy(monkeypatch)


def test_the_aiortc_private_names_we_rely_on_are_there() -> None:
    """facecall.sfu.transport's docstring lists them: an aiortc upgrade fails here first."""
    for name in ("_rtp_router", "_rtp_header_extensions_map", "_rx_srtp"):
        assert hasattr(RTCDtlsTransport(_ice_transport(), [_certificate()]), name)
    assert isinstance(RtpRouter().ssrc_table, dict)  # pruned with the inbound SRTP streams
    for name in ("_send_rtp", "_set_role"):
        assert callable(getattr(RTCDtlsTransport, name))
    parameters = inspect.signature(RtpRouter.register_receiver).parameters
    assert list(parameters) == ["self", "receiver", "ssrcs", "payload_types", "mid"]
    assert list(inspect.signature(RtpRouter.register_sender).parameters) == ["self", "sender", "ssrc"]
    for name in ("unregister_receiver", "unregister_sender", "route_rtp", "route_rtcp"):
        assert callable(getattr(RtpRouter, name))
    source = inspect.getsource(RTCDtlsTransport)  # what the router's recipients are called with
    assert "receiver._handle_rtp_packet(packet, arrival_time_ms=arrival_time_ms)" in source
    assert "recipient._handle_rtcp_packet(packet)" in source
    assert "receiver._handle_disconnect()" in source
    assert "self._rtp_router.route_rtp(packet)" in source
    assert "self._rx_srtp.unprotect(data)" in source and "self._rx_srtp.unprotect_rtcp(data)" in source


def _certificate() -> Any:
    from aiortc.rtcdtlstransport import RTCCertificate
    return RTCCertificate.generateCertificate()


def _ice_transport() -> Any:
    from aiortc.rtcicetransport import RTCIceGatherer, RTCIceTransport
    return RTCIceTransport(RTCIceGatherer(iceServers=[]))


class Echo:
    """A handler that sends a client's own video back to it through its first video slot,
    rewritten by an RtpMunger (as a room does), and records the RTCP it gets."""

    def __init__(self) -> None:
        self.munger: RtpMunger | None = None
        self.payload_type = 0
        self.rtp: list[int] = []
        self.keyframes = 0
        self.rtcp: list[AnyRtcpPacket] = []
        self.closed = 0
        self.source = 0

    async def handle_rtp(self, transport: SfuTransport, packet: RtpPacket, arrival: float) -> None:
        self.rtp.append(packet.ssrc)
        if packet.extensions.mid == "1" and self.munger is not None:  # the client's video m-line
            self.keyframes += is_keyframe(packet.payload)
            self.munger.switch_to(packet.ssrc)
            self.source = packet.ssrc
            out = self.munger.forward(packet, arrival)
            if out is not None:
                out.payload_type = self.payload_type
                await transport.send_rtp(out)

    async def handle_rtcp(self, transport: SfuTransport, packet: AnyRtcpPacket) -> None:
        self.rtcp.append(packet)
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_PLI and self.source:
            await transport.send_rtcp([RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=transport.rtcp_ssrc,
                                                      media_ssrc=self.source)])

    def handle_closed(self, transport: SfuTransport) -> None:
        self.closed += 1


async def test_a_client_gets_its_own_video_back_through_the_transport(receivers: ReceiverSpy) -> None:
    client = Client("alice", mark=7, slots=1)
    handler = Echo()
    transport = SfuTransport(handler)
    try:
        offer = parse_offer(await client.offer(), slots=1)
        with host_addresses(LOOPBACK):
            await transport.gather()
        assert {c.ip for c in transport.candidates} == {"127.0.0.1"}
        slot = offer.slots("video")[0]
        slot_ssrc = 0x51071
        handler.munger, handler.payload_type = RtpMunger(slot_ssrc, 90000), slot.codec.payloadType
        transport.configure(offer.header_extensions, [m.codec.payloadType for m in offer.media],
                            [slot_ssrc])
        answer = build_answer(offer, ice=transport.ice_parameters, candidates=transport.candidates,
                              fingerprints=transport.fingerprints,
                              slot_ssrcs={m.mid: slot_ssrc + i for i, m in
                                          enumerate(offer.slots("video") + offer.slots("audio"))},
                              session_id=1)
        connected = asyncio.ensure_future(transport.connect(offer.ice, offer.candidates, offer.dtls,
                                                            offer.sfu_dtls_role))
        await client.accept(answer)
        assert await asyncio.wait_for(connected, 20)
        assert transport.state == "connected"
        await until(lambda: client.seen() == {7}, what="alice's own frames, back through the SFU")
        video_ssrc = offer.sending("video").ssrc
        assert video_ssrc in handler.rtp and offer.sending("audio").ssrc in handler.rtp
        # the client's receiver reports on and NACKs/PLIs the slot's SSRC: RTCP about it reaches us
        await until(lambda: any(getattr(p, "media_ssrc", None) == slot_ssrc or slot_ssrc in
                                [r.ssrc for r in getattr(p, "reports", [])] for p in handler.rtcp),
                    what="RTCP about the slot's SSRC")
        # a PLI we send makes the client's encoder produce a key frame (RFC 4585 §6.3.1)
        before = handler.keyframes
        pli = RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=transport.rtcp_ssrc, media_ssrc=video_ssrc)
        assert await transport.send_rtcp([pli])
        await until(lambda: handler.keyframes > before, what="a key frame after our PLI")
        # no RTCRtpReceiver (hence no decoder) on the SFU's side; only our sink on its router
        assert transport._dtls not in receivers.transports
        assert [type(r).__name__ for r in transport._dtls._rtp_router.receivers] == ["_Sink"]
        assert any(t is not transport._dtls for t in receivers.transports)  # the client's do decode
    finally:
        await client.close()
        await transport.close()
    assert handler.closed == 1
    assert transport.state == "closed"
    assert not await transport.send_rtp(RtpPacket(ssrc=1))  # closed: nothing sent, no error
