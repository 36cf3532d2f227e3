"""Shared playback's pure core (facecall.shareplay.playback): positions follow the state,
crossing changes settle the same at both ends, a late device catches up, and bad messages
change nothing."""

from __future__ import annotations

import json

import pytest

from facecall.shareplay.playback import (
    MAX_MESSAGE_BYTES,
    SharedPlayback,
    ShareplayError,
    encode,
)

URL = "https://videos.example/clip.mp4"


def pair() -> tuple[SharedPlayback, SharedPlayback]:
    return SharedPlayback("device-a"), SharedPlayback("device-b")


def test_a_shared_video_plays_pauses_seeks_and_changes_speed_at_both_ends() -> None:
    a, b = pair()
    assert a.position(0.0) is None
    b.receive(encode(a.start(URL, "Clip", 1_000.0)), 1_000.0)
    assert b.activity is not None and (b.activity.url, b.activity.title) == (URL, "Clip")
    assert a.position(11_000.0) == b.position(11_000.0) == pytest.approx(10.0)
    b.receive(encode(a.pause(11_000.0)), 11_000.0)
    assert b.position(99_000.0) == pytest.approx(10.0) and not b.activity.playing
    a.receive(encode(b.seek(42.0, 12_000.0)), 12_000.0)
    a.receive(encode(b.play(12_000.0)), 12_000.0)
    assert a.position(14_000.0) == pytest.approx(44.0)
    b.receive(encode(a.set_rate(2.0, 14_000.0)), 14_000.0)
    assert b.position(15_000.0) == pytest.approx(46.0)
    b.receive(encode(a.end()), 15_000.0)
    assert a.activity is None and b.activity is None and b.position(16_000.0) is None


def test_the_other_clock_is_read_through_the_clock_sync() -> None:
    """b's clock is 5 s ahead: a's anchor, read on b's clock after a ping/pong, gives the same
    position at the same instant."""
    a, b = pair()
    skew = 5_000.0
    ping = b.ping(2_000.0 + skew)
    pong, _ = a.receive(encode(ping), 2_010.0)
    assert pong is not None
    b.receive(encode(pong), 2_020.0 + skew)
    assert b.clock.offset == pytest.approx(-skew)
    b.receive(encode(a.start(URL, "", 3_000.0, position=7.0)), 3_010.0 + skew)
    assert b.position(4_000.0 + skew) == pytest.approx(a.position(4_000.0)) == pytest.approx(8.0)


def test_crossing_changes_settle_on_the_same_state() -> None:
    a, b = pair()
    b.receive(encode(a.start(URL, "", 0.0)), 0.0)
    from_a = a.pause(5_000.0)
    from_b = b.seek(60.0, 5_000.0)
    b.receive(encode(from_a), 5_001.0)
    a.receive(encode(from_b), 5_001.0)
    assert a.version == b.version == (2, "device-b")  # same counter: the larger device id wins
    assert a.activity is not None and b.activity is not None
    assert a.activity.playing and b.activity.playing
    assert a.position(7_000.0) == b.position(7_000.0) == pytest.approx(62.0)
    later = a.play(6_000.0)
    assert json.loads(encode(later))["n"] == 3  # one more than the highest seen


def test_a_device_that_joins_late_catches_up_from_the_state_sent_on_open() -> None:
    a, b = pair()
    b.receive(encode(a.start(URL, "Clip", 0.0)), 0.0)
    newcomer = SharedPlayback("device-c")  # the other user's call moved here
    newcomer.receive(encode(b.state_message(30_000.0)), 30_000.0)
    assert newcomer.position(31_000.0) == pytest.approx(31.0)
    assert newcomer.version == a.version
    again, changed = a.receive(encode(b.state_message(30_000.0)), 30_000.0)
    assert (again, changed) == (None, False)  # the same version: nothing new


