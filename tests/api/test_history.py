"""Call history over HTTP: paging and bad input (calls themselves: tests/server)."""

from __future__ import annotations

import pytest

from tests.live import LiveServer


async def test_history_pages_newest_first(server: LiveServer) -> None:
    alice, (a1,) = await server.user_with_devices("alice", 1)
    bob, (b1,) = await server.user_with_devices("bob", 1)
    ids = []
    for _ in range(3):
        call_id = (await a1.request("call.start", to=[bob["user"]["id"]], media="audio"))["call_id"]
        await b1.next_event("call.ring")
        await a1.request("call.cancel", call_id=call_id)
        ids.append(call_id)
    auth = {"Authorization": f"Bearer {alice['token']}"}
    first = (await server.http.get("/v1/calls/history?limit=2", headers=auth)).json()
    assert [i["call_id"] for i in first["items"]] == ids[:0:-1]
    assert first["next_before"] is not None
    rest = (await server.http.get(f"/v1/calls/history?limit=2&before={first['next_before']}",
                                  headers=auth)).json()
    assert [i["call_id"] for i in rest["items"]] == ids[:1] and rest["next_before"] is None
    assert all(i["direction"] == "outgoing" and i["end_reason"] == "cancelled" for i in first["items"])


@pytest.mark.parametrize("query", ["limit=0", "limit=201", "limit=abc", "before=-1", "before=x"])
async def test_history_rejects_bad_parameters(server: LiveServer, query: str) -> None:
    account = await server.sign_up("carol")
    r = await server.http.get(f"/v1/calls/history?{query}",
                              headers={"Authorization": f"Bearer {account['token']}"})
    assert r.status_code == 422


async def test_history_needs_auth(server: LiveServer) -> None:
    assert (await server.http.get("/v1/calls/history")).status_code == 401
