"""A call between two SDK devices goes on when the server is killed and restarted under it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from facecall.client import CallError, CallState, EndReason, NotConnectedError
from tests.client.test_calls import stamped_frames
from tests.client.test_group_media import MARKS, Watcher
from tests.live import ReplyEater, ServerProcess, free_socket, reconnected, sdk_devices, through
from tests.sfu.test_transport import MarkedVideoTrack, until


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[ServerProcess]:
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    proc = ServerProcess(tmp_path / "facecall.db", port, ring_timeout=30.0, resume_grace=30.0)
    proc.start()
    try:
        await proc.ready()
        yield proc
    finally:
        proc.stop()


@pytest.mark.parametrize("how", ["kill", "stop"])
async def test_a_call_goes_on_across_a_server_restart(node: ServerProcess, how: str) -> None:
    """Media is peer to peer, so a signaling node that stops (SIGTERM: close code 1012, as in a
    deploy) or dies (SIGKILL: no goodbye) and comes back must not end the call: both devices
    reconnect, the server could not resume them (its mailboxes died with it), their hellos name
    the call, and they stay in it. Pictures keep coming, and a hang-up afterwards reaches the
    other side as an ordinary hang-up."""
    async with sdk_devices(node.base_url) as make:
        alice = await make("alice")
        bob = await make("bob")
        outgoing = await alice.call("bob", video=True)
        incoming = await bob.next_call(timeout=10)
        await incoming.answer()
        await asyncio.gather(outgoing.wait_connected(30), incoming.wait_connected(30))
        changes: list[str] = []
        alice.on("connection", changes.append)

        node.kill() if how == "kill" else node.stop()
        node.start()
        await node.ready()
        await reconnected(alice, bob)
        assert alice.reconnects == 1 and bob.reconnects == 1
        assert changes == ["reconnecting", "connected"]
        assert alice.signaling is not None and alice.signaling.welcome is not None
        assert alice.signaling.welcome["resumed"] is False  # the node lost its mailboxes
        assert outgoing.state is CallState.CONNECTED and incoming.state is CallState.CONNECTED
        assert (await stamped_frames(outgoing, 5)).summary().stamped >= 5
        assert (await stamped_frames(incoming, 5)).summary().stamped >= 5
        await incoming.hangup()
        assert await outgoing.wait_ended(10) is EndReason.HUNG_UP


async def test_a_call_answered_while_the_caller_was_away_connects(node: ServerProcess) -> None:
    """The node dies while bob's phone rings; bob's device is back first and answers. The
    ``call.answered`` for alice was lost with the node's memory, but her welcome says that bob's
    device is in the call now: her device takes the call as answered and connects."""
    async with sdk_devices(node.base_url) as make:
        alice = await make("alice")
        bob = await make("bob")
        outgoing = await alice.call("bob", video=True)
        incoming = await bob.next_call(timeout=10)
        signaling = alice.signaling
        assert signaling is not None
        url, signaling.ws_url = signaling.ws_url, "ws://127.0.0.1:9/v1/signaling"  # no network
        await node.crash_and_restart()
        await reconnected(bob)
        assert incoming.state is CallState.RINGING  # still ringing: not rung a second time
        await incoming.answer()
        assert outgoing.state is CallState.CALLING and not alice.connected
        signaling.ws_url = url  # alice's network is back
        await asyncio.gather(outgoing.wait_connected(30), incoming.wait_connected(30))
        # one negotiation did it, though alice heard of the answer twice (welcome, mailbox)
        assert outgoing.ice_restarts == 0 and incoming.ice_restarts == 0
        assert (await stamped_frames(outgoing, 3)).summary().stamped >= 3
        await outgoing.hangup()
        assert await incoming.wait_ended(10) is EndReason.HUNG_UP


async def test_an_answer_whose_reply_died_with_the_node_is_resent(node: ServerProcess) -> None:
    """bob's answer reached the node, its ``ok`` did not reach bob, and the node died. The
    new node cannot resume bob; ``call.answer`` is idempotent for the device that answered, so
    bob's device sends it again, gets its ``ok``, and the call connects."""
    async with sdk_devices(node.base_url) as make:
        alice = await make("alice")
        bob = await make("bob")
        assert bob.signaling is not None
        async with ReplyEater(bob.signaling.ws_url, {"call.answer"}) as proxy:
            await through(proxy, bob)
            outgoing = await alice.call("bob", video=True)
            incoming = await bob.next_call(timeout=10)
            answering = asyncio.create_task(incoming.answer())
            await asyncio.wait_for(proxy.eaten.wait(), 10)
            assert not answering.done()
            await node.crash_and_restart()
            await asyncio.wait_for(answering, 15)
            await asyncio.gather(outgoing.wait_connected(30), incoming.wait_connected(30))
            await outgoing.hangup()
            assert await incoming.wait_ended(10) is EndReason.HUNG_UP


