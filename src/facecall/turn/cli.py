"""Command-line options of the STUN/TURN server: ``facecall turn`` and ``facecall serve``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import ipaddress
import math
import os
import signal
import socket
import ssl
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from facecall.logs import get_logger
from facecall.turn.config import DEFAULT_PORT, DEFAULT_TLS_PORT, TurnConfig
from facecall.turn.server import UDP_IO, TurnServer
from facecall.turn.stun import Address
from facecall.turn.tls import write_self_signed

log = get_logger(__name__)


def parse_address(text: str, default_port: int = DEFAULT_PORT) -> Address:
    """``HOST``, ``HOST:PORT``, ``[V6]`` or ``[V6]:PORT``; ValueError when ``text`` is none of
    them (an empty host, a port that is not an integer from 1 to 65535)."""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(text)
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host, port_text = text, None
    port = default_port
    if port_text is not None:
        if not port_text.isascii() or not port_text.isdigit():
            raise ValueError(text)
        port = int(port_text)
    if not host.strip() or not 1 <= port <= 65535:
        raise ValueError(text)
    return host, port


def parse_port_range(text: str) -> tuple[int, int]:
    low, _, high = text.partition("-")
    lo, hi = int(low), int(high or low)
    if not 1 <= lo <= hi <= 65535:
        raise argparse.ArgumentTypeError(f"bad port range {text!r}")
    return lo, hi


def add_turn_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``--turn-*`` options to ``parser``."""
    group = parser.add_argument_group("STUN/TURN server")
    group.add_argument("--turn-listen", action="append", metavar="HOST:PORT",
                       help=f"UDP+TCP listen address, repeatable (default 127.0.0.1:{DEFAULT_PORT})")
    group.add_argument("--turn-tls-listen", action="append", metavar="HOST:PORT",
                       help=f"TLS listen address (default 127.0.0.1:{DEFAULT_TLS_PORT} when a "
                       "certificate is given)")
    group.add_argument("--turn-tls-cert", help="PEM certificate chain for TLS")
    group.add_argument("--turn-tls-key", help="PEM private key for TLS")
    group.add_argument("--turn-tls-self-signed", action="store_true",
                       help="generate a self-signed certificate (development only)")
    group.add_argument("--turn-realm", default="facecall")
    group.add_argument("--turn-secret", action="append", metavar="SECRET",
                       help="TURN REST secret, repeatable (default: $FACECALL_TURN_SECRETS, "
                       "comma-separated)")
    group.add_argument("--turn-user", action="append", metavar="USER:PASSWORD",
                       help="static long-term user, repeatable")
    group.add_argument("--turn-relay-ip", default="127.0.0.1", help="IPv4 relay address")
    group.add_argument("--turn-relay-ip6", default="::1", help="IPv6 relay address ('' = none)")
    group.add_argument("--turn-external-ip", default="",
                       help="public IPv4 address advertised for relays (server behind 1:1 NAT)")
    group.add_argument("--turn-relay-ports", type=parse_port_range, default=(61000, 65535),
                       metavar="LOW-HIGH")
    group.add_argument("--turn-allow-peer", action="append", metavar="CIDR", default=[],
                       help="relay to this range despite the denylist (e.g. 127.0.0.0/8 in tests)")
    group.add_argument("--turn-deny-peer", action="append", metavar="CIDR", default=[])
    group.add_argument("--turn-user-quota", type=int, default=20)
    group.add_argument("--turn-total-quota", type=int, default=5000)
    group.add_argument("--turn-permission-quota", type=int, default=128, metavar="N",
                       help="peer addresses with a permission per allocation (508 beyond)")
    group.add_argument("--turn-connections-per-address", type=int, default=64, metavar="N",
                       help="concurrent TCP/TLS connections per client IP address; further "
                       "ones are closed at once")
    group.add_argument("--turn-tls-handshake-timeout", type=float, default=10.0,
                       metavar="SECONDS", help="time a TLS client has to finish its handshake")
    group.add_argument("--turn-bandwidth", type=int, default=0,
                       help="bytes/s per allocation and direction (0: no cap)")
    group.add_argument("--turn-max-lifetime", type=int, default=3600)
    group.add_argument("--turn-reuse-port", action="store_true",
                       help="SO_REUSEPORT listeners (several processes on the same ports)")
    group.add_argument("--turn-udp-io", choices=UDP_IO, default="auto",
                       help="UDP data path: batched recvmmsg/sendmmsg (Linux), asyncio datagram "
                       "transports, or auto (batched where available; default)")
    group.add_argument("--turn-socket-buffer", type=int, default=4 * 1024 * 1024,
                       metavar="BYTES", help="SO_RCVBUF/SO_SNDBUF of UDP listeners "
                       "(capped by net.core.rmem_max/wmem_max)")
    group.add_argument("--turn-relay-socket-buffer", type=int, default=0, metavar="BYTES",
                       help="SO_RCVBUF/SO_SNDBUF of relay sockets (0: kernel default)")


