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
from facecall.client.peer import PeerSession
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

    async def _new_peer(self) -> PeerSession:
        device = self.device
        servers = ice_servers_from_api(await device.ice_configuration())
        engine = MediaEngine() if device.media_engine else None
        peer = PeerSession(ice_servers=servers, relay_only=device.relay_only,
                           ice_host_addresses=device.ice_host_addresses, tuning=device.encoder_tuning,
                           video_codec=device.video_codec, engine=engine)
        if engine is not None:  # "quality": the engine stepped the sent video up or down
            engine.on_quality_change(
                lambda change: self.emit("quality", sent_quality(engine, change.after, self._source_fps))
                if peer is self._peer else None)
        tracks = [t for t in (self.local_audio, self.local_video) if t is not None]
        peer.add_tracks(tracks, ["audio", "video"] if self.video else ["audio"])
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

    async def _send_description(self, description: RTCSessionDescription, restart: bool) -> None:
        """Send a description, signed with this device's identity key (docs/security.md)."""
        device = self.device
        assert self.remote_device is not None and device.identity is not None
        assert device.user_id is not None and device.device_id is not None
        signature = device.identity.sign(self.id, device.user_id, device.device_id,
                                         self.remote_device, description.type, description.sdp)
        await device.request("call.sdp", call_id=self.id, to_device=self.remote_device,
                             description={"type": description.type, "sdp": description.sdp},
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
        peer = await self._new_peer()
        offer = await peer.create_offer()
        if peer is self._peer and self.state is not CallState.ENDED:
            await self._send_description(offer, restart)

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
            if self._peer is not None and self._peer.pc.signalingState == "have-local-offer":
                await self._peer.accept_answer(description)
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
        peer = await self._new_peer()
        answer = await peer.accept_offer(description)
        if peer is self._peer and self.state is not CallState.ENDED:
            await self._send_description(answer, restart)

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
