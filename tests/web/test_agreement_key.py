"""The browser's agreement key (web/js/identity.js; docs/sframe.md, docs/security.md): made once
per device with WebCrypto (X25519, not extractable), kept in IndexedDB beside the identity key,
certified by the identity key and published, so that other devices can seal group media's
SFrame keys to it. The certificate the server lists checks out with the identity key the
browser published; a reload keeps the same key; a browser that kept its identity key from before
agreement keys existed makes one and publishes it on its next load."""

from __future__ import annotations

import sqlite3
from typing import Any

from playwright.async_api import expect

from facecall.e2ee.agreement import verify_agreement_key
from tests.live import LiveServer
from tests.web.conftest import PersonFactory
from tests.web.people import STEP
from tests.web.test_identity import device_of, identity


async def listed(server: LiveServer, token: str, user_id: str) -> list[dict[str, Any]]:
    response = await server.http.get(f"/v1/users/{user_id}/identity-keys",
                                     headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    devices: list[dict[str, Any]] = response.json()["devices"]
    return devices


async def test_a_browser_publishes_a_certified_agreement_key_and_keeps_it(
        people: PersonFactory, server: LiveServer, tmp_path: Any) -> None:
    alice = await people("alice")
    own, device = await identity(alice), await device_of(alice)
    [entry] = await listed(server, device["token"], device["userId"])
    assert entry["device_id"] == own["deviceId"] and entry["identity_key"] == own["key"]
    certificate = entry["agreement_key"]
    assert certificate is not None
    key = verify_agreement_key(own["key"], {"user_id": device["userId"], "device_id": own["deviceId"],
                                            **certificate},
                               user_id=device["userId"], device_id=own["deviceId"])
    assert len(key.text) == 43

    # a reload keeps the key (IndexedDB) and does not publish another
    await alice.page.reload()
    await expect(alice.page.locator("#home-view")).to_be_visible(timeout=STEP)
    [again] = await listed(server, device["token"], device["userId"])
    assert again["agreement_key"] == certificate

    # a browser from before agreement keys (its record has none, the server lists none) makes
    # one on its next load and publishes it
    with sqlite3.connect(tmp_path / "facecall.db") as db:
        db.execute("UPDATE user_devices SET agreement_key = NULL, agreement_signature = NULL "
                   "WHERE id = ?", (own["deviceId"],))
    await alice.page.evaluate("""async () => {
        const db = await new Promise((resolve, reject) => {
            const request = indexedDB.open("facecall-identity", 1);
            request.onsuccess = () => resolve(request.result);
            request.onerror = () => reject(request.error);
        });
        const store = db.transaction("keys", "readwrite").objectStore("keys");
        const id = JSON.parse(localStorage.getItem("facecall.device")).id;
        const record = await new Promise((resolve) => {
            store.get(id).onsuccess = (e) => resolve(e.target.result);
        });
        delete record.agreement;
        delete record.agreementPublished;
        await new Promise((resolve) => { store.put(record).onsuccess = resolve; });
        db.close();
    }""")
    await alice.page.reload()
    await expect(alice.page.locator("#home-view")).to_be_visible(timeout=STEP)
    [third] = await listed(server, device["token"], device["userId"])
    assert third["agreement_key"] is not None and third["agreement_key"] != certificate
    assert third["identity_key"] == own["key"] and (await identity(alice))["key"] == own["key"]
    verify_agreement_key(own["key"], {"user_id": device["userId"], "device_id": own["deviceId"],
                                      **third["agreement_key"]},
                         user_id=device["userId"], device_id=own["deviceId"])
