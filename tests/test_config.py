"""Server settings (facecall.config.Settings): every value is checked against its range when the
settings are built, and `facecall serve` / `facecall signaling` refuse a bad one at start-up
with one line naming the setting and what it may be (no traceback, non-zero exit)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from facecall.config import Settings, SettingsError
from facecall.store.db import shown_url
from tests.live import free_socket, one_line, refused_start

#: (environment, command-line arguments, what the error line must name)
BAD_VALUES: list[tuple[dict[str, str], list[str], str]] = [
    ({"FACECALL_PORT": "abc"}, [], "FACECALL_PORT"),
    ({"FACECALL_PORT": "70000"}, [], "FACECALL_PORT"),
    ({"FACECALL_RING_TIMEOUT": "abc"}, [], "FACECALL_RING_TIMEOUT"),
    ({"FACECALL_RING_TIMEOUT": "-5"}, [], "FACECALL_RING_TIMEOUT"),
    ({"FACECALL_RING_TIMEOUT": "inf"}, [], "FACECALL_RING_TIMEOUT"),
    ({}, ["--ring-timeout", "-5"], "--ring-timeout"),
    ({"FACECALL_TURN_TTL": "600.5"}, [], "FACECALL_TURN_TTL"),
    ({"FACECALL_TURN_TTL": "0"}, [], "FACECALL_TURN_TTL"),
    ({"FACECALL_LOG_LEVEL": "loud"}, [], "FACECALL_LOG_LEVEL"),
    ({}, ["--log-level", "loud"], "--log-level"),
    ({"FACECALL_DATABASE_URL": "not-a-url"}, [], "FACECALL_DATABASE_URL"),
    ({}, ["--database-url", "not-a-url"], "--database-url"),
    ({}, ["--database-url", "mysql://x@127.0.0.1/db"], "--database-url"),
    ({"FACECALL_MAX_MESSAGE_BYTES": "-1"}, [], "FACECALL_MAX_MESSAGE_BYTES"),
    ({"FACECALL_HTTP_HEAD_TIMEOUT": "-1"}, [], "FACECALL_HTTP_HEAD_TIMEOUT"),
    ({"FACECALL_HTTP_BODY_TIMEOUT": "0"}, [], "FACECALL_HTTP_BODY_TIMEOUT"),
    ({"FACECALL_HTTP_MAX_HEAD_BYTES": "10"}, [], "FACECALL_HTTP_MAX_HEAD_BYTES"),
    ({"FACECALL_RESUME_GRACE": "-1"}, [], "FACECALL_RESUME_GRACE"),
    ({"FACECALL_USER_TOKEN_TTL": "0"}, [], "FACECALL_USER_TOKEN_TTL"),
    ({"FACECALL_OUTBOX_LIMIT": "0"}, [], "FACECALL_OUTBOX_LIMIT"),
    ({"FACECALL_MAX_CONNECTIONS": "-1"}, [], "FACECALL_MAX_CONNECTIONS"),
    ({"FACECALL_MESSAGES_PER_SECOND": "0"}, [], "FACECALL_MESSAGES_PER_SECOND"),
    ({"FACECALL_MESSAGE_BURST": "0.5"}, [], "FACECALL_MESSAGE_BURST"),
    ({"FACECALL_AUTH_ATTEMPTS_PER_MINUTE": "-1"}, [], "FACECALL_AUTH_ATTEMPTS_PER_MINUTE"),
    ({"FACECALL_SIGN_IN_FAILURE_BURST": "0"}, [], "FACECALL_SIGN_IN_FAILURE_BURST"),
    ({"FACECALL_LOG_JSON": "maybe"}, [], "FACECALL_LOG_JSON"),
    ({"FACECALL_TURN_URLS": "garbage"}, [], "FACECALL_TURN_URLS"),
    ({"FACECALL_TURN_URLS": "turn:127.0.0.1:3478?transport=sctp"}, [], "FACECALL_TURN_URLS"),
    ({"FACECALL_TURN_URLS": "http://turn.example.org"}, [], "FACECALL_TURN_URLS"),
    ({"FACECALL_PUBLIC_URL": "call.example.org"}, [], "FACECALL_PUBLIC_URL"),
    ({"FACECALL_SFU_HOST_ADDRESSES": "sfu.example.org"}, [], "FACECALL_SFU_HOST_ADDRESSES"),
    ({"FACECALL_SFU_HOST_ADDRESSES": "127.0.0.1,300.1.1.1"}, [], "FACECALL_SFU_HOST_ADDRESSES"),
    ({"FACECALL_SIGN_UP": "invite"}, [], "FACECALL_SIGN_UP"),
    ({"FACECALL_ADMIN_TOKEN": "too-short"}, [], "FACECALL_ADMIN_TOKEN"),
]


def _ids(case: tuple[dict[str, str], list[str], str]) -> str:
    env, args, _ = case
    return " ".join([*(f"{k}={v}" for k, v in env.items()), *args])


@pytest.mark.parametrize("case", BAD_VALUES, ids=[_ids(c) for c in BAD_VALUES])
def test_from_env_refuses_a_bad_value_naming_it(case: tuple[dict[str, str], list[str], str]) -> None:
    env, args, source = case
    flags = {args[i].removeprefix("--").replace("-", "_"): args[i + 1] for i in range(0, len(args), 2)}
    if "ring_timeout" in flags:  # argparse hands the CLI's numbers over as numbers
        flags["ring_timeout"] = float(flags["ring_timeout"])  # type: ignore[assignment]
    with pytest.raises(ValueError) as caught:
        Settings.from_env(env, **flags)
    message = str(caught.value)
    assert message.count("\n") == 0, message
    assert message.startswith(f"{source}"), message
    assert "must be" in message, message


def test_from_env_error_says_what_is_allowed() -> None:
    with pytest.raises(ValueError, match=r"^FACECALL_PORT='abc' is not allowed: must be an "
                                         r"integer from 1 to 65535$"):
        Settings.from_env({"FACECALL_PORT": "abc"})
    with pytest.raises(ValueError, match=r"^--database-url='mysql://x@h/db' is not allowed: "
                                         r"unsupported database 'mysql'; must be a SQLite or "
                                         r"PostgreSQL URL"):
        Settings.from_env({}, database_url="mysql://x@h/db")
    with pytest.raises(ValueError, match=r"^FACECALL_TURN_URLS: 'garbage' is not allowed: .*"
                                         r"turn: or turns: URIs \(RFC 7064, RFC 7065\)"):
        Settings.from_env({"FACECALL_TURN_URLS": "stun:127.0.0.1,garbage"})
    with pytest.raises(ValueError, match=r"^FACECALL_TURN_TTL='600.5' is not allowed: must be a "
                                         r"whole number of seconds"):
        Settings.from_env({"FACECALL_TURN_TTL": "600.5"})


def test_sfu_host_addresses_are_ip_addresses_in_normal_form() -> None:
    assert Settings.from_env({}).sfu_host_addresses == []  # every interface but loopback
    assert Settings.from_env({"FACECALL_SFU_HOST_ADDRESSES": " 127.0.0.1 , ::0001,"}
                             ).sfu_host_addresses == ["127.0.0.1", "::1"]


def test_from_env_names_every_bad_setting_one_line_each() -> None:
    with pytest.raises(ValueError) as caught:
        Settings.from_env({"FACECALL_PORT": "0", "FACECALL_RESUME_GRACE": "-1"})
    lines = str(caught.value).splitlines()
    assert [line.split("=")[0] for line in lines] == ["FACECALL_PORT", "FACECALL_RESUME_GRACE"]


def test_a_bad_variable_is_refused_even_when_a_flag_overrides_it() -> None:
    with pytest.raises(ValueError, match=r"^FACECALL_PORT='abc' is not allowed"):
        Settings.from_env({"FACECALL_PORT": "abc"}, port=8081)
    with pytest.raises(ValueError) as caught:
        Settings.from_env({"FACECALL_RING_TIMEOUT": "x"}, ring_timeout=-1.0)
    assert [line.split("=")[0] for line in str(caught.value).splitlines()] == [
        "FACECALL_RING_TIMEOUT", "--ring-timeout"]


def test_direct_construction_is_checked_too() -> None:
    with pytest.raises(ValueError):
        Settings(ring_timeout=-5)
    with pytest.raises(ValueError):
        Settings(max_message_bytes=-1)


def test_good_values_are_parsed() -> None:
    settings = Settings.from_env({
        "FACECALL_PORT": "9000", "FACECALL_RING_TIMEOUT": "0.5", "FACECALL_TURN_TTL": "3600",
        "FACECALL_LOG_LEVEL": "WARNING", "FACECALL_LOG_JSON": "yes",
        "FACECALL_DATABASE_URL": "postgresql://u@127.0.0.1/facecall",
        "FACECALL_TURN_URLS": "stun:127.0.0.1:3478, turn:[::1]:3478?transport=tcp,"
                              "turns:turn.example.org?transport=tcp,stuns:stun.example.org",
        "FACECALL_TURN_SECRETS": "new, old", "FACECALL_MAX_CONNECTIONS": "0",
        "FACECALL_AUTH_ATTEMPTS_PER_MINUTE": "0", "FACECALL_PUBLIC_URL": "https://call.example.org",
        "FACECALL_LOG_JSON_UNKNOWN": "ignored",
    }, port=None, log_json=None)
    assert settings.port == 9000 and settings.ring_timeout == 0.5 and settings.turn_ttl == 3600
    assert settings.log_level == "warning" and settings.log_json is True
    assert settings.database_url == "postgresql+asyncpg://u@127.0.0.1/facecall"
    assert settings.turn_urls == ["stun:127.0.0.1:3478", "turn:[::1]:3478?transport=tcp",
                                  "turns:turn.example.org?transport=tcp", "stuns:stun.example.org"]
    assert settings.turn_secrets == ["new", "old"]
    assert settings.base_url == "https://call.example.org"
    assert Settings.from_env({}, database_url="sqlite:///x.db").database_url == "sqlite+aiosqlite:///x.db"
    assert Settings.from_env({"FACECALL_PORT": "9000"}, port=9001).port == 9001  # flags win


def test_defaults_are_valid_and_every_setting_says_what_it_accepts() -> None:
    settings = Settings()
    assert settings.base_url == "http://127.0.0.1:8080"
    described = {name for name, info in Settings.__pydantic_fields__.items() if info.description}
    assert described == {f.name for f in dataclasses.fields(Settings)}


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "redis://:pw@redis.internal",
                                 "rediss://cache.example.org:6380/2", "unix:///run/redis.sock",
                                 "redis://[::1]:6379?socket_timeout=5"])
def test_a_redis_url_with_postgresql_is_taken(url: str) -> None:
    settings = Settings.from_env({"FACECALL_REDIS_URL": url,
                                  "FACECALL_DATABASE_URL": "postgresql://u@db.internal/facecall"})
    assert settings.redis_url == url


def test_a_redis_url_is_refused_without_showing_its_password() -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"FACECALL_REDIS_URL": "http://:hunter2@127.0.0.1:6379",
                           "FACECALL_DATABASE_URL": "postgresql://u@db.internal/facecall"})
    assert "hunter2" not in str(refused.value)
    assert str(refused.value).startswith("FACECALL_REDIS_URL=(secret, not shown) is not allowed: ")


# -- start-up, as an operator runs it -----------------------------------------------------------

STARTUP_CASES = [
    ("serve", {"FACECALL_PORT": "abc"}, [], "FACECALL_PORT"),
    ("serve", {"FACECALL_RING_TIMEOUT": "abc"}, [], "FACECALL_RING_TIMEOUT"),
    ("serve", {}, ["--ring-timeout", "-5"], "--ring-timeout"),
    ("serve", {"FACECALL_TURN_TTL": "600.5"}, [], "FACECALL_TURN_TTL"),
    ("serve", {"FACECALL_LOG_LEVEL": "loud"}, [], "FACECALL_LOG_LEVEL"),
    ("serve", {}, ["--database-url", "not-a-url"], "--database-url"),
    ("serve", {}, ["--database-url", "mysql://x@127.0.0.1/db"], "--database-url"),
    ("serve", {"FACECALL_MAX_MESSAGE_BYTES": "-1"}, [], "FACECALL_MAX_MESSAGE_BYTES"),
    ("serve", {"FACECALL_HTTP_HEAD_TIMEOUT": "-1"}, [], "FACECALL_HTTP_HEAD_TIMEOUT"),
    ("serve", {"FACECALL_RESUME_GRACE": "-1"}, [], "FACECALL_RESUME_GRACE"),
    ("serve", {"FACECALL_LOG_JSON": "maybe"}, [], "FACECALL_LOG_JSON"),
    ("serve", {"FACECALL_TURN_URLS": "garbage"}, [], "FACECALL_TURN_URLS"),
    ("signaling", {"FACECALL_RING_TIMEOUT": "-5"}, [], "FACECALL_RING_TIMEOUT"),
    ("signaling", {}, ["--redis-url", "localhost:6379"], "--redis-url"),
    # SQLite is one node's database: a shared bus with it would split the calls
    ("signaling", {"FACECALL_REDIS_URL": "redis://127.0.0.1:1"}, [], "FACECALL_REDIS_URL"),
]


@pytest.mark.parametrize(("command", "env", "args", "source"), STARTUP_CASES,
                         ids=[f"{c} {_ids((e, a, s))}" for c, e, a, s in STARTUP_CASES])
def test_start_up_refuses_a_bad_setting_in_one_line(tmp_path: Path, command: str,
                                                     env: dict[str, str], args: list[str],
                                                     source: str) -> None:
    with free_socket() as sock:
        port = sock.getsockname()[1]
    argv = [command, "--port", str(port)]
    if command == "serve":
        argv.append("--no-turn")
    if "--database-url" not in args:
        argv += ["--database-url", f"sqlite:///{tmp_path / 'facecall.db'}"]
    line = one_line(refused_start(*argv, *args, env=env, timeout=20), status=2)
    assert line.startswith(f"facecall: {source}") and "must be" in line, line


def test_an_empty_variable_is_not_set() -> None:
    """Env files and compose files leave variables empty: that means "not set", the default."""
    settings = Settings.from_env({"FACECALL_HOST": "", "FACECALL_RING_TIMEOUT": " ",
                                  "FACECALL_LOG_JSON": "", "FACECALL_TURN_SECRETS": ""})
    default = Settings()
    assert (settings.host, settings.ring_timeout, settings.log_json) == (
        default.host, default.ring_timeout, default.log_json)


@pytest.mark.parametrize(("env", "attribute", "expected"), [
    ({"FACECALL_LOG_LEVEL": "critical"}, "log_level", "critical"),
    ({"FACECALL_LOG_LEVEL": "WARN"}, "log_level", "warning"),
    ({"FACECALL_TURN_URLS": "TURN:turn.example.org:3478?transport=TCP"}, "turn_urls",
     ["turn:turn.example.org:3478?transport=tcp"]),
    ({"FACECALL_TURN_URLS": "turn:turn.example.org.:3478"}, "turn_urls",
     ["turn:turn.example.org.:3478"]),
    ({"FACECALL_TURN_URLS": "turns:turn_relay.internal"}, "turn_urls",
     ["turns:turn_relay.internal"]),
])
def test_values_that_worked_before_validation_still_do(env: dict[str, str], attribute: str,
                                                       expected: object) -> None:
    """Log levels Python's logging takes, and ICE URIs as RFC 3986 and resolvers take them
    (scheme in any case, written back in lower case; a final dot; an underscore)."""
    assert getattr(Settings.from_env(env), attribute) == expected


def test_sign_up_and_admin_token() -> None:
    settings = Settings.from_env({"FACECALL_SIGN_UP": " Closed ", "FACECALL_ADMIN_TOKEN": "s" * 16})
    assert settings.sign_up == "closed" and settings.admin_token == "s" * 16
    assert Settings.from_env({}).sign_up == "open" and Settings.from_env({}).admin_token == ""


def test_a_refused_secret_is_not_shown() -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"FACECALL_ADMIN_TOKEN": "hunter2-secret"})
    assert "hunter2" not in str(refused.value)
    assert str(refused.value).startswith("FACECALL_ADMIN_TOKEN=(secret, not shown) is not allowed: ")


@pytest.mark.parametrize("env", [
    {"FACECALL_ADMIN_TOKEN": "0123456789abcdef\n"}, {"FACECALL_ADMIN_TOKEN": " 0123456789abcdef"},
    {"FACECALL_ADMIN_TOKEN": "0123456789\x01abcdef"}, {"FACECALL_METRICS_TOKEN": "scrape-me "},
    {"FACECALL_METRICS_TOKEN": "scrape\tme"},
])
def test_bearer_tokens_that_could_never_match_are_refused(env: dict[str, str]) -> None:
    """HTTP strips spaces around a header value and refuses control characters."""
    with pytest.raises(SettingsError, match="would never match"):
        Settings.from_env(env)


def test_an_ipv6_host_is_bracketed_in_the_node_url() -> None:
    assert Settings(host="::1", port=8443).base_url == "http://[::1]:8443"
    assert Settings(host="127.0.0.1", port=8080).base_url == "http://127.0.0.1:8080"


def test_the_database_url_is_shown_without_its_password() -> None:
    settings = Settings(database_url="postgresql://facecall:S3cretPW@127.0.0.1:5432/facecall")
    assert shown_url(settings.database_url) == "postgresql+asyncpg://facecall:***@127.0.0.1:5432/facecall"
    assert shown_url(Settings(database_url="sqlite:///x.db").database_url) == "sqlite+aiosqlite:///x.db"


def test_a_misspelt_variable_is_named_with_the_setting_it_is_closest_to() -> None:
    env = {"FACECALL_RING_TIMOUT": "-5", "FACECALL_PORT": "9000", "FACECALL_PASSWORD": "x",
           "FACECALL_NOTHING_LIKE_IT_AT_ALL": "1", "OTHER": "1"}
    assert Settings.unknown_variables(env) == [
        "FACECALL_NOTHING_LIKE_IT_AT_ALL is not a setting; it is ignored",
        "FACECALL_RING_TIMOUT is not a setting (did you mean FACECALL_RING_TIMEOUT?); it is ignored",
    ]
    assert Settings.from_env(env).ring_timeout == 30.0  # ignored, as the warning says
