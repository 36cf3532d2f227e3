"""Cost of each :class:`facecall.store.Store` operation, beside the same SQL run directly.

    .venv/bin/python bench/store.py                       # SQLite and PostgreSQL
    .venv/bin/python bench/store.py --backends sqlite -n 2000

For each backend it migrates a fresh database (SQLite: a WAL file in a temp dir; PostgreSQL: a
throwaway server from ``tests/pg.py``), seeds realistic history straight through the driver
(``--users`` users with two devices each, ``--history`` ended 1:1 calls with their participant
and leg rows, a token per device) and then, on uvloop, times ``-n`` calls of each operation one
after the other: wall time and process CPU time (every thread) per op, and ops/s. ``loop µs``
is the CPU time of the event loop's own thread alone: what a signaling node pays per op on its
loop (the rest runs on the store's DB threads).

The *anchor* is the same SQL statements executed directly -- stdlib ``sqlite3`` on the calling
thread for SQLite, ``asyncpg`` on one connection for PostgreSQL -- in the same run on the same
data; ``x`` is store CPU / anchor CPU. ``setup`` is the eight store calls of one call set-up
(get_users, list_devices_of_users, live_calls_of_user, ringing_calls_between x2, create_call,
save_call x2) and its ops/s is set-ups per second on one core.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from facecall.store import CallWrite, LegWrite, ParticipantWrite, Store
from facecall.store.ids import time_ordered_id

T0 = 1_700_000_000.0
OPS = (
    "get_users", "list_devices_of_users", "live_calls_of_user", "ringing_calls_between",
    "load_call", "due_calls", "call_history", "resolve_token", "create_call", "save_call", "setup",
)  # fmt: skip


def sqlite_time(value: float) -> float:
    """What the store keeps in a SQLite timestamp column: REAL epoch seconds (migration 0003)."""
    return value


def pg_time(value: float) -> datetime:
    return datetime.fromtimestamp(value, tz=UTC)


class Data:
    """The seeded population: user ids, their device ids and token hashes."""

    def __init__(self, users: int, history: int, seed: int = 7, random_ids: bool = False) -> None:
        self.random_ids = random_ids
        self.rng = random.Random(seed)
        self.users = [uuid.uuid4().hex for _ in range(users)]
        self.devices = {u: [uuid.uuid4().hex, uuid.uuid4().hex] for u in self.users}
        self.tokens = [os.urandom(32).hex() for _ in range(users)]
        self.history = history

    def rows(self, time_of: Callable[[float], Any]) -> dict[str, list[tuple[Any, ...]]]:
        t = time_of
        out: dict[str, list[tuple[Any, ...]]] = {k: [] for k in ("u", "d", "tok", "c", "p", "l")}
        for i, u in enumerate(self.users):
            out["u"].append((u, f"user{i}", f"User {i}", "x" * 60, t(T0)))
            for j, d in enumerate(self.devices[u]):
                out["d"].append((d, u, "browser", f"dev{j}", t(T0), t(T0), None))
            out["tok"].append((self.tokens[i], u, self.devices[u][0], t(T0), None, None))
        for n in range(self.history):
            a, b = self.rng.sample(self.users, 2)
            at = T0 + n
            cid = self.call_id(at)
            answered = n % 3 != 0
            reason = "hangup" if answered else "ring_timeout"
            out["c"].append(
                (cid, "video", "ended", a, self.devices[a][0], t(at), t(at + 2) if answered else None,
                 t(at + 60), reason, None, 3, '{"phase":"ended"}')
            )  # fmt: skip
            out["p"].append((cid, a, "caller", "left", reason, t(at), t(at), t(at + 60), None))
            out["p"].append(
                (cid, b, "callee", "left" if answered else reason, reason, t(at),
                 t(at + 2) if answered else None, None, self.devices[b][0] if answered else None)
            )  # fmt: skip
            out["l"].append((cid, a, self.devices[a][0], "ended", reason, t(at + 60)))
            out["l"].append((cid, b, self.devices[b][0], "ended", reason, t(at + 60)))
        return out

    def call_id(self, moment: float) -> str:
        """A new call id: time-ordered (UUIDv7, as the service makes them) or random."""
        return uuid.uuid4().hex if self.random_ids else time_ordered_id(moment)

    def call(self, now: float) -> CallWrite:
        a, b = self.rng.sample(self.users, 2)
        da, db = self.devices[a], self.devices[b]
        return CallWrite(
            call_id=self.call_id(now), media="video", state="ringing", caller_user_id=a,
            caller_device_id=da[0], created_at=now, next_deadline=now + 30,
            snapshot={"phase": "ringing", "seq": 1, "callee": b},
            participants=[
                ParticipantWrite(a, "caller", "joined", now, joined_at=now),
                ParticipantWrite(b, "callee", "ringing", now),
            ],
            legs=[LegWrite(a, da[0], "connected", now), LegWrite(b, db[0], "ringing", now),
                  LegWrite(b, db[1], "ringing", now)],
        )  # fmt: skip


def answered(call: CallWrite, now: float) -> CallWrite:
    b = call.participants[1]
    return CallWrite(
        call_id=call.call_id, media=call.media, state="active", caller_user_id=call.caller_user_id,
        caller_device_id=call.caller_device_id, created_at=call.created_at, answered_at=now,
        snapshot={"phase": "active", "seq": 2},
        participants=[ParticipantWrite(b.user_id, "callee", "joined", b.invited_at, joined_at=now,
                                       answered_device_id=call.legs[1].device_id)],
        legs=[LegWrite(b.user_id, call.legs[1].device_id, "connected", now),
              LegWrite(b.user_id, call.legs[2].device_id, "ended", now, "answered_elsewhere")],
    )  # fmt: skip


def ended(call: CallWrite, now: float) -> CallWrite:
    parts = [
        ParticipantWrite(p.user_id, p.role, "left", p.invited_at, "hangup", p.joined_at or now, now)
        for p in call.participants
    ]
    legs = [LegWrite(g.user_id, g.device_id, "ended", now, "hangup") for g in call.legs]
    return CallWrite(
        call_id=call.call_id, media=call.media, state="ended", caller_user_id=call.caller_user_id,
        caller_device_id=call.caller_device_id, created_at=call.created_at, answered_at=now,
        ended_at=now, end_reason="hangup", snapshot={"phase": "ended", "seq": 3},
        participants=parts, legs=legs,
    )  # fmt: skip


# -- anchors: the same statements straight through the driver -------------------------------------

SQL_USERS = "SELECT id, username, display_name, password_hash, created_at FROM users WHERE id IN ({})"
SQL_DEVICES = (
    "SELECT id, user_id, kind, name, created_at, last_seen_at, removed_at FROM user_devices "
    "WHERE user_id IN ({}) AND removed_at IS NULL ORDER BY created_at, id"
)
SQL_LIVE = (
    "SELECT calls.id FROM calls JOIN call_participants p ON p.call_id = calls.id "
    "WHERE p.user_id = {0} AND p.end_reason IS NULL AND calls.state != 'ended' "
    "ORDER BY calls.created_at, calls.id"
)
SQL_RINGING = (
    "SELECT calls.id FROM calls WHERE calls.state = 'ringing' AND calls.caller_user_id = {0} AND EXISTS "
    "(SELECT 1 FROM call_participants p WHERE p.call_id = calls.id AND p.user_id = {1} "
    "AND p.role = 'callee' AND p.end_reason IS NULL) ORDER BY calls.created_at, calls.id"
)
SQL_CALL = "SELECT * FROM calls WHERE id = {0}"
SQL_PARTS = "SELECT * FROM call_participants WHERE call_id = {0} ORDER BY invited_at, user_id"
SQL_LEGS = "SELECT * FROM call_device_legs WHERE call_id = {0} ORDER BY user_id, device_id"
SQL_DUE = (
    "SELECT id FROM calls WHERE next_deadline <= {0} AND state != 'ended' "
    "ORDER BY next_deadline, id LIMIT 100"
)
SQL_HISTORY = (
    "SELECT calls.*, me.role, me.state, me.end_reason, me.joined_at FROM calls "
    "JOIN call_participants me ON me.call_id = calls.id WHERE me.user_id = {0} "
    "ORDER BY calls.created_at DESC, calls.id DESC LIMIT 50"
)
SQL_OTHERS = (
    "SELECT p.*, u.username, u.display_name FROM call_participants p JOIN users u ON u.id = p.user_id "
    "WHERE p.call_id IN ({0}) AND p.user_id != {1} ORDER BY p.invited_at, p.user_id"
)
SQL_TOKEN = (
    "SELECT t.*, d.removed_at FROM auth_tokens t LEFT OUTER JOIN user_devices d ON d.id = t.device_id "
    "WHERE t.token_hash = {0}"
)
INS_CALL = "INSERT INTO calls VALUES ({})"
UPS_PART = (
    "INSERT INTO call_participants VALUES ({}) ON CONFLICT (call_id, user_id) DO UPDATE SET "
    "role = excluded.role, state = excluded.state, end_reason = excluded.end_reason, "
    "invited_at = excluded.invited_at, joined_at = excluded.joined_at, left_at = excluded.left_at, "
    "answered_device_id = excluded.answered_device_id"
)
UPS_LEG = (
    "INSERT INTO call_device_legs VALUES ({}) ON CONFLICT (call_id, device_id) DO UPDATE SET "
    "user_id = excluded.user_id, state = excluded.state, end_reason = excluded.end_reason, "
    "updated_at = excluded.updated_at"
)
UPD_CALL = (
    "UPDATE calls SET media = {0}, state = {1}, caller_user_id = {2}, caller_device_id = {3}, "
    "created_at = {4}, answered_at = {5}, ended_at = {6}, end_reason = {7}, next_deadline = {8}, "
    "snapshot = {9}, version = version + 1 WHERE id = {10} AND version = {11}"
)


UPD_CALL_NARROW = (  # the store's SQLite statement (see facecall.store.calls)
    "UPDATE calls SET state = {1}, answered_at = {5}, ended_at = {6}, end_reason = {7}, next_deadline = {8}, "
    "snapshot = {9}, version = version + 1 WHERE id = {10} AND version = {11} AND media = {0} "
    "AND caller_user_id = {2} AND caller_device_id IS {3} AND created_at = {4}"
)


def _call_row(c: CallWrite, t: Callable[[Any], Any]) -> tuple[Any, ...]:
    return (c.call_id, c.media, c.state, c.caller_user_id, c.caller_device_id, t(c.created_at),
            t(c.answered_at), t(c.ended_at), c.end_reason, t(c.next_deadline), 1,
            json.dumps(c.snapshot))  # fmt: skip


def _upd_args(c: CallWrite, t: Callable[[Any], Any], version: int) -> tuple[Any, ...]:
    return (c.media, c.state, c.caller_user_id, c.caller_device_id, t(c.created_at), t(c.answered_at),
            t(c.ended_at), c.end_reason, t(c.next_deadline), json.dumps(c.snapshot), c.call_id,
            version)  # fmt: skip


def _children(c: CallWrite, t: Callable[[Any], Any]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    parts = [(c.call_id, p.user_id, p.role, p.state, p.end_reason, t(p.invited_at), t(p.joined_at),
              t(p.left_at), p.answered_device_id) for p in c.participants]  # fmt: skip
    legs = [(c.call_id, g.user_id, g.device_id, g.state, g.end_reason, t(g.updated_at)) for g in c.legs]
    return parts, legs


try:  # the store's own settings, so that the anchor differs only in how statements are run
    from facecall.store.sqlite_driver import SQLITE_PRAGMAS as ANCHOR_PRAGMAS
except ImportError:  # the store before facecall.store.driver existed
    ANCHOR_PRAGMAS = (
        "PRAGMA foreign_keys=ON",
        "PRAGMA busy_timeout=10000",
        "PRAGMA journal_mode=WAL",
        "PRAGMA synchronous=NORMAL",
    )


class SqliteAnchor:
    """The statements through stdlib sqlite3 on the calling thread."""

    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, cached_statements=256)
        for pragma in ANCHOR_PRAGMAS:
            self.db.execute(pragma)

    @staticmethod
    def t(value: float | None) -> float | None:
        return value

    def q(self, sql: str, args: tuple[Any, ...]) -> list[Any]:
        return self.db.execute(sql, args).fetchall()

    def get_users(self, ids: list[str]) -> Any:
        return self.q(SQL_USERS.format(",".join("?" * len(ids))), tuple(ids))

    def list_devices_of_users(self, ids: list[str]) -> Any:
        return self.q(SQL_DEVICES.format(",".join("?" * len(ids))), tuple(ids))

    def live_calls_of_user(self, uid: str) -> Any:
        return self.q(SQL_LIVE.format("?"), (uid,))

    def ringing_calls_between(self, a: str, b: str) -> Any:
        return self.q(SQL_RINGING.format("?", "?"), (a, b))

    def load_call(self, cid: str) -> Any:
        self.db.execute("BEGIN")
        out = [self.q(s.format("?"), (cid,)) for s in (SQL_CALL, SQL_PARTS, SQL_LEGS)]
        self.db.execute("COMMIT")
        return out

    def due_calls(self, now: float) -> Any:
        return self.q(SQL_DUE.format("?"), (self.t(now),))

    def call_history(self, uid: str) -> Any:
        self.db.execute("BEGIN")
        rows = self.q(SQL_HISTORY.format("?"), (uid,))
        ids = [r[0] for r in rows]
        others = self.q(SQL_OTHERS.format(",".join("?" * len(ids)), "?"), (*ids, uid))
        self.db.execute("COMMIT")
        return others

    def resolve_token(self, digest: str) -> Any:
        return self.q(SQL_TOKEN.format("?"), (digest,))

    def create_call(self, c: CallWrite) -> None:
        parts, legs = _children(c, self.t)
        self.db.execute("BEGIN IMMEDIATE")
        self.db.execute(INS_CALL.format(",".join("?" * 12)), _call_row(c, self.t))
        self.db.executemany(UPS_PART.format(",".join("?" * 9)), parts)
        self.db.executemany(UPS_LEG.format(",".join("?" * 6)), legs)
        self.db.execute("COMMIT")

    def save_call(self, c: CallWrite, version: int) -> None:
        parts, legs = _children(c, self.t)
        self.db.execute("BEGIN IMMEDIATE")
        narrow = UPD_CALL_NARROW.format(*[f"?{i}" for i in range(1, 13)])
        self.db.execute(narrow, _upd_args(c, self.t, version))
        self.db.executemany(UPS_PART.format(",".join("?" * 9)), parts)
        self.db.executemany(UPS_LEG.format(",".join("?" * 6)), legs)
        self.db.execute("COMMIT")

    def seed(self, rows: dict[str, list[tuple[Any, ...]]]) -> None:
        self.db.execute("BEGIN")
        for table, key in (("users", "u"), ("user_devices", "d"), ("auth_tokens", "tok"), ("calls", "c"),
                           ("call_participants", "p"), ("call_device_legs", "l")):  # fmt: skip
            width = len(rows[key][0])
            self.db.executemany(f"INSERT INTO {table} VALUES ({','.join('?' * width)})", rows[key])
        self.db.execute("COMMIT")
        self.db.execute("ANALYZE")


def _dollars(n: int, start: int = 1) -> str:
    return ",".join(f"${i}" for i in range(start, start + n))


class PgAnchor:
    """The statements through asyncpg on one connection."""

    def __init__(self, con: Any) -> None:
        self.con = con

    @staticmethod
    def t(value: float | None) -> datetime | None:
        return None if value is None else pg_time(value)

    async def get_users(self, ids: list[str]) -> Any:
        return await self.con.fetch(SQL_USERS.format("SELECT unnest($1::varchar[])"), ids)

    async def list_devices_of_users(self, ids: list[str]) -> Any:
        return await self.con.fetch(SQL_DEVICES.format("SELECT unnest($1::varchar[])"), ids)

    async def live_calls_of_user(self, uid: str) -> Any:
        return await self.con.fetch(SQL_LIVE.format("$1"), uid)

    async def ringing_calls_between(self, a: str, b: str) -> Any:
        return await self.con.fetch(SQL_RINGING.format("$1", "$2"), a, b)

    async def load_call(self, cid: str) -> Any:
        async with self.con.transaction():
            return [await self.con.fetch(s.format("$1"), cid) for s in (SQL_CALL, SQL_PARTS, SQL_LEGS)]

    async def due_calls(self, now: float) -> Any:
        return await self.con.fetch(SQL_DUE.format("$1"), self.t(now))

    async def call_history(self, uid: str) -> Any:
        async with self.con.transaction():
            rows = await self.con.fetch(SQL_HISTORY.format("$1"), uid)
            ids = [r[0] for r in rows]
            return await self.con.fetch(SQL_OTHERS.format("SELECT unnest($1::varchar[])", "$2"), ids, uid)

    async def resolve_token(self, digest: str) -> Any:
        return await self.con.fetchrow(SQL_TOKEN.format("$1"), digest)

    async def create_call(self, c: CallWrite) -> None:
        parts, legs = _children(c, self.t)
        async with self.con.transaction():
            await self.con.execute(INS_CALL.format(_dollars(12)), *_call_row(c, self.t))
            await self.con.executemany(UPS_PART.format(_dollars(9)), parts)
            await self.con.executemany(UPS_LEG.format(_dollars(6)), legs)

    async def save_call(self, c: CallWrite, version: int) -> None:
        parts, legs = _children(c, self.t)
        async with self.con.transaction():
            await self.con.execute(
                UPD_CALL.format(*[f"${i}" for i in range(1, 13)]), *_upd_args(c, self.t, version)
            )
            await self.con.executemany(UPS_PART.format(_dollars(9)), parts)
            await self.con.executemany(UPS_LEG.format(_dollars(6)), legs)

    async def seed(self, rows: dict[str, list[tuple[Any, ...]]]) -> None:
        for table, key in (("users", "u"), ("user_devices", "d"), ("auth_tokens", "tok"), ("calls", "c"),
                           ("call_participants", "p"), ("call_device_legs", "l")):  # fmt: skip
            await self.con.copy_records_to_table(table, records=rows[key])
        await self.con.execute("ANALYZE")


# -- the timing loop ---------------------------------------------------------------------------------


async def timed(n: int, step: Callable[[int], Awaitable[Any] | Any]) -> tuple[float, float, float]:
    """(wall µs, process CPU µs, event-loop thread CPU µs) per call of ``step(i)`` for i in
    range(n), after a short warm-up."""
    for i in range(min(50, n)):
        result = step(n + i)
        if asyncio.iscoroutine(result):
            await result
    wall, cpu, loop = time.perf_counter(), time.process_time(), time.thread_time()
    for i in range(n):
        result = step(i)
        if asyncio.iscoroutine(result):
            await result
    return (
        (time.perf_counter() - wall) / n * 1e6,
        (time.process_time() - cpu) / n * 1e6,
        (time.thread_time() - loop) / n * 1e6,
    )


def plans(
    store: Store, data: Data, anchor: Any, n: int
) -> dict[str, tuple[Callable[[int], Any], Callable[[int], Any]]]:
    """For each op: (store step, anchor step), both fed the same arguments by index."""
    rng = random.Random(1)
    pairs = [rng.sample(data.users, 2) for _ in range(2 * n + 100)]
    many = [rng.sample(data.users, 3) for _ in range(2 * n + 100)]
    now = [T0 + data.history + 10 + i for i in range(2 * n + 100)]
    # every CallWrite is built before the clock starts, so only the store's own work is timed
    count = 2 * n + 100

    def lifecycle(call: CallWrite) -> tuple[CallWrite, CallWrite, CallWrite]:
        return call, answered(call, call.created_at + 1), ended(call, call.created_at + 2)

    setups = [lifecycle(data.call(now[i])) for i in range(count)]
    anchor_setups = [lifecycle(data.call(now[i])) for i in range(count)]
    fresh = [data.call(now[i]) for i in range(count)]
    anchor_fresh = [data.call(now[i]) for i in range(count)]
    made: list[CallWrite] = []  # created by the store, for load_call and save_call
    anchor_made: list[CallWrite] = []
    tok = data.tokens

    async def setup(i: int) -> None:
        a, b = pairs[i]
        call, answer, end = setups[i]
        await store.get_users([a, b])
        await store.list_devices_of_users([a, b])
        await store.live_calls_of_user(b)
        await store.ringing_calls_between(a, b)
        await store.ringing_calls_between(b, a)
        await store.create_call(call)
        await store.save_call(answer, 1)
        await store.save_call(end, 2)

    def anchor_setup(i: int) -> Any:
        a, b = pairs[i]
        call, answer, end = anchor_setups[i]
        steps = [
            lambda: anchor.get_users([a, b]), lambda: anchor.list_devices_of_users([a, b]),
            lambda: anchor.live_calls_of_user(b), lambda: anchor.ringing_calls_between(a, b),
            lambda: anchor.ringing_calls_between(b, a), lambda: anchor.create_call(call),
            lambda: anchor.save_call(answer, 1), lambda: anchor.save_call(end, 2),
        ]  # fmt: skip

        async def run() -> None:
            for s in steps:
                r = s()
                if asyncio.iscoroutine(r):
                    await r

        return run()

    def create(i: int) -> Any:
        made.append(fresh[i])
        return store.create_call(fresh[i])

    def anchor_create(i: int) -> Any:
        anchor_made.append(anchor_fresh[i])
        return anchor.create_call(anchor_fresh[i])

    endings: list[CallWrite] = []
    anchor_endings: list[CallWrite] = []

    def save(i: int) -> Any:
        if not endings:
            endings.extend(ended(c, c.created_at + 5) for c in made)
        return store.save_call(endings[i % len(endings)], 1)

    def anchor_save(i: int) -> Any:
        if not anchor_endings:
            anchor_endings.extend(ended(c, c.created_at + 5) for c in anchor_made)
        return anchor.save_call(anchor_endings[i % len(anchor_endings)], 1)

    hist_ids = [rng.choice(data.users) for _ in range(2 * n + 100)]
    return {
        "get_users": (lambda i: store.get_users(many[i]), lambda i: anchor.get_users(many[i])),
        "list_devices_of_users": (
            lambda i: store.list_devices_of_users(pairs[i]),
            lambda i: anchor.list_devices_of_users(pairs[i]),
        ),
        "live_calls_of_user": (
            lambda i: store.live_calls_of_user(pairs[i][0]),
            lambda i: anchor.live_calls_of_user(pairs[i][0]),
        ),
        "ringing_calls_between": (
            lambda i: store.ringing_calls_between(*pairs[i]),
            lambda i: anchor.ringing_calls_between(*pairs[i]),
        ),
        "create_call": (create, anchor_create),
        "load_call": (
            lambda i: store.load_call(made[i % len(made)].call_id),
            lambda i: anchor.load_call(made[i % len(made)].call_id),
        ),
        "save_call": (save, anchor_save),
        "due_calls": (lambda i: store.due_calls(now[i]), lambda i: anchor.due_calls(now[i])),
        "call_history": (
            lambda i: store.call_history(hist_ids[i]),
            lambda i: anchor.call_history(hist_ids[i]),
        ),
        "resolve_token": (
            lambda i: store.resolve_token(tok[i % len(tok)], T0 + 1),
            lambda i: anchor.resolve_token(tok[i % len(tok)]),
        ),
        "setup": (setup, anchor_setup),
    }


ORDER = ("get_users", "list_devices_of_users", "live_calls_of_user", "ringing_calls_between", "create_call",
         "load_call", "save_call", "due_calls", "call_history", "resolve_token", "setup")  # fmt: skip


async def run_backend(backend: str, args: argparse.Namespace) -> None:
    data = Data(args.users, args.history, random_ids=args.random_ids)
    if backend == "sqlite":
        tmp = tempfile.mkdtemp(prefix="facecall-bench-")
        url = f"sqlite+aiosqlite:///{tmp}/bench.db"
        store = await Store.open(url)
        anchor: Any = SqliteAnchor(f"{tmp}/bench.db")
        anchor.seed(data.rows(sqlite_time))
        server = con = None
    else:
        import asyncpg
        from tests.pg import start_postgres

        server = start_postgres()
        url = server.create_database("bench")
        store = await Store.open(url)
        con = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
        anchor = PgAnchor(con)
        await anchor.seed(data.rows(pg_time))
    try:
        steps = plans(store, data, anchor, args.n)
        print(f"\n{backend}: {args.users} users, {2 * args.users} devices, {args.history} ended calls; "
              f"n={args.n} per op")  # fmt: skip
        print(f"{'op':22} {'wall µs':>8} {'CPU µs':>8} {'loop µs':>8} {'ops/s':>7} | {'anchor wall':>11} "
              f"{'CPU µs':>8} | {'x CPU':>6}")  # fmt: skip
        for name in ORDER:
            if args.ops and name not in args.ops:
                continue
            count = max(args.n // 8, 20) if name == "setup" else args.n
            s_step, a_step = steps[name]
            wall, cpu, loop = await timed(count, s_step)
            a_wall, a_cpu, _ = await timed(count, a_step)
            print(f"{name:22} {wall:8.1f} {cpu:8.1f} {loop:8.1f} {1e6 / wall:7.0f} | {a_wall:11.1f} "
                  f"{a_cpu:8.1f} | {cpu / max(a_cpu, 1e-9):6.1f}")  # fmt: skip
    finally:
        await store.close()
        if con is not None:
            await con.close()
        if server is not None:
            import shutil

            server.stop()
            shutil.rmtree(server.base_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"])
    parser.add_argument("--ops", nargs="*", default=None, help=f"subset of {', '.join(ORDER)}")
    parser.add_argument("-n", type=int, default=1000, help="calls per op (setup: n/8)")
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--history", type=int, default=30000)
    parser.add_argument(
        "--random-ids", action="store_true",
        help="random call ids (uuid4) instead of the service's time-ordered ones (UUIDv7)",
    )
    args = parser.parse_args()
    for backend in args.backends:
        uvloop.run(run_backend(backend, args))


if __name__ == "__main__":
    main()
