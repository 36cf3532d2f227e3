"""Devices: register, list, rename, remove (revoking tokens), touch."""

from __future__ import annotations

from dataclasses import replace

import pytest

from facecall.store import InvalidInput, NotFound, Store
from tests.store.factories import T0, token_hash


async def test_create_list_get_devices(store: Store) -> None:
    user = await store.create_user("alice", "Alice", "h", T0)
    other = await store.create_user("bob", "Bob", "h", T0)
    phone = await store.create_device(user.id, "ios", "iPhone", T0 + 1)
    laptop = await store.create_device(user.id, "desktop", "Laptop", T0 + 2)
    bobs = await store.create_device(other.id, "cli", "terminal", T0 + 3)
    assert phone.last_seen_at == phone.created_at == T0 + 1 and phone.removed_at is None
    assert await store.list_devices(user.id) == [phone, laptop]
    assert await store.get_device(laptop.id) == laptop
    assert await store.get_device("nope") is None
    assert await store.list_devices_of_users([user.id, other.id, "ghost"]) == {
        user.id: [phone, laptop],
        other.id: [bobs],
        "ghost": [],
    }
    assert await store.list_devices("ghost") == []


async def test_device_for_unknown_user_or_bad_kind(store: Store) -> None:
    with pytest.raises(NotFound, match="user"):
        await store.create_device("no-such-user", "browser", "x", T0)
    user = await store.create_user("alice", "Alice", "h", T0)
    with pytest.raises(InvalidInput, match="kind"):
        await store.create_device(user.id, "toaster", "x", T0)
    with pytest.raises(InvalidInput, match="name"):
        await store.create_device(user.id, "browser", "n" * 129, T0)
    assert await store.list_devices(user.id) == []


async def test_remove_device_revokes_its_tokens_only(store: Store) -> None:
    user = await store.create_user("alice", "Alice", "h", T0)
    other = await store.create_user("bob", "Bob", "h", T0)
    phone = await store.create_device(user.id, "android", "Pixel", T0)
    web = await store.create_device(user.id, "browser", "Firefox", T0)
    await store.create_token(token_hash("phone"), user.id, phone.id, T0, None)
    await store.create_token(token_hash("web"), user.id, web.id, T0, None)
    await store.create_token(token_hash("account"), user.id, None, T0, None)

    assert await store.remove_device(other.id, phone.id, T0 + 5) is False  # not bob's device
    assert await store.resolve_token(token_hash("phone"), T0 + 6) is not None

    assert await store.remove_device(user.id, phone.id, T0 + 10) is True
    assert await store.remove_device(user.id, phone.id, T0 + 11) is False  # already removed
    assert await store.remove_device(user.id, "ghost", T0 + 11) is False
    assert await store.list_devices(user.id) == [web]
    removed = await store.get_device(phone.id)
    assert removed is not None and removed.removed_at == T0 + 10
    assert await store.resolve_token(token_hash("phone"), T0 + 12) is None
    assert await store.resolve_token(token_hash("web"), T0 + 12) is not None
    assert await store.resolve_token(token_hash("account"), T0 + 12) is not None


async def test_rename_device(store: Store) -> None:
    user = await store.create_user("alice", "Alice", "h", T0)
    other = await store.create_user("bob", "Bob", "h", T0)
    phone = await store.create_device(user.id, "ios", "iPhone", T0)
    laptop = await store.create_device(user.id, "desktop", "Laptop", T0 + 1)
    renamed = await store.rename_device(user.id, phone.id, "Kitchen iPad")
    assert renamed == replace(phone, name="Kitchen iPad")
    assert await store.rename_device(user.id, phone.id, "Kitchen iPad") == renamed  # unchanged: still found
    assert await store.list_devices(user.id) == [renamed, laptop]

    assert await store.rename_device(other.id, phone.id, "bob's now") is None  # not bob's device
    assert await store.rename_device(user.id, "ghost", "x") is None
    assert await store.rename_device(user.id, "d" * 65, "x") is None
    assert await store.remove_device(user.id, laptop.id, T0 + 5) is True
    assert await store.rename_device(user.id, laptop.id, "back") is None  # removed
    for bad in ("", "n" * 129, 5):
        with pytest.raises(InvalidInput, match="name"):
            await store.rename_device(user.id, phone.id, bad)  # type: ignore[arg-type]
    assert await store.get_device(phone.id) == renamed
    gone = await store.get_device(laptop.id)
    assert gone is not None and gone.name == "Laptop"


async def test_touch_device(store: Store) -> None:
    user = await store.create_user("alice", "Alice", "h", T0)
    device = await store.create_device(user.id, "sdk", "bot", T0)
    await store.touch_device(device.id, T0 + 42.5)
    touched = await store.get_device(device.id)
    assert touched is not None and touched.last_seen_at == T0 + 42.5
    assert touched.created_at == T0
    with pytest.raises(NotFound, match="device"):
        await store.touch_device("ghost", T0)


KEY_A = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"  # RFC 8032 §7.1 test 1's public key
KEY_B = "PUAXw-hDiVqStwqnTRt-vJyYLM8uxJaMwM1V8Sr0Zgw"  # test 2's


async def test_an_identity_key_is_set_once(store: Store) -> None:
    """A device's identity key is given at registration or later, once: the same key again
    changes nothing, another key leaves the first (the caller compares), and only the owner's
    live devices take one."""
    alice = await store.create_user("alice", "Alice", "h", T0)
    bob = await store.create_user("bob", "Bob", "h", T0)
    keyed = await store.create_device(alice.id, "sdk", "bot", T0, KEY_A)
    assert keyed.identity_key == KEY_A and await store.get_device(keyed.id) == keyed
    bare = await store.create_device(alice.id, "browser", "laptop", T0 + 1)
    assert bare.identity_key is None
    assert (await store.set_identity_key(alice.id, bare.id, KEY_B)) == replace(bare, identity_key=KEY_B)
    assert (await store.set_identity_key(alice.id, bare.id, KEY_B)).identity_key == KEY_B  # type: ignore[union-attr]
    kept = await store.set_identity_key(alice.id, bare.id, KEY_A)
    assert kept is not None and kept.identity_key == KEY_B
    assert (await store.set_identity_key(alice.id, keyed.id, KEY_B)).identity_key == KEY_A  # type: ignore[union-attr]
    assert await store.set_identity_key(bob.id, bare.id, KEY_A) is None  # not bob's
    assert await store.set_identity_key(alice.id, "no-such-device", KEY_A) is None
    gone = await store.create_device(alice.id, "ios", "old phone", T0 + 2)
    assert await store.remove_device(alice.id, gone.id, T0 + 3)
    assert await store.set_identity_key(alice.id, gone.id, KEY_A) is None
    assert (await store.get_device(gone.id)).identity_key is None  # type: ignore[union-attr]
    with pytest.raises(InvalidInput, match="identity_key"):
        await store.set_identity_key(alice.id, bare.id, "k" * 44)
    with pytest.raises(InvalidInput, match="identity_key"):
        await store.create_device(alice.id, "sdk", "x", T0, "k" * 44)
    assert [d.identity_key for d in await store.list_devices(alice.id)] == [KEY_A, KEY_B]