class TurnOptionsError(ValueError):
    """``--turn-*`` options that cannot be used; ``str()`` is one line per bad option, naming
    it and what it may be (as :class:`facecall.config.SettingsError` does for settings)."""


class TurnStartFailure(Exception):
    """The STUN/TURN server cannot start (a port it cannot listen on); ``str()`` is one line."""


#: (option, attribute, check, what it may be) of the numeric ``--turn-*`` options
_NUMBERS: list[tuple[str, str, Callable[[Any], bool], str]] = [
    ("--turn-user-quota", "turn_user_quota", lambda v: v >= 1, "an integer from 1"),
    ("--turn-total-quota", "turn_total_quota", lambda v: v >= 1, "an integer from 1"),
    ("--turn-permission-quota", "turn_permission_quota", lambda v: v >= 1, "an integer from 1"),
    ("--turn-connections-per-address", "turn_connections_per_address", lambda v: v >= 1,
     "an integer from 1"),
    ("--turn-tls-handshake-timeout", "turn_tls_handshake_timeout",
     lambda v: math.isfinite(v) and v > 0, "a number of seconds above 0"),
    ("--turn-bandwidth", "turn_bandwidth", lambda v: v >= 0,
     "an integer of bytes per second from 0 (0: no cap)"),
    ("--turn-max-lifetime", "turn_max_lifetime", lambda v: v >= 600,
     "a whole number of seconds from 600 (RFC 8656's default lifetime, which every "
     "allocation gets at least)"),
    ("--turn-socket-buffer", "turn_socket_buffer", lambda v: v >= 4096,
     "an integer of bytes from 4096"),
    ("--turn-relay-socket-buffer", "turn_relay_socket_buffer", lambda v: v >= 0,
     "an integer of bytes from 0 (0: the kernel's default)"),
]

_ADDRESS = "HOST, HOST:PORT, [IPv6] or [IPv6]:PORT, a port from 1 to 65535"


def encrypted_key(path: str) -> bool:
    """True when the PEM private key at ``path`` is encrypted (a passphrase-protected key:
    PKCS#8 ``ENCRYPTED PRIVATE KEY`` or OpenSSL's legacy ``Proc-Type: 4,ENCRYPTED``); False
    when it is not, or cannot be read (that is said elsewhere)."""
    try:
        with open(os.path.expanduser(path), "rb") as f:
            text = f.read(1024 * 1024)
    except OSError:
        return False
    return b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in text or b"Proc-Type: 4,ENCRYPTED" in text


ENCRYPTED_KEY = ("is an encrypted private key, which facecall does not take (it would have "
                 "to ask for the passphrase at every start): decrypt it, e.g. "
                 "`openssl pkey -in KEY -out KEY.plain`, and keep that file readable by the "
                 "node's user only")


def _no_passphrase() -> bytes:
    raise ValueError("the key is encrypted")


def _readable(path: str) -> str | None:
    """Why ``path`` cannot be read, or None."""
    try:
        with open(os.path.expanduser(path), "rb") as f:
            f.read(1)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    return None


def _tls_problems(cert: str | None, key: str | None) -> list[str]:
    """Lines saying why ``--turn-tls-cert`` and ``--turn-tls-key`` cannot serve TLS."""
    if not cert and not key:
        return []
    if not cert or not key:
        return ["--turn-tls-cert / --turn-tls-key: a certificate and its key go together: "
                "give both or neither"]
    lines = [f"{flag}={path!r} is not allowed: {problem}"
             for flag, path in (("--turn-tls-cert", cert), ("--turn-tls-key", key))
             if (problem := _readable(path)) is not None]
    if lines:
        return lines
    if encrypted_key(key):
        return [f"--turn-tls-key={key!r} {ENCRYPTED_KEY}"]
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(
            os.path.expanduser(cert), os.path.expanduser(key), password=_no_passphrase)
    except (ssl.SSLError, OSError, ValueError) as exc:
        return ["--turn-tls-cert / --turn-tls-key: the certificate and key do not load "
                f"together ({exc})"]
    return []


