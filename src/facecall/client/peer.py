"""One peer connection of a 1:1 call: offer/answer, trickled candidates, local/remote tracks.

aiortc gathers every candidate while setting the local description and puts them in the SDP
(aioice does not trickle), so a facecall peer sends its description and then an end-of-candidates
``call.candidate`` (RFC 8838 §8.2, ``null``). Candidates the far end trickles are applied with
``addIceCandidate`` (W3C webrtc §4.4.1.6), buffered until the remote description is set
(RFC 8838 §4.1). aiortc cannot restart ICE on a live connection, so an ICE restart
(RFC 8445 §9, new ufrag/pwd and fresh gathering) is done by replacing the whole
``PeerSession`` — see :mod:`facecall.client.call`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCDataChannel,
    RTCIceCandidate,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.rtcdtlstransport import certificate_digest
from aiortc.sdp import candidate_from_sdp

from facecall.client.encoders import EncoderTuning, encoder_tuning, encoder_wrapper
from facecall.client.ice import host_addresses, keep_best_nominated_pair
from facecall.client.sframe_media import FrameProtection, decrypt_frames, sframe_encoder
from facecall.client.tracks import LocalTrack
from facecall.media.engine import MediaEngine
from facecall.media.engine.codecs import video_codec_preferences

CODECS = {"VP8": "video/VP8", "H264": "video/H264"}
#: the call's data channel, negotiated out of band (W3C webrtc §6.2 ``negotiated``): both ends
#: create it with this label and id before the first offer (the web client too, peer.js)
DATA_CHANNEL_LABEL = "facecall"
DATA_CHANNEL_ID = 0


def dtls_fingerprints(pc: RTCPeerConnection) -> tuple[str, str] | None:
    """The ``sha-256`` fingerprints (``sha-256 HEX:…``) of the certificates at both ends of
    ``pc``'s connected DTLS transport: this side's own, and the one the other side's DTLS
    presented and aiortc accepted — the certificate the media is really encrypted with, never
    the SDP's lines (with BUNDLE, aiortc checks only the first m-section's; docs/security.md).
    None before the handshake. Reads aiortc's private ``_ssl`` (pinned 1.16: tested)."""
    for transceiver in pc.getTransceivers():
        transport = transceiver.sender.transport
        if transport is None or transport.state != "connected":
            continue
        peer = transport._ssl.get_peer_certificate(as_cryptography=True)
        mine = next((f.value for f in transport.getLocalParameters().fingerprints
                     if f.algorithm.lower() == "sha-256"), None)
        if peer is None or mine is None:
            return None
        return f"sha-256 {mine.upper()}", f"sha-256 {certificate_digest(peer, 'sha-256')}"
    return None


