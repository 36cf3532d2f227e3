"""Plain values going in and out of the store.

Records are frozen dataclasses; ORM rows never leave the store. Every timestamp is a float of
epoch seconds (UTC).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

DeviceKind = Literal["browser", "ios", "android", "desktop", "sdk", "cli"]
Media = Literal["audio", "video"]
CallState = Literal["ringing", "active", "ended"]
Role = Literal["caller", "callee"]
Direction = Literal["incoming", "outgoing"]

DEVICE_KINDS: tuple[str, ...] = ("browser", "ios", "android", "desktop", "sdk", "cli")
MEDIA_KINDS: tuple[str, ...] = ("audio", "video")
CALL_STATES: tuple[str, ...] = ("ringing", "active", "ended")
ROLES: tuple[str, ...] = ("caller", "callee")

#: Participant end reasons (or, when the participant has none, call end reasons) that make an
#: unjoined incoming call a *missed* call in :class:`HistoryEntry`.
#: ``connection_lost``: the caller (or whoever was in the call) was gone before anyone
#: answered; the callee's devices had rung.
MISSED_REASONS: frozenset[str] = frozenset({"ring_timeout", "cancelled", "connection_lost"})


@dataclass(frozen=True, slots=True)
class UserRecord:
    """An account. ``username`` is stored lowercased."""

    id: str
    username: str
    display_name: str
    password_hash: str
    created_at: float
    deleted_at: float | None = None  # a deleted account: username "~<id>", no name, no password


@dataclass(frozen=True, slots=True)
class InviteRecord:
    """An invitation to create one account, known by the hash of its code (the code itself
    is shown once, to the administrator who made it)."""

    id: str
    note: str  # whom it is for, as the administrator wrote it ("" when not said)
    created_at: float
    expires_at: float
    used_at: float | None = None
    used_by: str | None = None  # the user id of the account made with it
    withdrawn_at: float | None = None

    def state(self, now: float) -> Literal["open", "used", "withdrawn", "expired"]:
        """What the invitation is at ``now``: a used one stays used, a withdrawn one withdrawn."""
        if self.used_at is not None:
            return "used"
        if self.withdrawn_at is not None:
            return "withdrawn"
        return "expired" if self.expires_at <= now else "open"


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """One registered device of a user; ``removed_at`` is set once the device was removed;
    ``identity_key`` is its public Ed25519 key (``facecall.e2ee.identity``), set once;
    ``agreement_key`` its public X25519 key (``facecall.e2ee.agreement``) and
    ``agreement_signature`` the identity key's signature certifying it, both set together."""

    id: str
    user_id: str
    kind: str
    name: str
    created_at: float
    last_seen_at: float
    removed_at: float | None
    identity_key: str | None = None
    agreement_key: str | None = None
    agreement_signature: str | None = None


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """A bearer token, known only by its hash. ``device_id`` is None for an account token."""

    token_hash: str
    user_id: str
    device_id: str | None
    created_at: float
    expires_at: float | None
    revoked_at: float | None


@dataclass(frozen=True, slots=True)
class ParticipantWrite:
    """One user's part in a call, as the state machine wants it stored.

    A participant is *live* while ``end_reason`` is None; setting an end reason makes it
    terminal (see :meth:`Store.live_calls_of_user`).
    """

    user_id: str
    role: str  # "caller" | "callee"
    state: str
    invited_at: float
    end_reason: str | None = None
    joined_at: float | None = None
    left_at: float | None = None
    answered_device_id: str | None = None


@dataclass(frozen=True, slots=True)
class LegWrite:
    """One device's leg of a call (a device that rang, answered, or was handed the call)."""

    user_id: str
    device_id: str
    state: str
    updated_at: float
    end_reason: str | None = None


@dataclass(frozen=True, slots=True)
class CallWrite:
    """Everything written for a call in one transaction: the row, its snapshot and child rows.

    ``participants`` and ``legs`` are upserted: rows named here are inserted or overwritten,
    rows not named are left as they are (nothing is deleted).
    """

    call_id: str
    media: str  # "audio" | "video"
    state: str  # "ringing" | "active" | "ended"
    caller_user_id: str
    caller_device_id: str | None
    created_at: float
    answered_at: float | None = None
    ended_at: float | None = None
    end_reason: str | None = None
    next_deadline: float | None = None
    snapshot: dict[str, Any] = field(default_factory=dict)
    participants: list[ParticipantWrite] = field(default_factory=list)
    legs: list[LegWrite] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ParticipantRecord:
    """A stored ``call_participants`` row."""

    call_id: str
    user_id: str
    role: str
    state: str
    end_reason: str | None
    invited_at: float
    joined_at: float | None
    left_at: float | None
    answered_device_id: str | None


@dataclass(frozen=True, slots=True)
class LegRecord:
    """A stored ``call_device_legs`` row."""

    call_id: str
    user_id: str
    device_id: str
    state: str
    end_reason: str | None
    updated_at: float


@dataclass(frozen=True, slots=True)
class StoredCall:
    """A call as loaded: its version, the state machine's snapshot and the indexed columns."""

    call_id: str
    version: int
    snapshot: dict[str, Any]
    state: str
    media: str
    caller_user_id: str
    caller_device_id: str | None
    created_at: float
    answered_at: float | None
    ended_at: float | None
    end_reason: str | None
    next_deadline: float | None
    participants: tuple[ParticipantRecord, ...] = ()
    legs: tuple[LegRecord, ...] = ()


@dataclass(frozen=True, slots=True)
class HistoryParty:
    """Another participant of a call in someone's history."""

    user_id: str
    username: str
    display_name: str
    role: str
    state: str
    end_reason: str | None
    deleted: bool = False  # the account was deleted since (username and name are gone)


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One call in a user's history.

    ``direction`` is outgoing for the user who placed the call (``caller_user_id``), whatever their
    participant role is now. ``missed`` is True when the call was incoming, the user never joined
    (``joined_at`` is None) and the user's own end reason -- or, when that is None, the call's
    end reason -- is ``ring_timeout``, ``cancelled`` or ``connection_lost``
    (:data:`MISSED_REASONS`).
    ``duration`` is ``ended_at - answered_at`` when the call was answered and has ended, else None.
    """

    call_id: str
    media: str
    direction: Direction
    caller_user_id: str
    others: tuple[HistoryParty, ...]  # every other participant, in invitation order
    my_state: str  # the user's own participant state
    my_end_reason: str | None  # the user's own participant end reason
    call_state: str
    end_reason: str | None  # the call's end reason
    missed: bool
    created_at: float
    answered_at: float | None
    ended_at: float | None
    joined_at: float | None  # when the user joined, if ever
    duration: float | None

    @property
    def participants(self) -> tuple[tuple[str, str], ...]:
        """The other participants as ``(user_id, username)`` pairs."""
        return tuple((o.user_id, o.username) for o in self.others)
