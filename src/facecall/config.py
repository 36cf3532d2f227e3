"""Server configuration: defaults, ``FACECALL_*`` environment variables, then CLI flags.

:class:`Settings` is a pydantic dataclass: every field carries the range it accepts, checked when
the settings are built, so that a bad value stops the node at start-up
(:meth:`Settings.from_env` raises :class:`SettingsError`, one line per bad setting naming it and
what it may be) instead of failing later, call by call.
"""

from __future__ import annotations

import difflib
import os
import re
import ssl
from dataclasses import field, fields
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, ValidationError
from pydantic.dataclasses import dataclass
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from facecall.ice_hosts import ip_address
from facecall.signaling.protocol import MAX_FRAME_BYTES

#: The WebSocket transport's frame limit: a frame above it closes the connection (1009), one
#: between ``Settings.max_message_bytes`` and it gets a ``too_large`` error instead.
WS_MAX_FRAME = 1024 * 1024


def _env_list(value: str) -> list[str]:
    """The items of a comma-separated variable, stripped; empty items are dropped."""
    return [item.strip() for item in value.split(",") if item.strip()]


_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg",
                  "postgres": "postgresql+asyncpg"}


def async_database_url(url: str) -> str:
    """``sqlite:///x.db`` → ``sqlite+aiosqlite:///x.db``, ``postgresql://…`` → ``+asyncpg``."""
    scheme, sep, rest = url.partition("://")
    return f"{_ASYNC_DRIVERS.get(scheme, scheme)}{sep}{rest}"


def _database_url(url: str) -> str:
    """A SQLite or PostgreSQL URL (parsed by SQLAlchemy), with its async driver added."""
    try:
        scheme = make_url(url).drivername
    except ArgumentError:
        raise ValueError("not a database URL") from None
    if scheme not in _ASYNC_DRIVERS and scheme not in _ASYNC_DRIVERS.values():
        raise ValueError(f"unsupported database {scheme!r}")
    return async_database_url(url)


def _redis_url(url: str) -> str:
    """Empty (the in-process bus: one node), or a ``redis://``, ``rediss://`` (TLS) or
    ``unix://`` URL as redis-py reads them."""
    if url and not re.fullmatch(r"(rediss?://[^\s/?#]+(/\d*)?|unix:///\S+)(\?\S*)?", url):
        raise ValueError("not a redis://HOST[:PORT][/DB], rediss://... or unix:///PATH URL")
    return url


def _public_url(url: str) -> str:
    """Empty, or an ``http(s)://host[:port][/path]`` URL."""
    if url and not re.fullmatch(r"https?://[^/?#\s]+(/[^?#\s]*)?", url):
        raise ValueError("not an http:// or https:// URL")
    return url


#: the fewest characters of an admin token (a bearer secret the admin API is reached with)
ADMIN_TOKEN_MIN_CHARS = 16


def _bearer_token(token: str) -> str:
    """A token sent as ``Authorization: Bearer <token>``: HTTP strips the spaces around a
    header value (RFC 9110 §5.5) and refuses control characters, so a token with them could
    never match."""
    if token != token.strip() or any(ord(c) < 0x20 or ord(c) == 0x7F for c in token):
        raise ValueError("spaces around it or control characters (a line break?) would never match")
    return token


def _admin_token(token: str) -> str:
    """Empty (no admin API), or a secret of at least :data:`ADMIN_TOKEN_MIN_CHARS` characters."""
    _bearer_token(token)
    if token and len(token) < ADMIN_TOKEN_MIN_CHARS:
        raise ValueError(f"{len(token)} characters is too short to guess safely")
    return token


def _readable_file(path: str) -> str:
    """Empty, or the path of a file this process can read."""
    if path:
        try:
            with open(os.path.expanduser(path), "rb") as f:
                f.read(1)
        except OSError as exc:
            raise ValueError(f"cannot be read ({exc.strerror or exc})") from None
    return os.path.expanduser(path) if path else path


#: An ICE server URI: ``stun:``/``stuns:`` host [``:port``] (RFC 7064), ``turn:``/``turns:``
#: host [``:port``] [``?transport=udp|tcp``] (RFC 7065); the host a name (underscores and a
#: final dot allowed, as resolvers take them), IPv4 or ``[IPv6]``; scheme and transport in any
#: case (RFC 3986 §3.1).
_ICE_URI = re.compile(
    r"(?:(?P<stun>stuns?)|turns?):"
    r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_.])?)"
    r"(?::(?P<port>[0-9]{1,5}))?"
    r"(?(stun)|(?:\?transport=(?:udp|tcp))?)",
    re.IGNORECASE,
)


