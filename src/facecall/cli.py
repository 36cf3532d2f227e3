"""The `facecall` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from facecall import __version__
from facecall.config import Settings, SettingsError
from facecall.logs import configure_logging


def _add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `serve` and `signaling` that are :class:`Settings` fields (each one also
    a ``FACECALL_*`` variable; docs/operations.md lists all of them)."""
    parser.add_argument("--host", help="listen address (FACECALL_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="HTTP/WebSocket port (FACECALL_PORT, default 8080)")
    parser.add_argument("--database-url",
                        help="sqlite:///PATH or postgresql://... (FACECALL_DATABASE_URL, "
                        "default SQLite ./facecall.db)")
    parser.add_argument("--ring-timeout", type=float,
                        help="seconds before a ring is missed (FACECALL_RING_TIMEOUT, default 30)")
    parser.add_argument("--log-level",
                        help="debug, info, warning or error (FACECALL_LOG_LEVEL, default info)")
    parser.add_argument("--log-json", action="store_const", const=True,
                        help="JSON log lines (FACECALL_LOG_JSON)")
    parser.add_argument("--tls-cert", help="PEM certificate chain: serve HTTPS and WSS "
                                           "(FACECALL_TLS_CERT, with --tls-key)")
    parser.add_argument("--tls-key", help="PEM private key of --tls-cert (FACECALL_TLS_KEY)")


def _settings(args: argparse.Namespace) -> Settings:
    """Settings from the environment and the options; :class:`SettingsError` when one is bad."""
    return Settings.from_env(
        host=args.host, port=args.port, database_url=args.database_url,
        ring_timeout=args.ring_timeout, log_level=args.log_level, log_json=args.log_json,
        tls_cert=args.tls_cert, tls_key=args.tls_key,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facecall", description=__doc__)
    parser.add_argument("--version", action="version", version=f"facecall {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="all-in-one server: API, signaling, STUN/TURN")
    _add_server_arguments(serve)
    serve.add_argument("--no-turn", action="store_true", help="do not run the STUN/TURN server")
    from facecall.turn.cli import add_turn_arguments

    add_turn_arguments(serve)

    signaling = commands.add_parser(
        "signaling", help="API + signaling node only (scale-out: PostgreSQL + Redis)")
    _add_server_arguments(signaling)

    turn = commands.add_parser("turn", help="the STUN/TURN server alone")
    add_turn_arguments(turn)

    from facecall.cli_client import add_client_commands

    add_client_commands(commands)  # demo, call, answer
    from facecall.cli_admin import add_admin_commands

    add_admin_commands(commands)  # admin users ...
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(args, "run"):
        return int(args.run(args))
    if args.command in ("serve", "signaling"):
        try:
            settings = _settings(args)
        except SettingsError as exc:  # one line per bad setting, no traceback
            for line in str(exc).splitlines():
                print(f"facecall: {line}", file=sys.stderr)
            return 2
        configure_logging(settings.log_level, settings.log_json)
        from facecall.server import run
        from facecall.turn.cli import turn_config_from_args

        turn_config = None
        if args.command == "serve" and not args.no_turn:
            if args.turn_secret:
                settings.turn_secrets = list(args.turn_secret)
            turn_config = turn_config_from_args(args)
        try:
            run(settings, turn_config)
        except KeyboardInterrupt:
            pass
        return 0
    if args.command == "turn":
        configure_logging("info")
        import uvloop

        from facecall.turn.cli import run_turn

        try:
            uvloop.run(run_turn(args))
        except KeyboardInterrupt:
            pass
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
