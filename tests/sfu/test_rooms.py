"""The process's rooms (facecall.sfu.rooms): what the signaling tests over a live server cannot
time — a room closed while a participant's join is under way, a room the SFU itself emptied
(a participant gone silent), a refused offer leaving nothing behind. Real offers from aiortc
peers (tests/sfu's ``Client``) on 127.0.0.1; the peers here never connect."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from facecall.client.ice import host_addresses
from facecall.sfu.rooms import RoomClosed, RoomRegistry, SlotFill
from facecall.sfu.sdp import SfuOfferError
from tests.sfu.test_transport import LOOPBACK, Client, until


@pytest.fixture
async def registry() -> AsyncIterator[RoomRegistry]:
    registry = RoomRegistry(silence_timeout=0.5)
    yield registry
    await registry.close_all()


async def test_a_room_closed_during_a_join_takes_nobody_in(registry: RoomRegistry) -> None:
    client = Client("alice", 1, slots=1)
    try:
        offer = await client.offer()
        with host_addresses(LOOPBACK):
            joining = asyncio.create_task(registry.join("call", "a1", offer))
            await asyncio.sleep(0)  # the join made the room and is gathering candidates now
            room = registry.room("call")
            assert room is not None and not joining.done()
            assert await registry.close("call")
            with pytest.raises(RoomClosed):
                await joining
        assert room.participants == {}
        assert len(registry) == 0 and registry.participants("call") == frozenset()
    finally:
        await client.close()


async def test_a_room_the_sfu_emptied_closes_and_a_refused_offer_leaves_nothing(
        registry: RoomRegistry) -> None:
    told: list[tuple[str, str, tuple[SlotFill, ...]]] = []
    registry.on_slots(lambda room_id, who, fills: told.append((room_id, who, fills)))
    with pytest.raises(SfuOfferError):
        await registry.join("call", "a1", "v=0\r\nnot an offer")
    assert len(registry) == 0
    client = Client("alice", 1, slots=1)
    try:
        with host_addresses(LOOPBACK):
            answer, fills = await registry.join("call", "a1", await client.offer())
        assert answer.startswith("v=0")
        assert sorted((f.kind, f.source) for f in fills) == [("audio", None), ("video", None)]
        # never connected: the room drops it after silence_timeout, and the registry the room
        await until(lambda: len(registry) == 0, timeout=10, what="the emptied room closed")
        assert told == []  # its slots never changed hands
    finally:
        await client.close()


async def test_joins_of_one_participant_at_once_take_turns(registry: RoomRegistry) -> None:
    """Three joins of one participant at once (say, a client retrying with new peer
    connections): each replaces the one before, none fails, one participant stays."""
    clients = [Client("alice", 1, slots=1) for _ in range(3)]
    try:
        offers = [await client.offer() for client in clients]
        with host_addresses(LOOPBACK):
            answers = await asyncio.gather(*(registry.join("call", "a1", o) for o in offers))
        assert len({answer for answer, _ in answers}) == 3
        assert registry.participants("call") == {"a1"}
        room = registry.room("call")
        assert room is not None and len(room.participants) == 1
    finally:
        for client in clients:
            await client.close()


async def test_the_registry_gathers_on_the_host_addresses_it_is_given() -> None:
    """``FACECALL_SFU_HOST_ADDRESSES``: the SFU's candidates are on the addresses given, whatever
    context the join runs in (here none: aioice alone would offer no loopback candidate)."""
    registry = RoomRegistry(host_addresses=["127.0.0.1"])
    client = Client("alice", 1, slots=1)
    try:
        answer, _ = await registry.join("call", "a1", await client.offer())
        hosts = {line.split()[4] for line in answer.splitlines() if line.startswith("a=candidate:")}
        assert hosts == {"127.0.0.1"}, answer
    finally:
        await client.close()
        await registry.close_all()