async def test_a_call_start_whose_reply_died_with_the_node_is_not_placed_again(
        node: ServerProcess) -> None:
    """alice's ``call.start`` reached the node (bob rings), its ``ok`` did not reach alice, and
    the node died. The new node cannot resume alice and does not know the request's id: a
    resend would ring bob with a second call. The SDK fails it with ``connection_lost``
    instead; the call alice never heard of ends, and bob is not rung again."""
    async with sdk_devices(node.base_url) as make:
        alice = await make("alice")
        bob = await make("bob")
        assert alice.signaling is not None
        async with ReplyEater(alice.signaling.ws_url, {"call.start"}) as proxy:
            await through(proxy, alice)
            placing = asyncio.create_task(alice.call("bob", video=False))
            await asyncio.wait_for(proxy.eaten.wait(), 10)
            rung = await bob.next_call(timeout=10)
            await node.crash_and_restart()
            with pytest.raises(CallError) as refused:
                await asyncio.wait_for(placing, 15)
            assert refused.value.code == "connection_lost"
            assert await rung.wait_ended(10) is EndReason.CONNECTION_LOST
            with pytest.raises(TimeoutError):
                await bob.next_call(timeout=3)


async def test_a_call_ends_here_when_the_server_cannot_be_told(node: ServerProcess) -> None:
    """The node is down (no node comes back): hanging up, or closing the device, still ends
    the call here — its peer connection closes, media stops — and does not wait long for the
    server. ``hangup()`` then says that the server was not told."""
    async with sdk_devices(node.base_url) as make:
        alice = await make("alice", reconnect_wait=1.0)
        bob = await make("bob")
        outgoing = await alice.call("bob", video=True)
        incoming = await bob.next_call(timeout=10)
        await incoming.answer()
        await asyncio.gather(outgoing.wait_connected(30), incoming.wait_connected(30))
        away = [asyncio.Event(), asyncio.Event()]
        for device, event in zip((alice, bob), away, strict=True):
            device.on("connection", lambda _change, event=event: event.set())
        node.stop()
        await asyncio.wait_for(asyncio.gather(*(event.wait() for event in away)), 10)

        started = time.monotonic()
        with pytest.raises(NotConnectedError):
            await outgoing.hangup()
        assert outgoing.state is CallState.ENDED and outgoing.end_reason is EndReason.HUNG_UP
        assert outgoing.peer_connection is None
        assert time.monotonic() - started < 3

        started = time.monotonic()
        await bob.close()  # reconnect_wait 15 s: close does not wait for it
        assert incoming.state is CallState.ENDED and incoming.peer_connection is None
        assert time.monotonic() - started < 4


async def test_group_media_joins_the_restarted_servers_sfu_again(tmp_path: Path) -> None:
    """alice and bob talk through the SFU; the node dies (its rooms with it) and comes back.
    Their devices cannot resume, their calls go on, and their group media joins the new
    node's SFU at once (not after ICE gives up on the old one): new connections, new keys, each
    decodes the other again."""
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    node = ServerProcess(tmp_path / "facecall.db", port, ring_timeout=30.0, resume_grace=30.0,
                         env={"FACECALL_SFU_HOST_ADDRESSES": "127.0.0.1"})
    node.start()
    try:
        await node.ready()
        async with sdk_devices(node.base_url) as make:
            alice, bob = await make("alice"), await make("bob")
            a_call = await alice.call("bob", video_source=MarkedVideoTrack(MARKS["alice"]))
            b_call = await bob.next_call(10)
            await b_call.answer(video_source=MarkedVideoTrack(MARKS["bob"]))
            groups = await asyncio.gather(a_call.join_group_media(), b_call.join_group_media())
            watchers = [Watcher(group) for group in groups]

            def decoding() -> bool:
                return watchers[0].decodes({str(bob.user_id): "bob"}) and watchers[1].decodes(
                    {str(alice.user_id): "alice"})

            try:
                await until(decoding, what="alice and bob decoding each other")
                await node.crash_and_restart()
                started = time.monotonic()
                await reconnected(alice, bob)
                await until(lambda: all(g.rejoins == 1 and g.state == "connected" for g in groups),
                            what="both joined the new node's SFU")
                assert time.monotonic() - started < 10  # not after ICE consent gave up (~30 s)
                for watcher in watchers:
                    watcher.reset()
                await until(decoding, what="alice and bob decoding each other again")
                assert a_call.state is b_call.state is CallState.CONNECTED
            finally:
                for watcher in watchers:
                    watcher.stop()
            await a_call.hangup()
            assert await b_call.wait_ended(10) is EndReason.HUNG_UP
    finally:
        node.stop()
