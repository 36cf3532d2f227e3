"""Nothing is lost: a node killed with SIGKILL mid-ring still turns the ring into a missed call
after it restarts, and history survives (DESIGN.md invariant 2)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from facecall.client.signaling import SignalingConnection
from tests.live import ServerProcess, free_socket


async def new_user(http: httpx.AsyncClient, name: str) -> tuple[str, str, str]:
    """A new account with one device: (account token, user id, device token)."""
    acct = (await http.post("/v1/accounts", json={"username": name,
                                                  "password": "longenough!"})).json()
    dev = (await http.post("/v1/devices", json={"kind": "sdk", "name": "d"},
                           headers={"Authorization": f"Bearer {acct['token']}"})).json()
    return acct["token"], acct["user"]["id"], dev["token"]


async def connected(ws_url: str, *device_tokens: str) -> list[SignalingConnection]:
    """A signaling connection for each device token, each past its hello."""
    conns = [SignalingConnection(ws_url, token) for token in device_tokens]
    for conn in conns:
        await conn.connect()
    return conns


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
        alice, bob = await connected(ws_url, a_dev, b_dev)
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
            alice, bob = await connected(ws_url, a_dev, b_dev)
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


async def test_calls_the_devices_still_hold_go_on_across_kill_9(node: ServerProcess) -> None:
    """The mailboxes die with the node, so nobody resumes; but devices that say in their hello
    which calls they hold stay in them (``welcome.calls``), so a restart of the server does not
    end the calls: an answered one goes on, and one that was ringing can still be answered --
    the caller, back after that, learns it from its welcome."""
    node.start()
    await node.ready()
    ws_url = f"ws://127.0.0.1:{node.port}/v1/signaling"
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{node.port}") as http:
        _, a_id, a_dev = await new_user(http, "alice")
        b_token, b_id, b_dev = await new_user(http, "bob")
        _, _, c_dev = await new_user(http, "carol")
        alice, bob, carol = await connected(ws_url, a_dev, b_dev, c_dev)
        a_device, b_device = alice.welcome["device_id"], bob.welcome["device_id"]  # type: ignore[index]
        talking = (await alice.request("call.start", to=[b_id], media="video"))["call_id"]
        await bob.next_event("call.ring")
        await bob.request("call.answer", call_id=talking)
        await alice.next_event("call.answered")
        ringing = (await carol.request("call.start", to=[a_id], media="audio"))["call_id"]
        assert (await alice.next_event("call.ring"))["call_id"] == ringing
        node.kill()
        for conn in (alice, bob, carol):
            await conn.drop()

        node.start()
        await node.ready()
        welcome = await bob.connect(calls=[talking])
        assert welcome["resumed"] is False
        assert welcome["calls"] == [{"call_id": talking, "media": "video", "state": "joined",
                                     "participants": [{"user_id": a_id, "device_id": a_device}]}]
        # bob renegotiates the media path over the new node before alice is back: what was
        # sent to her meanwhile reaches her when she is back and keeps the call
        await bob.request("call.sdp", call_id=talking, to_device=a_device, ice_restart=True,
                          description={"type": "offer", "sdp": "v=0\r\n"})
        welcome = await alice.connect(calls=[talking, ringing])
        assert {c["call_id"]: (c["state"], c["participants"]) for c in welcome["calls"]} == {
            talking: ("joined", [{"user_id": b_id, "device_id": b_device}]),
            ringing: ("ringing", [{"user_id": carol.welcome["user_id"],  # type: ignore[index]
                                   "device_id": carol.welcome["device_id"]}]),  # type: ignore[index]
        }
        offer = await alice.next_event("call.sdp")
        assert offer["from_device"] == b_device and offer["ice_restart"] is True
        # then alice takes carol's call
        await alice.request("call.hangup", call_id=talking)
        assert (await bob.next_event("call.ended"))["reason"] == "hung_up"
        await alice.request("call.answer", call_id=ringing)
        welcome = await carol.connect(calls=[ringing])  # back after the answer: told by welcome
        assert [(c["state"], c["participants"]) for c in welcome["calls"]] == [
            ("joined", [{"user_id": a_id, "device_id": a_device}])]
        await carol.request("call.hangup", call_id=ringing)
        assert (await alice.next_event("call.ended"))["reason"] == "hung_up"

        history = (await http.get("/v1/calls/history",
                                  headers={"Authorization": f"Bearer {b_token}"})).json()
        assert [(i["call_id"], i["end_reason"], i["missed"]) for i in history["items"]] == [
            (talking, "hung_up", False)]
