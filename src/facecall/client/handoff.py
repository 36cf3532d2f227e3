"""Moving an answered call between a user's devices (docs/protocol.md, "Moving a call to
another device").

Three devices take part, and each has its piece here or in the :class:`~facecall.client.call.Call`:

* **The new device** sends ``call.handoff`` (:meth:`Device.take_call
  <facecall.client.device.Device.take_call>`) and gets, in the ``ok``, the call's media and the
  other devices in it: :func:`taken_call` makes the :class:`Call` that follows, joined at once
  (``connecting``) and waiting for the other side's offer, as a callee that has answered does.
* **The device that had the call** gets ``call.ended {reason: "handed_off"}``: its Call ends
  like any call the server ended (media stopped, nothing sent back: no ``call.hangup``).
* **The other side** gets ``call.handed_off {user_id, from_device, to_device}``:
  :func:`follow_handoff` keeps the same Call going and sets its media up with the new device
  (:meth:`PeerNegotiation._renegotiate <facecall.client.negotiation.PeerNegotiation._renegotiate>`).

The user's other devices learn where the call is from ``call.elsewhere`` and
``welcome.elsewhere`` (:mod:`facecall.client.elsewhere`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from aiortc import MediaStreamTrack

from facecall.client.call_records import CallState, Direction
from facecall.client.elsewhere import CallElsewhere
from facecall.logs import get_logger

if TYPE_CHECKING:
    from facecall.client.call import Call
    from facecall.client.device import Device

log = get_logger(__name__)


def taken_call(device: Device, call_id: str, reply: dict[str, Any], where: CallElsewhere | None, *,
               video: bool | None, audio_source: MediaStreamTrack | None,
               video_source: MediaStreamTrack | None) -> Call:
    """The :class:`Call` of a call this device has just taken (``reply``: the ``ok`` of its
    ``call.handoff``, ``{media, participants: [{user_id, device_id}]}``; ``where``: what the
    device knew of it, for the other user's name). The call is joined (``connecting``): the
    other side offers to this device, as to a callee that answered.

    Its ``direction`` is the user's: ``outgoing`` if the user placed the call (the ``ok``'s
    ``role``). ``video`` and the sources are :meth:`Call.answer`'s.
    """
    from facecall.client.call import Call  # call.py imports this module

    others = reply.get("participants") or []
    remote = others[0] if others else {}
    names = {other.user_id: other.name for other in where.participants} if where else {}
    remote_user = remote.get("user_id") or next(iter(names), "")
    media = reply.get("media") or (where.media if where else "audio")
    role = reply.get("role") or (where.role if where else "callee")
    direction = Direction.OUTGOING if role == "caller" else Direction.INCOMING
    call = Call(device, call_id, direction=direction, remote_user=remote_user, media=media,
                participants=[device.user_id or "", remote_user], remote_device=remote.get("device_id"),
                remote_name=names.get(remote_user))
    call.state = CallState.CONNECTING  # it starts joined: no ringing here
    call.timings.answered = call._progress_at = time.monotonic()
    want_video = call.video if video is None else video
    call._set_sources(audio_source, video_source if want_video else None, want_video)
    return call


async def follow_handoff(call: Call, event: dict[str, Any]) -> None:
    """``call.handed_off``: the other user moved the call from ``from_device`` (the device this
    call has its media with) to ``to_device``. The call stays the same object and never looks
    ended: it emits ``handed_off`` (``user_id``, ``from_device``, ``to_device``), takes the new
    device's media as unknown until it says otherwise (``remote_media`` back to all on, emitted
    if it changes: the old device's mute was not the new one's), and offers to the new device
    as to a newcomer, closing the connection with the old one
    (:meth:`~facecall.client.negotiation.PeerNegotiation._renegotiate`); once that connection is
    up it tells the new device what it does not send (``call.media``), as to a newcomer."""
    from_device, to_device = event["from_device"], event["to_device"]
    if from_device != call.remote_device or event["user_id"] != call.remote_user \
            or call.state is CallState.ENDED:
        log.info("call.handoff_ignored", call_id=call.id, from_device=from_device,
                 remote_device=call.remote_device)
        return
    call._emit_event("handed_off", user_id=event["user_id"], from_device=from_device,
                     to_device=to_device)
    unknown = {"audio": True, "video": call.video, "screen": False}
    if call.remote_media != unknown:
        call.remote_media = unknown
        call._emit_event("remote_media", **unknown)
    await call._renegotiate(to_device, "handoff")
