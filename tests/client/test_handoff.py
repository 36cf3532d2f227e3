"""Moving a live call to another device of the same user, with SDK devices, real aiortc media
and a real server (docs/protocol.md, "Moving a call to another device"; docs/sdk.md)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from typing import Any

import av
import pytest

from facecall.client import (
    Call,
    CallElsewhere,
    CallError,
    CallState,
    Device,
    EndReason,
    NotConnectedError,
    OtherUser,
)
from facecall.client.elsewhere import ElsewhereCalls
from facecall.media.sinks import FrameCallbackSink
from facecall.media.sources import AudioLatencyProbe, now_us
from facecall.media.stamp import Stamp
from tests.client.conftest import MakeDevice
from tests.client.test_calls import stamped_frames
from tests.live import LiveServer, reconnected


async def until(condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    """Wait until ``condition()`` holds (checked every 50 ms)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.05)


class Arrivals:
    """Everything a call receives, with its arrival time: a frame-callback sink on the call's
    remote tracks, which outlive its peer connections."""

    def __init__(self, call: Call) -> None:
        self.video: list[tuple[int, Stamp | None]] = []
        self.audio: list[int] = []
        self.probe = AudioLatencyProbe()
        self.sink = FrameCallbackSink(self._on_frame)
        self.sink.addTrack(call.remote_video)
        self.sink.addTrack(call.remote_audio)

    def _on_frame(self, frame: Any, stamp: Stamp | None, received_us: int) -> None:
        if isinstance(frame, av.VideoFrame):
            self.video.append((received_us, stamp))
        else:
            self.audio.append(received_us)
            self.probe.feed(frame, received_us)

    def pictures_captured_after(self, t_us: int) -> list[tuple[int, Stamp]]:
        return [(at, stamp) for at, stamp in self.video if stamp is not None and stamp.ts_us > t_us]

    def markers_captured_after(self, t_us: int) -> int:
        return len([m for m in self.probe.markers if m.capture_us > t_us])

    @staticmethod
    def longest_gap_ms(arrivals: list[int], since_us: int) -> float:
        """The longest time between two arrivals, the later one after ``since_us``."""
        return max(((b - a) / 1000 for a, b in itertools.pairwise(arrivals) if b > since_us),
                   default=float("nan"))


async def answered_call(a1: Device, bob: Device) -> tuple[Call, Call]:
    """alice on ``a1`` calls ``bob`` with video; bob answers; media connects."""
    outgoing = await a1.call("bob", video=True)
    incoming = await bob.next_call(timeout=10)
    await incoming.answer()
    await asyncio.gather(outgoing.wait_connected(30), incoming.wait_connected(30))
    return outgoing, incoming


def requests_of(device: Device) -> list[str]:
    """The types of the requests ``device`` sends from now on."""
    sent: list[str] = []
    request = device.request

    async def spy(type_: str, **fields: Any) -> dict[str, Any]:
        sent.append(type_)
        return await request(type_, **fields)

    device.request = spy  # type: ignore[method-assign]
    return sent


def test_what_a_device_knows_of_calls_elsewhere() -> None:
    """Each welcome's list is the whole truth; the call.elsewhere events a resume replays
    after it (numbered up to its last_seq) are older than it and left out; a call on this
    device is not elsewhere."""
    book = ElsewhereCalls()
    bob = [{"user_id": "bob", "name": "Bob"}]
    on_a1 = {"call_id": "c1", "device_id": "a1", "media": "video", "participants": bob}
    assert book.welcome({"device_id": "a2", "last_seq": 100, "elsewhere": [on_a1]}) == \
        [("c1", CallElsewhere("c1", "a1", "video", (OtherUser("bob", "Bob"),)))]
    assert book.update({"type": "call.elsewhere", "seq": 99, "call_id": "c1", "state": "ended"}) is None
    assert book.update({"type": "call.elsewhere", "seq": 101, "call_id": "c1", "state": "active",
                        "device_id": "a1", "media": "video", "participants": bob}) is None  # no news
    change = book.update({"type": "call.elsewhere", "seq": 102, "call_id": "c1", "state": "active",
                          "device_id": "a3", "media": "video", "participants": bob})
    assert change is not None and change[1] is not None and change[1].device_id == "a3"
    assert book.update({"type": "call.elsewhere", "seq": 103, "call_id": "c1", "state": "active",
                        "device_id": "a2", "media": "video", "participants": bob}) == ("c1", None)
    assert book.welcome({"device_id": "a2", "last_seq": 200, "elsewhere": [
        on_a1, {"call_id": "c2", "device_id": "a2", "media": "audio", "participants": []},
        {"call_id": "c3"}, {**on_a1, "call_id": "c4", "role": "boss"}]}) == \
        [("c1", book.view["c1"])]  # c2 is here, c3 and c4 are malformed
    assert book.clear() == [("c1", None)] and dict(book.view) == {}


