"""Request and response bodies of the HTTP API (they make up `/openapi.json`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

Username = Annotated[
    str, StringConstraints(min_length=3, max_length=32, pattern=r"^[A-Za-z0-9_.-]+$")
]
Password = Annotated[str, StringConstraints(min_length=8, max_length=256)]
DeviceKind = Literal["browser", "ios", "android", "desktop", "sdk", "cli"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SignUp(Strict):
    username: Username
    password: Password
    display_name: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None


class SignIn(Strict):
    username: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    password: Annotated[str, StringConstraints(min_length=1, max_length=256)]


class UserOut(BaseModel):
    id: str
    username: str
    display_name: str


class Session(BaseModel):
    """An account token: manage devices, read history. Signaling needs a device token."""

    token: str
    user: UserOut
    expires_at: float


class DeviceIn(Strict):
    kind: DeviceKind
    name: Annotated[str, StringConstraints(min_length=1, max_length=64)]


class DeviceOut(BaseModel):
    id: str
    kind: str
    name: str
    created_at: float
    last_seen_at: float | None
    online: bool = False


class DeviceRegistered(BaseModel):
    device: DeviceOut
    token: str = Field(description="The device token; shown once. Use it for /v1/signaling.")


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
    username: str


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
