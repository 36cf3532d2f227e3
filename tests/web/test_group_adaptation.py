"""A group call adapting to one receiver's slow link (facecall.sfu.layers, upstream): real
Chromium publishing simulcast, the Python SDK receiving through the project's impairment relay
(facecall.media.impairment) as the only path between it and the SFU.

alice and bob (browsers) are in a call; alice adds carol, an SDK device, whose media to and
from the SFU goes through a relay: her offer names the relay as her only candidate and her copy
of the SFU's answer names it as the SFU's, so ICE has no other path. With the link free, carol
decodes alice at the best layer alice sends. Then the relay's SFU → carol direction is cut to
well under what she was getting: her receiver reports (loss) and REMB (queues) make the SFU
move her slots to lower layers — the frames she decodes get smaller — while bob, on a free
link, keeps alice's best layer. Free again, the SFU probes carol back up to the best layer.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from facecall.client import Call
from facecall.client.group import GroupMedia
from facecall.media.impairment import Direction, ImpairmentProfile, ImpairmentRelay
from facecall.sfu.room import Room
from tests.live import LiveServer, MakeDevice
from tests.web.conftest import PersonFactory
from tests.web.test_group_call import add_person, decodes_others, sdk_device, server, sfu_of, user_id

__all__ = ["sdk_device", "server"]  # fixtures

CANDIDATE = re.compile(r"^(a=candidate:\S+ 1 udp \d+ )(\S+) (\d+)( typ host.*)$", re.M)


def through(sdp: str, address: tuple[str, int]) -> tuple[str, tuple[str, int] | None]:
    """The SDP with its RTP candidates at ``address`` (others removed), and the first one's
    own address."""
    first: list[tuple[str, int]] = []

    def swap(match: re.Match[str]) -> str:
        first.append((match.group(2), int(match.group(3))))
        return f"{match.group(1)}{address[0]} {address[1]}{match.group(4)}"

    sdp = CANDIDATE.sub(swap, sdp)
    sdp = "".join(line for line in sdp.splitlines(keepends=True)
                  if not line.startswith("a=candidate:") or f" {address[1]} typ host" in line)
    return sdp, (first[0] if first else None)


@pytest.fixture
async def relay() -> AsyncIterator[ImpairmentRelay]:
    async with ImpairmentRelay(seed=7) as relay:
        yield relay


def behind(device: Any, relay: ImpairmentRelay, monkeypatch: pytest.MonkeyPatch) -> None:
    """Send ``device``'s group media through ``relay``: its ``sfu.join`` offer and the answer
    it gets both name the relay (the relay's B side is the SFU, its A side the device)."""
    request: Callable[..., Awaitable[dict[str, Any]]] = device.request

    async def through_relay(kind: str, **fields: Any) -> dict[str, Any]:
        if kind != "sfu.join":
            return await request(kind, **fields)
        fields["sdp"], _ = through(fields["sdp"], relay.address)
        reply = dict(await request(kind, **fields))
        reply["sdp"], sfu = through(reply["sdp"], relay.address)
        assert sfu is not None, "the SFU's answer has no candidate"
        relay.set_destination(sfu)
        return reply

    monkeypatch.setattr(device, "request", through_relay)


async def frame_size(group: GroupMedia, user: str) -> tuple[int, int] | None:
    """The size of the newest video frame carol's slot of ``user`` decoded (waits up to 10 s
    for one); None while no slot carries ``user``, or none came (``settles`` waits on: a
    clean-clone run once saw 10 s without a frame while the link recovered, unexplained)."""
    slot = group.slot_of(user, "video")
    if slot is None:
        return None
    try:
        frame = await asyncio.wait_for(slot.track.recv(), 10)
    except TimeoutError:
        return None
    while not slot.track._queue.empty():
        frame = slot.track._queue.get_nowait() or frame
    return frame.width, frame.height


async def settles(group: GroupMedia, user: str, condition: Callable[[tuple[int, int]], bool],
                  what: str, timeout: float = 40) -> tuple[int, int]:
    deadline = asyncio.get_running_loop().time() + timeout
    seen: list[tuple[int, int] | None] = []
    while True:
        size = await frame_size(group, user)
        seen.append(size)
        if size is not None and condition(size):
            return size
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what}: sizes seen {sorted(set(seen), key=str)}")
        await asyncio.sleep(0.3)


