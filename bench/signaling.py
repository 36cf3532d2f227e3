"""Signaling benchmark: call set-ups per second, ring latency and memory per connected device,
beside a bare `websockets` relay carrying the same message pattern (the floor).

One call set-up = call.start → ring on every callee device → answer → offer → answer → each
device's sealed SFrame key to the other (`call.key`) → 4 trickled candidates → hang-up, each
request answered by `ok`. The server runs as its own
process (`facecall serve --no-turn`, SQLite in a temp dir); its CPU time is read from /proc, so
"set-ups per CPU-second" is independent of how fast this one load-generating process is. Both
servers carry the frames uncompressed: facecall does not negotiate permessage-deflate, so the
relay does not either (``--relay-deflate`` gives the floor used before 2026-12-06, session 6).
``--tls`` runs both over WSS with one self-signed certificate (``facecall serve --tls-cert``
beside ``websockets.serve(ssl=...)``); the clients trust it through ``SSL_CERT_FILE``, as
docs/operations.md tells SDK users with a private CA to do.

    .venv/bin/python bench/signaling.py --pairs 50 --callee-devices 2 --seconds 20 --idle 1000
    .venv/bin/python bench/signaling.py --pairs 5 --seconds 15 --idle 1000 --rounds 5
    .venv/bin/python bench/signaling.py --pairs 5 --seconds 10 --idle 200 --rounds 3 --tls
    .venv/bin/python bench/signaling.py --pairs 5 --seconds 10 --idle 200 --rounds 3 --nodes 2

``--nodes N`` runs N ``facecall signaling`` nodes sharing a throwaway PostgreSQL and
redis-server (tests/pg.py, tests/redis_server.py: Debian's packages) instead of one SQLite
node: each caller connects to one node and its callee's devices to the next, so with two nodes
every message of a set-up crosses from one node to the other through Redis (``--nodes 1
--in-process-bus``: one node on PostgreSQL alone). The server CPU is
then the cluster's: every node, redis-server, and PostgreSQL's postmaster with its backends
(``--json`` splits it); memory per idle device is the nodes' and redis-server's RSS growth.

This VM's speed drifts by 10-40 % between minutes: with ``--rounds N`` the two servers take
turns (odd rounds start with the relay) and every figure is the median over the rounds, the
per-message ratio the median of each round's own ratio (its range is printed too).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvloop
import websockets
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from redis.asyncio import Redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # tests/: throwaway servers
from facecall.client.signaling import SignalingConnection
from facecall.e2ee.agreement import certify_agreement_key, new_agreement_key, verify_agreement_key
from facecall.e2ee.identity import public_key_text
from facecall.e2ee.media_keys import make_kid, seal_sender_key
from facecall.turn.tls import write_self_signed
from procstat import cpu_seconds, exit_on_sigterm, free_port, percentile, rss_bytes

CANDIDATE = {"candidate": "candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host",
             "sdpMid": "0", "sdpMLineIndex": 0}
SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n" + "a=x\r\n" * 60
#: an identity-key signature as every client sends with its SDP (the server checks only its form)
SIGNATURE = "LkQfzYgPEajuTffMoright_KVtXSggOo77PXVCd2fSsBMqZdK3Wvah_ob6UuEDiQm8vYF8mzTCp1fr4YZ0hPCw"


class SealedKeys:
    """What the two devices of a pair send each other as ``call.key`` in every call: a sender key
    sealed to the other device (docs/sframe.md, "1:1 calls"). One is made per direction with
    the real functions (each device's identity key signs it, the other's certified agreement
    key seals it); each call's carries that call's id. The server checks a key's form, never
    its signature (as with ``SIGNATURE``), and sealing two keys per set-up here would make this
    one load process the bottleneck."""

    def __init__(self, *devices: tuple[str, str]) -> None:
        identities = [Ed25519PrivateKey.generate() for _ in devices]
        agreements = []
        for (user, device), identity in zip(devices, identities, strict=True):
            certificate = certify_agreement_key(identity, user, device, new_agreement_key())
            agreements.append(verify_agreement_key(public_key_text(identity.public_key()),
                                                   certificate, user_id=user, device_id=device))
        self.made = [seal_sender_key(identities[i], "0" * 32, *devices[i], make_kid(0x0A0B0C0D, i),
                                     os.urandom(32), [agreements[1 - i]]) for i in (0, 1)]

    def sealed(self, call_id: str, sender: int) -> dict[str, object]:
        """Device ``sender``'s (0 or 1) key for ``call_id``, sealed to the other one."""
        return {**self.made[sender], "call_id": call_id}


