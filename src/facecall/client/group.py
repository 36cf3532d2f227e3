"""Group media: a call's media through the server's SFU (docs/sfu.md; docs/protocol.md,
"Group media (SFU)"), for calls of three or more people.

:meth:`Call.join_group_media <facecall.client.call.Call.join_group_media>` makes a
:class:`GroupMedia`: one aiortc peer connection with the SFU in its slot shape (docs/sfu.md,
"The offer a participant makes") —

* BUNDLE with ``max-bundle`` (with aiortc's default, a second m-line of a kind stays on a
  transport that never connects) and rtcp-mux, every candidate in the SDP (aioice gathers first);
* one ``sendrecv`` audio m-line and, in a video call, one ``sendrecv`` video m-line: the call's
  own sources (:attr:`Call.local_audio`, :attr:`Call.local_video`: the ones given to
  ``Device.call`` / ``answer`` / ``take_call``, so ``mute()`` and ``camera_off()`` act here too);
  Opus and VP8 only, the codecs the SFU forwards;
* ``slots`` ``recvonly`` audio m-lines and, in a video call, ``slots`` ``recvonly`` video
  m-lines: the receive slots, each played by whoever the SFU puts there.

The offer goes to the server with ``sfu.join``; the SFU's answer comes back in the ``ok`` with
the device's slots, and ``sfu.slots`` events say who fills each slot whenever that changes
(the :class:`Call` routes them here). The ICE servers (our STUN/TURN, fresh TURN REST
credentials), ``relay_only``, the host addresses and the encoder tuning are the device's, as
for P2P media (:class:`~facecall.client.peer.PeerSession`); the media engine is not used here
(aiortc's stock media path: the engine's adaptation is made for one 1:1 connection).

**Group media replaces P2P media in the call, on this device.** Once the SFU took the device,
the call closes its peer connection with the other device (if it had one) and takes no further
part in P2P negotiation: relayed offers, answers, candidates and ``call.rejoin`` are ignored, it
never restarts ICE, and a ``call.handed_off`` is only reported (the device that took the call
joins group media itself). Today's P2P is 1:1 — only the caller's device offers, once, on
``call.answered`` — so a user invited into a call gets no media from the SDK without this. A
call with three or more people is therefore a group call for all of them: each device joins
group media. (One that stays on P2P with a device that moved to the SFU loses that
connection: its ICE restarts are not answered.)

The call follows: the call is ``connected`` once the SFU's media is (an invited device never
had any other), and group media closes when the call ends or moves to another device here
(the server takes the device out of the room by itself then); :meth:`GroupMedia.leave` sends
``sfu.leave`` and closes it while the call goes on. When the SFU loses the device (the
connection fails, or the SFU closes it: a server restart, nothing heard from it for 15 s), it
joins again by itself with a new connection (:meth:`GroupMedia._rejoin`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.rtcrtptransceiver import RTCRtpTransceiver

from facecall.client.call_records import CallState
from facecall.client.errors import CallError, CallStateError, wait_within
from facecall.client.group_keys import GroupKeys
from facecall.client.ice import CandidatePairInfo, ice_servers_from_api, selected_candidate_pair
from facecall.client.peer import PeerSession
from facecall.client.sframe_media import FrameCipher, frames_from
from facecall.client.tracks import LocalTrack, RemoteTrack
from facecall.logs import get_logger

if TYPE_CHECKING:
    from aiortc.stats import RTCStatsReport

    from facecall.client.call import Call

log = get_logger(__name__)

DEFAULT_SLOTS = 3
"""Receive slots per kind asked for: the SFU's default K (docs/sfu.md). A server with fewer
refuses more with ``offer_refused``."""
CLOSE_WAIT = 1.0
"""Seconds closing waits for the peer connection to close (DTLS close, TURN release)."""
#: pauses (s) before each try to join again once the connection with the SFU failed or the SFU
#: closed it (a server restart, the SFU dropped this device); then group media closes. The
#: first lets signaling say first when the call ended or moved (the server's SFU closes the
#: device's connection then too)
REJOIN_PAUSES = (0.5, 1.0, 2.0, 4.0, 8.0)
#: the server's answers to ``sfu.join`` after which joining again is pointless
FINAL_REFUSALS = frozenset({"call_ended", "not_in_call", "unknown_call"})
#: relayed P2P messages that group media leaves unanswered: P2P is off in this call here
P2P_EVENTS = frozenset({"call.sdp", "call.candidate", "call.rejoin"})
#: the call states in which a device is joined in the call (answered, not ended)
JOINED_STATES = (CallState.CONNECTING, CallState.CONNECTED, CallState.RECONNECTING)


@dataclass(frozen=True, slots=True)
class GroupSlot:
    """One receive slot (one ``recvonly`` m-line): its ``mid`` and ``kind``, the user and
    device whose media it carries now (both None: empty), and the track that plays it.

    The ``track`` stays the same while the slot changes hands (the SFU sends one steady stream
    per slot), so a sink attached to it plays whoever the slot carries."""

    mid: str
    kind: str
    user_id: str | None
    device_id: str | None
    track: RemoteTrack

    @property
    def filled(self) -> bool:
        return self.device_id is not None


class GroupMedia:
    """This device's place in its call's group media (the SFU). Made by
    :meth:`Call.join_group_media <facecall.client.call.Call.join_group_media>`.

    The call emits (pyee, and in :meth:`Call.events`) ``group_slots`` (``slots``: mid →
    :class:`GroupSlot`) each time a slot changes hands, ``group_speaker`` (``user_id``,
    ``device_id``: the room's dominant speaker now, both None for nobody; :attr:`speaker`) when
    the SFU's choice changes, and ``group_media`` (``state``: ``connected``, ``failed`` — the
    SFU lost this device, which joins again — or ``closed``).
    """

    def __init__(self, call: Call, peer: PeerSession, slots: int, keys: GroupKeys) -> None:
        self.call = call
        self.keys = keys
        """This device's SFrame keys in the group (:class:`~facecall.client.group_keys.GroupKeys`)."""
        self.slots_per_kind = slots
        """Receive slots per kind asked for."""
        self.closed = False
        """Left, or the call ended (or moved away from this device)."""
        self.timings: dict[str, float] = {"joined": time.monotonic()}
        """Monotonic instants: ``joined`` (the offer made), ``connected``, ``closed``."""
        self.rejoins = 0
        """Times this device joined again after its connection with the SFU was lost."""
        self.speaker: tuple[str, str] | None = None
        """``(user_id, device_id)`` of the room's dominant speaker as the SFU says (the
        ``sfu.join`` reply, then ``sfu.speaker``), or None: nobody yet, or they left."""
        self._peer = peer
        self._slots: dict[str, GroupSlot] = {}
        self._changed = asyncio.Event()
        self._connected = asyncio.Event()
        self._rejoining: asyncio.Future[None] | None = None
        self._follow(peer)

    def __repr__(self) -> str:
        filled = sum(slot.filled for slot in self._slots.values())
        return f"<GroupMedia {self.call.id} {self.state} {filled}/{len(self._slots)} slots filled>"

    # ------------------------------------------------------------------ public API

    @property
    def pc(self) -> RTCPeerConnection:
        """The aiortc peer connection with the SFU."""
        return self._peer.pc

    @property
    def state(self) -> str:
        """The connection with the SFU: aiortc's ``connectionState`` (``new``, ``connecting``,
        ``connected``, ``failed``, ``closed``)."""
        return "closed" if self.closed else self.pc.connectionState

    @property
    def slots(self) -> Mapping[str, GroupSlot]:
        """mid → :class:`GroupSlot`, in the offer's order (read-only; updated in place)."""
        return MappingProxyType(self._slots)

    def slot_of(self, user_id: str, kind: str) -> GroupSlot | None:
        """The slot of ``kind`` that carries ``user_id`` now, if any."""
        return next((slot for slot in self._slots.values()
                     if slot.kind == kind and slot.user_id == user_id), None)

    @property
    def path(self) -> str | None:
        """``host``, ``srflx`` or ``relay``: the selected candidate pair's, once connected."""
        pair = self.candidate_pair
        return pair.path if pair is not None else None

    @property
    def candidate_pair(self) -> CandidatePairInfo | None:
        return None if self.closed else selected_candidate_pair(self.pc)

    async def get_stats(self) -> RTCStatsReport:
        """aiortc's stats of the connection with the SFU (W3C webrtc-stats: an ``inbound-rtp``
        per slot, keyed by its SSRC; ``outbound-rtp`` for what this device sends)."""
        if self.closed:
            raise CallStateError("group media is closed")
        return await self.pc.getStats()

    async def wait_connected(self, timeout: float | None = 30) -> None:
        """Wait until the media with the SFU is connected (:class:`CallStateError` if group
        media closes first)."""
        await self.wait_slots(lambda _: self._connected.is_set(), timeout=timeout,
                              what="group media did not connect")

    async def wait_slots(self, condition: Callable[[Mapping[str, GroupSlot]], bool], *,
                         timeout: float | None = 30, what: str = "the slots did not change so") -> None:
        """Wait until ``condition(slots)`` holds (checked at once, then at every change).

        :raises WaitTimeoutError: not within ``timeout`` seconds.
        :raises CallStateError: group media closed first.
        """
        async def reach() -> None:
            while not condition(self.slots):
                if self.closed:
                    raise CallStateError(f"group media closed ({what})")
                self._changed.clear()
                await self._changed.wait()

        await wait_within(reach(), timeout, what)

    async def leave(self) -> None:
        """Leave the group media (``sfu.leave``): the others' slots that carried this device
        empty; the call goes on, without media here (P2P stays off; join again to get media
        back). Closes here even when the server cannot be told; leaving twice is a no-op.

        :raises NotConnectedError: the server could not be told (closed here all the same).
        """
        if self.closed:
            return
        try:
            if self.call.state is not CallState.ENDED:
                await self.call.device.request("sfu.leave", call_id=self.call.id)
        except CallError as exc:  # out already: the call ended, or the SFU dropped us
            if exc.code not in ("call_ended", "invalid_state", "not_in_call"):
                raise
        finally:
            await self.close()

    async def close(self) -> None:
        """Stop the media with the SFU here, without telling the server (the call's end and a
        handoff take the device out of the room on the server's side)."""
        if self.closed:
            return
        self.closed = True
        self.timings["closed"] = time.monotonic()
        self._changed.set()
        if self._rejoining is not None:
            self._rejoining.cancel()
        self.keys.close()
        if self.call._group_keys is self.keys:
            self.call._group_keys = None
        for slot in self._slots.values():
            slot.track.stop()
        await asyncio.wait({self.call._in_background(self._peer.close())}, timeout=CLOSE_WAIT)
        if self.call.state is not CallState.ENDED:  # an ended call's last event is its end
            self.call._emit_event("group_media", state="closed")

    # ------------------------------------------------------------------ the call's hooks

    def takes(self, event: dict[str, Any]) -> bool:
        """Whether this handles a call event in place of the P2P media: ``sfu.slots`` (who
        fills the slots now), the relayed P2P messages (ignored: P2P is off in this call here)
        and ``call.handed_off`` (reported; the device that took the call joins itself)."""
        kind = event["type"]
        if kind == "sfu.slots":
            self._fill(event["slots"])
            return True
        if kind == "sfu.speaker":
            self._speak(event)
            return True
        if kind == "call.handed_off":
            call = self.call
            if event["user_id"] == call.remote_user and event["from_device"] == call.remote_device:
                call.remote_device = event["to_device"]
            call._emit_event("handed_off", user_id=event["user_id"], from_device=event["from_device"],
                             to_device=event["to_device"])
            return True
        return kind in P2P_EVENTS

    # ------------------------------------------------------------------ internals

    def _make_slots(self) -> None:
        """One :class:`GroupSlot` per ``recvonly`` transceiver (mids are set by the offer)."""
        for transceiver in self.pc.getTransceivers():
            if transceiver.direction == "recvonly" and transceiver.mid is not None:
                self._slots[transceiver.mid] = GroupSlot(transceiver.mid, transceiver.kind, None, None,
                                                         RemoteTrack(transceiver.kind))

    def _replace_slots(self) -> None:
        """The slots on a new connection (a join again): the same tracks, in the same order,
        empty until the server's list fills them."""
        tracks = list(self._slots.values())
        receiving = [t for t in self.pc.getTransceivers() if t.direction == "recvonly" and t.mid is not None]
        self._slots = {t.mid: GroupSlot(t.mid, t.kind, None, None, old.track)  # type: ignore[misc]
                       for t, old in zip(receiving, tracks, strict=True)}
        self._changed.set()
        self.call._emit_event("group_slots", slots=dict(self._slots))

    def _play(self, transceivers: list[RTCRtpTransceiver]) -> None:
        """Feed every slot's track from its receiver (the answer made the receivers' tracks)."""
        for transceiver in transceivers:
            slot = self._slots.get(transceiver.mid or "")
            if slot is not None and transceiver.receiver.track is not None:
                slot.track.attach(transceiver.receiver.track)

    def _fill(self, wire: object) -> None:
        """Apply the server's slot list (``ok`` or ``sfu.slots``); emit ``group_slots`` if it
        changed anything. Entries that are not slots of this device are ignored."""
        if self.closed:
            return
        changed = False
        receivers = {t.mid: t.receiver for t in self.pc.getTransceivers() if t.mid is not None}
        for entry in wire if isinstance(wire, list) else []:
            mid = entry.get("mid") if isinstance(entry, dict) else None
            slot = self._slots.get(mid) if isinstance(mid, str) else None
            if slot is None:
                continue
            user_id, device_id = entry.get("user_id"), entry.get("device_id")
            if not all(v is None or isinstance(v, str) for v in (user_id, device_id)):
                log.warning("group.bad_slot", call_id=self.call.id, mid=slot.mid)
                continue
            if (slot.user_id, slot.device_id) != (user_id, device_id):
                self._slots[slot.mid] = dataclasses.replace(slot, user_id=user_id, device_id=device_id)
                receiver = receivers.get(slot.mid)
                if receiver is not None:  # its frames decrypt only under that device's keys
                    frames_from(receiver, device_id)
                changed = True
        if changed:
            self._changed.set()
            self.call._emit_event("group_slots", slots=dict(self._slots))

    def _speak(self, wire: object) -> None:
        """Apply the server's speaker (the reply's ``speaker`` or an ``sfu.speaker`` event);
        emit ``group_speaker`` if it changed. Anything but two strings or two nulls is ignored."""
        if self.closed:
            return
        user_id = wire.get("user_id") if isinstance(wire, dict) else None
        device_id = wire.get("device_id") if isinstance(wire, dict) else None
        if isinstance(user_id, str) and isinstance(device_id, str):
            speaker: tuple[str, str] | None = (user_id, device_id)
        elif wire is None or (user_id is None and device_id is None and isinstance(wire, dict)):
            speaker = None
        else:
            log.warning("group.bad_speaker", call_id=self.call.id)
            return
        if speaker != self.speaker:
            self.speaker = speaker
            self.call._emit_event("group_speaker", user_id=speaker[0] if speaker else None,
                                  device_id=speaker[1] if speaker else None)

    def _follow(self, peer: PeerSession) -> None:
        peer.pc.on("connectionstatechange", lambda: self._on_connection_state(peer))

    def _on_connection_state(self, peer: PeerSession) -> None:
        state = peer.pc.connectionState
        if self.closed or peer is not self._peer or state not in ("connected", "failed", "closed"):
            return  # (a connection this replaced closes too)
        call = self.call
        if state == "connected":
            self.timings.setdefault("connected", time.monotonic())
            self._connected.set()
            self._changed.set()
            if call.state in JOINED_STATES:  # the call's media is this connection now
                if call.timings.connected is None:
                    call.timings.connected = time.monotonic()
                call._set_state(CallState.CONNECTED)
            call._emit_event("group_media", state=state)
            return
        self._lost(f"the connection {state}")  # failed, or the SFU closed it (close_notify)

    def _lost(self, why: str) -> None:
        """The SFU lost this device, or may have (a server that lost its session restarted,
        and its rooms live in memory): join again (:meth:`_rejoin`) unless it is under way."""
        if self.closed:
            return
        log.warning("group.connection_lost", call_id=self.call.id, why=why)
        self._connected.clear()
        if self._rejoining is None or self._rejoining.done():
            self._rejoining = self.call._in_background(self._rejoin())

    async def _rejoin(self) -> None:
        """Join the SFU again with a new connection (docs/protocol.md: a join again replaces
        the device's place): the slots keep their tracks, the keys follow the new join (the
        others see a new member and re-key; so does this device). Emits ``group_media``
        ``failed`` once the first pause is over and the call still holds this device, then
        ``connected`` when the new connection is up. Tries after each of
        :data:`REJOIN_PAUSES`; closes group media when none succeeds or the server says the
        device is out of the call."""
        call = self.call
        for attempt, pause in enumerate(REJOIN_PAUSES):
            await asyncio.sleep(pause)
            if self.closed or call.state not in JOINED_STATES:
                return  # (the call ended or moved: that closed the connection)
            if attempt == 0:
                call._emit_event("group_media", state="failed")
            try:
                peer, offer = await _offer(call, self.keys.cipher, self.slots_per_kind)
            except Exception as exc:  # no ICE servers now, say: try again
                log.warning("group.rejoin_failed", call_id=call.id, error=repr(exc))
                continue
            try:
                self.keys.rejoining()
                reply = await call.device.request("sfu.join", call_id=call.id, sdp=offer.sdp)
                if self.closed:
                    raise CallStateError("group media closed while joining again")
                previous, self._peer = self._peer, peer
                self._follow(peer)
                call._in_background(previous.close())
                self._replace_slots()
                await peer.accept_answer(RTCSessionDescription(sdp=reply["sdp"], type="answer"))
            except CallError as exc:
                await asyncio.wait({call._in_background(peer.close())}, timeout=CLOSE_WAIT)
                log.warning("group.rejoin_refused", call_id=call.id, code=exc.code, error=str(exc))
                if exc.code in FINAL_REFUSALS:
                    break
                continue
            except Exception as exc:
                if peer is not self._peer:
                    await asyncio.wait({call._in_background(peer.close())}, timeout=CLOSE_WAIT)
                if self.closed:
                    return
                log.warning("group.rejoin_failed", call_id=call.id, error=repr(exc))
                continue
            self._play(peer.pc.getTransceivers())
            self._fill(reply.get("slots") or [])
            self._speak(reply.get("speaker"))
            self.keys.members_replied(reply.get("members"))
            self.rejoins += 1
            log.info("group.rejoined", call_id=call.id, rejoins=self.rejoins)
            return
        log.warning("group.rejoin_gave_up", call_id=call.id)
        await self.close()


