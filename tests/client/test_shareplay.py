"""Shared playback between two SDK devices (docs/shareplay.md): over the call's own data
channel, both ends agree on what plays and where, follow each other's changes, and keep the
state across a new peer connection (an ICE restart) and a handoff to another device."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from facecall.client import Call, Device
from facecall.shareplay.playback import ShareplayError
from tests.client.conftest import MakeDevice

URL = "https://videos.example/clip.mp4"


async def connected_call(alice: Device, bob: Device) -> tuple[Call, Call]:
    outgoing = await alice.call("bob", video=False)
    incoming = await bob.next_call(10)
    await incoming.answer()
    await outgoing.wait_connected(20)
    await incoming.wait_connected(20)
    return outgoing, incoming


async def until(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("not within the time")
        await asyncio.sleep(0.02)


def same_position(one: Call, other: Call) -> float:
    """How far apart the two ends' positions are, in ms, read at the same instant."""
    first, second = one.shareplay.position(), other.shareplay.position()
    assert first is not None and second is not None
    return abs(first - second) * 1000


async def test_both_ends_follow_what_either_does(make_device: MakeDevice) -> None:
    alice, bob = await make_device("alice"), await make_device("bob")
    outgoing, incoming = await connected_call(alice, bob)
    changes: list[Any] = []
    incoming.on("shareplay", changes.append)
    outgoing.shareplay.start(URL, "Clip", position=12.0)
    await until(lambda: incoming.shareplay.activity is not None)
    shared = incoming.shareplay.activity
    assert shared is not None and (shared.url, shared.title, shared.playing) == (URL, "Clip", True)
    assert changes and changes[-1].data["activity"] == shared
    await until(lambda: incoming.shareplay.playback.clock.best is not None)
    assert same_position(outgoing, incoming) < 30  # a loopback round trip, and the reading gap
    position = incoming.shareplay.position()
    assert position is not None and 12.0 <= position < 15.0

    incoming.shareplay.pause()
    await until(lambda: outgoing.shareplay.activity is not None and not outgoing.shareplay.activity.playing)
    paused = outgoing.shareplay.position()
    await asyncio.sleep(0.2)
    assert outgoing.shareplay.position() == paused == incoming.shareplay.position()
    outgoing.shareplay.seek(100.0)
    outgoing.shareplay.set_rate(2.0)
    outgoing.shareplay.play()
    await until(lambda: incoming.shareplay.activity is not None and incoming.shareplay.activity.playing)
    assert incoming.shareplay.activity.rate == 2.0
    assert same_position(outgoing, incoming) < 60  # twice as fast: twice the reading error
    incoming.shareplay.end()
    await until(lambda: outgoing.shareplay.activity is None)
    assert outgoing.shareplay.refused == incoming.shareplay.refused == 0  # no empty state sent
    with pytest.raises(ShareplayError, match="nothing is shared"):
        outgoing.shareplay.pause()
    await outgoing.hangup()


async def test_the_state_survives_an_ice_restart_and_a_bad_message_changes_nothing(
        make_device: MakeDevice) -> None:
    alice, bob = await make_device("alice"), await make_device("bob")
    outgoing, incoming = await connected_call(alice, bob)
    outgoing.shareplay.start(URL, "Clip")
    await until(lambda: incoming.shareplay.activity is not None)
    channel = outgoing.shareplay._channel
    assert channel is not None
    for garbage in ("not json", '{"v": 1, "type": "state"}', "x" * 20_000):
        channel.send(garbage)
    await until(lambda: incoming.shareplay.refused == 3)
    assert incoming.shareplay.activity is not None and incoming.shareplay.activity.url == URL

    await incoming.restart_ice()  # a new peer connection, a new channel
    await until(lambda: incoming.shareplay._channel is not None
                and incoming.shareplay._channel.readyState == "open"
                and incoming.shareplay._channel is not channel, 20)
    outgoing.shareplay.pause()
    await until(lambda: incoming.shareplay.activity is not None and not incoming.shareplay.activity.playing)
    assert incoming.shareplay.position() == outgoing.shareplay.position()
    await outgoing.hangup()


async def test_a_device_that_takes_the_call_over_catches_up(make_device: MakeDevice) -> None:
    """bob shares a video with alice; alice moves the call to her tablet, which starts where
    the video is now, without anyone sharing it again."""
    alice, bob = await make_device("alice"), await make_device("bob")
    outgoing, incoming = await connected_call(alice, bob)
    incoming.shareplay.start(URL, "Clip", position=30.0)
    await until(lambda: outgoing.shareplay.activity is not None)
    tablet = await make_device("alice")
    await until(lambda: outgoing.id in tablet.calls_elsewhere)
    taken = await tablet.take_call(outgoing.id)
    await taken.wait_connected(20)
    await until(lambda: taken.shareplay.activity is not None)
    await until(lambda: taken.shareplay.playback.clock.best is not None)
    assert same_position(taken, incoming) < 30
    assert taken.shareplay.activity is not None and taken.shareplay.activity.url == URL
    await incoming.hangup()
