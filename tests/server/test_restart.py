"""Nothing is lost: a node killed with SIGKILL mid-ring still turns the ring into a missed call
after it restarts, and history survives (DESIGN.md invariant 2)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from facecall.client.signaling import SignalingConnection
from tests.live import free_socket


class ServerProcess:
    """`facecall serve` as a child process (so that it can be killed for real)."""

    def __init__(self, db: Path, port: int, ring_timeout: float, resume_grace: float = 60.0) -> None:
        self.db, self.port, self.ring_timeout = db, port, ring_timeout
        self.resume_grace = resume_grace
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "FACECALL_RESUME_GRACE": str(self.resume_grace)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "facecall", "serve", "--no-turn", "--port", str(self.port),
             "--database-url", f"sqlite:///{self.db}", "--ring-timeout", str(self.ring_timeout),
             "--log-level", "warning"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )

    async def ready(self) -> None:
        async with httpx.AsyncClient() as http:
            for _ in range(200):
                try:
                    if (await http.get(f"http://127.0.0.1:{self.port}/healthz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                assert self.proc is not None and self.proc.poll() is None, self.proc.stderr
                await asyncio.sleep(0.05)
        raise TimeoutError("server did not start")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def new_user(http: httpx.AsyncClient, name: str) -> tuple[str, str, str]:
    """A new account with one device: (account token, user id, device token)."""
    acct = (await http.post("/v1/accounts", json={"username": name,
                                                  "password": "longenough!"})).json()
    dev = (await http.post("/v1/devices", json={"kind": "sdk", "name": "d"},
                           headers={"Authorization": f"Bearer {acct['token']}"})).json()
    return acct["token"], acct["user"]["id"], dev["token"]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[ServerProcess]:
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    proc = ServerProcess(tmp_path / "facecall.db", port, ring_timeout=4.0)
    yield proc
    proc.stop()


async def test_ring_in_flight_survives_kill_9(node: ServerProcess) -> None:
    node.start()
    await node.ready()
    base = f"http://127.0.0.1:{node.port}"
    ws_url = f"ws://127.0.0.1:{node.port}/v1/signaling"
    async with httpx.AsyncClient(base_url=base) as http:
        a_token, _, a_dev = await new_user(http, "alice")
        b_token, b_id, b_dev = await new_user(http, "bob")
        # an earlier, finished call that must still be in history afterwards
        alice = SignalingConnection(ws_url, a_dev)
        bob = SignalingConnection(ws_url, b_dev)
        await alice.connect()
        await bob.connect()
        first = (await alice.request("call.start", to=[b_id], media="audio"))["call_id"]
        await bob.next_event("call.ring")
        await bob.request("call.answer", call_id=first)
        await alice.request("call.hangup", call_id=first)
        await bob.next_event("call.ended")

        ringing = (await alice.request("call.start", to=[b_id], media="video"))["call_id"]
        await bob.next_event("call.ring")
        node.kill()  # mid-ring: no shutdown code runs
        await alice.drop()
        await bob.drop()

        node.start()
        await node.ready()
        await asyncio.sleep(node.ring_timeout + 2.5)
        history = (await http.get("/v1/calls/history",
                                  headers={"Authorization": f"Bearer {b_token}"})).json()
        by_id = {item["call_id"]: item for item in history["items"]}
        assert set(by_id) == {first, ringing}
        assert by_id[first]["end_reason"] == "hung_up" and by_id[first]["missed"] is False
        assert by_id[ringing]["missed"] is True
        assert by_id[ringing]["end_reason"] == "ring_timeout"
        caller_view = (await http.get("/v1/calls/history",
                                      headers={"Authorization": f"Bearer {a_token}"})).json()
        assert {i["call_id"] for i in caller_view["items"]} == {first, ringing}


async def test_what_was_acknowledged_survives_kill_9(node: ServerProcess) -> None:
    """Every ``ok`` is sent after the state it reports was committed (group commit included):
    a SIGKILL right after the replies loses none of it."""
    from facecall.store import Store

    node.start()
    await node.ready()
    base = f"http://127.0.0.1:{node.port}"
    ws_url = f"ws://127.0.0.1:{node.port}/v1/signaling"
    async with httpx.AsyncClient(base_url=base) as http:
        async def device(name: str) -> tuple[str, SignalingConnection]:
            acct = (await http.post("/v1/accounts", json={"username": name,
                                                          "password": "longenough!"})).json()
            dev = (await http.post("/v1/devices", json={"kind": "sdk", "name": "d"},
                                   headers={"Authorization": f"Bearer {acct['token']}"})).json()
            conn = SignalingConnection(ws_url, dev["token"])
            await conn.connect()
            return acct["user"]["id"], conn

        pairs = [(await device(f"caller{i}"), await device(f"callee{i}")) for i in range(4)]
        calls = await asyncio.gather(*(a.request("call.start", to=[b_id], media="audio")
                                       for (_, a), (b_id, _) in pairs))
        ids = [c["call_id"] for c in calls]
        for _, (_, b) in pairs:
            await b.next_event("call.ring")
        # concurrent transitions (they may share one transaction): two answers, two cancels
        await asyncio.gather(
            pairs[0][1][1].request("call.answer", call_id=ids[0]),
            pairs[1][1][1].request("call.answer", call_id=ids[1]),
            pairs[2][0][1].request("call.cancel", call_id=ids[2]),
            pairs[3][0][1].request("call.cancel", call_id=ids[3]),
        )
        node.kill()  # right after the last ok: no shutdown code runs
        for (_, a), (_, b) in pairs:
            await a.drop()
            await b.drop()

    store = await Store.open(f"sqlite+aiosqlite:///{node.db}", migrate=False)
    try:
        states = [(await store.load_call(call_id)) for call_id in ids]
    finally:
        await store.close()
    assert [s.state if s else None for s in states] == ["active", "active", "ended", "ended"]
    assert states[0] is not None and states[0].answered_at is not None
    assert states[2] is not None and states[2].end_reason == "cancelled"


async def test_restart_mid_ring_rings_again_and_is_missed(tmp_path: Path) -> None:
    """After a SIGKILL mid-ring, with a resume grace shorter than the ring. The mailboxes were
    in memory, so nobody resumes (``resumed: false``): the callee's device that comes back is
    rung again; the caller's device that comes back keeps no call, so it leaves it -- and the
    callee, whose devices rang and who never answered, has a missed call."""
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    node = ServerProcess(tmp_path / "facecall.db", port, ring_timeout=30.0, resume_grace=1.0)
    try:
        node.start()
        await node.ready()
        ws_url = f"ws://127.0.0.1:{port}/v1/signaling"
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            _, a_id, a_dev = await new_user(http, "alice")
            b_token, b_id, b_dev = await new_user(http, "bob")
            alice = SignalingConnection(ws_url, a_dev)
            bob = SignalingConnection(ws_url, b_dev)
            await alice.connect()
            await bob.connect()
            ringing = (await alice.request("call.start", to=[b_id], media="audio"))["call_id"]
            first_ring = await bob.next_event("call.ring")
            node.kill()
            await alice.drop()
            await bob.drop()

            node.start()
            await node.ready()
            welcome = await bob.connect()  # resume_from: a seq of the node before the restart
            assert welcome["resumed"] is False and welcome["last_seq"] > first_ring["seq"]
            ring = await bob.next_event("call.ring")
            assert ring["call_id"] == ringing and ring["from_user"] == a_id
            assert (await alice.connect())["resumed"] is False  # the caller's app lost its call
            stop = await bob.next_event("call.stop_ringing")
            assert stop["call_id"] == ringing and stop["reason"] == "connection_lost"
            history = (await http.get("/v1/calls/history",
                                      headers={"Authorization": f"Bearer {b_token}"})).json()
            assert [(i["call_id"], i["missed"]) for i in history["items"]] == [(ringing, True)]
    finally:
        node.stop()