#: a sealed key as the bare relay forwards it: the same size as facecall's (32-character ids)
KEY = SealedKeys(("1" * 32, "2" * 32), ("3" * 32, "4" * 32)).sealed("5" * 32, 0)


@dataclass
class Result:
    name: str
    setups: int = 0
    seconds: float = 0.0
    server_cpu: float = 0.0
    messages: int = 0
    ring_latencies: list[float] = field(default_factory=list)
    cpu_parts: dict[str, float] = field(default_factory=dict)  # --nodes: the cluster's CPU by part

    def row(self) -> dict[str, Any]:
        return {
            "setups_per_s": self.setups / self.seconds if self.seconds else 0.0,
            "setups_per_cpu_s": self.setups / self.server_cpu if self.server_cpu else 0.0,
            "ring_p50_ms": percentile(self.ring_latencies, 0.5) * 1000,
            "ring_p99_ms": percentile(self.ring_latencies, 0.99) * 1000,
            "us_per_message": self.server_cpu / self.messages * 1e6 if self.messages else 0.0,
            "messages": self.messages,
            "server_cpu_s": self.server_cpu,
            **{f"cpu_s_{part}": seconds for part, seconds in self.cpu_parts.items()},
        }


def start_process(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, env={**os.environ, **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def wait_http(url: str) -> None:
    async with httpx.AsyncClient() as http:
        for _ in range(400):
            try:
                if (await http.get(url)).status_code == 200:
                    return
            except httpx.TransportError:
                await asyncio.sleep(0.05)
    raise TimeoutError(url)


# --------------------------------------------------------------------------- facecall


async def make_devices(http: httpx.AsyncClient, prefix: str, users: int,
                       per_user: int) -> list[tuple[str, list[str]]]:
    """(user id, [device tokens]) for ``users`` new accounts."""
    async def one(i: int) -> tuple[str, list[str]]:
        acct = (await http.post("/v1/accounts", json={"username": f"{prefix}{i}",
                                                      "password": "benchmark!"})).json()
        auth = {"Authorization": f"Bearer {acct['token']}"}
        tokens = []
        for d in range(per_user):
            reg = (await http.post("/v1/devices", json={"kind": "sdk", "name": f"d{d}"},
                                   headers=auth)).json()
            tokens.append(reg["token"])
        return acct["user"]["id"], tokens

    out = []
    for start in range(0, users, 16):
        out += await asyncio.gather(*(one(i) for i in range(start, min(users, start + 16))))
    return out


async def facecall_pair(caller: SignalingConnection, callees: list[SignalingConnection],
                        callee_user: str, deadline: float, result: Result) -> None:
    callee_device = callees[0]
    callee_id: str = callee_device.welcome["device_id"]  # type: ignore[index]
    caller_id: str = caller.welcome["device_id"]  # type: ignore[index]
    keys = SealedKeys((caller.welcome["user_id"], caller_id), (callee_user, callee_id))  # type: ignore[index]
    while time.perf_counter() < deadline:
        sent = time.perf_counter()
        call_id = (await caller.request("call.start", to=[callee_user], media="video"))["call_id"]
        for device in callees:
            await device.next_event("call.ring")
            result.ring_latencies.append(time.perf_counter() - sent)
        await callee_device.request("call.answer", call_id=call_id)
        await caller.next_event("call.answered")
        for device in callees[1:]:
            await device.next_event("call.stop_ringing")
            await device.next_event("call.elsewhere")  # the call is on the callee's first device
        await caller.request("call.sdp", call_id=call_id, to_device=callee_id,
                             description={"type": "offer", "sdp": SDP}, signature=SIGNATURE)
        await callee_device.next_event("call.sdp")
        await callee_device.request("call.sdp", call_id=call_id, to_device=caller_id,
                                    description={"type": "answer", "sdp": SDP},
                                    signature=SIGNATURE)
        await caller.next_event("call.sdp")
        # each device's SFrame sender key, sealed to the other (sealed here: not server CPU)
        await caller.request("call.key", call_id=call_id, to_device=callee_id,
                             key=keys.sealed(call_id, 0))
        await callee_device.next_event("call.key")
        await callee_device.request("call.key", call_id=call_id, to_device=caller_id,
                                    key=keys.sealed(call_id, 1))
        await caller.next_event("call.key")
        for _ in range(2):
            await caller.request("call.candidate", call_id=call_id, to_device=callee_id,
                                 candidate=CANDIDATE)
            await callee_device.request("call.candidate", call_id=call_id, to_device=caller_id,
                                        candidate=CANDIDATE)
        for _ in range(2):
            await callee_device.next_event("call.candidate")
            await caller.next_event("call.candidate")
        await caller.request("call.hangup", call_id=call_id)
        await callee_device.next_event("call.ended")
        for device in callees[1:]:
            await device.next_event("call.elsewhere")  # ended
        result.setups += 1
        # requests + replies + events (ring per device, ringing, answered, stop_ringing, 2 sdp,
        # 2 keys, 4 candidates, ended; to each other callee device call.elsewhere active and
        # ended)
        n = len(callees)
        result.messages += 11 * 2 + n + 1 + 1 + (n - 1) + 2 + 2 + 4 + 1 + 2 * (n - 1)


@dataclass
class Backing:
    """What ``--nodes`` runs the nodes on: one PostgreSQL and one redis-server, for all rounds."""

    postgres: Any  # tests.pg.PostgresServer
    redis: Any  # tests.redis_server.RedisServer

    def cpu_pids(self) -> dict[str, list[int]]:
        """redis-server, and PostgreSQL's postmaster with its backends (its children)."""
        postmaster = int((self.postgres.data_dir / "postmaster.pid").read_text().split()[0])
        children = Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split()
        return {"redis": [self.redis.pid], "postgresql": [postmaster, *map(int, children)]}


def cluster_cpu(node_pids: list[int], backing: Backing | None) -> dict[str, float]:
    """CPU seconds so far of the nodes, and of what they run on (``--nodes``)."""
    parts = {"nodes": sum(cpu_seconds(pid) for pid in node_pids)}
    for part, pids in (backing.cpu_pids() if backing is not None else {}).items():
        parts[part] = sum(cpu_seconds(pid) for pid in pids if Path(f"/proc/{pid}").exists())
    return parts


async def bench_facecall(args: argparse.Namespace, workdir: Path,
                         backing: Backing | None = None) -> tuple[Result, float]:
    profile = ["-m", "cProfile", "-o", args.profile] if args.profile else []
    entry = [str(Path(__file__).with_name("serve_without_call_writes.py"))] \
        if args.without_call_writes else ["-m", "facecall"]
    # One synthetic device here places dozens of calls a second, far beyond what the per-device
    # rate limit allows a real one, and one address signs up every benchmark user: lift both
    # limits for the benchmark.
    tls = ["--tls-cert", str(args.tls_files[0]), "--tls-key", str(args.tls_files[1])] \
        if args.tls_files else []
    env = {"FACECALL_MESSAGES_PER_SECOND": "100000", "FACECALL_MESSAGE_BURST": "100000",
           "FACECALL_AUTH_ATTEMPTS_PER_MINUTE": "0"}
    if backing is None:
        command = ["serve", "--no-turn", "--database-url", f"sqlite:///{workdir / 'bench.db'}"]
    else:  # a fresh database and an empty bus for each round
        database = backing.postgres.create_database().replace("+asyncpg", "")
        redis = Redis.from_url(backing.redis.url)
        await redis.flushall()
        await redis.aclose()
        command = ["signaling", "--database-url", database]
        if not args.in_process_bus:
            command += ["--redis-url", backing.redis.url]
    ports = [free_port() for _ in range(max(1, args.nodes))]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for index, port in enumerate(ports):
            procs.append(start_process(
                [sys.executable, *(profile if index == 0 else []), *entry, *command,
                 "--port", str(port), "--log-level", "warning", *tls], env=env))
            if index == 0:  # the first one migrates the database; the others find it done
                await wait_http(f"http{'s' if args.tls else ''}://127.0.0.1:{port}/healthz")
        secure = "s" if args.tls else ""
        for port in ports:
            await wait_http(f"http{secure}://127.0.0.1:{port}/healthz")
        ws_urls = [f"ws{secure}://127.0.0.1:{port}/v1/signaling" for port in ports]
        async with httpx.AsyncClient(base_url=f"http{secure}://127.0.0.1:{ports[0]}",
                                     timeout=60) as http:
            callers = await make_devices(http, "caller", args.pairs, 1)
            callees = await make_devices(http, "callee", args.pairs, args.callee_devices)
            idle_users = max(1, args.idle // 32)
            idle = await make_devices(http, "idle", idle_users, min(32, args.idle))
        # memory per idle device, spread over the nodes (and what Redis keeps for each)
        holders = [proc.pid for proc in procs] + ([backing.redis.pid] if backing else [])
        rss_before = sum(rss_bytes(pid) for pid in holders)
        idle_conns = [SignalingConnection(ws_urls[i % len(ws_urls)], t)
                      for i, t in enumerate(t for _, tokens in idle for t in tokens)]
        for start in range(0, len(idle_conns), 50):
            await asyncio.gather(*(c.connect() for c in idle_conns[start:start + 50]))
        await asyncio.sleep(1.0)
        per_device = (sum(rss_bytes(pid) for pid in holders) - rss_before) / max(1, len(idle_conns))

        # caller i on node i, its callee's devices on the next node: every set-up crosses nodes
        caller_conns = [SignalingConnection(ws_urls[i % len(ws_urls)], tokens[0])
                        for i, (_, tokens) in enumerate(callers)]
        callee_conns = [[SignalingConnection(ws_urls[(i + 1) % len(ws_urls)], t) for t in tokens]
                        for i, (_, tokens) in enumerate(callees)]
        await asyncio.gather(*(c.connect() for c in itertools.chain(caller_conns,
                                                                    *callee_conns)))
        result = Result("facecall")
        deadline = time.perf_counter() + args.seconds
        pids = [proc.pid for proc in procs]
        cpu0, t0 = cluster_cpu(pids, backing), time.perf_counter()
        await asyncio.gather(*(facecall_pair(caller_conns[i], callee_conns[i], callees[i][0],
                                             deadline, result) for i in range(args.pairs)))
        result.seconds = time.perf_counter() - t0
        cpu1 = cluster_cpu(pids, backing)
        result.cpu_parts = {part: cpu1[part] - cpu0[part] for part in cpu0}
        result.server_cpu = sum(result.cpu_parts.values())
        if backing is None:
            result.cpu_parts = {}
        for conn in itertools.chain(idle_conns, caller_conns, *callee_conns):
            await conn.close()
        return result, per_device
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGINT)  # a clean exit (cProfile writes its file on exit)
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# --------------------------------------------------------------------------- bare relay


class BareClient:
    def __init__(self, ws: Any, name: str) -> None:
        self.ws, self.name = ws, name
        self.ids = itertools.count()
        self.replies: dict[str, asyncio.Future[None]] = {}
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.reader = asyncio.create_task(self.read())

    async def read(self) -> None:
        async for raw in self.ws:
            message = json.loads(raw)
            if message.get("type") == "ok":
                self.replies.pop(message["re"]).set_result(None)
            else:
                await self.events.put(message)

    async def request(self, to: list[str], **fields: Any) -> None:
        msg_id = f"{self.name}-{next(self.ids)}"
        future = asyncio.get_running_loop().create_future()
        self.replies[msg_id] = future
        await self.ws.send(json.dumps({"v": 1, "id": msg_id, "re": msg_id, "to": to, **fields}))
        await future

    async def next(self) -> dict[str, Any]:
        return await self.events.get()


async def bare_pair(caller: BareClient, callees: list[BareClient], deadline: float,
                    result: Result) -> None:
    names = [c.name for c in callees]
    first = callees[0]
    while time.perf_counter() < deadline:
        sent = time.perf_counter()
        await caller.request(names, type="call.ring", media="video")
        for device in callees:
            await device.next()
            result.ring_latencies.append(time.perf_counter() - sent)
        # to the caller, and twice to each other callee device (stop_ringing, elsewhere)
        await first.request([caller.name, *names[1:], *names[1:]], type="call.answered")
        await caller.next()
        for device in callees[1:]:
            await device.next()
            await device.next()
        await caller.request([first.name], type="call.sdp", sdp=SDP, signature=SIGNATURE)
        await first.next()
        await first.request([caller.name], type="call.sdp", sdp=SDP, signature=SIGNATURE)
        await caller.next()
        await caller.request([first.name], type="call.key", key=KEY)
        await first.next()
        await first.request([caller.name], type="call.key", key=KEY)
        await caller.next()
        for _ in range(2):
            await caller.request([first.name], type="call.candidate", candidate=CANDIDATE)
            await first.request([caller.name], type="call.candidate", candidate=CANDIDATE)
        for _ in range(2):
            await first.next()
            await caller.next()
        await caller.request([first.name, *names[1:]], type="call.ended")
        await first.next()
        for device in callees[1:]:
            await device.next()
        # the relay forwards instead of generating events. Frames: 11 requests (ring, answered,
        # 2 sdp, 2 keys, 4 candidates, ended) + their 11 replies + what was forwarded (ring per
        # device, answered, its two copies to the other callee devices, 2 sdp, 2 keys, 4
        # candidates, ended and its copy to the other callee devices)
        result.setups += 1
        n = len(callees)
        result.messages += 11 * 2 + n + 1 + (n - 1) + 2 + 2 + 4 + 1 + 2 * (n - 1)


async def bench_bare(args: argparse.Namespace) -> Result:
    port = free_port()
    compression = "deflate" if args.relay_deflate else None
    tls = ["--tls", *map(str, args.tls_files)] if args.tls_files else []
    proc = start_process([sys.executable, str(Path(__file__).with_name("bare_relay.py")), str(port),
                          *(["deflate"] if compression else []), *tls])
    try:
        url = f"ws{'s' if args.tls else ''}://127.0.0.1:{port}/"
        for _ in range(400):
            try:
                probe = await websockets.connect(url + "?id=probe")
                await probe.close()
                break
            except OSError:
                await asyncio.sleep(0.05)

        async def client(name: str) -> BareClient:
            ws = await websockets.connect(f"{url}?id={name}", max_size=2**20, compression=compression)
            return BareClient(ws, name)

        callers = [await client(f"c{i}") for i in range(args.pairs)]
        callees = [[await client(f"e{i}-{d}") for d in range(args.callee_devices)]
                   for i in range(args.pairs)]
        result = Result("bare websockets relay")
        deadline = time.perf_counter() + args.seconds
        cpu0, t0 = cpu_seconds(proc.pid), time.perf_counter()
        await asyncio.gather(*(bare_pair(callers[i], callees[i], deadline, result)
                               for i in range(args.pairs)))
        result.seconds = time.perf_counter() - t0
        result.server_cpu = cpu_seconds(proc.pid) - cpu0
        for c in itertools.chain(callers, *callees):
            await c.ws.close()
        return result
    finally:
        proc.terminate()
        proc.wait(10)


async def one_round(args: argparse.Namespace, index: int,
                    backing: Backing | None) -> dict[str, Any]:
    """facecall and the relay, one after the other; odd rounds run the relay first, so that a
    machine getting faster or slower during the run does not always favour the same one."""
    floor = await bench_bare(args) if not args.skip_floor and index % 2 else None
    with tempfile.TemporaryDirectory(prefix="facecall-bench-") as tmp:
        ours, per_device = await bench_facecall(args, Path(tmp), backing)
    if not args.skip_floor and floor is None:
        floor = await bench_bare(args)
    report: dict[str, Any] = {"facecall": ours.row(), "idle_device_kib": per_device / 1024}
    if floor is not None:
        report["bare_relay"] = floor.row()
        report["message_cost_ratio"] = ours.row()["us_per_message"] / floor.row()["us_per_message"]
    return report


def median_report(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's median over the rounds (the ratio: the median of the per-round ratios)."""
    out: dict[str, Any] = {}
    for key, value in rounds[0].items():
        if isinstance(value, dict):
            out[key] = {k: statistics.median(r[key][k] for r in rounds) for k in value}
        else:
            out[key] = statistics.median(r[key] for r in rounds)
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=50, help="concurrent caller/callee pairs")
    parser.add_argument("--callee-devices", type=int, default=2, help="devices per callee")
    parser.add_argument("--seconds", type=float, default=20.0, help="load duration per server")
    parser.add_argument("--idle", type=int, default=1000, help="idle devices for the memory figure")
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat facecall and the relay this often; report medians")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--profile", metavar="FILE", help="cProfile the facecall server into FILE")
    parser.add_argument("--skip-floor", action="store_true", help="measure facecall only")
    parser.add_argument("--relay-deflate", action="store_true",
                        help="the relay compresses every frame (permessage-deflate), as it did "
                             "before session 6; facecall does not, so this floor is ~37%% too high")
    parser.add_argument("--without-call-writes", action="store_true",
                        help="facecall with the statements and COMMIT of its call writes skipped "
                             "(bench/serve_without_call_writes.py): the ceiling of any store work, "
                             "not a server")
    parser.add_argument("--tls", action="store_true",
                        help="both servers over WSS (one self-signed certificate, trusted through "
                             "SSL_CERT_FILE)")
    parser.add_argument("--nodes", type=int, default=0,
                        help="N facecall signaling nodes on one PostgreSQL and one Redis, "
                             "each call crossing nodes (default 0: one SQLite node)")
    parser.add_argument("--in-process-bus", action="store_true",
                        help="with --nodes 1: the node on PostgreSQL without Redis (what the "
                             "database costs, apart from the shared bus)")
    args = parser.parse_args()
    if args.in_process_bus and args.nodes != 1:
        parser.error("--in-process-bus goes with --nodes 1")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.nodes < 0 or (args.nodes and args.without_call_writes):
        parser.error("--nodes must be 0 or more, and cannot go with --without-call-writes")
    with contextlib.ExitStack() as stack:
        tls_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="facecall-bench-tls-"))
        args.tls_files = write_self_signed(Path(tls_dir), ["127.0.0.1"]) if args.tls else None
        if args.tls_files:
            os.environ["SSL_CERT_FILE"] = str(args.tls_files[0])
        backing = None
        if args.nodes:
            from tests.pg import running_postgres
            from tests.redis_server import running_redis

            backing = Backing(stack.enter_context(running_postgres()),
                              stack.enter_context(running_redis()))
        await run_rounds(args, backing)


