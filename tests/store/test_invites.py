"""Invitations: made, used once in the transaction that creates the account, withdrawn,
expired; bad input; on both backends."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from facecall.store import InvalidInput, InviteNotUsable, Store, TokenExists, UsernameTaken
from tests.store.factories import T0

DAY = 86400.0


def code_hash(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


async def test_an_invitation_makes_one_account(store: Store) -> None:
    invite = await store.create_invite(code_hash("c1"), "for mum", T0, T0 + DAY)
    assert invite.state(T0) == "open" and invite.note == "for mum"
    user = await store.create_user("mum", "Mum", "h", T0 + 5, invite_code_hash=code_hash("c1"))
    [stored] = await store.list_invites()
    assert stored.state(T0 + 10) == "used"
    assert (stored.used_by, stored.used_at) == (user.id, T0 + 5)
    with pytest.raises(InviteNotUsable) as used:  # once only, and nobody is created
        await store.create_user("dad", "Dad", "h", T0 + 6, invite_code_hash=code_hash("c1"))
    assert used.value.reason == "used"
    assert await store.get_user_by_username("dad") is None


async def test_unknown_expired_and_withdrawn_invitations_make_no_account(store: Store) -> None:
    with pytest.raises(InviteNotUsable) as unknown:
        await store.create_user("eve", "Eve", "h", T0, invite_code_hash=code_hash("guess"))
    assert unknown.value.reason == "unknown"
    await store.create_invite(code_hash("old"), "", T0, T0 + 60)
    with pytest.raises(InviteNotUsable) as expired:
        await store.create_user("eve", "Eve", "h", T0 + 60, invite_code_hash=code_hash("old"))
    assert expired.value.reason == "expired"
    made = await store.create_invite(code_hash("gone"), "", T0, T0 + DAY)
    withdrawn = await store.withdraw_invite(made.id, T0 + 1)
    assert withdrawn is not None and withdrawn.state(T0 + 2) == "withdrawn"
    with pytest.raises(InviteNotUsable) as withdrawn_one:
        await store.create_user("eve", "Eve", "h", T0 + 2, invite_code_hash=code_hash("gone"))
    assert withdrawn_one.value.reason == "withdrawn"
    assert await store.get_user_by_username("eve") is None
    states = {i.note or i.id: i.state(T0 + 100) for i in await store.list_invites()}
    assert sorted(states.values()) == ["expired", "withdrawn"]


async def test_a_taken_username_leaves_the_invitation_open(store: Store) -> None:
    await store.create_user("ann", "Ann", "h", T0)
    await store.create_invite(code_hash("c2"), "", T0, T0 + DAY)
    with pytest.raises(UsernameTaken):
        await store.create_user("ANN", "Other Ann", "h", T0 + 1, invite_code_hash=code_hash("c2"))
    [invite] = await store.list_invites()
    assert invite.state(T0 + 2) == "open"
    await store.create_user("ann2", "Ann", "h", T0 + 3, invite_code_hash=code_hash("c2"))


async def test_two_people_opening_one_link_make_one_account(store: Store) -> None:
    await store.create_invite(code_hash("shared"), "", T0, T0 + DAY)
    results = await asyncio.gather(
        *(store.create_user(f"racer{i}", "R", "h", T0 + 1, invite_code_hash=code_hash("shared"))
          for i in range(6)),
        return_exceptions=True,
    )
    made = [r for r in results if not isinstance(r, BaseException)]
    assert len(made) == 1
    assert all(isinstance(r, InviteNotUsable) for r in results if isinstance(r, BaseException))
    for i in range(6):
        exists = await store.get_user_by_username(f"racer{i}") is not None
        assert exists == (made[0].username == f"racer{i}")


async def test_withdrawing_a_used_or_unknown_invitation(store: Store) -> None:
    made = await store.create_invite(code_hash("c3"), "", T0, T0 + DAY)
    await store.create_user("fay", "Fay", "h", T0 + 1, invite_code_hash=code_hash("c3"))
    after = await store.withdraw_invite(made.id, T0 + 2)
    assert after is not None and after.state(T0 + 3) == "used" and after.withdrawn_at is None
    assert await store.withdraw_invite("no-such-invite", T0) is None
    old = await store.create_invite(code_hash("c4"), "", T0, T0 + 60)
    after = await store.withdraw_invite(old.id, T0 + 61)
    assert after is not None and after.state(T0 + 62) == "expired" and after.withdrawn_at is None


async def test_bad_invitations_are_refused_and_nothing_is_stored(store: Store) -> None:
    for args, field in (
        (("", "", T0, T0 + 1), "code_hash"),
        (("x" * 65, "", T0, T0 + 1), "code_hash"),
        ((code_hash("a"), "n" * 129, T0, T0 + 1), "note"),
        ((code_hash("a"), "nul\x00", T0, T0 + 1), "note"),
        ((code_hash("a"), "", T0, T0), "expires_at"),
        ((code_hash("a"), "", T0, float("nan")), "expires_at"),
    ):
        with pytest.raises(InvalidInput) as refused:
            await store.create_invite(*args)  # type: ignore[arg-type]
        assert refused.value.field == field, args
    await store.create_invite(code_hash("dup"), "", T0, T0 + 1)
    with pytest.raises(TokenExists):
        await store.create_invite(code_hash("dup"), "", T0, T0 + 1)
    assert len(await store.list_invites()) == 1


async def test_list_is_newest_first_and_bounded(store: Store) -> None:
    for i in range(5):
        await store.create_invite(code_hash(f"n{i}"), f"#{i}", T0 + i, T0 + DAY)
    assert [i.note for i in await store.list_invites()] == ["#4", "#3", "#2", "#1", "#0"]
    assert [i.note for i in await store.list_invites(limit=2)] == ["#4", "#3"]
