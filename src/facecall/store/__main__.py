"""``python -m facecall.store migrate|downgrade|current|backup [--database-url URL]``."""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
from pathlib import Path

from sqlalchemy.engine import make_url

from facecall.config import Settings, SettingsError
from facecall.store.db import create_engine, is_sqlite_memory
from facecall.store.migrate import current_revision, head_revision, migrate_url


async def _current(url: str) -> str | None:
    engine = create_engine(url)
    try:
        return await current_revision(engine)
    finally:
        await engine.dispose()


class BackupError(Exception):
    """A backup that cannot be made; ``str()`` says why, in one line."""


def backup_sqlite(url: str, target: Path, progress: bool = False) -> int:
    """Copy the SQLite database of ``url`` to ``target`` with SQLite's online backup API
    (sqlite.org/backup.html): a consistent copy while nodes keep writing to it. Returns the
    pages copied. ``target`` must not exist."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        raise BackupError("backup copies SQLite databases; for PostgreSQL use pg_dump")
    if is_sqlite_memory(url):
        raise BackupError("an in-memory database has nothing to back up")
    source_path = Path(str(parsed.database))
    if not source_path.is_file():
        raise BackupError(f"no database at {source_path}")
    if target.exists():
        raise BackupError(f"{target} exists already; name a new file")
    if not target.parent.is_dir():
        raise BackupError(f"no directory {target.parent}")
    source = sqlite3.connect(f"file:{source_path}?mode=ro", uri=True, timeout=10)
    copy = sqlite3.connect(str(target))
    copied = 0

    def step(_status: int, remaining: int, total: int) -> None:
        nonlocal copied
        copied = total
        if progress and total:
            print(f"\r{100 * (total - remaining) // total}% of {total} pages", end="",
                  file=sys.stderr, flush=True)

    try:
        source.backup(copy, pages=1024, progress=step)
        if progress:
            print(file=sys.stderr)
    except BaseException:
        copy.close()
        target.unlink(missing_ok=True)
        raise
    finally:
        source.close()
    copy.close()
    return copied


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
    backup = sub.add_parser("backup", help="copy a SQLite database while nodes use it (a new file)")
    backup.add_argument("target", type=Path, help="the file to write; it must not exist")
    for p in (up, down, sub.choices["current"], backup):
        p.add_argument("--database-url", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        url = args.database_url or Settings.from_env().database_url
    except SettingsError as exc:  # one line per bad setting, as `facecall serve` says it
        for line in str(exc).splitlines():
            print(f"python -m facecall.store: {line}", file=sys.stderr)
        return 2
    if args.command == "backup":
        try:
            pages = backup_sqlite(url, args.target, progress=sys.stderr.isatty())
        except (BackupError, sqlite3.Error) as exc:
            print(f"python -m facecall.store: {exc}", file=sys.stderr)
            return 1
        print(f"backed up {pages} pages to {args.target}")
        return 0
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