def _ice_uri(uri: str) -> str:
    """``uri`` when it is a STUN or TURN URI (:data:`_ICE_URI`, a port from 1 to 65535),
    its scheme and transport in lower case."""
    match = _ICE_URI.fullmatch(uri)
    if match is None or (match["port"] is not None and not 1 <= int(match["port"]) <= 65535):
        raise ValueError("not a STUN/TURN URI")
    scheme, rest = uri.split(":", 1)  # written in lower case, as clients compare them
    host, query, transport = rest.partition("?")
    return f"{scheme.lower()}:{host}{query}{transport.lower()}"


#: other names Python's logging takes for a level
_LEVEL_ALIASES = {"warn": "warning", "fatal": "critical"}


def _log_level(value: Any) -> Any:
    """A log level whatever its case, ``warn`` and ``fatal`` as logging takes them."""
    if isinstance(value, str):
        value = value.strip().lower()
        return _LEVEL_ALIASES.get(value, value)
    return value


def _lower(value: Any) -> Any:
    """A word whatever its case and surrounding spaces."""
    return value.strip().lower() if isinstance(value, str) else value


Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False,
                                 description="a number of seconds above 0")]
Rate = Annotated[float, Field(ge=0, allow_inf_nan=False,
                              description="a number from 0 (0: no limit)")]
Burst = Annotated[float, Field(ge=1, allow_inf_nan=False, description="a number from 1")]
PerSecond = Annotated[float, Field(gt=0, allow_inf_nan=False, description="a number above 0")]


