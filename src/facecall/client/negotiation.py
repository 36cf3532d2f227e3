"""The media half of a :class:`~facecall.client.call.Call`: one aiortc peer connection with the
remote device at a time, how it is negotiated, and how it is replaced.

* **Who offers.** The device that was already in the call offers to the one that joins
  (docs/protocol.md, "Calls": the caller's device on ``call.answered``); the newcomer answers.
  Every candidate is in the SDP (aiortc gathers first), followed by an end-of-candidates
  ``call.candidate null`` (RFC 8838 §8.2).
* **Crossing offers.** When both devices offer at once (two ICE restarts), the device with the
  lower device id keeps its offer and the other answers it (the "polite peer" rule of W3C
  webrtc §10.7, perfect negotiation).
* **Replacing the connection.** aiortc cannot restart ICE on a live connection, so each
  renegotiation is a new :class:`~facecall.client.peer.PeerSession`; the local sources and the
  application's ``remote_*`` tracks carry on across it. A call replaces its connection

  - for an ICE restart (RFC 8445 §9; offered with ``ice_restart: true``) when its path failed
    or on request;
  - when the other device lost its connection and asks for the media anew (``call.rejoin``,
    docs/protocol.md "Rejoining the media");
  - when the other user moved the call to another of their devices (``call.handed_off``,
    docs/protocol.md "Moving a call to another device"): the offer goes to the new device.

  In the last two cases the call offers exactly as to a device that has just joined
  (:meth:`PeerNegotiation._renegotiate`), and the connection it replaces is closed at once:
  the device at its other end has dropped it already (a reloaded page), or is told to stop its
  media by the same server step that sends ``call.handed_off`` here, so keeping it open would
  carry no media and only hold its sockets and TURN allocation. (Closing it takes ~25 ms on
  loopback, a DTLS close and a TURN release, before the new connection is made; closing it in
  the background beside the new offer measured no shorter pause.)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any, Literal

from aiortc import MediaStreamTrack, RTCSessionDescription
from pyee.asyncio import AsyncIOEventEmitter

from facecall.client.call_records import CallState, CallTimings, Sink
from facecall.client.ice import ice_servers_from_api
from facecall.client.p2p_sframe import SFRAME_VIDEO_CODEC, AgreedCipher, PeerKeys, declare, declares
from facecall.client.peer import PeerSession
from facecall.client.sframe_media import frames_from
from facecall.client.shareplay import CallSharePlay
from facecall.client.stats import sent_quality
from facecall.client.tracks import LocalTrack, RemoteTrack
from facecall.e2ee.identity import IdentityError
from facecall.logs import get_logger
from facecall.media.engine import MediaEngine
from facecall.signaling.reasons import EndReason

if TYPE_CHECKING:
    from facecall.client.device import Device

log = get_logger(__name__)

Renegotiation = Literal["rejoin", "handoff"]
"""Why a call set its media up anew with a device as with a newcomer (not an ICE restart)."""


class PeerNegotiation(AsyncIOEventEmitter):
    """The peer connection of a call and its offer/answer exchanges: the base class of
    :class:`~facecall.client.call.Call`, which owns the attributes declared here."""

    device: Device
    id: str
    state: CallState
    remote_user: str
    remote_device: str | None
    local_audio: LocalTrack | None
    local_video: LocalTrack | None
    remote_audio: RemoteTrack
    remote_video: RemoteTrack
    timings: CallTimings
    ice_restarts: int
    _peer: PeerSession | None
    _source_fps: float | None
    _sinks: list[Sink]
    _sinks_started: bool
    _progress_at: float
    _progress_bytes: int
    _restart_attempts: int
    _restarting: bool
    _renegotiating: Renegotiation | None
    """Set while the media is set up anew with a device as with a newcomer; cleared once up."""
    _offers_first: bool
    """This device made the first offer to the current remote device (the caller's device,
    the one that was asked to rejoin, the other side of a handoff): after a fresh start it is
    the one that restarts a negotiation cut short (docs/protocol.md, "A fresh start")."""
    _negotiating: asyncio.Lock
    _monitor: asyncio.Task[None] | None
    _p2p_keys: PeerKeys | None
    """The SFrame keys of the P2P media (made with the first connection of a device that
    declares SFrame: facecall.client.p2p_sframe)."""
    identity_failure: str | None
    shareplay: CallSharePlay
    """Why this device refused the other device's description (its identity check failed)."""

    if TYPE_CHECKING:  # the Call's own
        @property
        def video(self) -> bool: ...
        @property
        def muted(self) -> bool: ...
        @property
        def camera_enabled(self) -> bool: ...
        @property
        def path(self) -> str | None: ...
        def _emit_event(self, type_: str, **data: Any) -> None: ...
        def _set_state(self, state: CallState) -> None: ...
        async def _end(self, reason: EndReason) -> None: ...
        def _tell_media(self) -> None: ...
        async def _watch(self) -> None: ...

    @property
    def sframe(self) -> bool | None:
        """Whether the P2P media with the remote device is SFrame-protected end to end
        (docs/sframe.md, "1:1 calls"): True, False (that device, or this one, does not
        declare SFrame: DTLS-SRTP only), None (not negotiated yet, or no P2P connection)."""
        peer = self._peer
        if peer is None:
            return None
        cipher = peer.frame_cipher
        return False if not isinstance(cipher, AgreedCipher) else cipher.agreed

    @property
    def sframe_counts(self) -> dict[str, int]:
        """Frames of this call's P2P media by what SFrame did with them: ``encrypted``,
        ``decrypted``, ``unsent`` (no key yet), ``unagreed`` (not negotiated yet),
        ``awaiting_key_frame``, and per failure (``UnknownKeyId``, ``AuthenticationFailed``,
        ...). Empty before the first connection that declares SFrame."""
        return {} if self._p2p_keys is None else dict(self._p2p_keys.cipher.counts)

    def _declares_sframe(self) -> bool:
        """This device protects its P2P media with SFrame unless it was asked to send H.264,
        or the server does not have its agreement key (the other device could seal it no key)."""
        device = self.device
        return device.video_codec in (None, SFRAME_VIDEO_CODEC) and device.enrolment.agreement_published

    async def _new_peer(self, *, sframe: bool, answering: bool = False) -> PeerSession:
        """A new peer connection with the remote device, which declares SFrame if ``sframe``:
        its frames pass through the call's :class:`PeerKeys`; VP8 its only video codec when
        ``answering`` an offer that declares SFrame too (an offer lists the device's codecs,
        VP8 first, so that a device that declares nothing and sends H.264 only is still
        answered)."""
        device = self.device
        servers = ice_servers_from_api(await device.ice_configuration())
        engine = MediaEngine() if device.media_engine else None
        cipher: AgreedCipher | None = None
        if sframe:
            if self._p2p_keys is None:
                self._p2p_keys = PeerKeys(self)  # type: ignore[arg-type]
            cipher = AgreedCipher(self._p2p_keys.cipher)
        peer = PeerSession(ice_servers=servers, relay_only=device.relay_only,
                           ice_host_addresses=device.ice_host_addresses, tuning=device.encoder_tuning,
                           video_codec=SFRAME_VIDEO_CODEC if sframe and answering else device.video_codec,
                           engine=engine, frame_cipher=cipher)
        if engine is not None:  # "quality": the engine stepped the sent video up or down
            engine.on_quality_change(
                lambda change: self.emit("quality", sent_quality(engine, change.after, self._source_fps))
                if peer is self._peer else None)
        tracks = [t for t in (self.local_audio, self.local_video) if t is not None]
        peer.add_tracks(tracks, ["audio", "video"] if self.video else ["audio"])
        if cipher is not None:  # frames decrypt under the remote device's keys only
            for transceiver in peer.pc.getTransceivers():
                frames_from(transceiver.receiver, self.remote_device)
        self.shareplay.attach(peer.open_channel())

        @peer.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if peer is self._peer:
                (self.remote_video if track.kind == "video" else self.remote_audio).attach(track)

        @peer.pc.on("connectionstatechange")
        async def on_state() -> None:
            if peer is not self._peer:
                return
            if peer.pc.connectionState == "connected":
                await self._on_connected()

        self._peer = peer
        self._progress_at = time.monotonic()
        self._progress_bytes = -1
        if self._monitor is None:
            self._monitor = asyncio.create_task(self._watch())
        return peer

    async def _send_description(self, peer: PeerSession, description: RTCSessionDescription,
                                restart: bool) -> None:
        """Send a description, signed with this device's identity key (docs/security.md), with
        the SFrame declaration in the signed text if ``peer`` protects its media with SFrame."""
        device = self.device
        assert self.remote_device is not None and device.identity is not None
        assert device.user_id is not None and device.device_id is not None
        sdp = declare(description.sdp) if peer.frame_cipher is not None else description.sdp
        signature = device.identity.sign(self.id, device.user_id, device.device_id,
                                         self.remote_device, description.type, sdp)
        await device.request("call.sdp", call_id=self.id, to_device=self.remote_device,
                             description={"type": description.type, "sdp": sdp},
                             ice_restart=restart, signature=signature)
        # Every candidate is in the SDP (aiortc gathers first): signal end-of-candidates.
        await self.device.request("call.candidate", call_id=self.id, to_device=self.remote_device,
                                  candidate=None)

    async def _offer(self, restart: bool) -> None:
        async with self._negotiating:
            await self._offer_locked(restart)

    async def _offer_locked(self, restart: bool) -> None:
        """Replace the peer connection (closed first) with a new one, and offer it."""
        if self._peer is not None:
            old, self._peer = self._peer, None
            await old.close()
        peer = await self._new_peer(sframe=self._declares_sframe())
        offer = await peer.create_offer()
        if peer is self._peer and self.state is not CallState.ENDED:
            await self._send_description(peer, offer, restart)

    async def _renegotiate(self, to_device: str, why: Renegotiation) -> None:
        """Set the media up anew with ``to_device`` exactly as with a device that has just
        joined: close the current peer connection, make a new one and offer it
        (``ice_restart: false``). ``why``: ``rejoin`` (that device lost its connection,
        docs/protocol.md "Rejoining the media") or ``handoff`` (the other user's call moved to
        that device from the current one, "Moving a call to another device"). A call that had
        media is ``reconnecting`` until the new connection is up."""
        async with self._negotiating:
            if self.state is CallState.ENDED:
                return
            self.remote_device = to_device
            self._renegotiating = why
            self._offers_first = True
            if self.state is CallState.CONNECTED:
                self._set_state(CallState.RECONNECTING)
            await self._offer_locked(restart=False)

    async def _on_description(self, event: dict[str, Any]) -> None:
        async with self._negotiating:
            await self._on_description_locked(event)

    async def _on_description_locked(self, event: dict[str, Any]) -> None:
        description = RTCSessionDescription(sdp=event["description"]["sdp"],
                                            type=event["description"]["type"])
        if self.remote_device is None:
            self.remote_device = event["from_device"]
        if event["from_device"] != self.remote_device:
            return
        if event["from_user"] != self.remote_user:  # the server says the device is another's
            await self._refuse(f"device {self.remote_device} is in this call as a device of user "
                               f"{self.remote_user}, but its description comes as user "
                               f"{event['from_user']}'s", event)
            return
        if not await self._identity_checked(event):
            return
        restart = bool(event.get("ice_restart"))
        if description.type == "answer":
            peer = self._peer
            if peer is not None and peer.pc.signalingState == "have-local-offer":
                await peer.accept_answer(description)
                self._agree(peer, event)
            return
        # An offer: the first one, or an ICE restart (maybe crossing our own).
        if self._peer is not None and self._peer.pc.signalingState == "have-local-offer":
            polite = (self.device.device_id or "") > self.remote_device
            if not polite:
                return  # our offer wins; the far end answers it
        if restart:
            self._set_state(CallState.RECONNECTING)
        if self._peer is not None:
            old, self._peer = self._peer, None
            await old.close()
        # an offer without the SFrame declaration (an older client, an H.264 device) is answered
        # without one, in the codecs it offers: DTLS-SRTP media only (docs/sframe.md)
        peer = await self._new_peer(sframe=self._declares_sframe() and declares(description.sdp),
                                    answering=True)
        answer = await peer.accept_offer(description)
        self._agree(peer, event)
        if peer is self._peer and self.state is not CallState.ENDED:
            await self._send_description(peer, answer, restart)

    def _agree(self, peer: PeerSession, event: dict[str, Any]) -> None:
        """``peer``'s descriptions are both known: its media is SFrame-protected if it declared
        SFrame and the description in ``event`` (signed by its sender) does too."""
        if peer is not self._peer:
            return
        cipher = peer.frame_cipher
        protected = isinstance(cipher, AgreedCipher) and declares(event["description"]["sdp"])
        if isinstance(cipher, AgreedCipher):
            cipher.agreed = protected
            if not protected:  # this device declared; the other did not
                log.warning("call.no_sframe", call_id=self.id, device_id=event["from_device"])
        if self._p2p_keys is not None:  # (an unprotected connection: no key goes anywhere)
            self._p2p_keys.agreed(event["from_user"], event["from_device"], protected)

    async def _identity_checked(self, event: dict[str, Any]) -> bool:
        """Whether a relayed description is signed by the identity key of the device it comes
        from (docs/security.md, "Device identity keys"). If not, this device refuses it: it
        leaves the call with ``identity_check_failed`` and the call emits ``identity_failed``
        with the reason."""
        device = self.device
        assert device.identity is not None and device.token is not None
        assert device.device_id is not None
        try:
            await device.identity.check(device.api, device.token, self.id, device.device_id, event)
        except IdentityError as exc:
            await self._refuse(str(exc), event)
            return False
        return True

    async def _refuse(self, why: str, event: dict[str, Any]) -> None:
        """Refuse a description: leave the call with ``identity_check_failed``, say why."""
        log.warning("call.identity_check_failed", call_id=self.id,
                    from_device=event.get("from_device"), why=why)
        self.identity_failure = why
        self._emit_event("identity_failed", reason=why)
        reason = EndReason.IDENTITY_CHECK_FAILED
        with contextlib.suppress(Exception):
            await self.device.request("call.hangup", call_id=self.id, reason=reason.value)
        await self._end(reason)

    async def _on_connected(self) -> None:
        if self.state in (CallState.ENDED, CallState.CONNECTED):
            return
        why, self._renegotiating = self._renegotiating, None
        if self.state is CallState.RECONNECTING and why == "rejoin":
            self._emit_event("rejoined", path=self.path)
        elif self.state is CallState.RECONNECTING and why is None:
            self.ice_restarts += 1
            self._emit_event("ice_restart", path=self.path)
        self._restart_attempts = 0
        self._restarting = False
        first = self.timings.connected is None
        if first:
            self.timings.connected = time.monotonic()
        self._set_state(CallState.CONNECTED)
        if (first or why is not None) and (self.muted or (self.video and not self.camera_enabled)):
            self._tell_media()  # muted (or camera off) before the media with this device connected
        if not self._sinks_started:
            self._sinks_started = True
            for sink in self._sinks:
                await sink.start()

    async def _restart(self) -> None:
        if self._restarting or self.state is CallState.ENDED:
            return
        self._restarting = True
        try:
            self._restart_attempts += 1
            self._set_state(CallState.RECONNECTING)
            await self._offer(restart=True)
        finally:
            self._restarting = False
