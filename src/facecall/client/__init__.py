"""facecall.client — the Python SDK (see ``docs/sdk.md``).

:class:`Device` signs in and keeps the signaling connection; :meth:`Device.call`, incoming
calls and :meth:`Device.take_call` (a call moved here from the user's other device) give
:class:`Call` objects with P2P media through aiortc; :meth:`Call.join_group_media` sends and
receives a call's media through the server's SFU instead (:class:`GroupMedia`).
"""

from facecall.client.call import Call
from facecall.client.call_records import CallEvent, CallState, CallTimings, Direction
from facecall.client.device import Device
from facecall.client.elsewhere import CallElsewhere, OtherUser
from facecall.client.encoders import REALTIME, EncoderTuning
from facecall.client.errors import (
    ApiError,
    AuthenticationError,
    CallError,
    CallStateError,
    FacecallError,
    MediaError,
    NotConnectedError,
    UnknownUserError,
    WaitTimeoutError,
)
from facecall.client.group import GroupMedia, GroupSlot
from facecall.client.ice import CandidatePairInfo
from facecall.client.identity import SafetyNumber
from facecall.client.stats import CallStats
from facecall.e2ee.identity import IdentityError
from facecall.signaling.reasons import EndReason

__all__ = [
    "REALTIME",
    "ApiError",
    "AuthenticationError",
    "Call",
    "CallElsewhere",
    "CallError",
    "CallEvent",
    "CallState",
    "CallStateError",
    "CallStats",
    "CallTimings",
    "CandidatePairInfo",
    "Device",
    "Direction",
    "EncoderTuning",
    "EndReason",
    "FacecallError",
    "GroupMedia",
    "GroupSlot",
    "IdentityError",
    "MediaError",
    "NotConnectedError",
    "OtherUser",
    "SafetyNumber",
    "UnknownUserError",
    "WaitTimeoutError",
]
