"""The dominant speaker (facecall.sfu.speaker): who talks gets the slot, a cough or a brief
"mm-hm" does not take it, a sentence does once the other pauses, and leaving frees it."""

from __future__ import annotations

from facecall.sfu.speaker import DominantSpeaker

TALK, QUIET = 35, 127  # RFC 6464 levels: speech, silence


def speak(room: DominantSpeaker, levels: dict[str, int], start: float, seconds: float) -> float:
    """Every participant of ``levels`` sends one packet per 20 ms at its level; decisions every
    300 ms. Returns the end time; the decisions are in ``room.dominant``."""
    first = round(start / 0.02)
    tick = first
    for tick in range(first, first + round(seconds / 0.02)):
        now = tick * 0.02
        for who, level in levels.items():
            room.add(who, level, now)
        if tick % 15 == 0:  # every 300 ms of the call, whatever the phases
            room.decide(now)
    return (tick + 1) * 0.02


def test_the_one_who_talks_is_dominant() -> None:
    room = DominantSpeaker()
    assert room.decide(0.0) is None
    end = speak(room, {"alice": QUIET, "bob": QUIET}, 0.0, 1.0)
    assert room.dominant is None  # silence elects nobody
    speak(room, {"alice": TALK, "bob": QUIET}, end, 1.0)
    assert room.dominant == "alice"


def test_a_cough_does_not_take_the_slot_but_a_sentence_does() -> None:
    room = DominantSpeaker()
    now = speak(room, {"alice": TALK, "bob": QUIET, "carol": QUIET}, 0.0, 3.0)
    assert room.dominant == "alice"
    now = speak(room, {"alice": TALK, "bob": TALK, "carol": QUIET}, now, 0.3)  # bob: "mm-hm"
    assert room.dominant == "alice"
    now = speak(room, {"alice": TALK, "bob": TALK, "carol": QUIET}, now, 2.0)  # both talk
    assert room.dominant == "alice"  # no flapping while she goes on
    now = speak(room, {"alice": QUIET, "bob": TALK, "carol": QUIET}, now, 0.3)
    assert room.dominant == "alice"  # she paused for breath
    speak(room, {"alice": QUIET, "bob": TALK, "carol": QUIET}, now, 3.0)
    assert room.dominant == "bob"  # he has the floor


def test_a_silent_or_departed_dominant_speaker_yields() -> None:
    room = DominantSpeaker()
    now = speak(room, {"alice": TALK, "bob": QUIET}, 0.0, 2.0)
    room.remove("alice")
    assert room.dominant is None
    speak(room, {"bob": TALK}, now, 1.0)
    assert room.dominant == "bob"
    room.remove("nobody")  # unknown: nothing happens
    assert room.dominant == "bob"


def test_a_sender_that_stops_sending_counts_as_silent_and_levels_are_clamped() -> None:
    room = DominantSpeaker()
    now = speak(room, {"alice": TALK}, 0.0, 2.0)
    assert room.dominant == "alice"
    now = speak(room, {"bob": -40}, now + 3.0, 2.0)  # alice's packets stopped; bob clamped to 0
    assert room.dominant == "bob"
    room.add("carol", 500, now)  # clamped to silence
    assert room.decide(now + 0.3) is None


def test_a_breath_is_no_change_of_speaker_even_after_a_long_overlap() -> None:
    """alice and bob have both talked for the whole long window; alice keeps the slot through a
    0.3 s breath while bob goes on (the medium scale's margin), and loses it only after one
    second of silence."""
    room = DominantSpeaker()
    now = speak(room, {"alice": TALK, "bob": QUIET}, 0.0, 0.6)
    now = speak(room, {"alice": TALK, "bob": TALK}, now, 4.0)
    assert room.dominant == "alice"
    now = speak(room, {"alice": QUIET, "bob": TALK}, now, 0.3)
    assert room.dominant == "alice"
    speak(room, {"alice": QUIET, "bob": TALK}, now, 1.0)
    assert room.dominant == "bob"
