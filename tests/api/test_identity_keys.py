"""Device identity keys over real HTTP: published at registration or once later, listed per
user; malformed, oversized, changed and unauthorised keys refused, nothing stored changed."""

from __future__ import annotations

from typing import Any

import pytest

from tests.live import LiveServer

KEY_A = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"  # RFC 8032 §7.1 test 1's public key
KEY_B = "PUAXw-hDiVqStwqnTRt-vJyYLM8uxJaMwM1V8Sr0Zgw"  # test 2's


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def keys_of(server: LiveServer, token: str, user_id: str) -> Any:
    r = await server.http.get(f"/v1/users/{user_id}/identity-keys", headers=bearer(token))
    assert r.status_code == 200, r.text
    return r.json()


async def test_a_key_at_registration_and_one_given_later(server: LiveServer) -> None:
    alice = await server.sign_up("alice")
    bob = await server.sign_up("bob")
    r = await server.http.post("/v1/devices", headers=bearer(alice["token"]),
                               json={"kind": "sdk", "name": "bot", "identity_key": KEY_A})
    assert r.status_code == 201, r.text
    keyed = r.json()
    assert keyed["device"]["identity_key"] == KEY_A
    bare = await server.register_device(alice["token"], "laptop", "browser")
    assert bare["device"]["identity_key"] is None
    assert await keys_of(server, bob["token"], alice["user"]["id"]) == {
        "user_id": alice["user"]["id"],
        "devices": [{"device_id": keyed["device"]["id"], "identity_key": KEY_A, "agreement_key": None}],
    }

    path = f"/v1/devices/{bare['device']['id']}/identity-key"
    r = await server.http.put(path, headers=bearer(bare["token"]), json={"identity_key": KEY_B})
    assert r.status_code == 200 and r.json()["identity_key"] == KEY_B, r.text
    r = await server.http.put(path, headers=bearer(bare["token"]), json={"identity_key": KEY_B})
    assert r.status_code == 200  # the same key again: nothing changes
    for token in (bare["token"], alice["token"]):  # another key: never, not even by the account
        r = await server.http.put(path, headers=bearer(token), json={"identity_key": KEY_A})
        assert r.status_code == 409 and "never changed" in r.json()["detail"]
    listed = await server.http.get("/v1/devices", headers=bearer(alice["token"]))
    assert [d["identity_key"] for d in listed.json()] == [KEY_A, KEY_B]
    assert len((await keys_of(server, bob["token"], alice["user"]["id"]))["devices"]) == 2


async def test_who_may_set_and_read_keys(server: LiveServer) -> None:
    alice = await server.sign_up("alice")
    mallory = await server.sign_up("mallory")
    phone = await server.register_device(alice["token"], "phone")
    laptop = await server.register_device(alice["token"], "laptop")
    path = f"/v1/devices/{phone['device']['id']}/identity-key"
    refused = [
        (bearer(laptop["token"]), 403),  # another device of hers
        (bearer(mallory["token"]), 404),  # someone else's device: not told it exists
        (bearer("not-a-token"), 401),
        ({}, 401),
    ]
    for headers, status in refused:
        r = await server.http.put(path, headers=headers, json={"identity_key": KEY_A})
        assert r.status_code == status, (headers, r.text)
    for device_id in ("no-such-device", "x" * 65):
        r = await server.http.put(f"/v1/devices/{device_id}/identity-key",
                                  headers=bearer(alice["token"]), json={"identity_key": KEY_A})
        assert r.status_code == 404
    await server.http.delete(f"/v1/devices/{laptop['device']['id']}", headers=bearer(alice["token"]))
    r = await server.http.put(f"/v1/devices/{laptop['device']['id']}/identity-key",
                              headers=bearer(alice["token"]), json={"identity_key": KEY_A})
    assert r.status_code == 404  # removed
    assert (await keys_of(server, mallory["token"], alice["user"]["id"]))["devices"] == []

    r = await server.http.get(f"/v1/users/{alice['user']['id']}/identity-keys")
    assert r.status_code == 401
    for user_id in ("no-such-user", "u" * 65):
        r = await server.http.get(f"/v1/users/{user_id}/identity-keys", headers=bearer(alice["token"]))
        assert r.status_code == 404 and r.json()["detail"] == "no such user"
    await server.http.request("DELETE", "/v1/me", headers=bearer(mallory["token"]),
                              json={"password": "correct horse battery"})
    r = await server.http.get(f"/v1/users/{mallory['user']['id']}/identity-keys",
                              headers=bearer(alice["token"]))
    assert r.status_code == 404


@pytest.mark.parametrize("key", [
    "", "A" * 42, "A" * 44, "k" * 10_000,
    KEY_A[:-1] + "p",  # spare bits set: not the canonical base64url of 32 bytes
    KEY_A[:-1] + "=",  # padding
    "+" + KEY_A[1:],  # base64, not base64url
    42, None, ["x"],
])
async def test_malformed_keys_are_refused_and_nothing_changes(server: LiveServer, key: object) -> None:
    alice = await server.sign_up("alice")
    device = await server.register_device(alice["token"], "laptop")
    r = await server.http.put(f"/v1/devices/{device['device']['id']}/identity-key",
                              headers=bearer(device["token"]), json={"identity_key": key})
    assert r.status_code == 422, r.text
    r = await server.http.post("/v1/devices", headers=bearer(alice["token"]),
                               json={"kind": "sdk", "name": "bot", "identity_key": key})
    assert r.status_code == (201 if key is None else 422), r.text  # None: registered without one
    listed = await server.http.get("/v1/devices", headers=bearer(alice["token"]))
    assert all(d["identity_key"] is None for d in listed.json())
    r = await server.http.put(f"/v1/devices/{device['device']['id']}/identity-key",
                              headers=bearer(device["token"]), content=b"{not json")
    assert r.status_code == 422


def test_the_clients_take_as_many_keys_as_the_server_allows_devices() -> None:
    from facecall.api.routes_devices import MAX_DEVICES_PER_USER
    from facecall.e2ee.identity import MAX_DEVICES

    assert MAX_DEVICES == MAX_DEVICES_PER_USER
