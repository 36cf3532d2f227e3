"""My account over real HTTP: display name (PATCH /v1/me) and password (PUT /v1/me/password),
with what they do to tokens, devices and rings, and bad input changing nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from facecall.client.signaling import SignalingError
from tests.live import LiveServer, live_server

PASSWORD = "correct horse battery"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def sign_in(server: LiveServer, username: str, password: str = PASSWORD) -> int:
    r = await server.http.post("/v1/sessions", json={"username": username, "password": password})
    return r.status_code


async def change(server: LiveServer, token: str, **body: Any) -> Any:
    return await server.http.put("/v1/me/password", json=body, headers=bearer(token))


async def test_rename_shows_on_me_and_on_the_next_ring(server: LiveServer) -> None:
    alice, (a1,) = await server.user_with_devices("alice", 1)
    bob, (b1,) = await server.user_with_devices("bob", 1)
    call_id = (await a1.request("call.start", to=[bob["user"]["id"]], media="audio"))["call_id"]
    assert (await b1.next_event("call.ring"))["from_name"] == "alice"
    await a1.request("call.cancel", call_id=call_id)
    # a device token may rename too (what the app in hand can do)
    r = await server.http.patch("/v1/me", json={"display_name": "  Alice Liddell "},
                                headers=bearer(a1.token))
    assert r.status_code == 200
    assert r.json() == {**alice["user"], "display_name": "Alice Liddell"}
    me = await server.http.get("/v1/me", headers=bearer(alice["token"]))
    assert me.json()["display_name"] == "Alice Liddell"
    await a1.request("call.start", to=[bob["user"]["id"]], media="audio")
    assert (await b1.next_event("call.ring"))["from_name"] == "Alice Liddell"


@pytest.mark.parametrize("body", [
    {}, {"display_name": ""}, {"display_name": "   "}, {"display_name": "n" * 65},
    {"display_name": "two\nlines"}, {"display_name": "\u202eevil"}, {"display_name": 5},
    {"display_name": None}, {"display_name": "ok", "username": "root"},
])
async def test_rename_refuses_bad_input_and_keeps_the_name(server: LiveServer,
                                                           body: dict[str, Any]) -> None:
    alice = await server.sign_up("alice")
    r = await server.http.patch("/v1/me", json=body, headers=bearer(alice["token"]))
    assert r.status_code == 422
    assert "detail" in r.json()
    me = await server.http.get("/v1/me", headers=bearer(alice["token"]))
    assert me.json()["display_name"] == "alice"


async def test_rename_needs_a_token_and_a_json_body(server: LiveServer) -> None:
    alice = await server.sign_up("alice")
    assert (await server.http.patch("/v1/me", json={"display_name": "X"})).status_code == 401
    bad = await server.http.patch("/v1/me", json={"display_name": "X"}, headers=bearer("nonsense"))
    assert bad.status_code == 401
    raw = await server.http.patch("/v1/me", content=b"{oops", headers={
        **bearer(alice["token"]), "content-type": "application/json"})
    assert raw.status_code == 422
    huge = await server.http.patch("/v1/me", content=b'{"display_name": "' + b"x" * 2_000_000 + b'"}',
                                   headers={**bearer(alice["token"]), "content-type": "application/json"})
    assert huge.status_code in (413, 422)
    assert (await server.http.get("/v1/me", headers=bearer(alice["token"]))).json()["display_name"] == "alice"


async def test_change_password(server: LiveServer) -> None:
    alice, (a1,) = await server.user_with_devices("alice", 1)
    other_r = await server.http.post("/v1/sessions", json={"username": "alice", "password": PASSWORD})
    other = other_r.json()["token"]  # signed in elsewhere with the old password
    r = await change(server, alice["token"], current_password=PASSWORD, new_password="a new secret")
    assert r.status_code == 204
    assert await sign_in(server, "alice") == 401
    assert await sign_in(server, "alice", "a new secret") == 200
    assert (await server.http.get("/v1/me", headers=bearer(alice["token"]))).status_code == 200
    assert (await server.http.get("/v1/me", headers=bearer(other))).status_code == 401
    assert (await a1.request("ping"))["type"] == "pong"  # devices stay signed in and connected


async def test_wrong_current_password_changes_nothing_and_is_a_failed_sign_in(tmp_path: Path) -> None:
    async with live_server(f"sqlite+aiosqlite:///{tmp_path / 'f.db'}",
                           sign_in_failures_per_hour=1.0, sign_in_failure_burst=2) as live:
        alice = await live.sign_up("alice")
        for _ in range(2):
            r = await change(live, alice["token"], current_password="not it at all",
                             new_password="a new secret")
            assert r.status_code == 403
            assert r.json()["detail"] == "the current password is wrong"
        spent = await change(live, alice["token"], current_password=PASSWORD,
                             new_password="a new secret")
        assert spent.status_code == 429 and int(spent.headers["retry-after"]) >= 1
        assert await sign_in(live, "alice") == 429  # the same limit as sign-in's
    async with live_server(f"sqlite+aiosqlite:///{tmp_path / 'f.db'}") as live:
        assert await sign_in(live, "alice") == 200  # unchanged


async def test_change_password_needs_an_account_token(server: LiveServer) -> None:
    _alice, (a1,) = await server.user_with_devices("alice", 1)
    r = await change(server, a1.token, current_password=PASSWORD, new_password="a new secret")
    assert r.status_code == 403
    r = await server.http.put("/v1/me/password", json={"current_password": PASSWORD,
                                                       "new_password": "a new secret"})
    assert r.status_code == 401
    assert await sign_in(server, "alice") == 200


async def test_sign_out_other_devices(server: LiveServer) -> None:
    _bob, (b1,) = await server.user_with_devices("bob", 1)
    alice, (here, phone, tablet) = await server.user_with_devices("alice", 3)
    call_id = (await b1.request("call.start", to=[alice["user"]["id"]], media="video"))["call_id"]
    await phone.next_event("call.ring")
    await phone.request("call.answer", call_id=call_id)
    r = await change(server, alice["token"], current_password=PASSWORD, new_password="a new secret",
                     sign_out_other_devices=True, this_device_id=here.device_id)
    assert r.status_code == 204
    for gone in (phone, tablet):
        closed = await gone.next_event("connection.closed")
        assert (closed["code"], closed["reason"]) == (4009, "device removed")
    assert (await b1.next_event("call.ended"))["reason"] == "device_removed"
    assert (await here.request("ping"))["type"] == "pong"
    listed = await server.http.get("/v1/devices", headers=bearer(alice["token"]))
    assert [d["id"] for d in listed.json()] == [here.device_id]


@pytest.mark.parametrize(("body", "status"), [
    ({"current_password": PASSWORD, "new_password": "short"}, 422),
    ({"current_password": PASSWORD, "new_password": "x" * 257}, 422),
    ({"current_password": PASSWORD}, 422),
    ({"new_password": "a new secret"}, 422),
    ({"current_password": "", "new_password": "a new secret"}, 422),
    ({"current_password": PASSWORD, "new_password": "a new secret", "admin": True}, 422),
    ({"current_password": PASSWORD, "new_password": "a new secret", "this_device_id": "x"}, 422),
    ({"current_password": PASSWORD, "new_password": "a new secret",
      "sign_out_other_devices": True, "this_device_id": "d" * 65}, 422),
    ({"current_password": PASSWORD, "new_password": "a new secret",
      "sign_out_other_devices": "maybe"}, 422),
    ({"current_password": PASSWORD, "new_password": "a new secret",
      "sign_out_other_devices": True, "this_device_id": "no-such-device"}, 404),
])
async def test_change_password_refuses_bad_input_and_changes_nothing(
        server: LiveServer, body: dict[str, Any], status: int) -> None:
    alice, (a1,) = await server.user_with_devices("alice", 1)
    other = (await server.http.post("/v1/sessions", json={"username": "alice",
                                                          "password": PASSWORD})).json()["token"]
    r = await change(server, alice["token"], **body)
    assert r.status_code == status
    assert "detail" in r.json()
    assert await sign_in(server, "alice") == 200
    assert (await server.http.get("/v1/me", headers=bearer(other))).status_code == 200
    assert (await a1.request("ping"))["type"] == "pong"


async def test_someone_elses_device_cannot_be_kept(server: LiveServer) -> None:
    _, (b1,) = await server.user_with_devices("bob", 1)
    alice, (a1,) = await server.user_with_devices("alice", 1)
    r = await change(server, alice["token"], current_password=PASSWORD, new_password="a new secret",
                     sign_out_other_devices=True, this_device_id=b1.device_id)
    assert r.status_code == 404
    assert await sign_in(server, "alice") == 200
    assert (await a1.request("ping"))["type"] == "pong"
    assert (await b1.request("ping"))["type"] == "pong"


async def delete_me(server: LiveServer, token: str, body: Any) -> Any:
    return await server.http.request("DELETE", "/v1/me", json=body, headers=bearer(token))


async def test_delete_my_account(server: LiveServer) -> None:
    bob, (b1,) = await server.user_with_devices("bob", 1)
    alice, (a1, a2) = await server.user_with_devices("alice", 2)
    talk = (await b1.request("call.start", to=[alice["user"]["id"]], media="audio"))["call_id"]
    await a1.next_event("call.ring")
    await a1.request("call.answer", call_id=talk)

    r = await delete_me(server, alice["token"], {"password": PASSWORD})
    assert r.status_code == 204
    for device in (a1, a2):
        closed = await device.next_event("connection.closed")
        assert (closed["code"], closed["reason"]) == (4009, "account deleted")
    assert (await b1.next_event("call.ended"))["reason"] == "device_removed"
    assert (await server.http.get("/v1/me", headers=bearer(alice["token"]))).status_code == 401
    assert await sign_in(server, "alice") == 401
    found = await server.http.get("/v1/users/alice", headers=bearer(bob["token"]))
    assert found.status_code == 404
    # bob's recents keep the call, with a deleted account in it
    history = (await server.http.get("/v1/calls/history", headers=bearer(bob["token"]))).json()
    assert [item["call_id"] for item in history["items"]] == [talk]
    assert history["items"][0]["participants"] == [
        {"user_id": alice["user"]["id"], "username": None, "deleted": True}]
    # calling the deleted account by id: no such user
    with pytest.raises(SignalingError) as refused:
        await b1.request("call.start", to=[alice["user"]["id"]], media="audio")
    assert refused.value.code == "unknown_user"
    # the username is free again, for a new account
    again = await server.sign_up("alice")
    assert again["user"]["id"] != alice["user"]["id"]


@pytest.mark.parametrize(("body", "status"), [
    ({"password": "not my password"}, 403),
    ({"password": ""}, 422),
    ({}, 422),
    (None, 422),
    ({"password": PASSWORD, "everything": True}, 422),
    ({"password": "x" * 257}, 422),
    ({"password": 12345678}, 422),
])
async def test_delete_refuses_bad_input_and_deletes_nothing(server: LiveServer, body: Any,
                                                            status: int) -> None:
    alice, (a1,) = await server.user_with_devices("alice", 1)
    r = await delete_me(server, alice["token"], body)
    assert r.status_code == status
    assert "detail" in r.json()
    assert await sign_in(server, "alice") == 200
    assert (await a1.request("ping"))["type"] == "pong"


async def test_delete_needs_an_account_token(server: LiveServer) -> None:
    _alice, (a1,) = await server.user_with_devices("alice", 1)
    assert (await delete_me(server, a1.token, {"password": PASSWORD})).status_code == 403
    no_token = await server.http.request("DELETE", "/v1/me", json={"password": PASSWORD})
    assert no_token.status_code == 401
    assert await sign_in(server, "alice") == 200
    assert (await a1.request("ping"))["type"] == "pong"
