"""Devices and TURN credentials over real HTTP."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

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
