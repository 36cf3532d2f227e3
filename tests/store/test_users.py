"""Users: create, look up, case-insensitive uniqueness, bad input."""

from __future__ import annotations

import asyncio

import pytest

from facecall.store import InvalidInput, Store, UsernameTaken
from tests.store.factories import T0


async def test_create_and_get_user(store: Store) -> None:
    user = await store.create_user("Alice", "Alice Liddell", "argon2-hash", T0 + 0.25)
    assert user.username == "alice"
    assert len(user.id) == 32 and int(user.id, 16) >= 0
    assert await store.get_user(user.id) == user
    assert (await store.get_user(user.id)).created_at == T0 + 0.25  # type: ignore[union-attr]
    assert await store.get_user_by_username("ALICE") == user
    assert await store.get_user_by_username("alice") == user
    assert await store.get_user("no-such-id") is None
    assert await store.get_user_by_username("bob") is None
    assert await store.get_user_by_username("x" * 500) is None


async def test_username_unique_case_insensitively_and_nothing_changes(store: Store) -> None:
    first = await store.create_user("carol", "Carol", "h1", T0)
    with pytest.raises(UsernameTaken, match="carol"):
        await store.create_user("CaRoL", "Impostor", "h2", T0 + 1)
    assert await store.get_user_by_username("CAROL") == first
    assert await store.get_user_by_username("carol") == first


async def test_concurrent_signups_of_one_name_leave_one_user(store: Store) -> None:
    results = await asyncio.gather(
        *(store.create_user(f"Dave{'!' * 0}", f"Dave {i}", "h", T0) for i in range(6)),
        return_exceptions=True,
    )
    winners = [r for r in results if not isinstance(r, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(r, UsernameTaken) for r in results if r not in winners)
    assert await store.get_user_by_username("dave") == winners[0]


@pytest.mark.parametrize(
    ("username", "display_name", "password_hash", "field"),
    [
        ("u" * 65, "ok", "h", "username"),
        ("", "ok", "h", "username"),
        ("nul\x00", "ok", "h", "username"),
        ("ok", "d" * 129, "h", "display_name"),
        ("ok", "", "h", "display_name"),
        ("ok", "ok", "p" * 513, "password_hash"),
        (42, "ok", "h", "username"),
    ],
)
async def test_bad_user_input_is_refused_and_stores_nothing(
    store: Store, username: object, display_name: str, password_hash: str, field: str
) -> None:
    with pytest.raises(InvalidInput) as info:
        await store.create_user(username, display_name, password_hash, T0)  # type: ignore[arg-type]
    assert info.value.field == field
    assert await store.get_user_by_username("ok") is None


async def test_bad_timestamp_is_refused(store: Store) -> None:
    for bad in (float("nan"), float("inf"), -1.0, 1e12):
        with pytest.raises(InvalidInput, match="now"):
            await store.create_user("erin", "Erin", "h", bad)
    assert await store.get_user_by_username("erin") is None


async def test_get_users(store: Store) -> None:
    a = await store.create_user("a1", "A", "h", T0)
    b = await store.create_user("b1", "B", "h", T0)
    assert await store.get_users([a.id, b.id, "unknown", a.id]) == {a.id: a, b.id: b}
    assert await store.get_users([]) == {}