def _check(args: argparse.Namespace) -> list[str]:
    """One line per bad ``--turn-*`` option in ``args``."""
    lines: list[str] = []
    for flag, default_port, values in (
        ("--turn-listen", DEFAULT_PORT, args.turn_listen or []),
        ("--turn-tls-listen", DEFAULT_TLS_PORT, args.turn_tls_listen or []),
    ):
        for value in values:
            try:
                parse_address(value, default_port)
            except ValueError:
                lines.append(f"{flag}={value!r} is not allowed: must be {_ADDRESS}")
    for flag, attribute, ok, allowed in _NUMBERS:
        value = getattr(args, attribute)
        if not ok(value):
            lines.append(f"{flag}={value!r} is not allowed: must be {allowed}")
    for user in args.turn_user or []:
        if ":" not in user or not user.split(":", 1)[0]:
            lines.append(f"--turn-user={user.split(':', 1)[0]!r}... is not allowed: must be "
                         "USER:PASSWORD")
    for flag, value, version, empty in (
        ("--turn-relay-ip", args.turn_relay_ip, 4, "empty (no IPv4 relays) or "),
        ("--turn-relay-ip6", args.turn_relay_ip6, 6, "empty (no IPv6 relays) or "),
        ("--turn-external-ip", args.turn_external_ip, 4, "empty or "),
    ):
        if value:
            try:
                ok = ipaddress.ip_address(value).version == version
            except ValueError:
                ok = False
            if not ok:
                lines.append(f"{flag}={value!r} is not allowed: must be {empty}an IPv{version} "
                             "address")
    for flag, cidrs in (("--turn-allow-peer", args.turn_allow_peer),
                        ("--turn-deny-peer", args.turn_deny_peer)):
        for cidr in cidrs:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                lines.append(f"{flag}={cidr!r} is not allowed: must be an address range "
                             "(CIDR), e.g. 10.0.0.0/8")
    if not args.turn_tls_self_signed or args.turn_tls_cert or args.turn_tls_key:
        lines += _tls_problems(args.turn_tls_cert, args.turn_tls_key)
    if args.turn_tls_listen and not (args.turn_tls_cert or args.turn_tls_key
                                     or args.turn_tls_self_signed):
        lines.append("--turn-tls-listen needs --turn-tls-cert and --turn-tls-key (or "
                     "--turn-tls-self-signed)")
    return lines


def turn_config_from_args(args: argparse.Namespace) -> TurnConfig:
    """Build a :class:`TurnConfig` from parsed ``--turn-*`` options; :class:`TurnOptionsError`
    (one line per bad option) when one cannot be used."""
    if problems := _check(args):
        raise TurnOptionsError("\n".join(problems))
    listen = [parse_address(a) for a in (args.turn_listen or [f"127.0.0.1:{DEFAULT_PORT}"])]
    secrets = args.turn_secret
    if secrets is None:
        secrets = [s.strip() for s in os.environ.get("FACECALL_TURN_SECRETS", "").split(",")]
    users = dict(u.split(":", 1) for u in (args.turn_user or []) if ":" in u)
    cert, key = args.turn_tls_cert, args.turn_tls_key
    if args.turn_tls_self_signed and not cert:
        directory = Path(tempfile.mkdtemp(prefix="facecall-turn-tls-"))
        names = sorted({host for host, _ in listen} | {"localhost"})
        cert_path, key_path = write_self_signed(directory, names)
        cert, key = str(cert_path), str(key_path)
    tls_listen: list[Address] = []
    if cert and key:
        cert, key = os.path.expanduser(cert), os.path.expanduser(key)
        tls_listen = [parse_address(a, DEFAULT_TLS_PORT) for a in args.turn_tls_listen or []]
        tls_listen = tls_listen or [(listen[0][0], DEFAULT_TLS_PORT)]
    low, high = args.turn_relay_ports
    return TurnConfig(
        udp_listen=listen,
        tcp_listen=listen,
        tls_listen=tls_listen,
        tls_cert=cert,
        tls_key=key,
        realm=args.turn_realm,
        rest_secrets=[s for s in secrets if s],
        static_users=users,
        relay_ipv4=args.turn_relay_ip or None,
        relay_ipv6=args.turn_relay_ip6 or None,
        external_ipv4=args.turn_external_ip or None,
        relay_port_min=low,
        relay_port_max=high,
        allowed_peers=list(args.turn_allow_peer),
        denied_peers=list(args.turn_deny_peer),
        max_allocations_per_user=args.turn_user_quota,
        max_allocations=args.turn_total_quota,
        max_permissions_per_allocation=args.turn_permission_quota,
        max_tcp_connections_per_address=args.turn_connections_per_address,
        tls_handshake_timeout=args.turn_tls_handshake_timeout,
        bandwidth_cap=args.turn_bandwidth,
        max_lifetime=args.turn_max_lifetime,
        reuse_port=args.turn_reuse_port,
        udp_io=args.turn_udp_io,
        socket_buffer=args.turn_socket_buffer,
        relay_socket_buffer=args.turn_relay_socket_buffer,
    )


