"""A facecall device: an account's registered device with its signaling connection and calls.

```python
async with Device("http://127.0.0.1:8080", "alice", "correct horse", sign_up=True) as alice:
    call = await alice.call("bob", video=True)
    await call.wait_connected()
    ...
    await call.hangup()

async with Device(url, "bob", password, state_file="bob.json") as bob:
    async for call in bob.incoming_calls():
        await call.answer()
```

The device keeps its signaling connection up: when it drops, it reconnects and resumes
(``hello{resume_from}``, docs/protocol.md "Resume"), so calls survive a network blip. If the
server could not resume (it restarted, or the grace expired), the device stays in the calls the
server still has it in (its hello names the calls it holds) and ends the others with
``connection_lost``.

The device also keeps what its user has on their other devices (``calls_elsewhere``, emitted as
``elsewhere``) and can take such a call over (:meth:`Device.take_call`; docs/protocol.md,
"Moving a call to another device").
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any

import websockets
from aiortc import MediaStreamTrack
from pyee.asyncio import AsyncIOEventEmitter

from facecall.client.api import ApiClient
from facecall.client.call import Call
from facecall.client.call_records import CallState, Direction
from facecall.client.elsewhere import CallElsewhere, Change, ElsewhereCalls
from facecall.client.encoders import REALTIME, EncoderTuning
from facecall.client.enrolment import Enrolment
from facecall.client.errors import (
    ApiError,
    AuthenticationError,
    CallError,
    FacecallError,
    NotConnectedError,
    UnknownUserError,
    wait_within,
)
from facecall.client.handoff import taken_call
from facecall.client.ice import parse_host_addresses
from facecall.client.identity import Identity, SafetyNumber
from facecall.client.signaling import ConnectionClosed, SignalingConnection, SignalingError
from facecall.logs import get_logger
from facecall.signaling.protocol import CLOSE_REMOVED, CLOSE_REPLACED, MAX_HELD_CALLS
from facecall.signaling.reasons import EndReason

log = get_logger(__name__)

MAX_ORPHAN_CALLS = 16
CLOSE_TOKEN_REFUSED = 4401  # docs/protocol.md: the token is missing, wrong, expired or revoked
#: Close codes (docs/protocol.md, "Connection") saying that the server no longer takes this
#: device: its token is refused (4401) or it was removed or signed out (4009). Reconnecting
#: cannot help.
REMOVED_CLOSE_CODES = frozenset({CLOSE_TOKEN_REFUSED, CLOSE_REMOVED})
CLOSE_WAIT = 2.0
"""Seconds :meth:`Device.close` waits for the server to take its hang-ups."""


def refusal_code(exc: Exception) -> int | None:
    """The close code of a failed (re)connection: the server's close before its welcome, or
    4401 for an HTTP 401/403 refusal of the handshake."""
    if isinstance(exc, ConnectionClosed):
        return exc.code
    if isinstance(exc, websockets.InvalidStatus) and exc.response.status_code in (401, 403):
        return CLOSE_TOKEN_REFUSED
    return None


class Device(AsyncIOEventEmitter):
    """One device of one user, signed in to one facecall server.

    Emits (pyee) ``call`` with each incoming :class:`Call` as it rings, ``connection`` with
    ``"connected"``, ``"reconnecting"``, ``"closed"`` (also when the device was removed) or
    ``"replaced"``, and ``elsewhere`` with ``(call_id, CallElsewhere | None)`` each time
    :attr:`calls_elsewhere` changes.

    :param server_url: the server's base URL, e.g. ``http://127.0.0.1:8080``.
    :param username: the account; with ``password`` to sign in (and register this device).
    :param sign_up: create the account when it does not exist yet.
    :param token: a device token from an earlier registration (skips sign-in).
    :param state_file: JSON file keeping the device token between runs (created mode 0600).
    :param ice_host_addresses: host addresses to gather candidates on (default: the
        ``FACECALL_ICE_HOST_ADDRESSES`` variable, else every interface but loopback).
    :param relay_only: media only through the TURN relay (``iceTransportPolicy: "relay"``).
    :param video_codec: ``"VP8"`` or ``"H264"`` to offer only that codec (default: VP8 only, as
        SFrame on 1:1 media needs; ``"H264"`` calls are DTLS-SRTP only, docs/sframe.md).
    :param encoder_tuning: real-time encoder settings (default x264 ``veryfast``, 2-thread VP8 from
        720p); ``None`` for aiortc's stock encoders.
    """

    def __init__(
        self,
        server_url: str,
        username: str | None = None,
        password: str | None = None,
        *,
        sign_up: bool = False,
        token: str | None = None,
        state_file: str | os.PathLike[str] | None = None,
        device_name: str | None = None,
        kind: str = "sdk",
        ice_host_addresses: Sequence[str] | str | None = None,
        relay_only: bool = False,
        video_codec: str | None = None,
        encoder_tuning: EncoderTuning | None = REALTIME,
        media_engine: bool = True,
        synthetic_video: tuple[int, int, float] = (640, 360, 30),
        stats_interval: float = 1.0,
        ice_restart_after: float = 4.0,
        connect_timeout: float = 20.0,
        max_ice_restarts: int = 5,
        reconnect_wait: float = 15.0,
        identity_key: str | None = None,
    ) -> None:
        super().__init__()
        if not server_url.startswith(("http://", "https://")):
            raise ValueError(f"server_url must be an http:// or https:// URL, not {server_url!r}")
        if video_codec is not None and video_codec not in ("VP8", "H264"):
            raise ValueError(f"video_codec must be 'VP8' or 'H264', not {video_codec!r}")
        self.api = ApiClient(server_url)
        self.enrolment = Enrolment(self.api, username, password, sign_up=sign_up, token=token,
                                   state_file=state_file, device_name=device_name, kind=kind,
                                   identity_key=identity_key)
        self.token = token
        self.ice_host_addresses = parse_host_addresses(ice_host_addresses)
        self.relay_only = relay_only
        self.video_codec = video_codec
        self.encoder_tuning = encoder_tuning
        self.media_engine = media_engine
        """Use facecall's media engine (low-latency receive, loss repair, adaptation —
        docs/media-engine.md); False gives aiortc's stock media path."""
        self.synthetic_video = synthetic_video
        self.stats_interval = stats_interval
        self.ice_restart_after = ice_restart_after
        self.connect_timeout = connect_timeout
        self.max_ice_restarts = max_ice_restarts
        self.reconnect_wait = reconnect_wait
        self.user_id: str | None = None
        self.device_id: str | None = None
        self.signaling: SignalingConnection | None = None
        self.calls: dict[str, Call] = {}
        self.reconnects = 0
        self._incoming: asyncio.Queue[Call | NotConnectedError] = asyncio.Queue()
        """Incoming calls; once the device stops, the error that wakes whoever waits for one."""
        self._wake_waiters(NotConnectedError("the device is not connected (call connect() first)"))
        self._connected = asyncio.Event()
        self._closing = False
        self._dispatcher: asyncio.Task[None] | None = None
        self._user_ids: dict[str, str] = {}
        self._orphans: dict[str, list[dict[str, Any]]] = {}
        """Events about a call id not known yet (they can overtake the reply to ``call.start``)."""
        self._elsewhere = ElsewhereCalls()
        self._taking: set[str] = set()
        """Calls whose ``call.handoff`` is not answered yet (a hello names them: held here)."""

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Device:
        await self.connect()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def connect(self) -> None:
        """Sign in (or up), register or reuse this device, and open signaling.

        :raises AuthenticationError: wrong username/password (or a token the server refuses).
        :raises ApiError: the server refused or cannot be reached.
        :raises FacecallError: already connected, or no saved device and no password to sign in.
        """
        if self.signaling is not None:
            raise FacecallError("this Device is already connected")
        self._closing = False
        token = self.token = await self.enrolment.device_token()
        self.signaling = SignalingConnection(self.api.ws_url, token)
        try:
            welcome = await self.signaling.connect()
        except (OSError, TimeoutError, ConnectionClosed, SignalingError,
                websockets.WebSocketException) as exc:
            self.signaling = None
            if refusal_code(exc) in REMOVED_CLOSE_CODES:
                raise AuthenticationError(401, f"the server refused this device ({exc})") from exc
            raise ApiError(0, f"cannot open signaling at {self.api.ws_url}: {exc}") from exc
        self.user_id, self.device_id = welcome["user_id"], welcome["device_id"]
        try:
            await self.enrolment.publish_identity(self.user_id, self.device_id)
        except BaseException:
            signaling, self.signaling = self.signaling, None
            await signaling.close()
            raise
        self._incoming = asyncio.Queue()  # calls may ring again
        self._elsewhere_changed(self._elsewhere.welcome(welcome))
        self._connected.set()
        self.emit("connection", "connected")
        self._dispatcher = asyncio.create_task(self._dispatch(), name=f"device-{self.device_id}")

    @property
    def username(self) -> str | None:
        """The account's username (from the state file when none was given)."""
        return self.enrolment.username

    @property
    def identity(self) -> Identity | None:
        """This device's identity key and the other devices' keys it trusts (docs/security.md):
        from the state file, given as ``identity_key``, or made when the device registered; None
        before the first ``connect()``."""
        return self.enrolment.identity

    async def close(self) -> None:
        """Hang up every call and close the connection. Calls end here even when the server
        cannot be told (it is unreachable): it is given :data:`CLOSE_WAIT` seconds in all."""
        self._closing = True
        await self._leave_calls()
        self._connected.clear()
        self._wake_waiters(NotConnectedError("the device is closed"))
        if self.signaling is not None:
            await self.signaling.close()
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dispatcher
        for call in list(self.calls.values()):  # rang while the others were being left
            await call._end(EndReason.HUNG_UP)
        self._elsewhere_changed(self._elsewhere.clear())
        self.signaling = None
        await self.api.close()

    async def _leave_calls(self) -> None:
        """Hang up every call (one that still rings us just ends here), telling the server for
        at most :data:`CLOSE_WAIT` seconds; then every call has ended here."""
        calls = list(self.calls.values())

        async def leave(call: Call) -> None:
            if call.state is not CallState.RINGING:
                await call.hangup()

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*map(leave, calls), return_exceptions=True),
                                   CLOSE_WAIT)
        for call in calls:
            await call._end(EndReason.HUNG_UP)

    def _wake_waiters(self, error: NotConnectedError) -> None:
        """No call will ring any more: end ``incoming_calls()`` and make ``next_call()`` raise
        ``error`` (it stays queued for later waiters, instead of calls that have ended)."""
        while not self._incoming.empty():
            self._incoming.get_nowait()
        self._incoming.put_nowait(error)

    async def drop_connection(self) -> None:
        """Break the signaling transport without goodbye (the device then resumes; for tests)."""
        if self.signaling is not None:
            await self.signaling.drop()

    # ------------------------------------------------------------------ calls

    async def call(self, user: str, *, video: bool = True, audio_source: MediaStreamTrack | None = None,
                   video_source: MediaStreamTrack | None = None) -> Call:
        """Call ``user`` (a username). Returns at once, the call in state ``calling``.

        Sources default to synthetic stamped tracks (:mod:`facecall.media.sources`).

        :raises NotConnectedError: the device is not connected.
        :raises UnknownUserError: there is no such user.
        :raises CallError: the server refused (e.g. ``not_allowed`` to call yourself).
        """
        if not self.connected or self.signaling is None:
            raise NotConnectedError("the device is not connected (call connect() first)")
        if not isinstance(user, str) or not user:
            raise ValueError("user must be a username")
        user_id = await self.resolve_user(user)
        reply = await self.request("call.start", to=[user_id], media="video" if video else "audio")
        call = Call(self, reply["call_id"], direction=Direction.OUTGOING, remote_user=user_id,
                    media="video" if video else "audio", participants=[self.user_id or "", user_id],
                    remote_name=user)
        call._set_sources(audio_source, video_source, video)
        self._register_call(call)
        return call

    @property
    def calls_elsewhere(self) -> Mapping[str, CallElsewhere]:
        """The user's answered calls on their other devices, by call id (read-only, kept up to
        date from ``welcome.elsewhere`` and ``call.elsewhere``): each may be taken over here
        with :meth:`take_call`. Changes are emitted as ``elsewhere``."""
        return self._elsewhere.view

    async def take_call(self, call: str | CallElsewhere, *, video: bool | None = None,
                        audio_source: MediaStreamTrack | None = None,
                        video_source: MediaStreamTrack | None = None) -> Call:
        """Move the user's answered call from their other device to this one (``call.handoff``,
        docs/protocol.md "Moving a call to another device"); returns its :class:`Call`, joined
        (``connecting``): the other side offers to this device, as to a callee that answered,
        and the device that had the call ends its part with ``handed_off``. When the call's
        media goes through the SFU (the server's reply says ``group_media``), this device joins
        it there before returning (:meth:`Call.join_group_media`: nobody would offer it P2P
        media). ``call``: a call id or an entry of :attr:`calls_elsewhere`; ``video`` and the
        sources as for :meth:`Call.answer` (``video=None``: as the call's media). A call this
        device is in already is returned as it is.

        :raises NotConnectedError: the device is not connected.
        :raises CallError: the server refused, with its code: ``invalid_state`` (not answered
            yet, the user is not in it any more, or it rings here: answer it), ``unknown_call``
            (no such call, or not the user's), ``call_ended``; or it refused group media
            (``sfu_full``, ...): the call is on this device all the same (its
            :attr:`~Device.calls`), without media until ``join_group_media()`` succeeds.
        """
        call_id = call.call_id if isinstance(call, CallElsewhere) else call
        if not self.connected or self.signaling is None:
            raise NotConnectedError("the device is not connected (call connect() first)")
        held = self.calls.get(call_id)
        if held is not None and held.state is not CallState.RINGING:
            return held
        where = self._elsewhere.view.get(call_id)
        self._orphans.pop(call_id, None)  # from before this device's part began: not for it
        self._taking.add(call_id)
        try:
            reply = await self.request("call.handoff", call_id=call_id)
        finally:
            self._taking.discard(call_id)
        taken = taken_call(self, call_id, reply, where, video=video, audio_source=audio_source,
                           video_source=video_source)
        self._register_call(taken)  # with the offer, if it came before the reply
        self._elsewhere_changed([self._elsewhere.forget(call_id)])
        if reply.get("group_media") is True:  # nobody offers P2P media: the SFU has the call's
            await taken.join_group_media()
        return taken

    def _elsewhere_changed(self, changes: Iterable[Change | None]) -> None:
        for change in changes:
            if change is not None:
                self.emit("elsewhere", *change)

    def _register_call(self, call: Call) -> None:
        self.calls[call.id] = call
        for event in self._orphans.pop(call.id, []):
            call._deliver(event)

    async def resolve_user(self, username: str) -> str:
        """The user id of ``username`` (:class:`UnknownUserError` if there is none)."""
        if username not in self._user_ids:
            assert self.token is not None
            self._user_ids[username] = (await self.api.find_user(self.token, username))["id"]
        return self._user_ids[username]

    async def safety_number(self, username: str | None = None, *,
                            user_id: str | None = None) -> SafetyNumber:
        """The safety number of this user and another (a ``username``, or a ``user_id`` such as
        a call's ``remote_user``): sixty digits to compare once with that person, and whether
        they were marked as compared (docs/security.md, "Safety numbers").

        :raises IdentityError: the server lists another key for a device of theirs this device
            met, or not this device's own key (someone may be in the middle).
        """
        if (username is None) == (user_id is None):
            raise ValueError("give a username or a user_id")
        if not self.connected or self.identity is None:
            raise NotConnectedError("the device is not connected")
        other = user_id if user_id is not None else await self.resolve_user(username or "")
        assert self.token is not None and self.user_id is not None and self.device_id is not None
        return await self.identity.safety_number(self.api, self.token, self.user_id, self.device_id,
                                                 other)

    async def mark_verified(self, number: SafetyNumber) -> None:
        """Remember that this user compared ``number`` with the other person and it matched:
        :meth:`safety_number` says ``verified`` while it stays the same, ``changed`` after."""
        if self.identity is None:
            raise NotConnectedError("the device is not connected")
        await self.identity.mark_verified(number)

    async def incoming_calls(self) -> AsyncIterator[Call]:
        """Incoming calls as they ring, until the device closes (or is removed or replaced)."""
        while isinstance(call := await self._next_incoming(), Call):
            yield call

    async def next_call(self, timeout: float | None = 30) -> Call:
        """The next incoming call.

        :raises WaitTimeoutError: none rang within ``timeout`` seconds (None: no limit).
        :raises NotConnectedError: the device is closed, or was removed or replaced, meanwhile.
        """
        call = await wait_within(self._next_incoming(), timeout, "no call rang")
        if isinstance(call, NotConnectedError):
            raise NotConnectedError(str(call))
        return call

    async def _next_incoming(self) -> Call | NotConnectedError:
        """The next call that rings, or the error of a device that stopped (left queued)."""
        call = await self._incoming.get()
        if isinstance(call, NotConnectedError):
            self._incoming.put_nowait(call)
        return call

    async def ice_configuration(self) -> dict[str, Any]:
        """Fresh TURN REST credentials and ICE servers for one peer connection. A server that
        offers no TURN (``facecall serve --no-turn``: 503) gives none: media then flows only
        directly, between host candidates -- unless the device is ``relay_only``, which then
        cannot have media at all (:class:`CallError` ``no_turn``)."""
        assert self.token is not None
        try:
            return await self.api.turn_credentials(self.token)
        except ApiError as exc:
            if exc.status != 503:
                raise
            if self.relay_only:
                raise CallError("no_turn", "relay-only media needs TURN, and this server offers "
                                "none (it runs without a TURN secret)") from None
            log.warning("device.no_turn", detail=exc.detail,
                        consequence="direct media only: no relay candidates")
            return {"ice_servers": []}

    async def request(self, type_: str, **fields: Any) -> dict[str, Any]:
        """Send a signaling request, waiting out a reconnection; server refusals → :class:`CallError`."""
        if self.signaling is None or (self._closing and type_ not in ("call.hangup", "call.cancel")):
            raise NotConnectedError("the device is not connected")
        if self._closing and not self.connected:  # closing: do not wait for signaling to come back
            raise NotConnectedError("the device closed while signaling was down")
        try:
            await asyncio.wait_for(self._connected.wait(), self.reconnect_wait)
        except TimeoutError:
            raise NotConnectedError(
                f"the device could not reconnect within {self.reconnect_wait} s") from None
        if (signaling := self.signaling) is None:  # stopped meanwhile (removed, replaced)
            raise NotConnectedError("the device is not connected")
        try:
            return await signaling.request(type_, **fields)
        except SignalingError as exc:
            if exc.code == "unknown_user":
                raise UnknownUserError(", ".join(fields.get("to", []))) from None
            raise CallError(exc.code, exc.message) from None
        except ConnectionClosed as exc:
            raise NotConnectedError(str(exc)) from None

    def _forget(self, call: Call) -> None:
        if self.calls.get(call.id) is call:  # not a newer Call of the same id (re-invited)
            del self.calls[call.id]

    # ------------------------------------------------------------------ events

    async def _dispatch(self) -> None:
        assert self.signaling is not None
        while True:
            event = await self.signaling.events.get()
            kind = event.get("type")
            if kind == "connection.closed":
                self._connected.clear()
                if self._closing:
                    self.emit("connection", "closed")
                    return
                if await self._stopped_by(event.get("code"), event.get("reason")):
                    return
                self.emit("connection", "reconnecting")
                if not await self._reconnect():
                    return
                continue
            if kind == "call.elsewhere":  # docs/protocol.md, "Moving a call to another device"
                self._elsewhere_changed([self._elsewhere.update(event)])
                continue
            if kind == "call.ring":
                if event["call_id"] in self.calls:
                    continue  # rung again for a call we hold and still ring for (fresh start)
                call = Call(self, event["call_id"], direction=Direction.INCOMING,
                            remote_user=event["from_user"], media=event["media"],
                            participants=event["participants"], call_waiting=event["call_waiting"],
                            remote_device=event["from_device"], remote_name=event.get("from_name"))
                self._register_call(call)
                self._incoming.put_nowait(call)
                self.emit("call", call)
                continue
            call_id = event.get("call_id")
            call = self.calls.get(call_id) if isinstance(call_id, str) else None
            if call is not None:
                call._deliver(event)
                if kind in ("call.ended", "call.stop_ringing"):
                    del self.calls[call.id]  # over: a ring that follows (re-invited) is new
            elif isinstance(call_id, str):
                self._orphans.setdefault(call_id, []).append(event)
                while len(self._orphans) > MAX_ORPHAN_CALLS:
                    self._orphans.pop(next(iter(self._orphans)))

    def _held_call_ids(self) -> list[str]:
        """The calls to name in a hello (docs/protocol.md, "A fresh start"): the ones being
        taken over (:meth:`take_call`) and those we are in first, then those ringing us, as many
        as a hello may name."""
        ringing = [call.id for call in self.calls.values() if call.state is CallState.RINGING]
        joined = [call.id for call in self.calls.values() if call.state is not CallState.RINGING]
        return list(dict.fromkeys([*self._taking, *joined, *ringing]))[:MAX_HELD_CALLS]

    async def _stopped_by(self, code: int | None, reason: str | None) -> bool:
        """Whether a close ``code`` means that the server will not take this device back; if so
        the device stops (:meth:`_stop`): removed (4401, 4009), or replaced (4409)."""
        if code in REMOVED_CLOSE_CODES:
            log.warning("device.removed", device_id=self.device_id, code=code, reason=reason)
            await self._stop(EndReason.DEVICE_REMOVED, "closed", "the device was removed")
            return True
        if code == CLOSE_REPLACED:
            # another program connected with this device's token: taking the device back
            # would make the two take turns for ever (docs/protocol.md, 4409)
            log.warning("device.replaced", device_id=self.device_id)
            await self._stop(EndReason.CONNECTION_LOST, "replaced",
                             "another connection took this device over")
            return True
        return False

    async def _stop(self, reason: EndReason, change: str, why: str) -> None:
        """The server will not take this connection back: end every call with ``reason``, emit
        ``connection`` ``change``, wake the waiters for calls; ``connect()`` starts again."""
        self._connected.clear()
        signaling, self.signaling = self.signaling, None
        if signaling is not None:
            await signaling.close()  # its unanswered requests fail
        for call in list(self.calls.values()):
            await call._end(reason)
        self._elsewhere_changed(self._elsewhere.clear())
        self._wake_waiters(NotConnectedError(why))
        self.emit("connection", change)

    async def _reconnect(self) -> bool:
        """Reconnect and resume (docs/protocol.md "Resume"), retrying with backoff; False if
        the device stopped instead (removed, its hello refused, or closing)."""
        assert self.signaling is not None
        delay = 0.1
        while not self._closing:
            try:
                welcome = await self.signaling.resume(calls=self._held_call_ids())
            except SignalingError as exc:  # the server refused our hello: retrying won't help
                log.error("device.hello_refused", device_id=self.device_id, error=str(exc))
                await self._stop(EndReason.CONNECTION_LOST, "closed", f"the server refused: {exc}")
                return False
            except (OSError, TimeoutError, ConnectionClosed, websockets.WebSocketException) as exc:
                if await self._stopped_by(refusal_code(exc), str(exc)):
                    return False
                log.info("device.reconnect_failed", device_id=self.device_id, error=str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            self.reconnects += 1
            self.emit("connection", "connected")
            self._elsewhere_changed(self._elsewhere.welcome(welcome))
            if not welcome.get("resumed"):
                # The server lost our session (a restarted node, an expired grace): we are still
                # in the calls its welcome lists, as they stand now; the others ended for us.
                still_in = {view["call_id"]: view for view in welcome.get("calls", [])}
                for call in list(self.calls.values()):
                    if (view := still_in.get(call.id)) is not None:
                        call._resync(view)
                    else:
                        await call._end(EndReason.CONNECTION_LOST)
            self._connected.set()
            return True
        return False