async def test_a_call_moves_to_the_users_other_device(make_device: MakeDevice,
                                                      call_server: LiveServer) -> None:
    """alice's second device sees her answered call (connected before the answer: call.elsewhere;
    connected after: welcome.elsewhere), takes it, and bob's Call goes on, the same object,
    with pictures and sound now from the new device; the first device's Call ends handed_off
    without hanging up; bob hangs up and the new device's Call ends hung_up."""
    a1, a2, bob = await make_device("alice"), await make_device("alice"), await make_device("bob")
    seen: list[tuple[str, CallElsewhere | None]] = []
    a2.on("elsewhere", lambda call_id, where: seen.append((call_id, where)))
    outgoing, incoming = await answered_call(a1, bob)
    call_id = outgoing.id
    await until(lambda: call_id in a2.calls_elsewhere, "a2 sees the call elsewhere")
    where = a2.calls_elsewhere[call_id]
    assert where == CallElsewhere(call_id, a1.device_id or "", "video",
                                  (OtherUser(bob.user_id or "", "bob"),), "caller")
    assert seen == [(call_id, where)]
    a3 = await make_device("alice")  # connects after the answer: its welcome says it
    assert a3.calls_elsewhere[call_id] == where
    assert dict(a1.calls_elsewhere) == {} and dict(bob.calls_elsewhere) == {}

    # alice is muted on a1, bob is muted: each side's new peer must hear it anew
    outgoing.mute()
    incoming.mute()
    await until(lambda: incoming.remote_media["audio"] is False, "bob told that a1 is muted")
    states: list[CallState] = []
    incoming.on("statechange", states.append)
    moved: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    incoming.on("handed_off", lambda event: moved.done() or moved.set_result(event))
    sent_by_a1 = requests_of(a1)
    connected_at, old_pc = incoming.timings.connected, incoming.peer_connection
    arrivals = Arrivals(incoming)
    await arrivals.sink.start()
    await asyncio.sleep(1.0)  # steady media from a1 first

    code_with_a1 = incoming.security_code
    assert code_with_a1 is not None and code_with_a1 == outgoing.security_code
    moved_us = now_us()
    taken = await a2.take_call(where)
    assert taken.id == call_id and a2.calls[call_id] is taken
    assert taken.state is CallState.CONNECTING and taken.media == "video"
    assert taken.direction is outgoing.direction  # alice placed it, whichever device has it
    assert (taken.remote_user, taken.remote_name, taken.remote_device) == \
        (bob.user_id, "bob", bob.device_id)
    assert call_id not in a2.calls_elsewhere and seen[-1] == (call_id, None)
    assert await outgoing.wait_ended(10) is EndReason.HANDED_OFF
    a1_ended_us = now_us()  # a1's sources have stopped: what is captured later is a2's
    event = (await asyncio.wait_for(moved, 10)).data
    assert event == {"user_id": a1.user_id, "from_device": a1.device_id, "to_device": a2.device_id}
    await asyncio.gather(taken.wait_connected(30), incoming.wait_connected(30))
    # a2 has its own certificate: bob and a2 agree on a new security code
    assert taken.security_code == incoming.security_code != code_with_a1
    await until(lambda: len(arrivals.pictures_captured_after(a1_ended_us)) >= 15,
                "bob receives a2's pictures", timeout=20)
    await until(lambda: arrivals.markers_captured_after(a1_ended_us) >= 2,
                "bob hears a2's sound", timeout=10)
    await arrivals.sink.stop()
    # SFrame with a2 under a2's own keys: bob holds none of a1's any more (docs/sframe.md)
    assert incoming.sframe is True and taken.sframe is True
    assert incoming._p2p_keys is not None and incoming._p2p_keys.keys.senders() == {a2.device_id}
    assert incoming._p2p_keys.remote_device == a2.device_id

    # bob's call went on: the same object, never ended, on a new peer connection with a2
    assert bob.calls[call_id] is incoming and incoming.end_reason is None
    assert states == [CallState.RECONNECTING, CallState.CONNECTED]
    assert incoming.remote_device == a2.device_id and incoming.peer_connection is not old_pc
    assert incoming.timings.connected == connected_at and incoming.ice_restarts == 0
    assert incoming.remote_media == {"audio": True, "video": True, "screen": False}  # a2: not muted
    await until(lambda: taken.remote_media == {"audio": False, "video": True, "screen": False},
                "a2 told that bob is muted")
    assert (await stamped_frames(taken, 5)).summary().stamped >= 5  # and alice sees bob
    # a1 ended its part without a word: no hang-up; it may take the call back now
    assert "call.hangup" not in sent_by_a1 and "call.cancel" not in sent_by_a1
    await until(lambda: a1.calls_elsewhere.get(call_id) is not None
                and a3.calls_elsewhere.get(call_id) is not None
                and a1.calls_elsewhere[call_id].device_id == a2.device_id
                and a3.calls_elsewhere[call_id].device_id == a2.device_id,
                "a1 and a3 see the call on a2")

    video_pause = Arrivals.longest_gap_ms([at for at, _ in arrivals.video], moved_us)
    audio_pause = Arrivals.longest_gap_ms(arrivals.audio, moved_us)
    first_new = min(at for at, _ in arrivals.pictures_captured_after(a1_ended_us))
    print(f"\nhandoff: bob's longest video gap {video_pause:.0f} ms, audio gap {audio_pause:.0f} ms; "
          f"take_call() to a2's first picture at bob {(first_new - moved_us) / 1000:.0f} ms")

    await incoming.hangup()
    assert await taken.wait_ended(10) is EndReason.HUNG_UP
    await until(lambda: call_id not in a1.calls_elsewhere and call_id not in a3.calls_elsewhere,
                "the call is no longer elsewhere")
    legs = (await call_server.app.app.state.store.load_call(call_id)).legs
    assert {leg.device_id: leg.end_reason for leg in legs if leg.user_id == a1.user_id} == \
        {a1.device_id: "handed_off", a2.device_id: "hung_up"}


