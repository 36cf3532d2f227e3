"""The ``--turn-*`` options and ``run_turn``."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import time
from pathlib import Path

import pytest

from facecall.turn import stun
from facecall.turn.cli import (
    TurnOptionsError,
    add_turn_arguments,
    parse_address,
    run_turn,
    turn_config_from_args,
)
from facecall.turn.tls import write_self_signed
from tests.live import facecall_process, one_line, refused_start

from .conftest import free_port, udp_endpoint


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_turn_arguments(parser)
    return parser.parse_args(list(argv))


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACECALL_TURN_SECRETS", "new, old,")
    config = turn_config_from_args(parse())
    assert config.udp_listen == config.tcp_listen == [("127.0.0.1", 3478)]
    assert config.tls_listen == []
    assert config.rest_secrets == ["new", "old"]
    assert config.realm == "facecall"
    assert (config.relay_port_min, config.relay_port_max) == (61000, 65535)
    assert config.allowed_peers == []
    assert config.udp_io == "auto"
    assert (config.socket_buffer, config.relay_socket_buffer) == (4 * 1024 * 1024, 0)
    assert config.max_permissions_per_allocation == 128
    assert config.max_tcp_connections_per_address == 64
    assert config.tls_handshake_timeout == 10.0


def test_connection_and_permission_caps() -> None:
    config = turn_config_from_args(parse(
        "--turn-permission-quota", "16", "--turn-connections-per-address", "8",
        "--turn-tls-handshake-timeout", "2.5",
    ))
    assert config.max_permissions_per_allocation == 16
    assert config.max_tcp_connections_per_address == 8
    assert config.tls_handshake_timeout == 2.5


def test_udp_io_and_buffer_options() -> None:
    config = turn_config_from_args(parse(
        "--turn-udp-io", "asyncio", "--turn-socket-buffer", "65536",
        "--turn-relay-socket-buffer", "131072",
    ))
    assert config.udp_io == "asyncio"
    assert (config.socket_buffer, config.relay_socket_buffer) == (65536, 131072)
    with pytest.raises(SystemExit):
        parse("--turn-udp-io", "threads")


def test_options(tmp_path: object) -> None:
    config = turn_config_from_args(parse(
        "--turn-listen", "[::1]:4000", "--turn-listen", "127.0.0.2", "--turn-secret", "s",
        "--turn-user", "a:b:c", "--turn-allow-peer", "127.0.0.0/8", "--turn-relay-ports",
        "62000-62010", "--turn-tls-self-signed", "--turn-user-quota", "3",
    ))
    assert config.udp_listen == [("::1", 4000), ("127.0.0.2", 3478)]
    assert config.static_users == {"a": "b:c"}
    assert config.tls_listen == [("::1", 5349)]
    assert config.tls_cert and os.path.exists(config.tls_cert)
    assert (config.relay_port_min, config.relay_port_max) == (62000, 62010)
    assert config.max_allocations_per_user == 3
    assert parse_address("example.org:1") == ("example.org", 1)
    with pytest.raises(SystemExit):
        parse("--turn-relay-ports", "70000-80000")


async def test_run_turn_serves_until_cancelled() -> None:
    port = free_port()
    args = parse("--turn-listen", f"127.0.0.1:{port}", "--turn-secret", "s")
    task = asyncio.ensure_future(run_turn(args))
    endpoint = await udp_endpoint()
    try:
        request = stun.Message(stun.Method.BINDING, stun.Class.REQUEST, os.urandom(12)).encode()
        for _ in range(50):
            endpoint.send(request, ("127.0.0.1", port))
            if not await endpoint.nothing(0.1):
                break
        else:
            raise AssertionError("no answer from run_turn's server")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        endpoint.close()


# -- options that cannot be used: one line each, before anything starts -------------------------

BAD_OPTIONS = [
    (["--turn-listen", "127.0.0.1:notaport"], "--turn-listen='127.0.0.1:notaport'"),
    (["--turn-listen", "127.0.0.1:70000"], "--turn-listen='127.0.0.1:70000'"),
    (["--turn-listen", ":3478"], "--turn-listen=':3478'"),
    (["--turn-tls-listen", "[::1:5349"], "--turn-tls-listen='[::1:5349'"),
    (["--turn-user-quota", "-5"], "--turn-user-quota=-5"),
    (["--turn-total-quota", "0"], "--turn-total-quota=0"),
    (["--turn-permission-quota", "0"], "--turn-permission-quota=0"),
    (["--turn-connections-per-address", "-1"], "--turn-connections-per-address=-1"),
    (["--turn-tls-handshake-timeout", "nan"], "--turn-tls-handshake-timeout=nan"),
    (["--turn-tls-handshake-timeout", "0"], "--turn-tls-handshake-timeout=0.0"),
    (["--turn-bandwidth", "-1"], "--turn-bandwidth=-1"),
    (["--turn-max-lifetime", "-1"], "--turn-max-lifetime=-1"),
    (["--turn-socket-buffer", "-1"], "--turn-socket-buffer=-1"),
    (["--turn-relay-socket-buffer", "-1"], "--turn-relay-socket-buffer=-1"),
    (["--turn-user", "alice"], "--turn-user='alice'"),
    (["--turn-relay-ip", "::1"], "--turn-relay-ip='::1'"),
    (["--turn-relay-ip6", "garbage"], "--turn-relay-ip6='garbage'"),
    (["--turn-external-ip", "203.0.113"], "--turn-external-ip='203.0.113'"),
    (["--turn-allow-peer", "10.0.0.0/33"], "--turn-allow-peer='10.0.0.0/33'"),
    (["--turn-tls-cert", "/nonexistent/cert.pem", "--turn-tls-key", "/nonexistent/key.pem"],
     "--turn-tls-cert='/nonexistent/cert.pem' is not allowed: cannot be read"),
    (["--turn-tls-cert", "/nonexistent/cert.pem"], "--turn-tls-cert / --turn-tls-key: a "
     "certificate and its key go together"),
    (["--turn-tls-key", "/nonexistent/key.pem"], "--turn-tls-cert / --turn-tls-key: a "
     "certificate and its key go together"),
    (["--turn-tls-listen", "127.0.0.1:5349"], "--turn-tls-listen needs --turn-tls-cert"),
]


@pytest.mark.parametrize(("argv", "start"), BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS])
def test_an_option_that_cannot_be_used_is_refused(argv: list[str], start: str) -> None:
    with pytest.raises(TurnOptionsError) as refused:
        turn_config_from_args(parse(*argv))
    assert str(refused.value).splitlines()[0].startswith(start), str(refused.value)


def test_a_refused_number_says_what_is_allowed() -> None:
    with pytest.raises(TurnOptionsError, match=r"^--turn-user-quota=-5 is not allowed: must be "
                                               r"an integer from 1$"):
        turn_config_from_args(parse("--turn-user-quota", "-5"))


def test_the_limits_themselves_are_taken(tmp_path: Path) -> None:
    cert, key = write_self_signed(tmp_path, ["127.0.0.1"])
    config = turn_config_from_args(parse(
        "--turn-user-quota", "1", "--turn-bandwidth", "0", "--turn-max-lifetime", "600",
        "--turn-relay-socket-buffer", "0", "--turn-relay-ip", "", "--turn-relay-ip6", "",
        "--turn-tls-cert", str(cert), "--turn-tls-key", str(key),
        "--turn-tls-listen", "127.0.0.1:5350"))
    assert config.max_allocations_per_user == 1 and config.max_lifetime == 600
    assert config.relay_ipv4 is None and config.tls_listen == [("127.0.0.1", 5350)]


def refused(*argv: str) -> tuple[int, list[str]]:
    done = refused_start(*argv, timeout=20)
    assert "Traceback" not in done.stderr and done.stdout == "", done.stderr
    return done.returncode, done.stderr.strip().splitlines()


@pytest.mark.parametrize("command", ["serve", "turn"])
@pytest.mark.parametrize(("argv", "line"), [
    (["--turn-listen", "127.0.0.1:notaport"], "facecall: --turn-listen='127.0.0.1:notaport' is "
     "not allowed: must be HOST, HOST:PORT, [IPv6] or [IPv6]:PORT, a port from 1 to 65535"),
    (["--turn-user-quota", "-5"], "facecall: --turn-user-quota=-5 is not allowed: must be an "
     "integer from 1"),
    (["--turn-tls-cert", "/nonexistent.pem"], "facecall: --turn-tls-cert / --turn-tls-key: a "
     "certificate and its key go together: give both or neither"),
    (["--turn-tls-cert", "/nonexistent.pem", "--turn-tls-key", "/nonexistent.pem"],
     "facecall: --turn-tls-cert='/nonexistent.pem' is not allowed: cannot be read (No such "
     "file or directory)"),
])
def test_facecall_refuses_a_turn_option_in_one_line(tmp_path: Path, command: str,
                                                    argv: list[str], line: str) -> None:
    extra = ["--port", str(free_port(socket.SOCK_STREAM)), "--database-url",
             f"sqlite:///{tmp_path / 'f.db'}"] if command == "serve" else []
    status, lines = refused(command, *extra, *argv)
    assert status == 2
    assert lines[0] == line, lines
    assert len(lines) == 1 or lines[1].startswith("facecall: --turn-tls-key="), lines


def test_facecall_turn_refuses_a_bad_log_setting_in_one_line() -> None:
    line = one_line(refused_start("turn", env={"FACECALL_LOG_LEVEL": "loud"}), status=2)
    assert line.startswith("facecall: FACECALL_LOG_LEVEL='loud' is not allowed: must be ")


@pytest.mark.parametrize("how", ["variables", "flags"])
def test_facecall_turn_logs_as_the_node_does(how: str) -> None:
    """FACECALL_LOG_JSON / FACECALL_LOG_LEVEL (or --log-json / --log-level), as `serve` takes
    them."""
    port = free_port()
    argv = ["turn", "--turn-listen", f"127.0.0.1:{port}", "--turn-secret", "s"]
    env = {}
    if how == "variables":
        env = {"FACECALL_LOG_JSON": "1", "FACECALL_LOG_LEVEL": "INFO"}
    else:
        argv += ["--log-json", "--log-level", "info"]
    proc = facecall_process(*argv, env=env)
    try:
        assert proc.stderr is not None
        first = json.loads(proc.stderr.readline())
        assert first["event"] == "turn server listening" and first["level"] == "info"
        assert first["udp"] == [["127.0.0.1", port]]
    finally:
        proc.terminate()
        proc.communicate(timeout=15)
    quiet = facecall_process(*argv[:5], env={"FACECALL_LOG_LEVEL": "error"})
    try:
        time.sleep(1.5)
        assert quiet.poll() is None
    finally:
        quiet.terminate()
        _, err = quiet.communicate(timeout=15)
    assert "turn server listening" not in err
