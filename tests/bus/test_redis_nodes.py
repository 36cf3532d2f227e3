"""RedisBus nodes sharing one redis-server: routing between nodes, seq order across them,
presence of dead nodes, kicks, announcements, locks, odd input and Redis going away."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable

import orjson
import pytest

from facecall.bus import IN_PROGRESS, InProcessBus, LockTimeout
from facecall.bus.redis_bus import BusUnavailable, RedisBus
from tests.bus.conftest import Nodes
from tests.bus.test_contract import Recorder
from tests.redis_server import free_port, running_redis


async def eventually(check: Callable[[], Awaitable[bool] | bool], within: float = 10.0) -> None:
    """Wait until ``check()`` holds (it is about messages crossing pub/sub)."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, "not within the time allowed"
        await asyncio.sleep(0.02)


async def test_a_delivery_from_one_node_reaches_a_device_attached_to_another(nodes: Nodes) -> None:
    a, b, c = await nodes.new(), await nodes.new(), await nodes.new()
    on_a = Recorder()
    await a.attach("d", "c1", on_a)
    seq = await b.deliver("d", {"type": "ring", "call": "k"})
    await eventually(lambda: on_a.seqs == [seq])
    assert on_a.got[0][1] == orjson.dumps({"type": "ring", "call": "k", "seq": seq})
    assert await c.online(["d", "e"]) == {"d"}
    seq2 = await c.deliver("d", {"type": "x"})
    await eventually(lambda: on_a.seqs == [seq, seq2])


async def test_a_device_that_moves_to_another_node_resumes_with_nothing_lost(nodes: Nodes) -> None:
    a, b = await nodes.new(), await nodes.new()
    on_a, on_b = Recorder(), Recorder()
    await a.attach("d", "c1", on_a)
    seen = [await b.deliver("d", {"i": i}) for i in range(3)]
    await eventually(lambda: on_a.seqs == seen)
    await a.ack("d", seen[1])
    assert await a.detach("d", "c1") is True
    assert await b.online(["d"]) == set()
    away = [await a.deliver("d", {"i": 3}), await b.deliver("d", {"i": 4})]
    await b.attach("d", "c2", on_b)
    replay = await b.replay("d", seen[-1])
    assert replay.complete and [s for s, _ in replay.messages] == away
    assert [orjson.loads(t)["i"] for _, t in replay.messages] == [3, 4]
    later = await a.deliver("d", {"i": 5})
    await eventually(lambda: on_b.seqs == [later])
    assert on_a.seqs == seen


async def test_interleaved_bursts_from_two_nodes_arrive_in_order(nodes: Nodes) -> None:
    """Node A pushes its own deliveries at once while B's travel through pub/sub: the listener
    still gets every seq once, in order."""
    a, b = await nodes.new(), await nodes.new()
    listener = Recorder()

    async def slow_listener(seq: int, text: bytes) -> None:
        await asyncio.sleep(0)  # let the other path run in between
        await listener(seq, text)

    await a.attach("d", "c1", slow_listener)
    sent: list[int] = []
    for burst in range(4):
        jobs = []
        for i in range(40):
            jobs.append(a.deliver("d", {"from": "a", "burst": burst, "i": i}))
            jobs.append(b.deliver("d", {"from": "b", "burst": burst, "i": i}))
        sent += await asyncio.gather(*jobs)
    await eventually(lambda: len(listener.got) >= len(sent))
    await asyncio.sleep(0.2)  # and nothing more (no duplicates) comes after
    assert listener.seqs == sorted(sent) == list(range(min(sent), min(sent) + len(sent)))
    assert all(orjson.loads(text)["seq"] == seq for seq, text in listener.got)
    assert len({(m["from"], m["burst"], m["i"]) for m in map(orjson.loads, (t for _, t in listener.got))}) \
        == len(sent)


async def test_detach_with_a_stale_connection_changes_nothing(nodes: Nodes) -> None:
    a, b = await nodes.new(), await nodes.new()
    on_a, on_b = Recorder(), Recorder()
    await a.attach("d", "c1", on_a)
    await b.attach("d", "c2", on_b)  # the device reconnected to B
    assert await a.detach("d", "c1") is False
    assert await a.online(["d"]) == {"d"}
    seq = await a.deliver("d", {"n": 1})
    await eventually(lambda: on_b.seqs == [seq])
    assert on_a.seqs == []
    assert await a.detach("d", "c2") is True  # whichever node says it
    assert await b.online(["d"]) == set()


