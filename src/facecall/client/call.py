"""A 1:1 call as the SDK sees it: ringing, answering, P2P media, ICE restarts, the end.

The server runs the call state machine (docs/protocol.md, "Calls"); a :class:`Call` mirrors it
for one device and adds media. Media is one aiortc peer connection
(:class:`~facecall.client.peer.PeerSession`) at a time; who offers, crossing offers and the
replacement of the connection (ICE restart, rejoin, handoff) are in
:mod:`facecall.client.negotiation`, the base class of :class:`Call`.

ICE restart (RFC 8445 §9, W3C webrtc §4.4.1.1 ``restartIce``): a call watches its path — aiortc's
``connectionState == "failed"``, or no byte received for ``ice_restart_after`` seconds — and then
offers again with fresh ICE credentials and fresh gathering (a new peer connection; aiortc cannot
restart ICE in place), flagged ``ice_restart: true``. Either side may do so; when both offer at
once, the device with the lower device id keeps its offer and the other answers it (the "polite
peer" rule of W3C webrtc §10.7 perfect negotiation).

A call the other user moves to another of their devices goes on here as the same object
(``call.handed_off``: :func:`facecall.client.handoff.follow_handoff`); a call this device gives
away ends with ``handed_off`` (docs/protocol.md, "Moving a call to another device").

A call of three or more people sends its media through the SFU instead
(:meth:`Call.join_group_media`, :mod:`facecall.client.group`): P2P is then off in the call here.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Coroutine
from typing import TYPE_CHECKING, Any

from aiortc import MediaStreamTrack

from facecall.client.call_records import CallEvent, CallState, CallTimings, Direction, Sink
from facecall.client.errors import CallError, CallStateError, wait_within
from facecall.client.group import DEFAULT_SLOTS, GroupMedia, join_group_media
from facecall.client.group_keys import GROUP_KEY_EVENTS, GroupKeys
from facecall.client.handoff import follow_handoff
from facecall.client.ice import selected_candidate_pair
from facecall.client.negotiation import PeerNegotiation, Renegotiation
from facecall.client.p2p_sframe import PeerKeys
from facecall.client.peer import PeerSession, dtls_fingerprints
from facecall.client.shareplay import CallSharePlay
from facecall.client.stats import CallStats, StatsSampler, sent_quality
from facecall.client.tracks import LocalTrack, RemoteTrack
from facecall.e2ee.security_code import code_of
from facecall.logs import get_logger
from facecall.signaling.reasons import EndReason

if TYPE_CHECKING:
    from facecall.client.device import Device

log = get_logger(__name__)

PEER_CLOSE_WAIT = 1.0
"""Seconds the end of a call waits for its peer connection to close."""


class Call(PeerNegotiation):
    """One call of one device. Made by :meth:`Device.call` or delivered as an incoming call.

    Emits (pyee) ``statechange`` (new state), ``ended`` (reason), ``stats`` (:class:`CallStats`)
    and every :class:`CallEvent` type; :meth:`events` yields the same events as an async iterator.
    """

    def __init__(self, device: Device, call_id: str, *, direction: Direction, remote_user: str,
                 media: str, participants: list[str] | None = None, call_waiting: bool = False,
                 remote_device: str | None = None, remote_name: str | None = None) -> None:
        super().__init__()
        self.device = device
        self.id = call_id
        self.direction = direction
        self.remote_user = remote_user
        """The other user's id."""
        self.remote_name = remote_name
        """The other user's name: the username called, or the caller's display name (the
        ring's ``from_name``; None if the server gave none)."""
        self.media = media
        self.participants = participants or []
        self.call_waiting = call_waiting
        self.remote_device = remote_device
        self.state = CallState.RINGING if direction is Direction.INCOMING else CallState.CALLING
        self.end_reason: EndReason | None = None
        self.identity_failure: str | None = None
        self.shareplay = CallSharePlay(device.device_id or "", lambda activity: self._emit_event(
            "shareplay", activity=activity))
        """Shared playback in this call: a video both people watch together (docs/shareplay.md)."""
        self.local_audio: LocalTrack | None = None
        self.local_video: LocalTrack | None = None
        self.remote_audio = RemoteTrack("audio")
        self.remote_video = RemoteTrack("video")
        self.stats: CallStats | None = None
        """The latest sample (every ``Device.stats_interval`` seconds while media is up)."""
        self.ice_restarts = 0
        """ICE restarts that reconnected the call."""
        self.timings = CallTimings(created=time.monotonic())
        self._own_sources: list[MediaStreamTrack] = []
        self._source_fps: float | None = None
        """The frame rate of the video source, when the call made it (synthetic video)."""
        self._peer: PeerSession | None = None
        self._group: GroupMedia | None = None
        self._group_keys: GroupKeys | None = None
        """Group media, once joined: P2P is off in this call from then on (client/group.py)."""
        self._p2p_keys: PeerKeys | None = None
        self._sinks: list[Sink] = []
        self._sinks_started = False
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._event_queue: asyncio.Queue[CallEvent | None] = asyncio.Queue()
        self._state_changed = asyncio.Event()
        self._ended: asyncio.Future[EndReason] = asyncio.get_running_loop().create_future()
        self._sampler = StatsSampler(self.remote_video)
        self._progress_at = time.monotonic()
        self._progress_bytes = -1
        self._restart_attempts = 0
        self._restarting = False
        self._renegotiating: Renegotiation | None = None
        self._offers_first = direction is Direction.OUTGOING
        self._negotiating = asyncio.Lock()
        """One offer/answer exchange at a time: a local restart and a remote offer never interleave."""
        self._runner = asyncio.create_task(self._run(), name=f"call-{call_id}")
        self._monitor: asyncio.Task[None] | None = None
        self._background: set[asyncio.Future[None]] = set()
        self.remote_media: dict[str, bool] = {"audio": True, "video": self.media == "video",
                                              "screen": False}
        """What the other device says it sends (``call.media``): its microphone, its camera."""

    def __repr__(self) -> str:
        return f"<Call {self.id} {self.direction} {self.state} with {self.remote_user}>"

    # ------------------------------------------------------------------ public API

    @property
    def video(self) -> bool:
        return self.media == "video"

    @property
    def muted(self) -> bool:
        return self.local_audio is not None and not self.local_audio.enabled

    @property
    def camera_enabled(self) -> bool:
        return self.local_video is not None and self.local_video.enabled

    @property
    def path(self) -> str | None:
        """``host``, ``srflx`` or ``relay`` once media is up (the selected candidate pair)."""
        pair = selected_candidate_pair(self._peer.pc) if self._peer is not None else None
        return pair.path if pair else None

    @property
    def peer_connection(self) -> Any:
        """The current aiortc ``RTCPeerConnection`` (replaced on ICE restart), or ``None``."""
        return self._peer.pc if self._peer is not None else None

    @property
    def group_media(self) -> GroupMedia | None:
        """The call's media through the SFU, once :meth:`join_group_media` (None before)."""
        return self._group

    @property
    def sframe(self) -> bool | None:
        """Whether the call's media is SFrame-encrypted end to end: always through the SFU
        (group media), else as the P2P connection negotiated it (see the base class)."""
        return True if self._group is not None else super().sframe

    @property
    def security_code(self) -> str | None:
        """The call's security code (:mod:`facecall.e2ee.security_code`: twenty digits, the same
        on the other device exactly when nobody is in the middle of the media), from the
        certificates of the current peer connection's DTLS; None until it is connected."""
        pc = self.peer_connection
        both = dtls_fingerprints(pc) if pc is not None else None
        return code_of(*both) if both is not None else None

    async def answer(self, *, video: bool | None = None, audio_source: MediaStreamTrack | None = None,
                     video_source: MediaStreamTrack | None = None) -> None:
        """Answer an incoming call (``video=None``: as it rang). Media starts when the caller offers.

        :raises CallStateError: not an incoming call that is ringing.
        :raises CallError: the server refused (e.g. ``invalid_state`` when answered elsewhere).
        """
        if self.direction is not Direction.INCOMING:
            raise CallStateError("only an incoming call can be answered")
        if self.state is not CallState.RINGING:
            raise CallStateError(f"cannot answer a call that is {self.state}")
        want_video = self.video if video is None else video
        self._set_sources(audio_source, video_source if want_video else None, want_video)
        reply = await self.device.request("call.answer", call_id=self.id)
        for participant in reply.get("participants", []):
            if participant["user_id"] == self.remote_user:
                self.remote_device = participant["device_id"]
        self.timings.answered = time.monotonic()
        self._progress_at = time.monotonic()
        self._set_state(CallState.CONNECTING)

    async def decline(self, *, busy: bool = False) -> None:
        """Decline an incoming call (every device of ours stops ringing)."""
        if self.direction is not Direction.INCOMING or self.state is not CallState.RINGING:
            raise CallStateError(f"only a ringing incoming call can be declined (this one is {self.state})")
        try:
            await self.device.request("call.decline", call_id=self.id, busy=busy)
        except CallError as exc:  # it stopped ringing meanwhile, or a resent decline was done
            if exc.code not in ("call_ended", "invalid_state"):
                raise
        await self._end(EndReason.BUSY if busy else EndReason.DECLINED)

    async def hangup(self) -> None:
        """Hang up (an outgoing call nobody answered yet is cancelled). Ending twice is a no-op.

        The call ends here whether or not the server can be told: with signaling down, at once
        (media stops), and the server is told if signaling comes back within
        ``Device.reconnect_wait``.

        :raises CallStateError: on an incoming call that still rings (use :meth:`decline`).
        :raises NotConnectedError: the server could not be told (the call has ended here all the
            same; the other side sees its media stop).
        """
        if self.state is CallState.ENDED:
            return
        if self.state is CallState.RINGING:
            raise CallStateError("an incoming call that rings is declined, not hung up")
        cancel = self.state is CallState.CALLING
        reason = EndReason.CANCELLED if cancel else EndReason.HUNG_UP
        if not self.device.connected:  # stop the media now; the server is told if signaling is back
            await self._end(reason)
        try:
            reason = await self._tell_hangup(cancel)
        finally:
            await self._end(reason)  # the server told or not, the call is over here

    cancel = hangup

    async def invite(self, *users: str) -> None:
        """Ring more users (usernames) into this answered call (``call.invite``). A call of
        three or more people needs group media: see :meth:`join_group_media`.

        :raises CallStateError: the call is not answered, or has ended.
        :raises UnknownUserError: no such user. :raises CallError: the server refused.
        """
        if self.state not in (CallState.CONNECTING, CallState.CONNECTED, CallState.RECONNECTING):
            raise CallStateError(f"only an answered call can invite (this one is {self.state})")
        to = [await self.device.resolve_user(user) for user in users]
        await self.device.request("call.invite", call_id=self.id, to=to)

    async def join_group_media(self, *, slots: int = DEFAULT_SLOTS) -> GroupMedia:
        """Send and receive this call's media through the server's SFU (``sfu.join``), with
        ``slots`` receive slots per kind; returns the :class:`GroupMedia` (the same one while
        it is open). Once joined, the call's P2P connection is closed and no P2P negotiation
        starts in this call on this device (:mod:`facecall.client.group`).

        **End-to-end encrypted**: every frame is SFrame-encrypted (RFC 9605) with this device's
        own key, sealed to the room's other devices only; the SFU forwards ciphertext
        (:mod:`facecall.client.group_keys`, docs/sframe.md). :attr:`GroupMedia.keys` tells
        whose keys this device holds and to whom it could not seal its own.

        :raises CallStateError: the call is not answered yet, or has ended.
        :raises CallError: the server refused (``offer_refused``, ``sfu_full``,
            ``sfu_unavailable``, ``not_in_call``, ...): nothing changed.
        """
        if self._group is not None and not self._group.closed:
            return self._group
        return await join_group_media(self, slots)

    async def _tell_hangup(self, cancel: bool) -> EndReason:
        """Tell the server we leave (``call.cancel`` if nobody answered yet); returns why we ended."""
        try:
            await self.device.request("call.cancel" if cancel else "call.hangup", call_id=self.id)
        except CallError as exc:
            if exc.code not in ("call_ended", "invalid_state"):
                raise
            if exc.code == "invalid_state" and cancel:  # answered meanwhile: hang up instead
                await self.device.request("call.hangup", call_id=self.id)
                return EndReason.HUNG_UP
        return EndReason.CANCELLED if cancel else EndReason.HUNG_UP

    def mute(self) -> None:
        """Send silence instead of the microphone (the other side is told: ``call.media``)."""
        if self.local_audio is not None:
            self.local_audio.enabled = False
        self._tell_media()

    def unmute(self) -> None:
        if self.local_audio is not None:
            self.local_audio.enabled = True
        self._tell_media()

    def camera_off(self) -> None:
        """Send black pictures instead of the camera (the stream keeps going; the other side is
        told: ``call.media``)."""
        if self.local_video is not None:
            self.local_video.enabled = False
        self._tell_media()

    def camera_on(self) -> None:
        if self.local_video is not None:
            self.local_video.enabled = True
        self._tell_media()

    def _tell_media(self) -> None:
        """Say what we send now to the other device (docs/protocol.md, ``call.media``), once
        there is one; a call that has not connected yet says it when it does."""
        if self.remote_device is None or self.state not in (CallState.CONNECTED,
                                                              CallState.RECONNECTING):
            return
        self._in_background(self._send_media(self.remote_device))

    async def _send_media(self, to_device: str) -> None:
        await self.device.request("call.media", call_id=self.id, to_device=to_device,
                                  audio=not self.muted, video=self.camera_enabled)

    def add_sink(self, sink: Sink) -> None:
        """Feed the remote audio and video to ``sink`` (started when media connects, stopped at the end)."""
        sink.addTrack(self.remote_audio)
        if self.video:
            sink.addTrack(self.remote_video)
        self._sinks.append(sink)
        if self._sinks_started:
            self._in_background(sink.start())

    def record(self, path: str) -> Sink:
        """Record the remote audio and video to ``path`` (anything FFmpeg writes, by extension)."""
        from facecall.media.sinks import CallRecorder

        recorder = CallRecorder(path)
        self.add_sink(recorder)
        return recorder

    async def restart_ice(self) -> None:
        """Restart ICE now: new credentials, fresh gathering, new TURN allocation (RFC 8445 §9)."""
        if self.state not in (CallState.CONNECTING, CallState.CONNECTED, CallState.RECONNECTING):
            raise CallStateError(f"no media to restart in a call that is {self.state}")
        await self._restart()

    async def get_stats(self) -> CallStats:
        """Sample the call's figures now (rates since the previous sample)."""
        if self._peer is None:
            raise CallStateError("no media yet")
        self.stats = await self._sample(self._peer)
        return self.stats

    async def _new_peer(self, *, sframe: bool, answering: bool = False) -> PeerSession:
        if self._group is not None:  # an ICE restart caught in flight when group media came
            raise CallStateError("this call's media goes through the SFU (group media)")
        return await super()._new_peer(sframe=sframe, answering=answering)

    async def _restart(self) -> None:
        if self._group is None:  # group media: no P2P to restart
            await super()._restart()

    async def _sample(self, peer: PeerSession) -> CallStats:
        stats = await self._sampler.sample(peer.pc)
        if peer.engine is not None:
            figures = peer.engine.stats()
            state = peer.engine.quality
            if state is not None:
                figures["quality"] = sent_quality(peer.engine, state, self._source_fps)
            else:
                figures["quality"] = None
            stats = dataclasses.replace(stats, engine=figures)
        return stats

    @property
    def quality(self) -> dict[str, Any] | None:
        """What the media engine sends now (size, frame rate, bitrate, rung, why), or None
        before/without it; see :func:`~facecall.client.stats.sent_quality`."""
        engine = self._peer.engine if self._peer is not None else None
        state = engine.quality if engine is not None else None
        if engine is None or state is None:
            return None
        return sent_quality(engine, state, self._source_fps)

    async def wait_state(self, *states: CallState, timeout: float | None = None) -> CallState:
        """Wait until the call is in one of ``states`` (or ended); returns the state reached."""
        async def reach() -> CallState:
            while self.state not in states and self.state is not CallState.ENDED:
                self._state_changed.clear()
                await self._state_changed.wait()
            return self.state

        wanted = " or ".join(str(state) for state in states)
        return await wait_within(reach(), timeout, f"the call was not {wanted}")

    async def wait_connected(self, timeout: float | None = 30) -> None:
        """Wait for media to connect; :class:`CallStateError` if the call ends first."""
        state = await self.wait_state(CallState.CONNECTED, timeout=timeout)
        if state is not CallState.CONNECTED:
            why = f": {self.identity_failure}" if self.identity_failure else ""
            raise CallStateError(f"the call ended ({self.end_reason}) before media connected{why}")

    async def wait_ended(self, timeout: float | None = None) -> EndReason:
        """Wait for the call to end; returns why (:class:`WaitTimeoutError` after ``timeout``)."""
        return await wait_within(asyncio.shield(self._ended), timeout, "the call did not end")

    async def events(self) -> AsyncIterator[CallEvent]:
        """The call's events until it ends (the last one is the ``state`` event to ``ended``)."""
        while True:
            event = await self._event_queue.get()
            if event is None:
                return
            yield event

    # ------------------------------------------------------------------ internals

    def _set_sources(self, audio: MediaStreamTrack | None, video: MediaStreamTrack | None,
                     want_video: bool) -> None:
        from facecall.media.sources import SyntheticAudioTrack, SyntheticVideoTrack

        if audio is None:
            audio = SyntheticAudioTrack()
            self._own_sources.append(audio)
        self.local_audio = LocalTrack(audio)
        if want_video:
            if video is None:
                width, height, fps = self.device.synthetic_video
                video = SyntheticVideoTrack(width, height, fps)
                self._own_sources.append(video)
                self._source_fps = fps
            self.local_video = LocalTrack(video)

    def _in_background(self, coro: Coroutine[Any, Any, None]) -> asyncio.Future[None]:
        """Run ``coro`` beside the call; a failure is logged, never left unretrieved (an ICE
        restart of a device that was removed meanwhile fails to get TURN credentials)."""
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background_done)
        return task

    def _background_done(self, task: asyncio.Future[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.warning("call.background_failed", call_id=self.id, error=repr(exc))

    def _emit_event(self, type_: str, **data: Any) -> None:
        event = CallEvent(type_, self.id, data)
        self._event_queue.put_nowait(event)
        self.emit(type_, event)

    def _set_state(self, state: CallState) -> None:
        if state is self.state or self.state is CallState.ENDED:
            return
        self.state = state
        self._state_changed.set()
        self.emit("statechange", state)
        self._emit_event("state", state=str(state))

    def _close_p2p_keys(self) -> None:
        """The P2P media is over for good (the call ended, or group media replaced it)."""
        keys, self._p2p_keys = self._p2p_keys, None
        if keys is not None:
            keys.close()

    def _deliver(self, event: dict[str, Any]) -> None:
        """Called by the device for every event about this call, in order."""
        self._inbox.put_nowait(event)

    def _resync(self, view: dict[str, Any]) -> None:
        """Catch up with the call as the server has it now (a ``welcome.calls`` entry, after
        a reconnect the server could not resume: the events in between are lost). A call
        answered meanwhile is taken as answered; a negotiation that may have lost its offer or
        answer is started again from our side (an ICE restart) if we are the offerer; group
        media joins the SFU again (a restarted node has no rooms)."""
        others = view.get("participants") or []
        if self._group is not None:  # the server may have restarted: its rooms are gone
            self._group._lost("the server could not resume this device's session")
            return
        if self.state is CallState.CALLING and view.get("state") == "joined" and others:
            self._deliver({"type": "call.answered", "call_id": self.id, **others[0]})
        elif (self.state in (CallState.CONNECTING, CallState.RECONNECTING)
              and self._offers_first and self.remote_device is not None):
            self._in_background(self._restart())

    async def _run(self) -> None:
        while self.state is not CallState.ENDED:
            event = await self._inbox.get()
            try:
                await self._handle(event)
            except Exception as exc:  # a broken message must not kill the call
                log.warning("call.event_failed", call_id=self.id, type=event.get("type"), error=repr(exc))

    async def _handle(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind in GROUP_KEY_EVENTS:  # group media's E2E keys (also while it is being joined)
            if self._group_keys is not None:
                self._group_keys.deliver(event)
            elif kind == "call.key" and self._p2p_keys is not None:  # P2P media's
                self._p2p_keys.deliver(event)
            return
        if self._group is not None and self._group.takes(event):  # group media replaced P2P
            return
        if kind == "call.ringing":
            self._emit_event("ringing", user_id=event["user_id"], devices=event["devices"])
        elif kind == "call.answered":
            if self.state is not CallState.CALLING:
                return  # told again (after a reconnect: by the welcome, then by the mailbox)
            self.remote_device = event["device_id"]
            self.timings.answered = time.monotonic()
            self._set_state(CallState.CONNECTING)
            self._emit_event("answered", user_id=event["user_id"], device_id=event["device_id"])
            if self.direction is Direction.OUTGOING:
                await self._offer(restart=False)
        elif kind == "call.declined":
            self._emit_event("declined", user_id=event["user_id"], reason=event["reason"])
        elif kind == "call.participant_left":
            self._emit_event("participant_left", user_id=event["user_id"], reason=event["reason"])
        elif kind in ("call.ended", "call.stop_ringing"):
            await self._end(EndReason(event["reason"]))
        elif kind == "call.sdp":
            await self._on_description(event)
        elif kind == "call.candidate":
            if event["from_device"] == self.remote_device and self._peer is not None:
                await self._peer.add_candidate(event["candidate"])
        elif kind == "call.media":
            if event["from_device"] == self.remote_device:
                self.remote_media = {"audio": event["audio"], "video": event["video"],
                                     "screen": event.get("screen", False)}
                self._emit_event("remote_media", **self.remote_media)
        elif kind == "call.rejoin" and event["from_device"] == self.remote_device:
            # its client lost the peer connection (a reloaded page): offer anew, as to a newcomer
            # (which has none of this device's SFrame keys)
            if self._p2p_keys is not None:
                self._p2p_keys.rejoined(event["from_device"])
            await self._renegotiate(event["from_device"], "rejoin")
        elif kind == "call.handed_off":  # the other user moved the call to another device
            await follow_handoff(self, event)

    async def _watch(self) -> None:
        """Sample stats; restart ICE when the path fails (connection failed or no bytes in)."""
        device = self.device
        while self.state is not CallState.ENDED:
            await asyncio.sleep(device.stats_interval)
            peer = self._peer
            if peer is None:
                continue
            try:
                stats = await self._sample(peer)
            except Exception:  # a peer connection closing under us
                continue
            if self.state is CallState.CONNECTED:
                self.stats = stats
                self.emit("stats", stats)
            now = time.monotonic()
            received = self._sampler.received_bytes
            if received != self._progress_bytes:
                self._progress_bytes, self._progress_at = received, now
            waited = now - self._progress_at
            limit = device.ice_restart_after if self.timings.connected else device.connect_timeout
            failed = peer.pc.connectionState == "failed"
            if (failed or waited > limit) and self.state in (CallState.CONNECTING, CallState.CONNECTED,
                                                              CallState.RECONNECTING):
                if self._restart_attempts >= device.max_ice_restarts:
                    log.warning("call.path_lost", call_id=self.id, attempts=self._restart_attempts)
                    lost = EndReason.CONNECTION_LOST if self.timings.connected else EndReason.NO_MEDIA
                    with contextlib.suppress(Exception):
                        await self.device.request("call.hangup", call_id=self.id, reason=lost.value)
                    await self._end(lost)
                    return
                log.info("call.ice_restart", call_id=self.id, failed=failed, silent_s=round(waited, 1))
                self._in_background(self._restart())
                self._progress_at = now

    async def _end(self, reason: EndReason) -> None:
        if self.state is CallState.ENDED:
            return
        self.end_reason = reason
        self.timings.ended = time.monotonic()
        self._set_state(CallState.ENDED)
        self.state = CallState.ENDED
        self._state_changed.set()
        self.device._forget(self)
        self.shareplay.close()
        current = asyncio.current_task()
        if self._monitor is not None and self._monitor is not current:
            self._monitor.cancel()
        peer, self._peer = self._peer, None
        if peer is not None:
            # Its media stops at once; giving the TURN allocation back takes ~40 s of STUN
            # retransmissions when the TURN server is unreachable: that goes on in the background.
            await asyncio.wait({self._in_background(peer.close())}, timeout=PEER_CLOSE_WAIT)
        if self._group is not None:
            await self._group.close()
        self._close_p2p_keys()
        self.remote_audio.stop()
        self.remote_video.stop()
        for sink in self._sinks if self._sinks_started else []:
            with contextlib.suppress(Exception):
                await sink.stop()
        for track in (self.local_audio, self.local_video):
            if track is not None:
                MediaStreamTrack.stop(track)  # the wrapper only: sources given to us stay live
        for source in self._own_sources:
            source.stop()
        # Announced once media is torn down and recordings are finalised.
        if not self._ended.done():
            self._ended.set_result(reason)
        self.emit("ended", reason)
        self._event_queue.put_nowait(None)
        if self._runner is not current:
            self._runner.cancel()