async def test_a_device_that_connects_later_takes_the_call_and_the_first_takes_it_back(
        make_device: MakeDevice) -> None:
    a1 = await make_device("alice")
    bob = await make_device("bob")
    outgoing = await bob.call("alice", video=False)  # alice is the callee this time
    incoming = await a1.next_call(timeout=10)
    await incoming.answer()
    await asyncio.gather(outgoing.wait_connected(30), incoming.wait_connected(30))
    late = await make_device("alice")
    where = late.calls_elsewhere[incoming.id]
    assert (where.device_id, where.media, where.video) == (a1.device_id, "audio", False)
    await late.drop_connection()  # a resumed welcome says it again
    await reconnected(late)
    assert late.calls_elsewhere == {incoming.id: where}

    taken = await late.take_call(where)
    assert await incoming.wait_ended(10) is EndReason.HANDED_OFF
    await until(lambda: outgoing.remote_device == late.device_id, "bob follows alice to late")
    await asyncio.gather(taken.wait_connected(30), outgoing.wait_connected(30))
    assert outgoing.state is CallState.CONNECTED and taken.remote_name == "bob"

    back = await a1.take_call(incoming.id)  # a1 was told where the call went: it takes it back
    assert back is not incoming and back.id == incoming.id
    assert await taken.wait_ended(10) is EndReason.HANDED_OFF
    await until(lambda: outgoing.remote_device == a1.device_id, "bob follows alice back to a1")
    await asyncio.gather(back.wait_connected(30), outgoing.wait_connected(30))
    probe = AudioLatencyProbe()
    sink = FrameCallbackSink(lambda frame, _stamp, at: probe.feed(frame, at))  # type: ignore[arg-type]
    sink.addTrack(outgoing.remote_audio)
    after = now_us()
    await sink.start()
    await until(lambda: any(m.capture_us > after for m in probe.markers), "bob hears alice on a1")
    await sink.stop()
    assert outgoing.end_reason is None and outgoing.ice_restarts == 0
    await back.hangup()
    assert await outgoing.wait_ended(10) is EndReason.HUNG_UP
    await until(lambda: not late.calls_elsewhere, "the call is no longer elsewhere for late")


async def test_what_cannot_be_taken(make_device: MakeDevice) -> None:
    """Refusals come as CallError with the server's code, and leave nothing behind."""
    a1 = await make_device("alice")
    a2 = await make_device("alice")
    bob = await make_device("bob")
    mallory = await make_device("mallory")
    outgoing = await a1.call("bob", video=False)
    ringing = await bob.next_call(timeout=10)
    for device, code in ((a2, "invalid_state"),  # not answered yet: nothing to move
                         (bob, "invalid_state"),  # it rings there: answer it
                         (mallory, "unknown_call")):  # another user's call
        with pytest.raises(CallError) as refused:
            await device.take_call(outgoing.id)
        assert refused.value.code == code
    assert outgoing.id not in a2.calls and outgoing.id not in mallory.calls
    assert bob.calls[outgoing.id] is ringing and ringing.state is CallState.RINGING
    with pytest.raises(CallError) as unknown:
        await a2.take_call("no-such-call")
    assert unknown.value.code == "unknown_call"
    assert await a1.take_call(outgoing.id) is outgoing  # it is here already

    await ringing.answer()
    await asyncio.gather(outgoing.wait_connected(30), ringing.wait_connected(30))
    with pytest.raises(CallError) as stolen:
        await mallory.take_call(outgoing.id)
    assert stolen.value.code == "unknown_call"
    await outgoing.hangup()
    await until(lambda: outgoing.id not in a2.calls_elsewhere, "the call is over for a2")
    with pytest.raises(CallError) as over:
        await a2.take_call(outgoing.id)
    assert over.value.code == "call_ended" and a2.calls == {}
    await a2.close()
    with pytest.raises(NotConnectedError):
        await a2.take_call(outgoing.id)
