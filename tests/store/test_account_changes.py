"""A user's own changes: display name, password (revoking other account tokens, optionally
removing devices) -- on both backends, with bad input changing nothing."""

from __future__ import annotations

import pytest

from facecall.store import InvalidInput, NotFound, Store
from tests.store.factories import T0, token_hash


async def test_rename_user(store: Store) -> None:
    alice = await store.create_user("alice", "Alice", "h", T0)
    renamed = await store.rename_user(alice.id, "Alice Liddell")
    assert renamed.display_name == "Alice Liddell"
    assert renamed.username == "alice" and renamed.password_hash == "h"
    assert await store.get_user(alice.id) == renamed


@pytest.mark.parametrize("name", ["", "x" * 129, None, 5])
async def test_rename_refuses_bad_names_and_keeps_the_old_one(store: Store, name: object) -> None:
    alice = await store.create_user("alice", "Alice", "h", T0)
    with pytest.raises(InvalidInput, match="display_name"):
        await store.rename_user(alice.id, name)  # type: ignore[arg-type]
    assert await store.get_user(alice.id) == alice


async def test_rename_unknown_user(store: Store) -> None:
    with pytest.raises(NotFound, match="user"):
        await store.rename_user("no-such-user", "Ghost")


async def test_change_password_revokes_other_account_tokens_only(store: Store) -> None:
    alice = await store.create_user("alice", "Alice", "old-hash", T0)
    bob = await store.create_user("bob", "Bob", "h", T0)
    phone = await store.create_device(alice.id, "ios", "phone", T0)
    for name, user, device in (("asking", alice, None), ("other", alice, None),
                               ("phone", alice, phone.id), ("bob", bob, None)):
        await store.create_token(token_hash(name), user.id, device, T0, None)
    removed = await store.change_password(alice.id, "new-hash", T0 + 1,
                                          keep_token_hash=token_hash("asking"))
    assert removed == []
    assert (await store.get_user(alice.id)).password_hash == "new-hash"  # type: ignore[union-attr]
    assert await store.resolve_token(token_hash("asking"), T0 + 2) is not None
    assert await store.resolve_token(token_hash("other"), T0 + 2) is None
    assert await store.resolve_token(token_hash("phone"), T0 + 2) is not None  # devices stay
    assert await store.resolve_token(token_hash("bob"), T0 + 2) is not None
    assert [d.id for d in await store.list_devices(alice.id)] == [phone.id]


async def test_change_password_can_remove_every_other_device(store: Store) -> None:
    alice = await store.create_user("alice", "Alice", "old-hash", T0)
    here = await store.create_device(alice.id, "browser", "here", T0)
    phone = await store.create_device(alice.id, "ios", "phone", T0 + 1)
    tablet = await store.create_device(alice.id, "ios", "tablet", T0 + 2)
    await store.create_token(token_hash("asking"), alice.id, None, T0, None)
    for device in (here, phone, tablet):
        await store.create_token(token_hash(device.name), alice.id, device.id, T0, None)
    removed = await store.change_password(alice.id, "new-hash", T0 + 3,
                                          keep_token_hash=token_hash("asking"),
                                          remove_devices=True, keep_device_id=here.id)
    assert removed == [phone.id, tablet.id]
    assert [d.id for d in await store.list_devices(alice.id)] == [here.id]
    assert await store.resolve_token(token_hash("here"), T0 + 4) is not None
    assert await store.resolve_token(token_hash("phone"), T0 + 4) is None
    assert await store.resolve_token(token_hash("tablet"), T0 + 4) is None
    # without a device to keep: every device goes
    assert await store.change_password(alice.id, "newer", T0 + 5, keep_token_hash=token_hash("asking"),
                                       remove_devices=True) == [here.id]
    assert await store.list_devices(alice.id) == []


async def test_change_password_with_someone_elses_device_changes_nothing(store: Store) -> None:
    alice = await store.create_user("alice", "Alice", "old-hash", T0)
    bob = await store.create_user("bob", "Bob", "h", T0)
    bobs = await store.create_device(bob.id, "ios", "bob's", T0)
    phone = await store.create_device(alice.id, "ios", "phone", T0)
    await store.create_token(token_hash("asking"), alice.id, None, T0, None)
    await store.create_token(token_hash("other"), alice.id, None, T0, None)
    with pytest.raises(NotFound, match="device"):
        await store.change_password(alice.id, "new-hash", T0 + 1, keep_token_hash=token_hash("asking"),
                                    remove_devices=True, keep_device_id=bobs.id)
    assert (await store.get_user(alice.id)).password_hash == "old-hash"  # type: ignore[union-attr]
    assert await store.resolve_token(token_hash("other"), T0 + 2) is not None
    assert [d.id for d in await store.list_devices(alice.id)] == [phone.id]
    assert [d.id for d in await store.list_devices(bob.id)] == [bobs.id]


@pytest.mark.parametrize(("field", "kwargs"), [
    ("password_hash", {"password_hash": ""}),
    ("password_hash", {"password_hash": "x" * 1000}),
    ("token_hash", {"keep_token_hash": "not-a-digest"}),
    ("keep_device_id", {"keep_device_id": "d" * 200, "remove_devices": True}),
    ("user_id", {"user_id": ""}),
])
async def test_change_password_refuses_bad_input(store: Store, field: str,
                                                 kwargs: dict[str, object]) -> None:
    alice = await store.create_user("alice", "Alice", "old-hash", T0)
    args: dict[str, object] = {"user_id": alice.id, "password_hash": "new-hash", "now": T0 + 1,
                               "keep_token_hash": token_hash("asking"), **kwargs}
    with pytest.raises(InvalidInput, match=field):
        await store.change_password(**args)  # type: ignore[arg-type]
    assert (await store.get_user(alice.id)).password_hash == "old-hash"  # type: ignore[union-attr]


async def test_change_password_of_unknown_user(store: Store) -> None:
    with pytest.raises(NotFound, match="user"):
        await store.change_password("no-such-user", "h", T0, keep_token_hash=token_hash("x"))
