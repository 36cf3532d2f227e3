"""``python -m facecall.store migrate|downgrade|current [--database-url URL]``."""

from __future__ import annotations

import argparse
import asyncio
import sys

from facecall.config import Settings, SettingsError
from facecall.store.db import create_engine
from facecall.store.migrate import current_revision, head_revision, migrate_url


async def _current(url: str) -> str | None:
    engine = create_engine(url)
    try:
        return await current_revision(engine)
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m facecall.store", description=__doc__)
    parser.add_argument(
        "--database-url",
        default=None,
        help="SQLAlchemy URL (default: FACECALL_DATABASE_URL or sqlite+aiosqlite:///./facecall.db)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("migrate", help="upgrade the schema (alembic upgrade)")
    up.add_argument("--revision", default="head")
    down = sub.add_parser("downgrade", help="downgrade the schema (alembic downgrade)")
    down.add_argument("--revision", required=True, help='e.g. "base" to drop every table')
    sub.add_parser("current", help="print the revision the database is at")
    for p in (up, down, sub.choices["current"]):
        p.add_argument("--database-url", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        url = args.database_url or Settings.from_env().database_url
    except SettingsError as exc:  # one line per bad setting, as `facecall serve` says it
        for line in str(exc).splitlines():
            print(f"python -m facecall.store: {line}", file=sys.stderr)
        return 2
    if args.command == "current":
        revision = asyncio.run(_current(url))
        print(f"{revision or 'base'} (head: {head_revision()})")
        return 0
    action = "upgrade" if args.command == "migrate" else "downgrade"
    revision = asyncio.run(migrate_url(url, action, args.revision))
    print(f"{action}d to {revision or 'base'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
