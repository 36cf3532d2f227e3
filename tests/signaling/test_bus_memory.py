"""The in-process bus's mailboxes (facecall.bus.memory): numbering and when a replay is a
resume (docs/protocol.md, "Resume")."""

from __future__ import annotations

from facecall.bus.memory import InProcessBus


async def _deliver(bus: InProcessBus, n: int) -> list[int]:
    return [await bus.deliver("d", {"type": "e", "i": i}) for i in range(n)]


async def test_a_restarted_node_numbers_above_the_old_one() -> None:
    before = await _deliver(InProcessBus(), 3)
    after_restart = InProcessBus()  # a new process: mailboxes start empty
    replay = await after_restart.replay("d", before[-1])
    assert replay.complete is False and replay.messages == []
    assert (await _deliver(after_restart, 1))[0] > before[-1]


async def test_replay_rules() -> None:
    bus = InProcessBus(limit=3)
    seqs = await _deliver(bus, 2)
    assert seqs[1] == seqs[0] + 1
    full = await bus.replay("d", seqs[0] - 1)  # nothing processed yet of this mailbox
    assert full.complete and [s for s, _ in full.messages] == seqs
    tail = await bus.replay("d", seqs[0])
    assert tail.complete and [s for s, _ in tail.messages] == seqs[1:]
    assert (await bus.replay("d", seqs[-1] + 5)).complete is False  # never assigned
    # not complete: nothing replayed, what was kept is dropped; counting goes on
    fresh = await bus.replay("d", None)
    assert not fresh.complete and fresh.messages == [] and fresh.last_seq == seqs[-1]
    assert (await bus.replay("d", fresh.last_seq)).complete
    more = await _deliver(bus, 5)  # over the limit: the oldest are trimmed
    assert (await bus.replay("d", more[0])).complete is False
    newest = (await bus.replay("d", None)).last_seq
    await bus.end_session("d")
    assert (await bus.replay("d", newest)).complete is False  # said once
    assert (await bus.replay("d", newest)).complete is True


async def test_a_replay_that_is_not_a_resume_carries_over_what_it_is_asked_to() -> None:
    """What the device has not seen and ``carry`` picks is numbered anew, right after
    ``last_seq`` and before anything delivered later; the rest is dropped."""
    import orjson

    bus = InProcessBus()
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