@pytest.mark.parametrize("raw", [
    "not json", "[]", "null", '"state"', "{}",
    json.dumps({"v": 2, "type": "clock.ping", "t0": 1}),
    json.dumps({"v": 1, "type": "nope"}),
    json.dumps({"v": 1, "type": "clock.ping", "t0": 1, "extra": 1}),
    json.dumps({"v": 1, "type": "clock.ping", "t0": -1}),
    json.dumps({"v": 1, "type": "clock.ping", "t0": "1"}),
    json.dumps({"v": True, "type": "clock.ping", "t0": 1}),
    '{"v": 1, "type": "clock.ping", "t0": NaN}',
    '{"v": 1, "type": "clock.ping", "t0": Infinity}',
    json.dumps({"v": 1, "type": "clock.pong", "t0": 1, "t1": 1}),
    json.dumps({"v": 1, "type": "state", "n": 9, "by": "x"}),
    json.dumps({"v": 1, "type": "state", "n": -1, "by": "x", "activity": None}),
    json.dumps({"v": 1, "type": "state", "n": 2**60, "by": "x", "activity": None}),
    json.dumps({"v": 1, "type": "state", "n": 1, "by": "", "activity": None}),
    *(json.dumps({"v": 1, "type": "state", "n": 5, "by": "x", "activity": {
        "id": "i", "url": URL, "title": "t", "playing": True, "position": 1, "rate": 1, "at": 1,
        **bad}}) for bad in (
            {"url": "javascript:alert(1)"}, {"url": "file:///etc/passwd"}, {"url": "https://"},
            {"url": "https://x/" + "a" * 3000}, {"title": "t" * 201}, {"position": -1},
            {"position": 1e12}, {"rate": 0}, {"rate": 16}, {"playing": 1}, {"id": ""},
            {"extra": True})),
    "x" * (MAX_MESSAGE_BYTES + 1),
])
def test_bad_messages_are_refused_and_change_nothing(raw: str) -> None:
    a, b = pair()
    b.receive(encode(a.start(URL, "Clip", 0.0)), 0.0)
    before = (b.version, b.activity)
    with pytest.raises(ShareplayError):
        b.receive(raw, 1_000.0)
    assert (b.version, b.activity) == before


def test_local_changes_that_make_no_sense_are_refused() -> None:
    a, _ = pair()
    for change in (lambda: a.pause(0.0), lambda: a.play(0.0), lambda: a.seek(1.0, 0.0)):
        with pytest.raises(ShareplayError, match="nothing is shared"):
            change()
    for url in ("ftp://x/y", "", "https://x/" + "a" * 3000):
        with pytest.raises(ShareplayError, match="url"):
            a.start(url, "", 0.0)
    with pytest.raises(ShareplayError, match="title"):
        a.start(URL, "t" * 201, 0.0)
    a.start(URL, "", 0.0)
    with pytest.raises(ShareplayError, match="rate"):
        a.set_rate(8.0, 0.0)
    with pytest.raises(ShareplayError, match="position"):
        a.seek(-1.0, 0.0)
    assert a.version == (1, "device-a")


def test_nothing_ever_shared_sends_no_state_and_a_new_peer_is_measured_anew() -> None:
    """Version 0 is no state (the other side would refuse it). A new connection's other end may
    have another clock (a reloaded page, another device): what it set is re-anchored here with
    the old offset, and its clock is measured from scratch."""
    a, b = pair()
    assert a.state_message(0.0) is None
    skew = 60_000.0
    pong, _ = a.receive(encode(b.ping(1_000.0 + skew)), 1_000.0)
    b.receive(encode(pong), 1_000.0 + skew)  # type: ignore[arg-type]
    b.receive(encode(a.start(URL, "", 2_000.0)), 2_000.0 + skew)
    assert b.position(4_000.0 + skew) == pytest.approx(2.0)
    b.new_peer(4_000.0 + skew)
    assert b.clock.best is None and b.activity is not None and b.activity.local
    assert b.position(5_000.0 + skew) == pytest.approx(3.0)  # on its own clock now


def test_sizes_count_utf8_bytes() -> None:
    a, b = pair()
    title = "é" * 200  # 400 bytes of UTF-8 in 200 characters
    message = encode(a.start(URL, title, 0.0))
    assert "é" in message  # sent as UTF-8, not \\u-escaped (6 bytes a character)
    b.receive(message, 0.0)
    assert b.activity is not None and b.activity.title == title
    with pytest.raises(ShareplayError):
        b.receive('"' + "é" * (MAX_MESSAGE_BYTES // 2) + '"', 0.0)  # few characters, many bytes
    with pytest.raises(ShareplayError, match="bytes"):
        a.start("https://x/" + "𝄞" * 2038, "", 0.0)  # 2,048 characters, 8,162 bytes