async def _offer(call: Call, cipher: FrameCipher, slots: int) -> tuple[PeerSession, RTCSessionDescription]:
    """A new connection for ``call``'s group media in the SFU's slot shape, and its offer: the
    call's own sources sending, ``slots`` receive slots per kind, every frame through
    ``cipher``. The ICE servers (our STUN/TURN, fresh TURN REST credentials), ``relay_only``,
    the host addresses and the encoder tuning are the device's."""
    device = call.device
    peer = PeerSession(ice_servers=ice_servers_from_api(await device.ice_configuration()),
                       relay_only=device.relay_only, ice_host_addresses=device.ice_host_addresses,
                       tuning=device.encoder_tuning, video_codec="VP8", frame_cipher=cipher)
    try:
        own: list[LocalTrack] = [t for t in (call.local_audio, call.local_video) if t is not None]
        peer.add_tracks(own, [track.kind for track in own])
        kinds = ["audio", "video"] if call.video else ["audio"]
        peer.add_tracks([], [kind for kind in kinds for _ in range(slots)])
        return peer, await peer.create_offer()
    except BaseException:
        await asyncio.wait({call._in_background(peer.close())}, timeout=CLOSE_WAIT)
        raise


async def join_group_media(call: Call, slots: int = DEFAULT_SLOTS) -> GroupMedia:
    """Make ``call``'s :class:`GroupMedia`: offer to the SFU (``sfu.join``), apply its answer,
    and then — the SFU took the device — close the call's P2P connection (if any). A refusal
    changes nothing (the P2P media goes on).

    :raises ValueError: ``slots`` is below 1.
    :raises CallStateError: the call is not answered yet, or has ended.
    :raises CallError: the server refused, with its code and message: ``offer_refused``,
        ``sfu_full``, ``sfu_unavailable``, ``not_in_call``, ``call_ended``, ...
    :raises NotConnectedError: no signaling.
    """
    if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
        raise ValueError(f"slots must be a positive integer, not {slots!r}")
    if call.state not in JOINED_STATES:
        raise CallStateError(f"group media needs an answered call (this one is {call.state})")
    device = call.device
    cipher = FrameCipher()
    peer, offer = await _offer(call, cipher, slots)
    keys = GroupKeys(call, cipher)
    group = GroupMedia(call, peer, slots, keys)
    call._group_keys = keys  # the others' keys may come before the reply
    try:
        group._make_slots()
        reply = await device.request("sfu.join", call_id=call.id, sdp=offer.sdp)
        if call.state is CallState.ENDED:
            raise CallStateError(f"the call ended ({call.end_reason}) while joining group media")
    except BaseException:
        group.closed = True
        keys.close()
        if call._group_keys is keys:
            call._group_keys = None
        await asyncio.wait({call._in_background(peer.close())}, timeout=CLOSE_WAIT)
        raise
    keys.members_replied(reply.get("members"))
    async with call._negotiating:  # no P2P offer or answer is half done while P2P goes
        if call.state is CallState.ENDED:  # ended while we waited: the server drops us itself
            await group.close()
            raise CallStateError(f"the call ended ({call.end_reason}) while joining group media")
        previous, call._group = call._group, group
        p2p, call._peer = call._peer, None
    if previous is not None:
        await previous.close()
    call._close_p2p_keys()
    if p2p is not None:
        await asyncio.wait({call._in_background(p2p.close())}, timeout=CLOSE_WAIT)
    try:
        await peer.accept_answer(RTCSessionDescription(sdp=reply["sdp"], type="answer"))
    except Exception:
        if group.closed:  # the call ended meanwhile, and closed it
            raise CallStateError(f"the call ended ({call.end_reason}) while joining group media") from None
        await group.close()
        raise
    group._play(peer.pc.getTransceivers())
    group._fill(reply.get("slots") or [])
    group._speak(reply.get("speaker"))
    log.info("group.joined", call_id=call.id, slots=slots, closed_p2p=p2p is not None)
    return group