def hostport(host: str, port: int) -> str:
    """``host:port``, an IPv6 host in brackets (RFC 3986 §3.2.2)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _bind_problem(host: str, port: int, protocol: str, reuse_port: bool) -> str | None:
    """Why a ``protocol`` ("udp", or "tcp" and "tls": a TCP listener) socket cannot be bound
    to ``(host, port)`` as the server binds it, or None when it can (now)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    kind = socket.SOCK_DGRAM if protocol == "udp" else socket.SOCK_STREAM
    try:
        with socket.socket(family, kind) as sock:
            if kind == socket.SOCK_STREAM:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
    except OSError as exc:
        return listen_failure(exc)
    return None


def listen_failure(exc: OSError) -> str:
    """Why a socket could not be bound, as one short phrase (``facecall: cannot listen on
    ADDRESS: <this>``)."""
    if isinstance(exc, socket.gaierror):
        return f"no such host ({exc.strerror})"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "that address is not one of this machine's"
    if exc.errno == errno.EACCES:
        return "permission denied (ports below 1024 need privileges)"
    return (exc.strerror or str(exc)).lower()


async def start_turn(config: TurnConfig) -> TurnServer:
    """A started :class:`TurnServer`; :class:`TurnStartFailure` naming the address and
    protocol it cannot listen on (nothing is left bound)."""
    server = TurnServer(config)
    try:
        await server.start()
    except ssl.SSLError as exc:
        raise TurnStartFailure(f"cannot load the TURN TLS certificate and key ({exc})") from None
    except OSError as exc:
        for protocol, addresses in (("udp", config.udp_listen), ("tcp", config.tcp_listen),
                                    ("tls", config.tls_listen)):
            for host, port in addresses:
                if (problem := _bind_problem(host, port, protocol, config.reuse_port)):
                    raise TurnStartFailure(f"cannot listen for TURN on {hostport(host, port)} "
                                           f"({protocol}): {problem}") from None
        every = ", ".join(hostport(*a) for a in [*config.udp_listen, *config.tls_listen])
        raise TurnStartFailure(f"cannot listen for TURN on {every}: {listen_failure(exc)}") from None
    return server


async def run_turn(args: argparse.Namespace | TurnConfig) -> None:
    """Run the STUN/TURN server until cancelled; :class:`TurnOptionsError` or
    :class:`TurnStartFailure` when it cannot start."""
    config = args if isinstance(args, TurnConfig) else turn_config_from_args(args)
    server = await start_turn(config)
    log.info(
        "turn server listening",
        udp_io=server.udp_io,
        udp=server.udp_addresses,
        tcp=server.tcp_addresses,
        tls=server.tls_addresses,
    )
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> None:
    """``python -m facecall.turn``: the server alone, on uvloop; ``--workers N`` forks N
    processes sharing the listening ports with SO_REUSEPORT (quotas are then per worker)."""
    import uvloop

    from facecall.logs import configure_logging

    parser = argparse.ArgumentParser(prog="facecall-turn", description=__doc__)
    add_turn_arguments(parser)
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.exit(2, f"facecall-turn: --workers={args.workers!r} is not allowed: must be an "
                       "integer from 1\n")
    if args.workers > 1:
        args.turn_reuse_port = True
    try:
        config = turn_config_from_args(args)
    except TurnOptionsError as exc:
        parser.exit(2, "".join(f"facecall-turn: {line}\n" for line in str(exc).splitlines()))
    configure_logging(args.log_level)
    children: list[int] = []
    for _ in range(args.workers - 1):
        pid = os.fork()
        if pid == 0:
            with contextlib.suppress(KeyboardInterrupt, TurnStartFailure):
                uvloop.run(run_turn(config))
            os._exit(0)
        children.append(pid)

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        uvloop.run(run_turn(config))
    except KeyboardInterrupt:
        pass
    except TurnStartFailure as exc:
        print(f"facecall-turn: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    finally:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
