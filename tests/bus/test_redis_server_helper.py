"""tests/redis_server.py: the throwaway redis-server other tests stand on."""

from __future__ import annotations

import pytest

from tests.redis_server import RedisServer, RedisUnavailable, running_redis


def test_a_missing_binary_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACECALL_REDIS_SERVER", "/nonexistent/redis-server")
    with pytest.raises(RedisUnavailable, match="redis-server not found: install Debian's"), \
            running_redis():
        pass


def test_it_stops_is_killed_and_starts_again_on_its_port() -> None:
    with running_redis(password="pw") as server:
        assert isinstance(server, RedisServer) and server.pid is not None
        assert server.url == f"redis://:pw@127.0.0.1:{server.port}/0"
        assert server._answers()
        first = server.pid
        server.kill()
        assert server.pid is None and not server._answers()
        server.start()
        assert server.pid not in (None, first) and server._answers()
        server.stop()
        assert not server._answers()
    assert not server.base_dir.exists()
