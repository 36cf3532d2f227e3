"""Server configuration: defaults, ``FACECALL_*`` environment variables, then CLI flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Any


def _env_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg",
                  "postgres": "postgresql+asyncpg"}


def async_database_url(url: str) -> str:
    """``sqlite:///x.db`` → ``sqlite+aiosqlite:///x.db``, ``postgresql://…`` → ``+asyncpg``."""
    scheme, sep, rest = url.partition("://")
    return f"{_ASYNC_DRIVERS.get(scheme, scheme)}{sep}{rest}"


@dataclass
class Settings:
    """All knobs of a facecall node. Each field can be set by ``FACECALL_<NAME>``."""

    host: str = "127.0.0.1"
    port: int = 8080
    database_url: str = "sqlite+aiosqlite:///./facecall.db"
    redis_url: str = ""  # empty: the in-process bus
    public_url: str = ""  # how clients reach this node; derived from host/port when empty
    ring_timeout: float = 30.0  # seconds before an unanswered ring becomes a missed call
    resume_grace: float = 20.0  # seconds a dropped device may resume before it leaves its calls
    user_token_ttl: float = 30 * 24 * 3600.0
    max_message_bytes: int = 64 * 1024  # WebSocket frames larger than this are refused
    outbox_limit: int = 512  # per-device messages kept for replay on resume
    # HTTP connections (facecall.api.http_transport): request heads are bounded and must
    # arrive in time, bodies too; 0 connections: the open-file limit less a reserve
    http_max_head_bytes: int = 32 * 1024
    http_head_timeout: float = 10.0
    http_body_timeout: float = 30.0
    max_connections: int = 0
    # sign-up / sign-in (facecall.api.throttle): attempts per client address, failed sign-ins
    # per account and address, failed sign-ins per account; a rate of 0 is no limit
    auth_attempts_per_minute: float = 30.0
    auth_attempt_burst: float = 30.0
    sign_in_failures_per_hour: float = 30.0
    sign_in_failure_burst: float = 10.0
    account_sign_in_failures_per_hour: float = 100.0
    account_sign_in_failure_burst: float = 100.0
    messages_per_second: float = 50.0  # sustained client messages per device connection
    message_burst: float = 200.0  # bucket size: a burst of trickled candidates fits
    # TURN REST (ephemeral) credentials: the first secret signs, all of them verify (rotation).
    # Empty: `facecall serve` makes a random one shared with its built-in TURN server.
    turn_secrets: list[str] = field(default_factory=list)
    turn_ttl: int = 600
    turn_urls: list[str] = field(default_factory=list)  # empty: those of the built-in server
    log_level: str = "info"
    log_json: bool = False
    # GET /metrics wants `Authorization: Bearer <this>` when set (Prometheus `authorization`);
    # empty: open to whoever reaches the node (keep it off the public side of the proxy)
    metrics_token: str = ""

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``FACECALL_*`` variables, then keyword overrides (CLI flags)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"FACECALL_{f.name.upper()}")
            if raw is None:
                continue
            default = getattr(cls(), f.name)
            if isinstance(default, bool):
                values[f.name] = raw.lower() in ("1", "true", "yes", "on")
            elif isinstance(default, int):
                values[f.name] = int(raw)
            elif isinstance(default, float):
                values[f.name] = float(raw)
            elif isinstance(default, list):
                values[f.name] = _env_list(raw)
            else:
                values[f.name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def __post_init__(self) -> None:
        self.database_url = async_database_url(self.database_url)

    @property
    def base_url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"