@dataclass
class Settings:
    """All knobs of a facecall node. Each field can be set by ``FACECALL_<NAME>``; each carries
    what it accepts (its ``description`` says it in words, for :class:`SettingsError`)."""

    host: Annotated[str, Field(min_length=1, description="a host name or IP address")] = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535, description="an integer from 1 to 65535")] = 8080
    database_url: Annotated[str, AfterValidator(_database_url), Field(
        description="a SQLite or PostgreSQL URL (sqlite:///PATH or postgresql://...); "
                    "no other database is supported")] = "sqlite+aiosqlite:///./facecall.db"
    # the bus that several nodes share (facecall.bus.redis_bus); empty: this node alone, with
    # the in-process bus. Nodes that share a bus share one PostgreSQL database too.
    redis_url: Annotated[str, AfterValidator(_redis_url), Field(
        description="empty, or a redis://HOST[:PORT][/DB], rediss://... or unix:///PATH URL "
                    "(with a PostgreSQL database)")] = ""
    # how clients reach this node, as the start-up log line shows it; empty: http://host:port
    public_url: Annotated[str, AfterValidator(_public_url), Field(
        description="empty, or an http:// or https:// URL")] = ""
    ring_timeout: Seconds = 30.0  # seconds before an unanswered ring becomes a missed call
    resume_grace: Seconds = 20.0  # seconds a dropped device may resume before it leaves its calls
    # seconds a web page that unloaded in a call (said bye) may take to come back (a reload)
    # before it hangs up: a closed tab ends the call this much later
    unload_grace: Seconds = 10.0
    user_token_ttl: Seconds = 30 * 24 * 3600.0
    # WebSocket frames larger than this are refused (too_large); at least the protocol's own
    # limit, so that every message the protocol allows fits
    max_message_bytes: Annotated[int, Field(
        ge=MAX_FRAME_BYTES, le=WS_MAX_FRAME,
        description=f"an integer from {MAX_FRAME_BYTES} to {WS_MAX_FRAME}")] = MAX_FRAME_BYTES
    # per-device messages kept for replay on resume
    outbox_limit: Annotated[int, Field(ge=1, description="an integer from 1")] = 512
    # HTTP connections (facecall.api.http_transport): request heads are bounded and must
    # arrive in time, bodies too; 0 connections: the open-file limit less a reserve
    http_max_head_bytes: Annotated[int, Field(ge=1024, description="an integer from 1024")] \
        = 32 * 1024
    http_head_timeout: Seconds = 10.0
    http_body_timeout: Seconds = 30.0
    max_connections: Annotated[int, Field(
        ge=0, description="an integer from 0 (0: the open-file limit less a reserve)")] = 0
    # sign-up / sign-in (facecall.api.throttle): attempts per client address, failed sign-ins
    # per account and address, failed sign-ins per account; a rate of 0 is no limit
    auth_attempts_per_minute: Rate = 30.0
    auth_attempt_burst: Burst = 30.0
    sign_in_failures_per_hour: Rate = 30.0
    sign_in_failure_burst: Burst = 10.0
    account_sign_in_failures_per_hour: Rate = 100.0
    account_sign_in_failure_burst: Burst = 100.0
    # group media (facecall.sfu.rooms): calls with an SFU room at once on this node (0: no SFU,
    # sfu.join is refused sfu_unavailable), and devices per room
    sfu_max_rooms: Annotated[int, Field(
        ge=0, description="an integer from 0 (0: this node runs no SFU)")] = 50
    sfu_max_participants: Annotated[int, Field(
        ge=2, le=64, description="an integer from 2 to 64")] = 8
    # the addresses the SFU gathers its host candidates on (RFC 8445 §5.1.1.1); empty: every
    # interface but loopback (aioice's choice). One public address of a host with several
    # interfaces, or 127.0.0.1 for a node whose clients are all on the same machine
    sfu_host_addresses: Annotated[list[Annotated[str, AfterValidator(ip_address)]], Field(
        description="comma-separated IP addresses")] = field(default_factory=list)
    # sustained client messages per device connection (not 0: a device's bucket would stay empty)
    messages_per_second: PerSecond = 50.0
    message_burst: Burst = 200.0  # bucket size: a burst of trickled candidates fits
    # TURN REST (ephemeral) credentials: the first secret signs, all of them verify (rotation).
    # Empty: `facecall serve` makes a random one shared with its built-in TURN server.
    turn_secrets: Annotated[list[Annotated[str, Field(min_length=1)]], Field(
        description="comma-separated secrets, none of them empty")] = field(default_factory=list)
    # whole seconds: the expiry in a TURN REST username is an integer Unix time
    turn_ttl: Annotated[int, Field(
        ge=60, description="a whole number of seconds from 60")] = 600
    turn_urls: Annotated[list[Annotated[str, AfterValidator(_ice_uri)]], Field(
        description="comma-separated stun:, stuns:, turn: or turns: URIs (RFC 7064, RFC 7065), "
                    "e.g. turn:turn.example.org:3478?transport=udp")] = field(
        default_factory=list)  # empty: those of the built-in server
    log_level: Annotated[Literal["debug", "info", "warning", "error", "critical"],
                         BeforeValidator(_log_level),
                         Field(description="debug, info, warning (warn), error or critical")] \
        = "info"
    log_json: Annotated[bool, Field(description="on or off (1/0, true/false, yes/no, on/off)")] \
        = False
    # GET /metrics wants `Authorization: Bearer <this>` when set (Prometheus `authorization`);
    # empty: open to whoever reaches the node (keep it off the public side of the proxy)
    metrics_token: Annotated[str, AfterValidator(_bearer_token), Field(
        description="empty (no token) or text without spaces around it or control characters")] = ""
    # POST /v1/accounts: "open" to anyone who reaches the node; "closed": only the admin API
    # (`facecall admin users add`) creates accounts
    sign_up: Annotated[Literal["open", "closed"], BeforeValidator(_lower),
                       Field(description="open or closed")] = "open"
    # /v1/admin/* wants `Authorization: Bearer <this>`; empty: the admin API is off
    admin_token: Annotated[str, AfterValidator(_admin_token), Field(
        description=f"empty (no admin API) or at least {ADMIN_TOKEN_MIN_CHARS} characters, without "
                    "spaces around them or control characters")] = ""

    # HTTPS and WSS on the node's own port (RFC 8446 via Python's ssl): a PEM certificate chain
    # and its private key, both or neither; empty: plain HTTP (behind a TLS-terminating proxy)
    tls_cert: Annotated[str, AfterValidator(_readable_file), Field(
        description="empty, or a readable PEM certificate chain (with FACECALL_TLS_KEY)")] = ""
    tls_key: Annotated[str, AfterValidator(_readable_file), Field(
        description="empty, or a readable PEM private key (with FACECALL_TLS_CERT)")] = ""

    def tls_problem(self) -> str | None:
        """Why ``tls_cert`` and ``tls_key`` cannot serve HTTPS, or None (also when both are
        empty)."""
        if not self.tls_cert and not self.tls_key:
            return None
        if not self.tls_cert or not self.tls_key:
            return "a certificate and its key go together: give both or neither"
        try:
            self.tls_context()
        except (ssl.SSLError, OSError, ValueError) as exc:
            return f"the certificate and key do not load together ({exc})"
        return None

    def tls_context(self) -> ssl.SSLContext | None:
        """The server-side TLS context of ``tls_cert`` and ``tls_key`` (TLS 1.2 or later,
        Python's defaults otherwise), or None when the node serves plain HTTP. Raises
        ``ssl.SSLError``/``OSError``/``ValueError`` when the pair does not load (see
        :meth:`tls_problem`)."""
        if not self.tls_cert:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.tls_cert, self.tls_key)
        return context

    @classmethod
    def unknown_variables(cls, environ: dict[str, str] | None = None) -> list[str]:
        """A warning for each ``FACECALL_*`` variable that is no setting (a typo, most likely:
        ``FACECALL_RING_TIMOUT`` would otherwise be ignored without a word), naming the setting
        it is closest to. The SDK's and tests' own variables are not settings and not warned of."""
        env = os.environ if environ is None else environ
        known = {f"FACECALL_{f.name.upper()}" for f in fields(cls)} | OTHER_VARIABLES
        warnings = []
        for name in sorted(n for n in env if n.startswith("FACECALL_") and n not in known):
            # compared without the prefix that every one of them shares
            close = difflib.get_close_matches(name[9:], sorted(k[9:] for k in known), n=1, cutoff=0.75)
            hint = f" (did you mean FACECALL_{close[0]}?)" if close else ""
            warnings.append(f"{name} is not a setting{hint}; it is ignored")
        return warnings

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``FACECALL_*`` variables, then keyword overrides (CLI flags:
        ``ring_timeout`` is ``--ring-timeout``; None is not given); :class:`SettingsError`
        when a value is out of its range. A bad variable is refused even when a flag overrides
        it: the environment says something the operator did not mean."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"FACECALL_{f.name.upper()}")
            if raw is not None and raw.strip():  # the field's type parses and checks the text
                # (an empty variable, as env files and compose leave them, is not set)
                values[f.name] = _env_list(raw) if f.default_factory is list else raw
        flags = {name: value for name, value in overrides.items() if value is not None}
        variables = {name: f"FACECALL_{name.upper()}" for name in values}
        lines: list[str] = []
        try:
            cls(**values)
        except ValidationError as exc:
            lines += SettingsError.lines(exc, variables)
        try:
            settings = cls(**{**values, **flags})
        except ValidationError as exc:
            lines += SettingsError.lines(
                exc, {**variables, **{name: "--" + name.replace("_", "-") for name in flags}})
            raise SettingsError("\n".join(dict.fromkeys(lines))) from None
        if (problem := settings.tls_problem()) is not None:
            lines.append(f"FACECALL_TLS_CERT / FACECALL_TLS_KEY (--tls-cert / --tls-key): {problem}")
        if settings.redis_url and not settings.database_url.startswith("postgresql"):
            lines.append("FACECALL_REDIS_URL (--redis-url) must be used with a PostgreSQL "
                         "FACECALL_DATABASE_URL (--database-url): the nodes that share a bus "
                         "share their calls through one database, and SQLite is one node's")
        if lines:
            raise SettingsError("\n".join(lines))
        return settings

    @property
    def base_url(self) -> str:
        """How clients reach this node: ``public_url``, else ``http(s)://host:port`` (an IPv6
        host in brackets, RFC 3986 §3.2.2)."""
        scheme = "https" if self.tls_cert else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return self.public_url or f"{scheme}://{host}:{self.port}"


