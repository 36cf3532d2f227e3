"""The `facecall` command line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from facecall import __version__
from facecall.config import Settings, SettingsError
from facecall.logs import configure_logging

if TYPE_CHECKING:
    from facecall.turn.config import TurnConfig


def _add_log_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-level",
                        help="debug, info, warning (warn), error or critical (fatal), any case "
                        "(FACECALL_LOG_LEVEL, default info)")
    parser.add_argument("--log-json", action="store_const", const=True,
                        help="JSON log lines (FACECALL_LOG_JSON)")


def _add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `serve` and `signaling` that are :class:`Settings` fields (each one also
    a ``FACECALL_*`` variable; docs/operations.md lists all of them)."""
    parser.add_argument("--host", help="listen address (FACECALL_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="HTTP/WebSocket port (FACECALL_PORT, default 8080)")
    parser.add_argument("--database-url",
                        help="sqlite:///PATH or postgresql://... (FACECALL_DATABASE_URL, "
                        "default SQLite ./facecall.db)")
    parser.add_argument("--redis-url",
                        help="redis://HOST[:PORT][/DB]: the bus several nodes share, with one "
                        "PostgreSQL --database-url (FACECALL_REDIS_URL, default none: one node)")
    parser.add_argument("--ring-timeout", type=float,
                        help="seconds before a ring is missed (FACECALL_RING_TIMEOUT, default 30)")
    _add_log_arguments(parser)
    parser.add_argument("--tls-cert", help="PEM certificate chain: serve HTTPS and WSS "
                                           "(FACECALL_TLS_CERT, with --tls-key)")
    parser.add_argument("--tls-key", help="PEM private key of --tls-cert (FACECALL_TLS_KEY)")


def _settings(args: argparse.Namespace) -> Settings:
    """Settings from the environment and the options; :class:`SettingsError` when one is bad."""
    return Settings.from_env(
        host=args.host, port=args.port, database_url=args.database_url, redis_url=args.redis_url,
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
        "signaling", help="API + signaling node only, without STUN/TURN (several share one "
        "PostgreSQL --database-url and one --redis-url)")
    _add_server_arguments(signaling)

    turn = commands.add_parser("turn", help="the STUN/TURN server alone")
    _add_log_arguments(turn)
    add_turn_arguments(turn)

    from facecall.cli_client import add_client_commands

    add_client_commands(commands)  # demo, call, answer
    from facecall.cli_admin import add_admin_commands

    add_admin_commands(commands)  # admin users ...
    return parser


def _fail(lines: str, status: int) -> int:
    """Print each line of ``lines`` as ``facecall: ...`` on stderr; return ``status``."""
    for line in lines.splitlines():
        print(f"facecall: {line}", file=sys.stderr)
    return status


def _encrypted_tls_key(args: argparse.Namespace) -> str | None:
    """The refusal of an encrypted ``--tls-key`` / ``FACECALL_TLS_KEY``, or None. Checked
    before the settings are built: loading such a key would ask for its passphrase on a
    terminal (once for the check, once more to serve) and fail without one."""
    from facecall.turn.cli import ENCRYPTED_KEY, encrypted_key

    variable = os.environ.get("FACECALL_TLS_KEY", "").strip()
    for source, path in (("--tls-key", args.tls_key), ("FACECALL_TLS_KEY", variable)):
        if path and encrypted_key(path):
            return f"{source}={path!r} {ENCRYPTED_KEY}"
        if path:
            return None  # the flag wins over the variable
    return None


def _turn_config(args: argparse.Namespace) -> TurnConfig:
    from facecall.turn.cli import turn_config_from_args

    return turn_config_from_args(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status: 0, 2 for a setting or option that is not
    allowed, 1 when the node cannot start (a port it cannot listen on, a database it cannot
    use) -- each said in one line ``facecall: ...`` on stderr."""
    args = build_parser().parse_args(argv)
    if hasattr(args, "run"):
        return int(args.run(args))
    if args.command in ("serve", "signaling"):
        if (refusal := _encrypted_tls_key(args)) is not None:
            return _fail(refusal, 2)
        try:
            settings = _settings(args)
        except SettingsError as exc:  # one line per bad setting, no traceback
            return _fail(str(exc), 2)
        for warning in Settings.unknown_variables():
            print(f"facecall: warning: {warning}", file=sys.stderr)
        from facecall.turn.cli import TurnOptionsError

        turn_config = None
        if args.command == "serve" and not args.no_turn:
            if args.turn_secret:
                settings.turn_secrets = list(args.turn_secret)
            try:
                turn_config = _turn_config(args)
            except TurnOptionsError as exc:
                return _fail(str(exc), 2)
        configure_logging(settings.log_level, settings.log_json)
        from facecall.server import StartupFailure, run

        try:
            run(settings, turn_config)
        except KeyboardInterrupt:
            pass
        except StartupFailure as exc:
            return _fail(str(exc), 1)
        return 0
    if args.command == "turn":
        from facecall.turn.cli import TurnOptionsError, TurnStartFailure, run_turn

        try:  # only the logging settings: the others are the node's, not the TURN server's
            logging_env = {name: os.environ[name] for name in ("FACECALL_LOG_LEVEL",
                                                               "FACECALL_LOG_JSON")
                           if name in os.environ}
            log_settings = Settings.from_env(logging_env, log_level=args.log_level,
                                             log_json=args.log_json)
        except SettingsError as exc:
            return _fail(str(exc), 2)
        try:
            turn_config = _turn_config(args)
        except TurnOptionsError as exc:
            return _fail(str(exc), 2)
        configure_logging(log_settings.log_level, log_settings.log_json)
        import uvloop

        try:
            uvloop.run(run_turn(turn_config))
        except KeyboardInterrupt:
            pass
        except TurnStartFailure as exc:
            return _fail(str(exc), 1)
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
