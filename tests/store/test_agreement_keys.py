"""Device agreement keys in the store (migration 0008): set and replaced for the owner's live
devices with an identity key, listed with the device; refused input changes nothing; the
migration keeps every row both ways. Each test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

from dataclasses import replace

import pytest
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from facecall.store import InvalidInput, Store
from facecall.store.db import create_engine
from facecall.store.migrate import migrate_url
from tests.store.factories import T0

IDENTITY_KEY = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"  # RFC 8032 §7.1 test 1's public key
# the store checks no signature (the API does): any text of the right length stands in
KEY_A, SIG_A = "A" * 43, "a" * 86
KEY_B, SIG_B = "B" * 43, "b" * 86


async def test_an_agreement_key_is_set_and_replaced(store: Store) -> None:
    alice = await store.create_user("alice", "Alice", "h", T0)
    device = await store.create_device(alice.id, "sdk", "bot", T0, IDENTITY_KEY)
    assert device.agreement_key is None and device.agreement_signature is None
    stored = await store.set_agreement_key(alice.id, device.id, KEY_A, SIG_A)
    assert stored == replace(device, agreement_key=KEY_A, agreement_signature=SIG_A)
    assert await store.get_device(device.id) == stored
    replaced = await store.set_agreement_key(alice.id, device.id, KEY_B, SIG_B)
    assert replaced == replace(device, agreement_key=KEY_B, agreement_signature=SIG_B)
    assert await store.list_devices(alice.id) == [replaced]
    assert (await store.list_devices_of_users([alice.id]))[alice.id] == [replaced]


async def test_only_the_owners_live_devices_with_an_identity_key_take_one(store: Store) -> None:
    alice = await store.create_user("alice", "Alice", "h", T0)
    bob = await store.create_user("bob", "Bob", "h", T0)
    keyed = await store.create_device(alice.id, "sdk", "bot", T0, IDENTITY_KEY)
    bare = await store.create_device(alice.id, "browser", "laptop", T0 + 1)
    gone = await store.create_device(alice.id, "ios", "old phone", T0 + 2, IDENTITY_KEY)
    assert await store.remove_device(alice.id, gone.id, T0 + 3)

    assert await store.set_agreement_key(bob.id, keyed.id, KEY_A, SIG_A) is None  # not bob's
    assert await store.set_agreement_key(alice.id, "no-such-device", KEY_A, SIG_A) is None
    assert await store.set_agreement_key(alice.id, gone.id, KEY_A, SIG_A) is None  # removed
    kept = await store.set_agreement_key(alice.id, bare.id, KEY_A, SIG_A)  # no identity key
    assert kept == bare and kept.identity_key is None and kept.agreement_key is None
    assert await store.get_device(keyed.id) == keyed  # bob's attempt changed nothing
    assert await store.get_device(gone.id) == replace(gone, removed_at=T0 + 3)


@pytest.mark.parametrize(("key", "signature", "field"), [
    ("A" * 44, SIG_A, "agreement_key"),
    ("", SIG_A, "agreement_key"),
    (None, SIG_A, "agreement_key"),
    (KEY_A, "a" * 87, "agreement_signature"),
    (KEY_A, "", "agreement_signature"),
    (KEY_A, 42, "agreement_signature"),
    (KEY_A, "a" * 85 + "\x00", "agreement_signature"),
])
async def test_bad_values_are_refused_and_nothing_changes(
    store: Store, key: object, signature: object, field: str,
) -> None:
    alice = await store.create_user("alice", "Alice", "h", T0)
    device = await store.create_device(alice.id, "sdk", "bot", T0, IDENTITY_KEY)
    stored = await store.set_agreement_key(alice.id, device.id, KEY_A, SIG_A)
    with pytest.raises(InvalidInput, match=field):
        await store.set_agreement_key(alice.id, device.id, key, signature)  # type: ignore[arg-type]
    assert await store.get_device(device.id) == stored


def _device_columns(conn: Connection) -> set[str]:
    return {column["name"] for column in inspect(conn).get_columns("user_devices")}


async def _columns(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_device_columns)
    finally:
        await engine.dispose()


async def test_migration_0008_adds_and_drops_the_columns_keeping_devices(database_url: str) -> None:
    """0008 adds two nullable columns (existing devices have none) and its downgrade drops
    them in place, every device row and its identity key kept."""
    assert await migrate_url(database_url, "upgrade", "0007") == "0007"
    assert {"agreement_key", "agreement_signature"}.isdisjoint(await _columns(database_url))
    assert await migrate_url(database_url, "upgrade", "0008") == "0008"
    store = await Store.open(database_url, migrate=False)
    try:
        alice = await store.create_user("alice", "Alice", "h", T0)
        device = await store.create_device(alice.id, "sdk", "bot", T0, IDENTITY_KEY)
        assert (await store.get_device(device.id)).agreement_key is None  # type: ignore[union-attr]
        await store.set_agreement_key(alice.id, device.id, KEY_A, SIG_A)
    finally:
        await store.close()
    assert await migrate_url(database_url, "downgrade", "0007") == "0007"
    assert {"agreement_key", "agreement_signature"}.isdisjoint(await _columns(database_url))
    assert await migrate_url(database_url, "upgrade", "0008") == "0008"
    store = await Store.open(database_url, migrate=False)
    try:  # the certificate went with the columns; the device and its identity key stayed
        assert await store.get_device(device.id) == device
    finally:
        await store.close()
