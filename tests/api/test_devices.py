"""Devices and TURN credentials over real HTTP."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

import pytest

from tests.live import LiveServer


async def test_register_list_remove(server: LiveServer) -> None:
    account = await server.sign_up("ivan")
    auth = {"Authorization": f"Bearer {account['token']}"}
    phone = await server.register_device(account["token"], "phone", "ios")
    laptop = await server.register_device(account["token"], "laptop", "browser")
    listed = (await server.http.get("/v1/devices", headers=auth)).json()
    assert {d["name"] for d in listed} == {"phone", "laptop"}
    assert all(d["online"] is False for d in listed)

    r = await server.http.delete(f"/v1/devices/{phone['device']['id']}", headers=auth)
    assert r.status_code == 204
    listed = (await server.http.get("/v1/devices", headers=auth)).json()
    assert [d["id"] for d in listed] == [laptop["device"]["id"]]
    # the removed device's token is dead
    dead = await server.http.get("/v1/me", headers={"Authorization": f"Bearer {phone['token']}"})
    assert dead.status_code == 401


async def test_cannot_remove_someone_elses_device(server: LiveServer) -> None:
    a = await server.sign_up("judy")
    b = await server.sign_up("mallory")
    dev = await server.register_device(a["token"])
    r = await server.http.delete(f"/v1/devices/{dev['device']['id']}",
                                 headers={"Authorization": f"Bearer {b['token']}"})
    assert r.status_code == 404
    listed = await server.http.get("/v1/devices", headers={"Authorization": f"Bearer {a['token']}"})
    assert len(listed.json()) == 1


@pytest.mark.parametrize("body", [
    {"kind": "toaster", "name": "x"},
    {"kind": "ios", "name": ""},
    {"kind": "ios", "name": "n" * 65},
    {"kind": "ios"},
    {"kind": "ios", "name": "ok", "token": "mine"},
])
async def test_register_rejects_bad_input(server: LiveServer, body: dict[str, str]) -> None:
    a = await server.sign_up("niaj")
    auth = {"Authorization": f"Bearer {a['token']}"}
    assert (await server.http.post("/v1/devices", json=body, headers=auth)).status_code == 422
    assert (await server.http.get("/v1/devices", headers=auth)).json() == []


async def test_register_needs_auth(server: LiveServer) -> None:
    r = await server.http.post("/v1/devices", json={"kind": "ios", "name": "x"})
    assert r.status_code == 401


async def test_turn_credentials_follow_the_rest_scheme(server: LiveServer) -> None:
    a = await server.sign_up("olivia")
    dev = await server.register_device(a["token"])
    r = await server.http.get("/v1/turn/credentials",
                              headers={"Authorization": f"Bearer {dev['token']}"})
    assert r.status_code == 200
    creds = r.json()
    expiry, user = creds["username"].split(":", 1)
    assert user == a["user"]["id"]
    assert int(expiry) > time.time()
    secret = server.settings.turn_secrets[0].encode()
    expected = base64.b64encode(hmac.new(secret, creds["username"].encode(), hashlib.sha1).digest())
    assert creds["password"] == expected.decode()
    assert any(s.get("credential") == creds["password"] for s in creds["ice_servers"])


async def test_turn_credentials_need_a_device_token(server: LiveServer) -> None:
    a = await server.sign_up("peggy")
    r = await server.http.get("/v1/turn/credentials", headers={"Authorization": f"Bearer {a['token']}"})
    assert r.status_code == 403
    assert (await server.http.get("/v1/turn/credentials")).status_code == 401


@pytest.mark.parametrize("name", ["\u202ephone", "a\tb", "   ", "nul\x00"])
async def test_device_names_are_clean(server: LiveServer, name: str) -> None:
    account = await server.sign_up("namer")
    auth = {"Authorization": f"Bearer {account['token']}"}
    r = await server.http.post("/v1/devices", json={"kind": "sdk", "name": name}, headers=auth)
    assert r.status_code == 422
    assert (await server.http.get("/v1/devices", headers=auth)).json() == []


async def test_a_device_token_cannot_mint_or_revoke_devices(server: LiveServer) -> None:
    """A device's token lives on the device and never expires: if it leaks, it must not mint
    more credentials or remove the owner's other devices. That takes an account token."""
    account = await server.sign_up("owner")
    phone = await server.register_device(account["token"], "phone")
    laptop = await server.register_device(account["token"], "laptop")
    as_phone = {"Authorization": f"Bearer {phone['token']}"}
    minted = await server.http.post("/v1/devices", json={"kind": "sdk", "name": "x"}, headers=as_phone)
    assert minted.status_code == 403
    assert minted.json()["detail"] == "an account token is required (sign in)"
    removed = await server.http.delete(f"/v1/devices/{laptop['device']['id']}", headers=as_phone)
    assert removed.status_code == 403
    listed = await server.http.get("/v1/devices", headers=as_phone)
    assert {d["name"] for d in listed.json()} == {"phone", "laptop"}  # nothing changed


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def listed(server: LiveServer, token: str) -> list[dict[str, Any]]:
    """``GET /v1/devices`` as the account sees it: every field of every device."""
    r = await server.http.get("/v1/devices", headers=bearer(token))
    assert r.status_code == 200, r.text
    devices: list[dict[str, Any]] = r.json()
    return devices


