"""The `Bus` contract (facecall.bus.base), run against InProcessBus and RedisBus alike:
numbering and when a replay is a resume (docs/protocol.md, "Resume"), acknowledgements, ttl,
forget, attach/detach/online, kick and announce on this node, and exclusive."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from facecall.bus import Bus, LockTimeout
from tests.bus.conftest import Buses


async def _deliver(bus: Bus, n: int, device: str = "d") -> list[int]:
    return [await bus.deliver(device, {"type": "e", "i": i}) for i in range(n)]


class Recorder:
    """A listener that keeps what it is given."""

    def __init__(self) -> None:
        self.got: list[tuple[int, bytes]] = []

    async def __call__(self, seq: int, text: bytes) -> None:
        self.got.append((seq, text))

    @property
    def seqs(self) -> list[int]:
        return [seq for seq, _ in self.got]


async def test_a_restarted_node_numbers_above_the_old_one(buses: Buses) -> None:
    before = await _deliver(await buses.new(), 3)
    after_restart = await buses.with_mailboxes_lost()
    replay = await after_restart.replay("d", before[-1])
    assert replay.complete is False and replay.messages == []
    assert (await _deliver(after_restart, 1))[0] > before[-1]


async def test_replay_rules(buses: Buses) -> None:
    bus = await buses.new(limit=3)
    seqs = await _deliver(bus, 2)
    assert seqs[1] == seqs[0] + 1
    full = await bus.replay("d", seqs[0] - 1)  # nothing processed yet of this mailbox
    assert full.complete and [s for s, _ in full.messages] == seqs
    tail = await bus.replay("d", seqs[0])
    assert tail.complete and [s for s, _ in tail.messages] == seqs[1:]
    assert orjson.loads(tail.messages[0][1]) == {"type": "e", "i": 1, "seq": seqs[1]}
    assert (await bus.replay("d", seqs[-1] + 5)).complete is False  # never assigned
    # not complete: nothing replayed, what was kept is dropped; counting goes on
    fresh = await bus.replay("d", None)
    assert not fresh.complete and fresh.messages == [] and fresh.last_seq == seqs[-1]
    assert (await bus.replay("d", fresh.last_seq)).complete
    more = await _deliver(bus, 5)  # over the limit: the oldest are trimmed
    assert more[0] == seqs[-1] + 1
    assert (await bus.replay("d", more[0])).complete is False
    newest = (await bus.replay("d", None)).last_seq
    await bus.end_session("d")
    assert (await bus.replay("d", newest)).complete is False  # said once
    assert (await bus.replay("d", newest)).complete is True


async def test_a_replay_that_is_not_a_resume_carries_over_what_it_is_asked_to(buses: Buses) -> None:
    """What the device has not seen and ``carry`` picks is numbered anew, right after
    ``last_seq`` and before anything delivered later; the rest is dropped."""
    bus = await buses.new()
    seqs = await _deliver(bus, 4)
    await bus.end_session("d")  # its session ended: the next replay is not a resume
    replay = await bus.replay("d", seqs[0],  # it has seen the first
                              carry=lambda text: orjson.loads(text)["i"] % 2 == 0)
    assert not replay.complete and replay.last_seq == seqs[-1]
    assert [(seq, orjson.loads(text)) for seq, text in replay.messages] == [
        (seqs[-1] + 1, {"type": "e", "i": 2, "seq": seqs[-1] + 1})]  # i=0 was seen, 1 and 3 not picked
    later = await bus.deliver("d", {"type": "e", "i": 9})
    assert later == seqs[-1] + 2
    resumed = await bus.replay("d", replay.last_seq)  # the carried one is kept like any other
    assert resumed.complete and [s for s, _ in resumed.messages] == [seqs[-1] + 1, later]
    gone = await bus.replay("d", 10**18, carry=lambda text: True)  # from before a restart:
    assert [orjson.loads(t)["i"] for _, t in gone.messages] == [2, 9]  # all unseen, carried
    assert [s for s, _ in gone.messages] == [later + 1, later + 2]
    assert gone.messages[0][1] == orjson.dumps({"type": "e", "i": 2, "seq": later + 1})


async def test_carried_messages_are_not_pushed_to_the_listener(buses: Buses) -> None:
    """The replay hands the carried ones out; the listener goes on with the next delivery."""
    bus = await buses.new()
    listener = Recorder()
    await bus.attach("d", "c1", listener)
    seqs = await _deliver(bus, 2)
    replay = await bus.replay("d", None, carry=lambda text: True)
    assert [s for s, _ in replay.messages] == [seqs[1] + 1, seqs[1] + 2]
    later = await bus.deliver("d", {"type": "e", "i": 5})
    assert later == seqs[1] + 3
    assert listener.seqs == [*seqs, later]  # pushed before deliver returned


async def test_ack_drops_what_the_device_has(buses: Buses) -> None:
    bus = await buses.new()
    await bus.ack("nobody", 5)  # nothing to drop: no error, no mailbox
    seqs = await _deliver(bus, 4)
    await bus.ack("d", seqs[1])
    rest = await bus.replay("d", seqs[1])
    assert rest.complete and [s for s, _ in rest.messages] == seqs[2:]
    await bus.ack("d", seqs[0])  # older than what is kept: nothing changes
    assert (await bus.replay("d", seqs[1])).complete
    assert (await bus.replay("d", seqs[0])).complete is False  # seqs[1] is gone
    seqs = await _deliver(bus, 2)
    await bus.ack("d", seqs[-1] + 100)  # past the newest: all of them go, counting goes on
    assert (await bus.replay("d", seqs[-1])).complete
    assert (await bus.replay("d", seqs[0])).complete is False
    assert (await _deliver(bus, 1)) == [seqs[-1] + 1]


async def test_messages_older_than_ttl_are_trimmed(buses: Buses) -> None:
    bus = await buses.new(ttl=0.3)
    old = await _deliver(bus, 2)
    assert (await bus.replay("d", old[0] - 1)).complete
    await asyncio.sleep(0.6)
    new = await _deliver(bus, 1)  # trims the two old ones
    assert new == [old[-1] + 1]
    assert (await bus.replay("d", old[0])).complete is False
    # (that replay dropped what was kept: the mailbox restarted after new[0])
    assert (await bus.replay("d", new[0])).complete
    more = await _deliver(bus, 1)
    await asyncio.sleep(0.6)
    assert (await bus.replay("d", more[0] - 1)).complete is False  # the replay trims too


async def test_forget_drops_the_mailbox_and_the_connection(buses: Buses) -> None:
    bus = await buses.new()
    listener = Recorder()
    await bus.attach("d", "c1", listener)
    seqs = await _deliver(bus, 2)
    await bus.forget("d")
    await bus.forget("never-seen")
    assert await bus.online(["d"]) == set()
    replay = await bus.replay("d", seqs[0])
    assert replay.complete is False and replay.messages == []
    after = await _deliver(bus, 1)
    assert after[0] > seqs[-1]  # a new mailbox numbers from the clock, above the old one
    assert listener.seqs == seqs  # no longer attached


async def test_attach_replaces_and_detach_compares(buses: Buses) -> None:
    bus = await buses.new()
    first, second = Recorder(), Recorder()
    assert await bus.online([]) == set()
    await bus.attach("d", "c1", first)
    assert await bus.online(["d", "other", "d"]) == {"d"}
    one = await bus.deliver("d", {"n": 1})
    await bus.attach("d", "c2", second)  # a newer connection replaces the older
    two = await bus.deliver("d", {"n": 2})
    assert first.seqs == [one] and second.seqs == [two]
    assert second.got[0][1] == orjson.dumps({"n": 2, "seq": two})
    assert await bus.detach("d", "c1") is False  # stale: changes nothing
    assert await bus.online(["d"]) == {"d"}
    assert await bus.detach("d", "c2") is True
    assert await bus.detach("d", "c2") is False
    assert await bus.online(["d"]) == set()
    await bus.deliver("d", {"n": 3})
    assert second.seqs == [two]
    assert await bus.detach("never-attached", "c") is False


async def test_kick_and_announce_run_on_this_node_before_returning(buses: Buses) -> None:
    bus = await buses.new()
    kicked: list[tuple[str, str, int]] = []
    heard: list[tuple[str, str]] = []

    async def kicker(device_id: str, reason: str, code: int) -> None:
        kicked.append((device_id, reason, code))

    async def handler(topic: str, key: str) -> None:
        heard.append((topic, key))

    bus.on_kick(kicker)
    bus.on_announce(handler)
    await bus.attach("d", "c1", Recorder())
    await bus.kick("d", "replaced", 4001)
    assert kicked == [("d", "replaced", 4001)]
    await bus.announce("user", "u1")
    assert heard == [("user", "u1")]


async def test_exclusive_is_mutual_exclusion_with_a_timeout(buses: Buses) -> None:
    bus = await buses.new()
    inside, most, done = 0, 0, 0

    async def worker() -> None:
        nonlocal inside, most, done
        async with bus.exclusive("room", timeout=10.0):
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.005)
            inside -= 1
            done += 1

    await asyncio.gather(*(worker() for _ in range(8)))
    assert (most, done) == (1, 8)
    async with bus.exclusive("room"):
        with pytest.raises(LockTimeout):
            async with bus.exclusive("room", timeout=0.1):
                pass
        async with bus.exclusive("another", timeout=0.1):  # names are independent
            pass
    async with bus.exclusive("room", timeout=0.1):  # released
        pass
    with pytest.raises(RuntimeError):  # an error in the body releases it too
        async with bus.exclusive("room"):
            raise RuntimeError("boom")
    async with bus.exclusive("room", timeout=0.1):
        pass


async def test_deliveries_if_attached_reach_only_a_device_connected_now(buses: Buses) -> None:
    """``deliver_many(..., if_attached=...)``: those deliveries are dropped (seq 0, nothing kept)
    for a device attached nowhere, kept and pushed as any other for one attached; the others go
    as always."""
    bus = await buses.new()
    here = Recorder()
    await bus.attach("on", "c1", here)
    seqs = await bus.deliver_many(
        [("on", {"type": "a"}), ("off", {"type": "b"}), ("off", {"type": "c"}),
         ("on", {"type": "d"})], if_attached=[0, 1])
    assert seqs[1] == 0 and seqs[0] > 0 and seqs[3] == seqs[0] + 1 and seqs[2] > 0
    assert [orjson.loads(text)["type"] for _, text in here.got] == ["a", "d"]
    kept = await bus.replay("off", None)  # a fresh start keeps nothing, but numbering shows
    assert kept.last_seq == seqs[2]  # the one if_attached delivery took no number
