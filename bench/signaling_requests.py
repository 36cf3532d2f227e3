"""What each signaling request costs the server, without sockets: CPU per request kind beside
the cheapest thing that request could possibly cost.

`bench/signaling.py` measures whole set-ups through real sockets, and this VM's speed drifts by
10-40 % between its runs. This one runs the request path in-process — the real store (SQLite
in a temp dir, group commit and all), bus, call service and device sessions, with links that
only collect frames — and takes each request kind's process CPU (all threads, so the SQLite
writer thread's checkpoints count). One set-up is the pattern of `bench/signaling.py`:
``call.start`` (ringing two callee devices) → ``call.answer`` → two ``call.sdp`` → four
``call.candidate`` → ``call.hangup``.

The floors, measured in the same process right after each round:

- a durable request (start, answer, hang-up) needs at least one SQLite transaction on a
  connection with the store's own pragmas (``BEGIN IMMEDIATE``, one upsert of a row with a
  2 KiB body, ``COMMIT``), plus decoding the request and encoding the reply;
- a relayed request (SDP, candidate) needs at least decoding the request and encoding the
  reply and the relayed event.

    .venv/bin/python bench/signaling_requests.py --setups 2000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
from facecall.bus.memory import InProcessBus
from facecall.config import Settings
from facecall.logs import configure_logging
from facecall.signaling.service import CallService
from facecall.signaling.session import DeviceSession
from facecall.store import Store
from facecall.store.sqlite_driver import sqlite_connect
from procstat import exit_on_sigterm
from signaling import CANDIDATE, SDP

KINDS = ("call.start", "call.answer", "call.sdp", "call.candidate", "call.hangup")
DURABLE = ("call.start", "call.answer", "call.hangup")
PER_SETUP = {"call.start": 1, "call.answer": 1, "call.sdp": 2, "call.candidate": 4, "call.hangup": 1}
FLOOR_ROW_BYTES = 2048


class CollectingLink:
    """A session's transport that keeps what it is given."""

    def __init__(self) -> None:
        self.reading = False
        self.frames: list[bytes] = []

    def write_frames(self, texts: list[bytes]) -> None:
        self.frames.extend(texts)

    def close(self, code: int, reason: str) -> None:
        raise RuntimeError(f"the server closed a benchmark connection: {code} {reason}")


class Device:
    def __init__(self, service: CallService, user_id: str, device_id: str) -> None:
        self.device_id = device_id
        self.link = CollectingLink()
        self.session = DeviceSession(service, user_id, device_id, self.link)
        self._ids = 0

    async def send(self, **fields: Any) -> None:
        self._ids += 1
        await self.session.handle_frame(orjson.dumps({"v": 1, "id": f"r{self._ids}", **fields}))

    def replies(self) -> list[dict[str, Any]]:
        """What the server wrote to this device since the last call; an error stops the run."""
        messages = [orjson.loads(frame) for frame in self.link.frames]
        self.link.frames.clear()
        for message in messages:
            if message["type"] == "error":
                raise RuntimeError(f"the server refused a benchmark request: {message}")
        return messages


async def facecall_round(store: Store, setups: int, profile: cProfile.Profile | None,
                         ) -> dict[str, float]:
    """CPU µs per request of each kind, over ``setups`` set-ups."""
    settings = Settings(messages_per_second=1e9, message_burst=1e9)  # one device, many calls
    bus = InProcessBus(limit=settings.outbox_limit, ttl=settings.resume_grace * 4)
    service = CallService(store, bus, settings)
    now = time.time()
    tag = f"{now:.6f}"
    alice = await store.create_user(f"alice-{tag}", "Alice", "-", now)
    bob = await store.create_user(f"bob-{tag}", "Bob", "-", now)
    caller = Device(service, alice.id, (await store.create_device(alice.id, "sdk", "a", now)).id)
    callees = [Device(service, bob.id, (await store.create_device(bob.id, "sdk", f"b{i}", now)).id)
               for i in range(2)]
    for device in (caller, *callees):
        await device.send(type="hello")
    await asyncio.sleep(0)
    for device in (caller, *callees):
        device.replies()
    spent = dict.fromkeys(KINDS, 0.0)
    clock = time.process_time
    callee = callees[0]
    if profile is not None:
        profile.enable()
    for _ in range(setups):
        t = clock()
        await caller.send(type="call.start", to=[bob.id], media="video")
        spent["call.start"] += clock() - t
        await asyncio.sleep(0)  # the reply goes out in the next loop iteration
        placed = [m["call_id"] for m in caller.replies() if m["type"] == "ok"]
        if len(placed) != 1:
            raise RuntimeError(f"call.start was answered {len(placed)} times, not once")
        call_id = placed[0]
        t = clock()
        await callee.send(type="call.answer", call_id=call_id)
        spent["call.answer"] += clock() - t
        for sender, receiver, kind in ((caller, callee, "offer"), (callee, caller, "answer")):
            t = clock()
            await sender.send(type="call.sdp", call_id=call_id, to_device=receiver.device_id,
                              description={"type": kind, "sdp": SDP})
            spent["call.sdp"] += clock() - t
        for _ in range(2):
            for sender, receiver in ((caller, callee), (callee, caller)):
                t = clock()
                await sender.send(type="call.candidate", call_id=call_id,
                                  to_device=receiver.device_id, candidate=CANDIDATE)
                spent["call.candidate"] += clock() - t
        t = clock()
        await caller.send(type="call.hangup", call_id=call_id)
        spent["call.hangup"] += clock() - t
        await asyncio.sleep(0)
        for device in (caller, *callees):
            device.replies()
    if profile is not None:
        profile.disable()
    return {kind: spent[kind] / (setups * PER_SETUP[kind]) * 1e6 for kind in KINDS}


