"""Request and response bodies of the HTTP API (they make up `/openapi.json`)."""

from __future__ import annotations

import unicodedata
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

#: bidirectional embeddings, overrides and isolates (Unicode UAX #9 §2): in a name they can make
#: what another user's screen shows read differently from what was typed
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u061c")


def shown_text(value: str) -> str:
    """A name shown to other people (display names, device names): no control characters
    (line breaks, escapes, NUL: Unicode category Cc), no lone surrogates (Cs) and no
    bidirectional controls; joiners and variation selectors stay (emoji need them)."""
    for char in value:
        if char in BIDI_CONTROLS or unicodedata.category(char) in ("Cc", "Cs"):
            raise ValueError(f"must not contain the character U+{ord(char):04X}")
    return value


ShownName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64),
    AfterValidator(shown_text),
]

Username = Annotated[
    str, StringConstraints(min_length=3, max_length=32, pattern=r"^[A-Za-z0-9_.-]+$")
]
Password = Annotated[str, StringConstraints(min_length=8, max_length=256)]
DeviceKind = Literal["browser", "ios", "android", "desktop", "sdk", "cli"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


#: an invitation's code, as the admin API makes it (43 URL-safe characters) with some room
InviteCode = Annotated[str, StringConstraints(min_length=16, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


class AccountIn(Strict):
    """A new account, as the admin API makes it."""

    username: Username
    password: Password
    display_name: ShownName | None = None


class SignUp(AccountIn):
    """A new account, made by its owner."""

    invite: InviteCode | None = Field(
        default=None,
        description="The code of an invitation (the `#invite=` part of its link): needed when "
                    "sign-up is closed; used up by this account.")


class SignIn(Strict):
    username: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    password: Annotated[str, StringConstraints(min_length=1, max_length=256)]


class ProfileIn(Strict):
    """What a user may change of their own account, besides the password."""

    display_name: ShownName


class PasswordChange(Strict):
    current_password: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    new_password: Password
    sign_out_other_devices: bool = Field(
        default=False,
        description="Also remove every other device of the account: they stop ringing, their "
                    "signaling connections close (4009) and their tokens stop working.")
    this_device_id: str | None = Field(
        default=None, max_length=64,
        description="With `sign_out_other_devices`: the device asking, which stays signed in.")

    @model_validator(mode="after")
    def _device_kept_only_when_others_go(self) -> PasswordChange:
        if self.this_device_id is not None and not self.sign_out_other_devices:
            raise ValueError("this_device_id is only used with sign_out_other_devices")
        return self


class AccountDeletion(Strict):
    password: Annotated[str, StringConstraints(min_length=1, max_length=256)]


class AdminPasswordReset(Strict):
    new_password: Password
    sign_out_devices: bool = Field(
        default=False, description="Also remove every device of the user (they stop ringing).")


class InviteIn(Strict):
    note: Annotated[str, StringConstraints(strip_whitespace=True, max_length=64),
                    AfterValidator(shown_text)] = Field(
        default="", description="Whom it is for, for the administrator's list.")
    valid_for_days: float = Field(default=7.0, gt=0, le=90,
                                  description="How long the link works if nobody uses it.")


class InviteOut(BaseModel):
    id: str
    note: str
    state: Literal["open", "used", "withdrawn", "expired"]
    created_at: float
    expires_at: float
    used_at: float | None
    used_by: str | None = Field(description="The username of the account made with it "
                                            "(None while unused, or once that account was deleted).")


class InviteMade(BaseModel):
    invite: InviteOut
    code: str = Field(description="Shown once: the server keeps only its hash.")
    link: str = Field(description="What to send: the server's public URL with `#invite=<code>`.")


class Invites(BaseModel):
    invites: list[InviteOut]


class AdminUser(BaseModel):
    id: str
    username: str
    display_name: str
    created_at: float
    devices: int = Field(description="devices registered and not removed")


class AdminUsers(BaseModel):
    users: list[AdminUser]
    next_after: str | None = Field(description="Pass as `after` to fetch the next page.")


class UserOut(BaseModel):
    id: str
    username: str
    display_name: str


class Session(BaseModel):
    """An account token: manage devices, read history. Signaling needs a device token."""

    token: str
    user: UserOut
    expires_at: float


#: a device's public Ed25519 identity key: the unpadded base64url of its 32 bytes
#: (``facecall.e2ee.identity``); the last character carries 4 bits and 2 zero bits
IdentityKey = Annotated[
    str, StringConstraints(min_length=43, max_length=43, pattern=r"^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$"),
]


#: a device's public X25519 agreement key: the unpadded base64url of its 32 bytes
#: (``facecall.e2ee.agreement``), the same form as an identity key
AgreementKeyText = Annotated[
    str, StringConstraints(min_length=43, max_length=43, pattern=r"^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$"),
]
#: an Ed25519 signature (RFC 8032) as unpadded base64url: 64 bytes, 86 characters, the last one
#: carrying 2 bits and 4 zero bits (as ``facecall.signaling.protocol.Signature``)
SignatureText = Annotated[
    str, StringConstraints(min_length=86, max_length=86, pattern=r"^[A-Za-z0-9_-]{85}[AQgw]$"),
]


class DeviceIn(Strict):
    kind: DeviceKind
    name: ShownName
    identity_key: IdentityKey | None = Field(
        default=None, description="The device's public Ed25519 identity key (docs/security.md); "
        "it can also be given later, once, with PUT /v1/devices/{id}/identity-key.")


class IdentityKeyIn(Strict):
    """A device's public identity key, given once."""

    identity_key: IdentityKey


class AgreementKeyIn(Strict):
    """The certificate of a device's agreement key (docs/sframe.md, "Key distribution (the
    core)"): the key and its identity key's signature over ``"facecall agreement v1\\n" +
    user_id + "\\n" + device_id + "\\n" + key``; the ids are the device's own."""

    key: AgreementKeyText = Field(description="The device's public X25519 key (RFC 7748), "
                                  "as 43 characters of unpadded base64url.")
    signature: SignatureText = Field(description="The device's identity key's Ed25519 "
                                     "signature of the statement, 86 characters of base64url.")


class AgreementKeyOut(BaseModel):
    """A device's published agreement key with its certificate's signature: check it with the
    device's identity key (``facecall.e2ee.agreement.verify_agreement_key``) before use."""

    key: str
    signature: str


class DeviceRename(Strict):
    """A device's new name: the same rules as when it was registered."""

    name: ShownName


class DeviceOut(BaseModel):
    id: str
    kind: str
    name: str
    created_at: float
    last_seen_at: float | None
    online: bool = False
    identity_key: str | None = Field(
        default=None, description="The device's public Ed25519 identity key; None if it has "
        "not published one.")
    agreement_key: AgreementKeyOut | None = Field(
        default=None, description="The device's certified X25519 agreement key; None if it has "
        "not published one (PUT /v1/devices/{id}/agreement-key).")


class DeviceRegistered(BaseModel):
    device: DeviceOut
    token: str = Field(description="The device token; shown once. Use it for /v1/signaling.")


class DeviceKey(BaseModel):
    device_id: str
    identity_key: str
    agreement_key: AgreementKeyOut | None = Field(
        default=None, description="The device's certified X25519 agreement key, if published.")


class IdentityKeys(BaseModel):
    """The public identity keys of a user's devices that published one (docs/security.md),
    each with its certified agreement key if it published one (docs/sframe.md)."""

    user_id: str
    devices: list[DeviceKey]


class IceServer(BaseModel):
    urls: list[str]
    username: str | None = None
    credential: str | None = None


class TurnCredentials(BaseModel):
    """TURN REST ephemeral credentials (draft-uberti-behave-turn-rest-00)."""

    username: str
    password: str
    ttl: int
    uris: list[str]
    ice_servers: list[IceServer]


class HistoryParticipant(BaseModel):
    user_id: str
    username: str | None = Field(description="None once the account was deleted.")
    deleted: bool = False


class HistoryItem(BaseModel):
    call_id: str
    media: str
    direction: Literal["incoming", "outgoing"]
    caller_user_id: str
    participants: list[HistoryParticipant]
    my_state: str
    my_end_reason: str | None
    end_reason: str | None
    missed: bool
    created_at: float
    answered_at: float | None
    ended_at: float | None
    duration: float | None


class History(BaseModel):
    items: list[HistoryItem]
    next_before: float | None = Field(description="Pass as `before` to fetch the next page.")


class Health(BaseModel):
    status: Literal["ok"]
    version: str


class Readiness(BaseModel):
    """``/readyz``: whether the node can serve requests that need its database."""

    status: Literal["ok", "unavailable"]
    version: str
    detail: str | None = None


class ServerInfo(BaseModel):
    """What a client may want to know before anyone signs in."""

    version: str
    sign_up: Literal["open", "closed"] = Field(
        description="closed: accounts are made by the server's administrator")