def room_of(server: LiveServer, call_id: str) -> Room:
    room = sfu_of(server).registry.room(call_id)
    assert room is not None
    return room


def layer_rank(room: Room, subscriber: str, publisher: str) -> int | None:
    """Which of ``publisher``'s layers (0: worst) ``subscriber``'s slot forwards now, or is
    moving to (a layer the publisher just started is taken at its first key frame)."""
    p = room.participants[publisher]
    slot = next((s for s in room.participants[subscriber].slots["video"] if s.feed is p), None)
    if slot is None:
        return None
    ssrc = slot.pending_ssrc if slot.pending is p else slot.munger.source
    return p.layers().index(ssrc) if ssrc in p.layer_of else None


async def rate_kbps(relay: ImpairmentRelay, seconds: float = 2.0) -> float:
    counters = relay.counters(Direction.B_TO_A)
    start = counters.forwarded_bytes
    await asyncio.sleep(seconds)
    return (counters.forwarded_bytes - start) * 8 / 1000 / seconds


@pytest.mark.slow
async def test_a_receiver_on_a_slow_link_gets_lower_layers_and_is_probed_back_up(
        people: PersonFactory, sdk_device: MakeDevice, server: LiveServer,
        relay: ImpairmentRelay, monkeypatch: pytest.MonkeyPatch) -> None:
    carol = await sdk_device("carol")
    behind(carol, relay, monkeypatch)
    alice = await people("alice")
    bob = await people("bob")
    await alice.in_call_with(bob)
    me = {"alice": await user_id(alice), "bob": await user_id(bob)}
    a_device = (await alice.page.evaluate("window.facecall.identity"))["deviceId"]
    b_device = (await bob.page.evaluate("window.facecall.identity"))["deviceId"]
    await add_person(alice, "carol")
    c_call: Call = await carol.next_call(timeout=15)
    await c_call.answer()
    group = await c_call.join_group_media()
    await group.wait_connected()
    assert relay.side_b is not None and relay.side_a is not None  # the relay is her path
    await decodes_others(bob, None, [me["alice"], str(carol.user_id)],
                         "bob decoding alice and carol")
    room = room_of(server, c_call.id)
    c_device = str(carol.device_id)

    # the link free: carol decodes alice at the best layer alice sends (as bob gets it)
    publisher = room.participants[a_device]
    assert len(publisher.layer_of) >= 2, "alice's browser sends no simulcast"
    best = await settles(group, me["alice"],
                         lambda size: layer_rank(room, c_device, a_device) == len(publisher.layers()) - 1
                         and size[0] >= 320, "carol at alice's best layer")
    assert layer_rank(room, b_device, a_device) == len(publisher.layers()) - 1
    free = await rate_kbps(relay)

    # a slow link: carol's slots move down, her frames of alice get smaller; bob keeps the best
    congestions = room.stats.congestions
    relay.set_profile(ImpairmentProfile(rate_kbps=max(120.0, free * 0.4), queue_bytes=20_000),
                      Direction.B_TO_A)
    small = await settles(group, me["alice"], lambda size: size[0] < best[0],
                          f"carol's frames of alice below {best} on a link of {free * 0.4:.0f} kbit/s")
    assert room.stats.congestions > congestions
    assert room.participants[c_device].downlink.cap is not None
    assert layer_rank(room, b_device, a_device) == len(publisher.layers()) - 1
    assert relay.counters(Direction.B_TO_A).dropped > 0  # the link was really full

    # free again: probes bring her back to the best layer
    relay.set_profile(ImpairmentProfile(), Direction.B_TO_A)
    # (at least where she was: alice's browser may add its full-size layer meanwhile, once its
    # own estimate pays for it)
    await settles(group, me["alice"], lambda size: size[0] >= best[0],
                  f"carol back at {best} or better from {small}", timeout=60)
    assert not alice.errors and not bob.errors
