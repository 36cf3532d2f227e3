"""Device agreement keys over real HTTP (``PUT /v1/devices/{id}/agreement-key``; docs/sframe.md,
"Key distribution (the core)"): a certificate the device's identity key signed is stored,
replaced by a newer one and listed with the identity keys; every refusal (malformed, oversized,
uncertified, small-order, no identity key, unauthorised) is a clear error, the server stays up
and nothing stored changes."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from facecall.client.api import ApiClient
from facecall.client.errors import ApiError
from facecall.e2ee.agreement import (
    SMALL_ORDER_U,
    P,
    agreement_statement,
    b64,
    certify_agreement_key,
    new_agreement_key,
    verify_agreement_key,
)
from facecall.e2ee.identity import new_private_key, public_key_text
from tests.live import LiveServer


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def keyed_device(server: LiveServer, account_token: str,
                       name: str = "bot") -> tuple[dict[str, Any], Ed25519PrivateKey]:
    """A device registered with an identity key of its own: ``({device, token}, private key)``."""
    identity = new_private_key()
    r = await server.http.post("/v1/devices", headers=bearer(account_token), json={
        "kind": "sdk", "name": name, "identity_key": public_key_text(identity)})
    assert r.status_code == 201, r.text
    return r.json(), identity


def certificate(identity: Ed25519PrivateKey, user_id: str, device_id: str) -> dict[str, str]:
    """The body of a PUT: a fresh agreement key, certified by ``identity`` for these ids."""
    cert = certify_agreement_key(identity, user_id, device_id, new_agreement_key())
    return {"key": cert["key"], "signature": cert["signature"]}


def signed(identity: Ed25519PrivateKey, user_id: str, device_id: str, key: str) -> dict[str, str]:
    """A body certifying the 43-character ``key`` as is (even one of small order)."""
    return {"key": key, "signature": b64(identity.sign(agreement_statement(user_id, device_id, key)))}


async def put(server: LiveServer, token: str | None, device_id: str, body: Any) -> Any:
    headers = bearer(token) if token is not None else {}
    return await server.http.put(f"/v1/devices/{device_id}/agreement-key", headers=headers, json=body)


async def stored(server: LiveServer, account_token: str, user_id: str) -> Any:
    """What the server holds for a user: its devices as listed, and the identity-key listing."""
    devices = await server.http.get("/v1/devices", headers=bearer(account_token))
    keys = await server.http.get(f"/v1/users/{user_id}/identity-keys", headers=bearer(account_token))
    assert devices.status_code == keys.status_code == 200, (devices.text, keys.text)
    return devices.json(), keys.json()


def small_order_keys() -> list[str]:
    """Every 43-character encoding of a small-order u (top bit clear or set; p and p + 1)."""
    values = {u for u in SMALL_ORDER_U} | {u | 1 << 255 for u in SMALL_ORDER_U} | {P, P + 1}
    return sorted(b64(u.to_bytes(32, "little")) for u in values)


async def test_a_device_publishes_its_certificate_and_others_check_it(server: LiveServer) -> None:
    alice = await server.sign_up("alice")
    bob = await server.sign_up("bob")
    user_id = alice["user"]["id"]
    device, identity = await keyed_device(server, alice["token"])
    device_id = device["device"]["id"]
    assert device["device"]["agreement_key"] is None
    body = certificate(identity, user_id, device_id)
    r = await put(server, device["token"], device_id, body)  # the device's own token
    assert r.status_code == 200, r.text
    assert r.json()["id"] == device_id and r.json()["agreement_key"] == body

    r = await server.http.get(f"/v1/users/{user_id}/identity-keys", headers=bearer(bob["token"]))
    assert r.status_code == 200, r.text
    listed = r.json()["devices"]
    assert listed == [{"device_id": device_id, "identity_key": public_key_text(identity),
                       "agreement_key": body}]
    got = verify_agreement_key(listed[0]["identity_key"],  # what bob's device does with it
                               {"user_id": user_id, "device_id": device_id, **body},
                               user_id=user_id, device_id=device_id)
    assert got.text == body["key"]
    devices, _ = await stored(server, alice["token"], user_id)
    assert [d["agreement_key"] for d in devices] == [body]


async def test_a_newer_certificate_replaces_the_last(server: LiveServer) -> None:
    alice = await server.sign_up("alice")
    user_id = alice["user"]["id"]
    device, identity = await keyed_device(server, alice["token"])
    other, _ = await keyed_device(server, alice["token"], "laptop")
    device_id = device["device"]["id"]
    first = certificate(identity, user_id, device_id)
    assert (await put(server, device["token"], device_id, first)).status_code == 200
    second = certificate(identity, user_id, device_id)
    r = await put(server, alice["token"], device_id, second)  # the account may, too
    assert r.status_code == 200 and r.json()["agreement_key"] == second, r.text
    again = await put(server, alice["token"], device_id, second)  # the same again: the same
    assert again.status_code == 200 and again.json()["agreement_key"] == second
    devices, keys = await stored(server, alice["token"], user_id)
    assert [d["agreement_key"] for d in devices] == [second, None]
    assert [d["agreement_key"] for d in keys["devices"]] == [second, None]
    assert [d["device_id"] for d in keys["devices"]] == [device_id, other["device"]["id"]]


async def test_the_sdk_publishes_a_certificate(server: LiveServer) -> None:
    api = ApiClient(server.base_url)
    try:
        alice = await api.sign_up("alice", "correct horse battery")
        identity = new_private_key()
        device = await api.register_device(alice["token"], "bot", identity_key=public_key_text(identity))
        user_id, device_id = alice["user"]["id"], device["device"]["id"]
        body = certificate(identity, user_id, device_id)
        published = await api.set_agreement_key(device["token"], device_id, body["key"], body["signature"])
        assert published["agreement_key"] == body
        listed = await api.identity_keys(device["token"], user_id)
        assert listed["devices"][0]["agreement_key"] == body
        forged = certificate(new_private_key(), user_id, device_id)
        with pytest.raises(ApiError) as refused:
            await api.set_agreement_key(device["token"], device_id, forged["key"], forged["signature"])
        assert refused.value.status == 422 and "does not verify" in str(refused.value)
        assert (await api.identity_keys(device["token"], user_id))["devices"][0]["agreement_key"] == body
    finally:
        await api.close()


KEY = "A" * 42 + "E"  # a well-formed key: 32 bytes (its signature matters not, the form is refused first)
SIG = "A" * 85 + "Q"


@pytest.mark.parametrize("body", [
    {"key": KEY[:-1], "signature": SIG},  # 42 characters
    {"key": KEY + "A", "signature": SIG},  # 44
    {"key": KEY, "signature": SIG[:-1]},  # 85
    {"key": KEY, "signature": SIG + "A"},  # 87
    {"key": "", "signature": SIG},
    {"key": "k" * 10_000, "signature": SIG},
    {"key": KEY[:-1] + "B", "signature": SIG},  # spare bits set: not canonical
    {"key": KEY, "signature": SIG[:-1] + "B"},
    {"key": KEY[:-1] + "=", "signature": SIG},  # padding
    {"key": "+" + KEY[1:], "signature": SIG},  # base64, not base64url
    {"key": KEY, "signature": "/" + SIG[1:]},
    {"key": KEY, "signature": SIG, "user_id": "someone"},  # no other field
    {"key": KEY, "signature": SIG, "extra": 1},
    {"key": KEY},
    {"signature": SIG},
    {},
    {"key": 42, "signature": SIG},
    {"key": KEY, "signature": None},
    [KEY, SIG],
    "not an object",
    None,
])
async def test_malformed_bodies_are_refused_and_nothing_changes(server: LiveServer, body: Any) -> None:
    alice = await server.sign_up("alice")
    user_id = alice["user"]["id"]
    device, identity = await keyed_device(server, alice["token"])
    device_id = device["device"]["id"]
    assert (await put(server, device["token"], device_id, certificate(identity, user_id, device_id))
            ).status_code == 200
    before = await stored(server, alice["token"], user_id)
    r = await put(server, device["token"], device_id, body)
    assert r.status_code == 422, r.text
    assert isinstance(r.json()["detail"], list) and r.json()["detail"], r.text  # names the field
    assert await stored(server, alice["token"], user_id) == before


async def test_unparsable_and_oversized_bodies_are_refused(server: LiveServer) -> None:
    alice = await server.sign_up("alice")
    user_id = alice["user"]["id"]
    device, identity = await keyed_device(server, alice["token"])
    device_id = device["device"]["id"]
    before = await stored(server, alice["token"], user_id)
    path = f"/v1/devices/{device_id}/agreement-key"
    r = await server.http.put(path, headers=bearer(device["token"]), content=b"{not json")
    assert r.status_code == 422, r.text
    huge = {"key": "A" * 100_000, "signature": SIG}
    r = await server.http.put(path, headers=bearer(device["token"]), json=huge)
    assert r.status_code == 413 and "larger than" in r.json()["detail"], r.text
    assert await stored(server, alice["token"], user_id) == before
    r = await put(server, device["token"], device_id, certificate(identity, user_id, device_id))
    assert r.status_code == 200, r.text  # the server is still there


async def test_certificates_the_identity_key_did_not_sign_are_refused(server: LiveServer) -> None:
    alice = await server.sign_up("alice")
    bob = await server.sign_up("bob")
    user_id = alice["user"]["id"]
    device, identity = await keyed_device(server, alice["token"])
    other, other_identity = await keyed_device(server, alice["token"], "laptop")
    bobs, bobs_identity = await keyed_device(server, bob["token"])
    device_id, other_id = device["device"]["id"], other["device"]["id"]
    good = certificate(identity, user_id, device_id)
    assert (await put(server, device["token"], device_id, good)).status_code == 200
    before = await stored(server, alice["token"], user_id)
    key = good["key"]
    uncertified = [
        signed(other_identity, user_id, device_id, key),  # another device's identity key signed
        signed(bobs_identity, user_id, device_id, key),  # another user's device's key
        signed(new_private_key(), user_id, device_id, key),  # a key no device has
        signed(identity, user_id, other_id, key),  # this identity key, for another device
        signed(identity, bob["user"]["id"], device_id, key),  # for another user
        signed(identity, bob["user"]["id"], bobs["device"]["id"], key),
        {"key": certificate(identity, user_id, device_id)["key"], "signature": good["signature"]},
        {"key": key, "signature": "A" * 85 + "A"},  # well-formed, signs nothing
    ]
    for token in (device["token"], alice["token"]):
        for body in uncertified:
            r = await put(server, token, device_id, body)
            assert r.status_code == 422, (body, r.text)
            assert r.json()["detail"].startswith("the agreement key certificate does not verify")
            assert "not certified by its identity key" in r.json()["detail"]
            assert await stored(server, alice["token"], user_id) == before
    # another device's certificate, put on that device, is refused there too: its own key did
    # not sign it
    r = await put(server, alice["token"], other_id, signed(identity, user_id, other_id, key))
    assert r.status_code == 422 and await stored(server, alice["token"], user_id) == before


async def test_keys_of_small_order_are_refused(server: LiveServer) -> None:
    alice = await server.sign_up("alice")
    user_id = alice["user"]["id"]
    device, identity = await keyed_device(server, alice["token"])
    device_id = device["device"]["id"]
    before = await stored(server, alice["token"], user_id)
    keys = small_order_keys()
    assert len(keys) == 12
    for key in keys:  # each signed by the device's own identity key, so only the order is wrong
        r = await put(server, device["token"], device_id, signed(identity, user_id, device_id, key))
        assert r.status_code == 422, (key, r.text)
        assert "small order" in r.json()["detail"]
        assert await stored(server, alice["token"], user_id) == before


async def test_a_device_without_an_identity_key_is_409(server: LiveServer) -> None:
    alice = await server.sign_up("alice")
    user_id = alice["user"]["id"]
    bare = await server.register_device(alice["token"], "laptop")
    device_id = bare["device"]["id"]
    before = await stored(server, alice["token"], user_id)
    body = certificate(new_private_key(), user_id, device_id)
    for token in (bare["token"], alice["token"]):
        r = await put(server, token, device_id, body)
        assert r.status_code == 409 and "publish the identity key first" in r.json()["detail"], r.text
        assert await stored(server, alice["token"], user_id) == before
    identity = new_private_key()  # once it has published one, its certificates are taken
    r = await server.http.put(f"/v1/devices/{device_id}/identity-key", headers=bearer(bare["token"]),
                              json={"identity_key": public_key_text(identity)})
    assert r.status_code == 200, r.text
    assert (await put(server, bare["token"], device_id, body)).status_code == 422
    r = await put(server, bare["token"], device_id, certificate(identity, user_id, device_id))
    assert r.status_code == 200, r.text


async def test_who_may_publish(server: LiveServer) -> None:
    alice = await server.sign_up("alice")
    mallory = await server.sign_up("mallory")
    user_id = alice["user"]["id"]
    phone, identity = await keyed_device(server, alice["token"], "phone")
    laptop, laptop_identity = await keyed_device(server, alice["token"], "laptop")
    mallorys, _ = await keyed_device(server, mallory["token"], "mallory's")
    phone_id = phone["device"]["id"]
    body = certificate(identity, user_id, phone_id)
    before = await stored(server, alice["token"], user_id)
    refused = [
        (laptop["token"], 403),  # another device of hers, even with a good certificate
        (mallory["token"], 404),  # someone else's device: not told it exists
        (mallorys["token"], 403),  # another user's device token: not this device
        ("not-a-token", 401),
        (None, 401),
    ]
    for token, status in refused:
        r = await put(server, token, phone_id, body)
        assert r.status_code == status, (token, r.text)
        assert isinstance(r.json()["detail"], str) and r.json()["detail"]
        assert await stored(server, alice["token"], user_id) == before
    for device_id in ("no-such-device", "x" * 65):
        r = await put(server, alice["token"], device_id, body)
        assert r.status_code == 404 and r.json()["detail"] == "no such device"
    r = await server.http.delete(f"/v1/devices/{phone_id}", headers=bearer(alice["token"]))
    assert r.status_code == 204
    r = await put(server, alice["token"], phone_id, body)
    assert r.status_code == 404 and r.json()["detail"] == "no such device"  # removed
    r = await put(server, phone["token"], phone_id, body)
    assert r.status_code == 401  # its token went with it
    r = await put(server, laptop["token"], laptop["device"]["id"],
                  certificate(laptop_identity, user_id, laptop["device"]["id"]))
    assert r.status_code == 200, r.text
