"""Tokens: stored by hash; resolve refuses unknown, expired, revoked and removed-device ones."""

from __future__ import annotations

import pytest

from facecall.store import InvalidInput, NotFound, Store, TokenExists, TokenRecord
from tests.store.factories import T0, token_hash


async def test_account_and_device_tokens(store: Store) -> None:
    user = await store.create_user("alice", "Alice", "h", T0)
    device = await store.create_device(user.id, "browser", "web", T0)
    await store.create_token(token_hash("a"), user.id, None, T0, T0 + 100)
    await store.create_token(token_hash("d"), user.id, device.id, T0, None)
    assert await store.resolve_token(token_hash("a"), T0 + 99) == TokenRecord(
        token_hash("a"), user.id, None, T0, T0 + 100, None
    )
    assert await store.resolve_token(token_hash("a"), T0 + 100) is None  # expired
    resolved = await store.resolve_token(token_hash("d"), T0 + 1e6)
    assert resolved is not None and resolved.device_id == device.id and resolved.expires_at is None
    assert await store.resolve_token(token_hash("unknown"), T0) is None
    assert await store.resolve_token("not-a-hash", T0) is None


async def test_revoke_token(store: Store) -> None:
    user = await store.create_user("alice", "Alice", "h", T0)
    await store.create_token(token_hash("a"), user.id, None, T0, None)
    assert await store.revoke_token(token_hash("a"), T0 + 1) is True
    assert await store.revoke_token(token_hash("a"), T0 + 2) is False
    assert await store.revoke_token(token_hash("never"), T0 + 2) is False
    assert await store.resolve_token(token_hash("a"), T0 + 3) is None


async def test_bad_tokens_are_refused_and_store_nothing(store: Store) -> None:
    alice = await store.create_user("alice", "Alice", "h", T0)
    bob = await store.create_user("bob", "Bob", "h", T0)
    bobs_device = await store.create_device(bob.id, "cli", "term", T0)
    with pytest.raises(NotFound, match="user"):
        await store.create_token(token_hash("x"), "ghost", None, T0, None)
    with pytest.raises(NotFound, match="device"):
        await store.create_token(token_hash("x"), alice.id, bobs_device.id, T0, None)
    with pytest.raises(InvalidInput, match="token_hash"):
        await store.create_token("ABC", alice.id, None, T0, None)
    with pytest.raises(InvalidInput, match="token_hash"):
        await store.create_token(token_hash("x").upper(), alice.id, None, T0, None)
    assert await store.resolve_token(token_hash("x"), T0) is None
    await store.create_token(token_hash("x"), alice.id, None, T0, None)
    with pytest.raises(TokenExists):
        await store.create_token(token_hash("x"), bob.id, None, T0 + 1, None)
    resolved = await store.resolve_token(token_hash("x"), T0 + 2)
    assert resolved is not None and resolved.user_id == alice.id


async def test_no_token_for_removed_device(store: Store) -> None:
    user = await store.create_user("alice", "Alice", "h", T0)
    device = await store.create_device(user.id, "ios", "phone", T0)
    assert await store.remove_device(user.id, device.id, T0 + 1)
    with pytest.raises(NotFound, match="device"):
        await store.create_token(token_hash("late"), user.id, device.id, T0 + 2, None)
