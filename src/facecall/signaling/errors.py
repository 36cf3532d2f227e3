"""Stable error codes of the signaling protocol and the exception that carries them.

Every rejected client message is answered with
``{"v": 1, "type": "error", "re": <id or null>, "code": <ErrorCode>, "message": <text>}``.
The ``code`` values are part of the protocol: clients branch on them, so they never change
meaning (new ones may be added). The ``message`` is for humans and may change at any time.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """The stable machine-readable code of a protocol error (see ``docs/protocol.md``)."""

    # -- the frame itself ------------------------------------------------------------------
    MALFORMED_JSON = "malformed_json"  # not UTF-8 JSON, or not a JSON object
    TOO_LARGE = "too_large"  # the frame exceeds the size limit
    UNSUPPORTED_VERSION = "unsupported_version"  # "v" is not a version this server speaks
    UNKNOWN_TYPE = "unknown_type"  # "type" is missing or names no client message
    INVALID_FIELD = "invalid_field"  # a field is missing, extra, of the wrong type or too long
    # -- the session -----------------------------------------------------------------------
    HELLO_REQUIRED = "hello_required"  # a message other than hello came before hello
    RATE_LIMITED = "rate_limited"  # the device sends faster than allowed
    # -- the call --------------------------------------------------------------------------
    UNKNOWN_CALL = "unknown_call"  # no such call (or not visible to this device)
    UNKNOWN_USER = "unknown_user"  # a user id in "to" does not exist
    NOT_IN_CALL = "not_in_call"  # this device is not a ringing or joined device of the call
    NOT_ALLOWED = "not_allowed"  # the device is in the call but may not do this
    INVALID_STATE = "invalid_state"  # the call or the device's leg is not in a state for this
    CALL_ENDED = "call_ended"  # the call has ended; it accepts nothing any more
    CALL_FULL = "call_full"  # the call would exceed the participant limit
    # -- group media (the SFU) -------------------------------------------------------------
    OFFER_REFUSED = "offer_refused"  # the SFU cannot use the offer of sfu.join (message: why)
    SFU_FULL = "sfu_full"  # the SFU holds as many rooms as it may, or the call's room is full
    SFU_UNAVAILABLE = "sfu_unavailable"  # group media needs the single-node server for now
    # -- the server ------------------------------------------------------------------------
    INTERNAL = "internal"  # the server failed; the request may be retried with the same id


class ProtocolError(Exception):
    """A client message was refused; nothing changed.

    :param code: the stable error code.
    :param message: a human-readable explanation.
    :param re: the client message id this error answers, if it could be read.
    """

    def __init__(self, code: ErrorCode, message: str, re: str | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.re = re

    def with_re(self, re: str | None) -> ProtocolError:
        """Return a copy of this error answering the message id ``re``."""
        return ProtocolError(self.code, self.message, re=re)

    def to_wire(self) -> dict[str, object]:
        """The ``error`` reply for this error, as a JSON-safe dict."""
        return {
            "v": 1,
            "type": "error",
            "re": self.re,
            "code": str(self.code),
            "message": self.message,
        }

    def __repr__(self) -> str:
        return f"ProtocolError({self.code!r}, {self.message!r}, re={self.re!r})"