class PeerSession:
    """An ``RTCPeerConnection`` configured for a facecall device."""

    def __init__(
        self,
        *,
        ice_servers: list[RTCIceServer],
        relay_only: bool = False,
        ice_host_addresses: Sequence[str] | None = None,
        tuning: EncoderTuning | None = None,
        video_codec: str | None = None,
        engine: MediaEngine | None = None,
        frame_cipher: FrameProtection | None = None,
    ) -> None:
        if video_codec is not None and video_codec not in CODECS:
            raise ValueError(f"video_codec must be one of {sorted(CODECS)}, not {video_codec!r}")
        self.pc = RTCPeerConnection(RTCConfiguration(
            iceServers=ice_servers,
            iceTransportPolicy=RTCIceTransportPolicy.RELAY if relay_only else RTCIceTransportPolicy.ALL,
            bundlePolicy=RTCBundlePolicy.MAX_BUNDLE,
        ))
        self.host_addresses = tuple(ice_host_addresses) if ice_host_addresses is not None else None
        self.tuning = tuning
        self.video_codec = video_codec
        self.engine = engine
        self.frame_cipher = frame_cipher
        """SFrame on every encoded frame sent and received (group media, and 1:1 media between
        devices that declare it: facecall.client.p2p_sframe); None: none."""
        self._early_candidates: list[RTCIceCandidate | None] = []
        self.remote_tracks: dict[str, Any] = {}
        self.pc.on("track", lambda track: self.remote_tracks.__setitem__(track.kind, track))

    @contextlib.contextmanager
    def _hooks(self) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            stack.enter_context(host_addresses(self.host_addresses))
            stack.enter_context(encoder_tuning(self.tuning))
            if self.frame_cipher is not None:
                stack.enter_context(encoder_wrapper(sframe_encoder(self.frame_cipher)))
            if self.engine is not None:  # its senders and receivers replace aiortc's stock ones
                stack.enter_context(self.engine.activate())
            yield

    def add_tracks(self, tracks: Sequence[LocalTrack], kinds: Sequence[str]) -> None:
        """Send ``tracks``; receive every kind in ``kinds`` (recvonly where we send nothing)."""
        with self._hooks():  # transceivers (their senders and receivers) are created here
            self._add_transceivers(tracks, kinds)
        keep_best_nominated_pair(self.pc)

    def _add_transceivers(self, tracks: Sequence[LocalTrack], kinds: Sequence[str]) -> None:
        by_kind = {t.kind: t for t in tracks}
        for kind in kinds:
            track = by_kind.get(kind)
            if track is not None:
                transceiver = self.pc.addTransceiver(track.feed(), direction="sendrecv")
            else:
                transceiver = self.pc.addTransceiver(kind, direction="recvonly")
            if self.frame_cipher is not None:
                decrypt_frames(transceiver.receiver, kind, self.frame_cipher)
            if kind == "video" and self.video_codec is not None:
                transceiver.setCodecPreferences(video_codec_preferences(CODECS[self.video_codec], only=True))
            elif kind == "video" and self.engine is not None:
                transceiver.setCodecPreferences(video_codec_preferences(self.engine.config.video_codec))

    def open_channel(self) -> RTCDataChannel:
        """The call's data channel on this connection (end-to-end over its DTLS, RFC 8831):
        shared playback's messages go there. Made before the first offer or answer, so that
        the SDP carries its SCTP m-section."""
        return self.pc.createDataChannel(DATA_CHANNEL_LABEL, negotiated=True, id=DATA_CHANNEL_ID)

    async def create_offer(self) -> RTCSessionDescription:
        with self._hooks():
            await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription

    async def accept_offer(self, offer: RTCSessionDescription) -> RTCSessionDescription:
        with self._hooks():
            await self.pc.setRemoteDescription(offer)
            await self._apply_early_candidates()
            await self.pc.setLocalDescription(await self.pc.createAnswer())
        return self.pc.localDescription

    async def accept_answer(self, answer: RTCSessionDescription) -> None:
        with self._hooks():
            await self.pc.setRemoteDescription(answer)
            await self._apply_early_candidates()

    async def add_candidate(self, candidate: dict[str, Any] | None) -> None:
        """Apply a trickled remote candidate (``None``: end of candidates)."""
        parsed = None if candidate is None else parse_candidate(candidate)
        if self.pc.remoteDescription is None:
            self._early_candidates.append(parsed)
            return
        await self.pc.addIceCandidate(parsed)

    async def _apply_early_candidates(self) -> None:
        early, self._early_candidates = self._early_candidates, []
        for candidate in early:
            await self.pc.addIceCandidate(candidate)

    async def close(self) -> None:
        await self.pc.close()


def parse_candidate(candidate: dict[str, Any]) -> RTCIceCandidate:
    """A ``call.candidate`` payload (``{candidate, sdpMid, sdpMLineIndex}``) as aiortc's candidate."""
    line = candidate.get("candidate")
    if not isinstance(line, str):
        raise ValueError("candidate.candidate must be a string")
    if line.startswith("candidate:"):
        line = line[len("candidate:"):]
    parsed = candidate_from_sdp(line)
    parsed.sdpMid = candidate.get("sdpMid")
    parsed.sdpMLineIndex = candidate.get("sdpMLineIndex")
    if parsed.sdpMid is None and parsed.sdpMLineIndex is None:
        parsed.sdpMLineIndex = 0
    return parsed
