"""Why a call, or one device's leg of it, ended.

One enum for every end, stored in history and sent on the wire, so that every dropped call is
explainable (LiveKit's disconnect reasons are the model).
"""

from __future__ import annotations

from enum import StrEnum


class EndReason(StrEnum):
    """The reason a call or a device leg reached a terminal state."""

    HUNG_UP = "hung_up"  # a participant hung up (the call ends when fewer than two remain)
    DECLINED = "declined"  # the callee declined (stops all of that user's devices)
    BUSY = "busy"  # the callee declined because they are in another call
    CANCELLED = "cancelled"  # given up before this user answered: the caller cancelled, or
    # (for a user still ringing) everyone who had answered hung up
    RING_TIMEOUT = "ring_timeout"  # nobody answered within the ring timeout: a missed call
    ANSWERED_ELSEWHERE = "answered_elsewhere"  # another device of the same user answered
    DECLINED_ELSEWHERE = "declined_elsewhere"  # another device of the same user declined
    CONNECTION_LOST = "connection_lost"  # the device did not come back within the resume grace,
    # or (``call.hangup``) its media was lost and did not come back
    NO_MEDIA = "no_media"  # the call's media never connected (a firewall, no relay): given up
    IDENTITY_CHECK_FAILED = "identity_check_failed"  # (``call.hangup``) the other device's SDP
    # was not signed by the identity key this device knows for it: someone may be in the middle
    GLARE = "glare"  # both users called each other at once; this call lost the tie-break
    UNAVAILABLE = "unavailable"  # the callee has no device that could ring
    HANDED_OFF = "handed_off"  # the call moved to another device of the same user
    DEVICE_REMOVED = "device_removed"  # the device was removed or its token revoked
    SERVER_SHUTDOWN = "server_shutdown"  # the node stopped and nobody resumed the call
    ERROR = "error"  # an internal error ended the call (logged with details)
