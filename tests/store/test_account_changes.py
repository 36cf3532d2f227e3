"""A user's own changes: display name, password (revoking other account tokens, optionally
removing devices) -- on both backends, with bad input changing nothing."""

from __future__ import annotations

import pytest

from facecall.store import InvalidInput, NotFound, Store
from tests.store.factories import T0, ended, ringing_call, token_hash, user_with_device


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


async def test_delete_user(store: Store) -> None:
    alice, alices_browser = await user_with_device(store, "alice")
    bob, bobs_browser = await user_with_device(store, "bob")
    phone = await store.create_device(alice.id, "ios", "phone", T0 + 1)
    await store.create_token(token_hash("account"), alice.id, None, T0, None)
    await store.create_token(token_hash("phone"), alice.id, phone.id, T0, None)
    await store.create_token(token_hash("bob"), bob.id, None, T0, None)
    call = ringing_call(alice, alices_browser, [(bob, bobs_browser)])
    await store.create_call(call)
    await store.save_call(ended(call, T0 + 5, "cancelled"), 1)

    removed = await store.delete_user(alice.id, T0 + 10)
    assert removed == [alices_browser.id, phone.id]
    gone = await store.get_user(alice.id)
    assert gone is not None and gone.deleted_at == T0 + 10
    assert gone.username == f"~{alice.id}" and gone.display_name == "" and gone.password_hash == ""
    assert await store.get_user_by_username("alice") is None
    assert await store.get_user_by_username(f"~{alice.id}") is None
    assert await store.list_devices(alice.id) == []
    for name in ("account", "phone"):
        assert await store.resolve_token(token_hash(name), T0 + 11) is None
    assert await store.resolve_token(token_hash("bob"), T0 + 11) is not None
    # bob's history keeps the call, with a deleted account in it
    (entry,) = await store.call_history(bob.id)
    assert entry.call_id == call.call_id and [o.deleted for o in entry.others] == [True]
    # the name is free again; the deleted account takes no devices, tokens or second deletion
    again = await store.create_user("alice", "Another Alice", "h", T0 + 12)
    assert again.id != alice.id and await store.get_user_by_username("ALICE") == again
    with pytest.raises(NotFound, match="user"):
        await store.create_device(alice.id, "ios", "new phone", T0 + 13)
    with pytest.raises(NotFound, match="user"):
        await store.create_token(token_hash("new"), alice.id, None, T0 + 13, None)
    with pytest.raises(NotFound, match="user"):
        await store.rename_user(alice.id, "Back")
    with pytest.raises(NotFound, match="user"):
        await store.change_password(alice.id, "h", T0 + 13, keep_token_hash=token_hash("x"))
    with pytest.raises(NotFound, match="user"):
        await store.delete_user(alice.id, T0 + 14)
    assert (await store.get_user(alice.id)).deleted_at == T0 + 10  # type: ignore[union-attr]


@pytest.mark.parametrize("user_id", ["no-such-user", "", None, "u" * 200])
async def test_delete_unknown_or_malformed_user(store: Store, user_id: object) -> None:
    bob, _ = await user_with_device(store, "bob")
    with pytest.raises((NotFound, InvalidInput)):
        await store.delete_user(user_id, T0)  # type: ignore[arg-type]
    assert await store.get_user(bob.id) == bob
    assert len(await store.list_devices(bob.id)) == 1


async def test_list_users_by_username_with_device_counts(store: Store) -> None:
    carol, _ = await user_with_device(store, "carol")
    alice = await store.create_user("alice", "Alice", "h", T0)
    bob, bobs = await user_with_device(store, "bob")
    await store.create_device(bob.id, "ios", "phone", T0)
    await store.remove_device(bob.id, bobs.id, T0 + 1)
    gone, _ = await user_with_device(store, "dave")
    await store.delete_user(gone.id, T0 + 2)
    page = await store.list_users(limit=2)
    assert [(u.username, n) for u, n in page] == [("alice", 0), ("bob", 1)]
    assert [(u.username, n) for u, n in await store.list_users(after="BOB")] == [("carol", 1)]
    assert await store.list_users(after="carol") == []
    assert page[0][0] == alice and carol.username == "carol"


@pytest.mark.parametrize("kwargs", [{"limit": 0}, {"limit": 1001}, {"limit": True}, {"after": 5},
                                    {"after": "x" * 65}])
async def test_list_users_refuses_bad_input(store: Store, kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidInput):
        await store.list_users(**kwargs)  # type: ignore[arg-type]


async def test_change_password_without_a_token_to_keep_revokes_every_account_token(store: Store) -> None:
    alice, phone = await user_with_device(store, "alice")
    await store.create_token(token_hash("one"), alice.id, None, T0, None)
    await store.create_token(token_hash("two"), alice.id, None, T0, None)
    await store.create_token(token_hash("phone"), alice.id, phone.id, T0, None)
    assert await store.change_password(alice.id, "new", T0 + 1, keep_token_hash=None) == []
    assert await store.resolve_token(token_hash("one"), T0 + 2) is None
    assert await store.resolve_token(token_hash("two"), T0 + 2) is None
    assert await store.resolve_token(token_hash("phone"), T0 + 2) is not None


async def test_a_sign_in_checked_against_an_old_password_gets_no_token(store: Store) -> None:
    """A sign-in reads the hash, checks the password (0.1 s), then stores its token: if the
    password changed (or the account went) meanwhile, the token is refused, not left working."""
    alice = await store.create_user("alice", "Alice", "old-hash", T0)
    await store.create_token(token_hash("ok"), alice.id, None, T0, None, password_hash="old-hash")
    await store.change_password(alice.id, "new-hash", T0 + 1, keep_token_hash=None)
    with pytest.raises(NotFound, match="user"):
        await store.create_token(token_hash("late"), alice.id, None, T0 + 2, None, password_hash="old-hash")
    assert await store.resolve_token(token_hash("late"), T0 + 3) is None
    await store.create_token(token_hash("new"), alice.id, None, T0 + 2, None, password_hash="new-hash")
    await store.delete_user(alice.id, T0 + 4)
    with pytest.raises(NotFound, match="user"):
        await store.create_token(token_hash("after"), alice.id, None, T0 + 5, None, password_hash="")
