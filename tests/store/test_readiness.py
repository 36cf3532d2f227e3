"""``/readyz``: 200 while the node's database answers, 503 with a reason while it does not
(``/healthz`` stays 200: the process itself is fine)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.live import live_server
from tests.pg import PostgresServer


async def test_ready_on_sqlite(tmp_path: Path) -> None:
    async with live_server(f"sqlite+aiosqlite:///{tmp_path / 'f.db'}") as server:
        reply = await server.http.get("/readyz")
        assert reply.status_code == 200 and reply.json()["status"] == "ok"


async def test_not_ready_while_postgresql_refuses_the_node(postgres_server: PostgresServer) -> None:
    url = postgres_server.create_database()
    name = url.rsplit("/", 1)[1]
    try:
        async with live_server(url) as server:
            assert (await server.http.get("/readyz")).status_code == 200
            postgres_server.psql(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
            postgres_server.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 f"WHERE datname = '{name}' AND pid <> pg_backend_pid()")
            reply = await server.http.get("/readyz")
            assert reply.status_code == 503
            assert reply.json()["status"] == "unavailable"
            assert reply.json()["detail"].startswith("the database")
            assert (await server.http.get("/healthz")).status_code == 200
            postgres_server.psql(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
            for _ in range(50):  # the driver reconnects
                if (await server.http.get("/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("not ready again after the database came back")
    finally:
        postgres_server.psql(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
        postgres_server.drop_database(name)
