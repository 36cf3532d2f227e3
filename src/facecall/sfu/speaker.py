"""The dominant speaker of a group call: who is talking, so that the SFU can give their video
the large slot — without flapping at every cough, laugh or "mm-hm".

The SFU decodes no audio. It reads the level each sender puts in every audio packet (the
client-to-mixer audio level header extension, RFC 6464 §3: 0 to 127, in -dBov, 127 being
silence), and tells speech from silence by a threshold on it. The decision follows Volfin and
Cohen's dominant speaker identification (Computer Speech and Language, 2013), the method
Jitsi's bridge uses, in a simple form:

* every speaker's packets are binned into frames of :data:`FRAME` seconds, each active or not;
* three time scales count the active frames: the last :data:`IMMEDIATE` frames (a word), the
  last :data:`MEDIUM` (a phrase) and the last :data:`LONG` (a sentence);
* a challenger takes over only if it beats the current dominant speaker at all three scales,
  each by a margin (the log of the ratio of their counts above :data:`MARGINS`). One word
  cannot do it against someone who has been talking; a sentence can, once the other pauses.

With nobody dominant yet, the first speaker with an active phrase is. Decisions are made when
:meth:`DominantSpeaker.decide` is called (say every 300 ms), with the time passed in: no clock
and no I/O here.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

#: seconds per activity frame
FRAME = 0.02
#: frames in each time scale: about 0.2 s, 1 s and 4 s
IMMEDIATE, MEDIUM, LONG = 10, 50, 200
#: a challenger must beat the dominant speaker by these log-ratios of active frames, per scale
MARGINS = (math.log(3.0), math.log(2.0), 0.0)
#: an RFC 6464 level at or below this (-dBov) is speech: 127 is silence; typical speech 20-50
SPEECH_LEVEL = 70
#: a speaker heard from less recently than this is out of the race (seconds)
QUIET_AFTER = 2.0


@dataclass(slots=True)
class _Speaker:
    frames: deque[bool] = field(default_factory=lambda: deque(maxlen=LONG))
    frame_start: float | None = None
    frame_active: bool = False
    heard: float = 0.0

    def add(self, level: int, voice: bool | None, now: float) -> None:
        if self.frame_start is None:
            self.frame_start = now
        while now - self.frame_start >= FRAME:  # close the frames that ended (silent if empty)
            self.frames.append(self.frame_active)
            self.frame_active = False
            self.frame_start += FRAME
        active = level <= SPEECH_LEVEL and voice is not False
        self.frame_active = self.frame_active or active
        self.heard = now

    def catch_up(self, now: float) -> None:
        """Close the frames up to ``now`` (a speaker who sends nothing is silent)."""
        if self.frame_start is None:
            return
        missing = int((now - self.frame_start) / FRAME)
        for _ in range(min(missing, LONG)):
            self.frames.append(self.frame_active)
            self.frame_active = False
        self.frame_start += missing * FRAME

    def counts(self) -> tuple[int, int, int]:
        frames = list(self.frames)
        return (sum(frames[-IMMEDIATE:]), sum(frames[-MEDIUM:]), sum(frames))


class DominantSpeaker:
    """The dominant speaker among a call's participants (any hashable ids)."""

    def __init__(self) -> None:
        self._speakers: dict[str, _Speaker] = {}
        self.dominant: str | None = None

    def add(self, participant: str, level: int, now: float, voice: bool | None = None) -> None:
        """One audio packet's level (RFC 6464: 0..127 -dBov; ``voice``: its V flag, if the
        sender sets it) from ``participant`` at ``now`` (seconds, any steady clock). Levels
        out of range are clamped."""
        speaker = self._speakers.setdefault(participant, _Speaker())
        speaker.add(min(127, max(0, level)), voice, now)

    def remove(self, participant: str) -> None:
        """The participant left: out of the race (and no longer dominant)."""
        self._speakers.pop(participant, None)
        if self.dominant == participant:
            self.dominant = None

    def decide(self, now: float) -> str | None:
        """Who is dominant at ``now``: the new dominant speaker if it changed, else None."""
        for speaker in self._speakers.values():
            speaker.catch_up(now)
        racing = {p: s.counts() for p, s in self._speakers.items() if now - s.heard <= QUIET_AFTER}
        current = self.dominant
        if current is None or current not in self._speakers:
            best = max(racing, key=lambda p: racing[p][1], default=None)
            if best is None or racing[best][1] == 0:
                return None
            self.dominant = best
            return best
        ours = self._speakers[current].counts()
        challengers = [p for p in racing if p != current and _beats(racing[p], ours)]
        if not challengers:
            return None
        self.dominant = max(challengers, key=lambda p: racing[p])
        return self.dominant


def _beats(challenger: tuple[int, int, int], dominant: tuple[int, int, int]) -> bool:
    """At every time scale, more active by the scale's margin (counts + 1: a silent dominant
    speaker is beaten by any activity that clears the margin)."""
    return all(math.log((c + 1) / (d + 1)) > margin
               for c, d, margin in zip(challenger, dominant, MARGINS, strict=True))