def floor_round(path: Path, n: int) -> dict[str, float]:
    """CPU µs of the least a durable and a relayed request could cost (see the module doc)."""
    conn = sqlite_connect(str(path))
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS floor (id TEXT PRIMARY KEY, body TEXT NOT NULL)"
                     " WITHOUT ROWID")
        body = "x" * FLOOR_ROW_BYTES
        request = orjson.dumps({"v": 1, "id": "r1", "type": "call.answer", "call_id": "c" * 32})
        clock = time.process_time
        t = clock()
        for i in range(n):
            orjson.loads(request)
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT OR REPLACE INTO floor VALUES (?, ?)", (f"call-{i % 64}", body))
            conn.execute("COMMIT")
            orjson.dumps({"v": 1, "type": "ok", "re": "r1"})
        durable = (clock() - t) / n * 1e6
        relay = orjson.dumps({"v": 1, "id": "r2", "type": "call.sdp", "call_id": "c" * 32,
                              "to_device": "d" * 32, "description": {"type": "offer", "sdp": SDP}})
        t = clock()
        for _ in range(n):
            message = orjson.loads(relay)
            orjson.dumps({"v": 1, "type": "ok", "re": message["id"]})
            orjson.dumps({"v": 1, "type": "call.sdp", "seq": 1, "call_id": message["call_id"],
                          "from_device": "e" * 32, "description": message["description"]})
        relayed = (clock() - t) / n * 1e6
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return {"durable": durable, "relayed": relayed}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rounds: list[dict[str, Any]] = []
    profile = cProfile.Profile() if args.profile else None
    with tempfile.TemporaryDirectory(prefix="facecall-bench-") as tmp:
        store = await Store.open(f"sqlite+aiosqlite:///{tmp}/bench.db")
        try:
            for index in range(args.rounds):
                ours = await facecall_round(store, args.setups, profile)
                floor = floor_round(Path(tmp) / "floor.db", args.setups)
                rounds.append({"facecall": ours, "floor": floor})
                print(f"round {index + 1}/{args.rounds} done", file=sys.stderr, flush=True)
        finally:
            await store.close()
    if profile is not None:
        profile.dump_stats(args.profile)
    median = {side: {k: statistics.median(r[side][k] for r in rounds) for k in rounds[0][side]}
              for side in ("facecall", "floor")}
    return {"median": median, "rounds": rounds, "args": vars(args)}


def print_table(report: dict[str, Any]) -> None:
    ours, floor = report["median"]["facecall"], report["median"]["floor"]
    print(f"{'µs CPU per request':22}{'facecall':>10}{'floor':>10}{'ratio':>8}{'per set-up':>12}")
    setup = setup_floor = 0.0
    for kind in KINDS:
        base = floor["durable" if kind in DURABLE else "relayed"]
        setup += ours[kind] * PER_SETUP[kind]
        setup_floor += base * PER_SETUP[kind]
        print(f"{kind:22}{ours[kind]:>10.1f}{base:>10.1f}{ours[kind] / base:>8.1f}"
              f"{ours[kind] * PER_SETUP[kind]:>12.1f}")
    print(f"{'one set-up':22}{setup:>10.1f}{setup_floor:>10.1f}{setup / setup_floor:>8.1f}")
    durable = sum(ours[k] for k in DURABLE)
    print(f"durable requests: {100 * durable / setup:.0f} % of a set-up's CPU here")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setups", type=int, default=2000, help="call set-ups per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; figures are medians")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--profile", metavar="FILE",
                        help="cProfile the facecall request path (all rounds) into FILE")
    args = parser.parse_args()
    if args.setups < 1 or args.rounds < 1:
        parser.error("--setups and --rounds must be at least 1")
    configure_logging("warning")  # as bench/signaling.py runs the server
    report = uvloop.run(run(args))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)


if __name__ == "__main__":
    exit_on_sigterm()
    main()
