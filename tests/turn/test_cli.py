"""The ``--turn-*`` options and ``run_turn``."""

from __future__ import annotations

import argparse
import asyncio
import os

import pytest

from facecall.turn import stun
from facecall.turn.cli import add_turn_arguments, parse_address, run_turn, turn_config_from_args

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
