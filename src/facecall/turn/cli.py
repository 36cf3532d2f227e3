"""Command-line options of the STUN/TURN server: ``facecall turn`` and ``facecall serve``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import tempfile
from pathlib import Path

from facecall.logs import get_logger
from facecall.turn.config import DEFAULT_PORT, DEFAULT_TLS_PORT, TurnConfig
from facecall.turn.server import UDP_IO, TurnServer
from facecall.turn.stun import Address
from facecall.turn.tls import write_self_signed

log = get_logger(__name__)


def parse_address(text: str, default_port: int = DEFAULT_PORT) -> Address:
    """``HOST``, ``HOST:PORT``, ``[V6]`` or ``[V6]:PORT``."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    if text.count(":") == 1:
        host, port = text.split(":")
        return host, int(port)
    return text, default_port


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


def turn_config_from_args(args: argparse.Namespace) -> TurnConfig:
    """Build a :class:`TurnConfig` from parsed ``--turn-*`` options."""
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


async def run_turn(args: argparse.Namespace) -> None:
    """Run the STUN/TURN server until cancelled."""
    server = TurnServer(turn_config_from_args(args))
    await server.start()
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
    configure_logging(args.log_level)
    if args.workers > 1:
        args.turn_reuse_port = True
    children: list[int] = []
    for _ in range(args.workers - 1):
        pid = os.fork()
        if pid == 0:
            with contextlib.suppress(KeyboardInterrupt):
                uvloop.run(run_turn(args))
            os._exit(0)
        children.append(pid)

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        uvloop.run(run_turn(args))
    except KeyboardInterrupt:
        pass
    finally:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