async def test_rename(server: LiveServer) -> None:
    account = await server.sign_up("ruth")
    phone = await server.register_device(account["token"], "phone")
    laptop = await server.register_device(account["token"], "laptop")
    connection = await server.device(phone["token"])  # online: the answer says so, as the list does
    try:
        before = {d["id"]: d for d in await listed(server, account["token"])}
        phone_id = phone["device"]["id"]
        r = await server.http.patch(f"/v1/devices/{phone_id}", json={"name": "  Kitchen  iPad "},
                                    headers=bearer(account["token"]))
        assert r.status_code == 200
        assert r.json() == {**before[phone_id], "name": "Kitchen  iPad", "online": True}
        assert {d["id"]: d for d in await listed(server, account["token"])} == {**before, phone_id: r.json()}
    finally:
        await connection.close()
    # the longest name registration takes is fine, and so is saving it again unchanged
    for _ in range(2):
        again = await server.http.patch(f"/v1/devices/{laptop['device']['id']}", json={"name": "n" * 64},
                                        headers=bearer(account["token"]))
        assert (again.status_code, again.json()["name"], again.json()["online"]) == (200, "n" * 64, False)


async def test_a_device_token_renames_its_own_device_only(server: LiveServer) -> None:
    """Renaming mints and revokes nothing: a device may rename itself (as it may change the
    display name), but not the owner's other devices."""
    account = await server.sign_up("sam")
    phone = await server.register_device(account["token"], "phone")
    laptop = await server.register_device(account["token"], "laptop")
    mine = await server.http.patch(f"/v1/devices/{phone['device']['id']}", json={"name": "my phone"},
                                   headers=bearer(phone["token"]))
    assert (mine.status_code, mine.json()["name"]) == (200, "my phone")
    other = await server.http.patch(f"/v1/devices/{laptop['device']['id']}", json={"name": "mine now"},
                                    headers=bearer(phone["token"]))
    assert other.status_code == 403
    assert other.json()["detail"] == "an account token is required (sign in)"
    assert [d["name"] for d in await listed(server, account["token"])] == ["my phone", "laptop"]


@pytest.mark.parametrize("body", [
    {}, {"name": ""}, {"name": "   "}, {"name": "n" * 65}, {"name": 5}, {"name": None},
    {"name": ["phone"]}, {"name": "\u202ephone"}, {"name": "two\nlines"}, {"name": "nul\x00"},
    {"name": "ok", "kind": "ios"}, {"name": "ok", "token": "mine"},
])
async def test_rename_refuses_bad_names(server: LiveServer, body: dict[str, Any]) -> None:
    account = await server.sign_up("tess")
    phone = await server.register_device(account["token"], "phone")
    before = await listed(server, account["token"])
    r = await server.http.patch(f"/v1/devices/{phone['device']['id']}", json=body,
                                headers=bearer(account["token"]))
    assert r.status_code == 422
    assert "detail" in r.json()
    assert await listed(server, account["token"]) == before


async def test_rename_refuses_a_body_that_is_not_small_json(server: LiveServer) -> None:
    account = await server.sign_up("tess")
    phone = await server.register_device(account["token"], "phone")
    before = await listed(server, account["token"])
    path = f"/v1/devices/{phone['device']['id']}"
    as_json = {**bearer(account["token"]), "content-type": "application/json"}
    for content in (b'{"name": "oops"', b"", b"name=oops", b'["name", "oops"]'):
        r = await server.http.patch(path, content=content, headers=as_json)
        assert r.status_code == 422, content
    huge = await server.http.patch(path, content=b'{"name": "' + b"x" * 2_000_000 + b'"}', headers=as_json)
    assert huge.status_code == 413
    assert await listed(server, account["token"]) == before


async def test_rename_of_no_device_of_mine_is_not_found(server: LiveServer) -> None:
    """Unknown, overlong, removed and another user's ids are answered alike: nobody learns
    whether someone else's device exists."""
    victim = await server.sign_up("uma")
    theirs = await server.register_device(victim["token"], "uma's phone")
    account = await server.sign_up("vic")
    mine = await server.register_device(account["token"], "phone")
    gone = await server.register_device(account["token"], "old laptop")
    removed = await server.http.delete(f"/v1/devices/{gone['device']['id']}",
                                       headers=bearer(account["token"]))
    assert removed.status_code == 204
    before = (await listed(server, victim["token"]), await listed(server, account["token"]))
    for device_id in ("no-such-device", "d" * 65, gone["device"]["id"], theirs["device"]["id"]):
        r = await server.http.patch(f"/v1/devices/{device_id}", json={"name": "pwned"},
                                    headers=bearer(account["token"]))
        assert (r.status_code, r.json()) == (404, {"detail": "no such device"}), device_id
    assert (await listed(server, victim["token"]), await listed(server, account["token"])) == before
    assert [d["id"] for d in before[1]] == [mine["device"]["id"]]


async def test_rename_needs_a_working_token(server: LiveServer) -> None:
    account = await server.sign_up("wendy")
    phone = await server.register_device(account["token"], "phone")
    laptop = await server.register_device(account["token"], "laptop")
    session = await server.http.post("/v1/sessions",
                                     json={"username": "wendy", "password": "correct horse battery"})
    signed_out = session.json()["token"]
    assert (await server.http.delete("/v1/sessions/current", headers=bearer(signed_out))).status_code == 204
    assert (await server.http.delete(f"/v1/devices/{laptop['device']['id']}",
                                     headers=bearer(account["token"]))).status_code == 204
    before = await listed(server, account["token"])
    path = f"/v1/devices/{phone['device']['id']}"
    assert (await server.http.patch(path, json={"name": "x"})).status_code == 401
    for token in ("nonsense", "t" * 200, signed_out, laptop["token"]):
        r = await server.http.patch(path, json={"name": "x"}, headers=bearer(token))
        assert r.status_code == 401, token
        assert r.headers["www-authenticate"] == "Bearer"
    assert await listed(server, account["token"]) == before
