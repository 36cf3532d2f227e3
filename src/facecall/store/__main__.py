"""``python -m facecall.store migrate|downgrade|current|backup [--database-url URL]``."""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import sys
from pathlib import Path
from urllib.request import pathname2url

from alembic.util import CommandError
from sqlalchemy.engine import make_url

from facecall.config import Settings, SettingsError
from facecall.store.db import create_engine, is_sqlite_memory, shown_url, sqlite_path
from facecall.store.migrate import (
    current_revision,
    database_problem,
    head_revision,
    known_revisions,
    migrate_url,
)


async def _current(url: str) -> str | None:
    engine = create_engine(url)
    try:
        return await current_revision(engine)
    finally:
        await engine.dispose()


class BackupError(Exception):
    """A backup that cannot be made; ``str()`` says why, in one line."""


def backup_sqlite(url: str, target: Path) -> int:
    """Copy the SQLite database of ``url`` to ``target`` with SQLite's online backup API
    (sqlite.org/backup.html) in one step: one read transaction, a consistent copy while nodes
    keep writing (WAL readers do not block writers; a copy made in several steps starts over
    whenever another connection writes, and under steady writes never ends). Returns the pages
    copied. ``target`` must not exist; it is created readable by its owner only (it holds
    password hashes)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        raise BackupError("backup copies SQLite databases; for PostgreSQL use pg_dump")
    if is_sqlite_memory(url):
        raise BackupError("an in-memory database has nothing to back up")
    source_path = Path(str(parsed.database))
    if not source_path.is_file():
        raise BackupError(f"no database at {source_path}")
    if not target.parent.is_dir():
        raise BackupError(f"no directory {target.parent}")
    try:  # a new file, never through a symlink (dangling or not) or over anything there
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
    except FileExistsError:
        raise BackupError(f"{target} exists already; name a new file") from None
    except OSError as exc:
        raise BackupError(f"cannot create {target}: {exc.strerror or exc}") from None
    try:
        # a URI (read-only, never created): the path percent-encoded, so "#" or "?" in it stay
        # part of the file name
        source = sqlite3.connect(f"file:{pathname2url(str(source_path.resolve()))}?mode=ro",
                                 uri=True, timeout=10)
        try:
            copy = sqlite3.connect(str(target))
            try:
                source.backup(copy, pages=-1)
                pages: int = copy.execute("PRAGMA page_count").fetchone()[0]
            finally:
                copy.close()
        finally:
            source.close()
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return pages


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
        # the flag is checked and given its async driver as FACECALL_DATABASE_URL is
        url = Settings.from_env(database_url=args.database_url).database_url
    except SettingsError as exc:  # one line per bad setting, as `facecall serve` says it
        for line in str(exc).splitlines():
            print(f"python -m facecall.store: {line}", file=sys.stderr)
        return 2
    if args.command == "backup":
        try:
            pages = backup_sqlite(url, args.target)
        except (BackupError, sqlite3.Error) as exc:
            print(f"python -m facecall.store: {exc}", file=sys.stderr)
            return 1
        print(f"backed up {pages} pages to {args.target}")
        return 0
    path = sqlite_path(url)
    if args.command in ("current", "downgrade") and path is not None and not Path(path).exists():
        # opening a database that is not there would create an empty one: a typo in the path
        # would leave a stray file behind, and look like a database at "base"
        print(f"python -m facecall.store: no database at {path} ({shown_url(url)}); "
              "`migrate` creates one", file=sys.stderr)
        if args.command == "downgrade":
            return 1
        # no database has no migration applied: "base", as before (scripts read stdout), and
        # nothing created
        print(f"base (head: {head_revision()})")
        return 0
    try:
        if args.command == "current":
            revision = asyncio.run(_current(url))
            print(f"{revision or 'base'} (head: {head_revision()})")
            return 0
        action = "upgrade" if args.command == "migrate" else "downgrade"
        revision = asyncio.run(migrate_url(url, action, args.revision))
    except Exception as exc:
        problem = database_problem(exc, url)
        if problem is None:
            raise
        if isinstance(exc, CommandError):  # a --revision alembic cannot resolve
            problem += f" (revisions: base, {', '.join(known_revisions())}, head)"
        print(f"python -m facecall.store: {problem}", file=sys.stderr)
        return 1
    print(f"{action}d to {revision or 'base'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