async def run_rounds(args: argparse.Namespace, backing: Backing | None) -> None:
    rounds = []
    for index in range(args.rounds):
        rounds.append(await one_round(args, index, backing))
        if args.rounds > 1:
            print(f"round {index + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    report = median_report(rounds)
    if args.rounds > 1 and not args.skip_floor:
        ratios = [r["message_cost_ratio"] for r in rounds]
        report["message_cost_ratio_range"] = [min(ratios), max(ratios)]
    if args.json or args.skip_floor:
        print(json.dumps({**report, "rounds": rounds, "args": vars(args)}, indent=2, default=str))
        return
    of = f" (median of {args.rounds} rounds)" if args.rounds > 1 else ""
    ours = "facecall*" if args.without_call_writes else \
        f"{args.nodes} nodes" if args.nodes else "facecall"
    print(f"{'':24}{ours:>14}{'bare relay':>14}{of}")
    for key in ("setups_per_s", "setups_per_cpu_s", "ring_p50_ms", "ring_p99_ms",
                "us_per_message", "server_cpu_s", "messages"):
        print(f"{key:24}{report['facecall'][key]:>14.2f}{report['bare_relay'][key]:>14.2f}")
    print(f"memory per idle device: {report['idle_device_kib']:.1f} KiB")
    ratio = f"{report['message_cost_ratio']:.2f}"
    if args.rounds > 1:
        low, high = report["message_cost_ratio_range"]
        ratio += f" (rounds: {low:.2f}-{high:.2f})"
    over = " over WSS" if args.tls else ""
    print(f"per-message cost ratio{over} (facecall / bare relay): {ratio}")
    if args.nodes:
        parts = ", ".join(f"{key[6:]} {report['facecall'][key]:.2f} s" for key in report["facecall"]
                          if key.startswith("cpu_s_"))
        print(f"cluster CPU (median): {parts}")
    if args.without_call_writes:
        print("* call writes skipped: what a set-up costs if storing it cost nothing (a ceiling)")


if __name__ == "__main__":
    exit_on_sigterm()
    uvloop.run(main())
