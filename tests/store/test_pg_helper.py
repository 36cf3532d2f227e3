"""The PostgreSQL test helper fails loudly instead of skipping when it cannot run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.pg import PostgresServer, PostgresUnavailable, find_bin_dir, start_postgres


def test_missing_binaries_raise_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FACECALL_PG_BIN", str(tmp_path))
    with pytest.raises(PostgresUnavailable, match="initdb"):
        find_bin_dir()
    with pytest.raises(PostgresUnavailable, match="initdb"):
        start_postgres()


@pytest.mark.postgres
def test_server_databases_are_separate(postgres_server: PostgresServer) -> None:
    first = postgres_server.create_database()
    second = postgres_server.create_database()
    assert first != second and first.startswith("postgresql+asyncpg://postgres@127.0.0.1:")
    name = second.rsplit("/", 1)[1]
    assert postgres_server.psql("SELECT 1", database=name).strip() == "1"
    postgres_server.drop_database(name)
    listed = postgres_server.psql("SELECT datname FROM pg_database").split()
    assert name not in listed and first.rsplit("/", 1)[1] in listed