#: settings whose values are secrets: an error names them without showing the value
SECRET_SETTINGS = frozenset({"turn_secrets", "metrics_token", "admin_token", "redis_url"})
#: ``FACECALL_*`` variables that are not node settings: the client command line's password,
#: and the test suite's own
OTHER_VARIABLES = frozenset({"FACECALL_PASSWORD", "FACECALL_PG_BIN", "FACECALL_SCREENSHOTS",
                             "FACECALL_STATEFUL_EXAMPLES", "FACECALL_NO_NETNS", "FACECALL_CHROMIUM"})


class SettingsError(ValueError):
    """Settings that cannot be used; ``str()`` is one line per bad setting: its source (the
    variable or flag), the value, and what it may be."""

    @staticmethod
    def lines(exc: ValidationError, sources: dict[str, str]) -> list[str]:
        """Word pydantic's errors for whoever set the values: a line for each, naming the
        setting by its ``sources`` entry (the variable or flag it came from)."""
        lines: list[str] = []
        for error in exc.errors(include_url=False):
            name = str(error["loc"][0])
            source = sources.get(name, name)
            info = Settings.__pydantic_fields__[name]
            allowed = f"must be {info.description}"
            if error["type"] == "value_error":  # ours: say what was wrong, then what is allowed
                allowed = f"{error['msg'].removeprefix('Value error, ')}; {allowed}"
            given = "(secret, not shown)" if name in SECRET_SETTINGS else repr(error["input"])
            if len(error["loc"]) > 1:  # an item of a list
                lines.append(f"{source}: {given} is not allowed: {allowed}")
            else:
                lines.append(f"{source}={given} is not allowed: {allowed}")
        return lines
