"""Shared playback in an SDK call (docs/shareplay.md): ``call.shareplay`` starts a video for
both people, plays, pauses, seeks and changes its speed, and follows what the other side does.

Messages go over the call's data channel (:meth:`facecall.client.peer.PeerSession.open_channel`,
negotiated by both ends before the first offer, W3C webrtc §6.2 ``negotiated``), which
rides the DTLS connection between the two devices: no server sees them. A call that replaces
its peer connection (ICE restart, rejoin, handoff) gets a new channel; each side sends its
state when one opens, so nothing is lost across it. The rules are in
:mod:`facecall.shareplay.playback`; this module moves its messages and keeps the clock synced.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from aiortc import RTCDataChannel

from facecall.logs import get_logger
from facecall.shareplay.playback import Activity, SharedPlayback, ShareplayError, encode

log = get_logger(__name__)

#: clock pings when the channel opens (the quickest one counts), and one every PING_EVERY s
OPEN_PINGS = 4
PING_GAP = 0.1
PING_EVERY = 10.0


def now_ms() -> float:
    """This device's clock for shared playback (monotonic: the offset to the other side's is
    measured, so any steady clock does)."""
    return time.monotonic() * 1000


class CallSharePlay:
    """The shared playback of one call. ``on_change(activity)`` is called when the other side
    (or this one) changes what is shared; ``activity`` is None when nothing is."""

    def __init__(self, device_id: str, on_change: Callable[[Activity | None], None]) -> None:
        self.playback = SharedPlayback(device_id)
        self._on_change = on_change
        self._channel: RTCDataChannel | None = None
        self._pinger: asyncio.Task[None] | None = None
        self.refused = 0
        """Messages from the other side that were refused (malformed, too large)."""

    # ------------------------------------------------------------------ what is shared

    @property
    def activity(self) -> Activity | None:
        """What is shared now (``url``, ``title``, ``playing``, ``rate``), or None."""
        return self.playback.activity

    def position(self) -> float | None:
        """Seconds into the shared video now, or None if nothing is shared."""
        return self.playback.position(now_ms())

    def start(self, url: str, title: str = "", *, position: float = 0.0,
              playing: bool = True) -> None:
        """Share the video at ``url`` (http or https, which both devices can fetch) with the
        other person, playing from ``position``; :class:`ShareplayError` for a bad one."""
        self._send(self.playback.start(url, title, now_ms(), position=position, playing=playing))

    def play(self) -> None:
        self._send(self.playback.play(now_ms()))

    def pause(self) -> None:
        self._send(self.playback.pause(now_ms()))

    def seek(self, position: float) -> None:
        self._send(self.playback.seek(position, now_ms()))

    def set_rate(self, rate: float) -> None:
        self._send(self.playback.set_rate(rate, now_ms()))

    def end(self) -> None:
        """Stop sharing, for both."""
        self._send(self.playback.end())

    # ------------------------------------------------------------------ the channel

    def attach(self, channel: RTCDataChannel) -> None:
        """Use ``channel`` (a new peer connection's) from now on."""
        self._channel = channel

        @channel.on("open")
        def on_open() -> None:
            if channel is not self._channel:
                return
            self.playback.new_peer(now_ms())  # perhaps another device, another clock
            state = self.playback.state_message(now_ms())
            if state is not None:
                self._send_on(channel, state)
            if self._pinger is not None:
                self._pinger.cancel()
            self._pinger = asyncio.ensure_future(self._ping(channel))

        @channel.on("message")
        def on_message(raw: str | bytes) -> None:
            if channel is self._channel:
                self._receive(channel, raw)

    def close(self) -> None:
        """The call ended: stop pinging."""
        self._channel = None
        if self._pinger is not None:
            self._pinger.cancel()

    def _receive(self, channel: RTCDataChannel, raw: str | bytes) -> None:
        try:
            reply, changed = self.playback.receive(raw, now_ms())
        except ShareplayError as exc:
            self.refused += 1
            log.warning("shareplay.refused", why=str(exc))
            return
        if reply is not None:
            self._send_on(channel, reply)
        if changed:
            self._on_change(self.playback.activity)

    def _send(self, message: dict[str, Any]) -> None:
        """Send a change (when the channel is not open, the state goes when it opens)."""
        self._on_change(self.playback.activity)
        if self._channel is not None and self._channel.readyState == "open":
            self._send_on(self._channel, message)

    @staticmethod
    def _send_on(channel: RTCDataChannel, message: dict[str, Any]) -> None:
        with contextlib.suppress(Exception):  # closing under us: the next channel resends
            channel.send(encode(message))

    async def _ping(self, channel: RTCDataChannel) -> None:
        for _ in range(OPEN_PINGS):
            self._send_on(channel, self.playback.ping(now_ms()))
            await asyncio.sleep(PING_GAP)
        while channel is self._channel and channel.readyState == "open":
            await asyncio.sleep(PING_EVERY)
            self._send_on(channel, self.playback.ping(now_ms()))