_DOOMED = """
import asyncio, sys
from facecall.bus.redis_bus import RedisBus

async def main():
    bus = RedisBus(sys.argv[1], prefix=sys.argv[2], node_id="doomed", heartbeat=0.2, lock_lease=1.0)
    await bus.start()
    async def listener(seq, text):
        pass
    await bus.attach("dev-c", "conn-c", listener)
    async with bus.exclusive("shared"):
        print("ready", flush=True)
        await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_a_killed_node_goes_offline_and_lets_go_of_its_lock(nodes: Nodes) -> None:
    a = await nodes.new()
    await a.attach("dev-a", "conn-a", Recorder())
    doomed = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _DOOMED, nodes.url, nodes.prefix,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert doomed.stdout is not None and doomed.stderr is not None
        line = await asyncio.wait_for(doomed.stdout.readline(), 30)
        assert line == b"ready\n", await doomed.stderr.read()
        assert await a.online(["dev-a", "dev-c"]) == {"dev-a", "dev-c"}
        await asyncio.sleep(1.5)  # past its lease: the holder renews it
        with pytest.raises(LockTimeout):
            async with a.exclusive("shared", timeout=0.2):
                pass
        os.kill(doomed.pid, signal.SIGKILL)  # no close(): its keys stay until they expire
        await doomed.wait()
        await eventually(lambda: _is(a.online(["dev-a", "dev-c"]), {"dev-a"}), within=5.0)
        async with a.exclusive("shared", timeout=5.0):  # its lease ran out
            pass
    finally:
        if doomed.returncode is None:
            os.kill(doomed.pid, signal.SIGKILL)
            await doomed.wait()


async def _is(found: Awaitable[set[str]], expected: set[str]) -> bool:
    return await found == expected


async def test_a_kick_on_one_node_closes_the_connection_on_another(nodes: Nodes) -> None:
    a, b = await nodes.new(), await nodes.new()
    kicked: dict[str, list[tuple[str, str, int]]] = {"a": [], "b": []}
    for name, bus in (("a", a), ("b", b)):
        async def kicker(device_id: str, reason: str, code: int, name: str = name) -> None:
            kicked[name].append((device_id, reason, code))
        bus.on_kick(kicker)
    await b.kick("d", "nobody has it", 4000)  # attached nowhere: nothing
    await a.attach("d", "c1", Recorder())
    await b.kick("d", "removed ✂", 4003)
    await eventually(lambda: kicked["a"] == [("d", "removed ✂", 4003)])
    assert kicked["b"] == []


@pytest.mark.parametrize("together", [False, True], ids=["announce", "deliver_many"])
async def test_an_announcement_reaches_every_node_before_a_later_delivery(
        nodes: Nodes, together: bool) -> None:
    """Whether announced on its own or with the deliveries that follow it (one script)."""
    a, b, c = await nodes.new(), await nodes.new(), await nodes.new()
    logs: dict[str, list[tuple[str, object]]] = {"a": [], "b": [], "c": []}
    for name, bus in (("a", a), ("b", b), ("c", c)):
        async def heard(topic: str, key: str, name: str = name) -> None:
            if name != "a":  # a handler that takes a while is still awaited first
                await asyncio.sleep(0.02)
            logs[name].append(("announce", key))
        bus.on_announce(heard)

    async def on(name: str, seq: int, text: bytes) -> None:
        logs[name].append(("message", orjson.loads(text)["key"]))

    await b.attach("db", "cb", lambda seq, text: on("b", seq, text))
    await c.attach("dc", "cc", lambda seq, text: on("c", seq, text))
    for i in range(10):
        if together:
            await asyncio.gather(
                a.deliver_many([("db", {"key": f"k{i}"}), ("dc", {"key": f"k{i}"})],
                               announcing=("user", f"k{i}")),
                c.deliver("dc", {"key": f"c{i}"}))
            assert ("announce", f"k{i}") in logs["a"]  # this node's ran before it returned
            continue
        await a.announce("user", f"k{i}")
        assert logs["a"][-1] == ("announce", f"k{i}")  # this node's ran before it returned
        # C's own delivery races A's: when it gets the later seq and is pushed while A's is
        # still in flight, the gap is filled only once C has read what A published before
        await asyncio.gather(a.deliver("db", {"key": f"k{i}"}), a.deliver("dc", {"key": f"k{i}"}),
                             c.deliver("dc", {"key": f"c{i}"}))
    for name in ("b", "c"):
        await eventually(lambda name=name: len(logs[name]) >= (20 if name == "b" else 30))
        for i in range(10):
            assert logs[name].index(("announce", f"k{i}")) < logs[name].index(("message", f"k{i}"))
    assert logs["a"] == [("announce", f"k{i}") for i in range(10)]  # its own echo is skipped


async def test_exclusive_holds_across_nodes(nodes: Nodes) -> None:
    a, b = await nodes.new(), await nodes.new()
    inside, most, done = 0, 0, 0

    async def worker(bus: RedisBus) -> None:
        nonlocal inside, most, done
        async with bus.exclusive("call:1", timeout=20.0):
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.003)
            inside -= 1
            done += 1

    await asyncio.gather(*(worker(bus) for _ in range(6) for bus in (a, b)))
    assert (most, done) == (1, 12)
    async with a.exclusive("call:1"):
        with pytest.raises(LockTimeout):
            async with b.exclusive("call:1", timeout=0.2):
                pass
    async with b.exclusive("call:1", timeout=0.2):
        pass


ODD_DEVICES = ["x" * 100_000, "a\nb", "a:box", "a", "{tag}:msgs", "\x00nul", "é☃😀", "lone \ud800"]
ODD_MESSAGES: list[dict[str, object]] = [
    {}, {"seq": 7, "nested": [1, {"b": None, "f": 1.5}]}, {"big": "y" * 1_000_000},
    {"uni": "😀\u2028", "q": '"seq":5}', "k:": "1:x"}, {"n": -(2**62), "t": True},
]


async def test_odd_device_ids_and_messages_cannot_break_the_scripts(nodes: Nodes) -> None:
    a, b = await nodes.new(), await nodes.new()
    for device in ODD_DEVICES:
        listener = Recorder()
        await a.attach(device, "conn\n\x00", listener)
        seqs = [await b.deliver(device, message) for message in ODD_MESSAGES]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # each device its own counter
        await eventually(lambda listener=listener, seqs=seqs: listener.seqs == seqs)
        for (seq, text), message in zip(listener.got, ODD_MESSAGES, strict=True):
            assert orjson.loads(text) == {**message, "seq": seq}
            if "seq" not in message:  # byte for byte what InProcessBus keeps
                assert text == orjson.dumps({**message, "seq": seq})
        replay = await b.replay(device, seqs[0] - 1)
        assert replay.complete and replay.messages == listener.got
        assert await b.online([device]) == {device}
        assert await b.detach(device, "conn\n\x00") is True
    with pytest.raises(TypeError):  # not JSON: refused before Redis, as by InProcessBus
        await a.deliver("d", {"x": object()})
    assert (await a.replay("d", None)).last_seq == (await a.replay("d", None)).last_seq


async def test_a_replay_on_another_node_does_not_push_what_it_carried(nodes: Nodes) -> None:
    a, b = await nodes.new(), await nodes.new()
    listener = Recorder()
    await a.attach("d", "c1", listener)
    seqs = [await a.deliver("d", {"i": i}) for i in range(3)]
    replay = await b.replay("d", None, carry=lambda text: True)
    assert [s for s, _ in replay.messages] == [seqs[-1] + 1, seqs[-1] + 2, seqs[-1] + 3]
    later = await b.deliver("d", {"i": 9})
    await eventually(lambda: listener.seqs == [*seqs, later])
    mine = await a.deliver("d", {"i": 10})  # the gap of the carried ones was skipped on A
    assert listener.seqs == [*seqs, later, mine]


async def test_an_idle_mailbox_expires_and_restarts_above(nodes: Nodes) -> None:
    a = await nodes.new(ttl=0.3, keep=0.6)
    old = [await a.deliver("d", {"i": i}) for i in range(2)]
    assert len(await nodes.keys()) == 3  # box, messages, node heartbeat
    await eventually(lambda: _is_keys(nodes, 1), within=5.0)  # only the heartbeat stays
    replay = await a.replay("d", old[-1])
    assert replay.complete is False and replay.last_seq > old[-1]
    assert await a.deliver("d", {"i": 2}) == replay.last_seq + 1


async def _is_keys(nodes: Nodes, count: int) -> bool:
    return len(await nodes.keys()) == count


async def test_unreachable_redis_is_a_clear_error_without_the_password() -> None:
    port = free_port()
    bus = RedisBus(f"redis://user:hunter2@127.0.0.1:{port}/0?password=hunter3")
    with pytest.raises(BusUnavailable) as caught:
        await bus.start()
    assert str(caught.value) == f"cannot reach Redis at redis://user@127.0.0.1:{port}/0: Connection refused"
    with pytest.raises(BusUnavailable, match="not started"):
        await bus.deliver("d", {})


async def test_redis_going_away_and_coming_back() -> None:
    with running_redis(password="s3cret") as server:
        a = RedisBus(server.url, prefix="p:", heartbeat=0.2)
        b = RedisBus(server.url, prefix="p:", heartbeat=0.2)
        await a.start()
        await b.start()
        try:
            listener = Recorder()
            await a.attach("d", "c1", listener)
            first = await b.deliver("d", {"i": 0})
            await eventually(lambda: listener.seqs == [first])
            server.kill()
            for operation in (lambda: a.deliver("d", {"i": 1}), lambda: b.online(["d"]),
                              lambda: b.replay("d", first), lambda: a.attach("e", "c", listener),
                              lambda: a.kick("d", "r", 4000), lambda: a.announce("t", "k")):
                with pytest.raises(BusUnavailable) as caught:
                    await operation()
                message = str(caught.value)
                assert f"Redis at redis://127.0.0.1:{server.port}/0 failed to " in message
                assert "s3cret" not in message and "Connection refused" in message
            with pytest.raises(BusUnavailable):
                async with a.exclusive("x"):
                    pass
            server.start()  # same port, no data: mailboxes, registrations and scripts are gone
            # the heartbeat registers A's device again, the subscriber reconnects
            await eventually(lambda: _is(b.online(["d"]), {"d"}))
            after = await b.deliver("d", {"i": 2})
            assert after > first
            await eventually(lambda: listener.seqs == [first, after])
            mine = await a.deliver("d", {"i": 3})
            assert listener.seqs == [first, after, mine]
        finally:
            await a.close()
            await b.close()


async def test_a_request_is_claimed_by_one_node_and_its_reply_kept_for_all(nodes: Nodes) -> None:
    """What `facecall.signaling.replies.claim_across_nodes` builds on: one node acts on a
    request, another sees it in progress, then its reply; a failed one is released; a dead
    node's claim lapses."""
    a, b = await nodes.new(), await nodes.new(claim_lease=0.3)
    assert await a.claim_request("d", "r1") is None  # a acts on it
    assert await b.claim_request("d", "r1") == IN_PROGRESS
    await a.request_answered("d", "r1", b'{"type":"ok","re":"r1"}')
    assert await b.claim_request("d", "r1") == b'{"type":"ok","re":"r1"}'
    await b.request_released("d", "r1")  # a kept reply is never released
    assert await a.claim_request("d", "r1") == b'{"type":"ok","re":"r1"}'

    assert await a.claim_request("d", "r2") is None
    await a.request_released("d", "r2")  # it failed: a resend acts anew
    assert await b.claim_request("d", "r2") is None

    assert await b.claim_request("d", "r3") is None  # and b dies holding it
    await asyncio.sleep(0.5)
    assert await a.claim_request("d", "r3") is None


async def test_one_node_claims_every_request() -> None:
    """Without a shared bus a node dedupes on its own (`Replies`): every claim is granted."""
    bus = InProcessBus()
    assert await bus.claim_request("d", "r1") is None
    await bus.request_answered("d", "r1", b"{}")
    assert await bus.claim_request("d", "r1") is None
