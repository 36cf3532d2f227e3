"""Two aiortc peers on loopback with every packet going through an ImpairmentRelay.

For tests and ``bench/media.py``. Host candidates are gathered on 127.0.0.1 through the SDK's
hook (:func:`facecall.client.ice.host_addresses`: aioice never offers loopback by itself), and
each side's SDP is rewritten so that its only candidate is the relay's address: A's packets reach
B through the relay (direction ``a_to_b``) and B's reach A through it (``b_to_a``). No STUN or
TURN server is configured, so nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from facecall.client.ice import host_addresses
from facecall.media.impairment import ImpairmentRelay

_CANDIDATE = re.compile(r"^a=candidate:(\S+) (\d+) (udp|UDP) (\d+) (\S+) (\d+) typ (\S+)(.*)$")


def new_peer_connection() -> RTCPeerConnection:
    """A peer connection without STUN/TURN servers (aiortc would otherwise add Google's)."""
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


def candidate_port(sdp: str) -> int:
    """The port of the first UDP host candidate in ``sdp``."""
    for line in sdp.splitlines():
        match = _CANDIDATE.match(line.strip())
        if match and match.group(7) == "host":
            return int(match.group(6))
    raise ValueError("no UDP host candidate in the SDP")


def through_relay(sdp: str, address: tuple[str, int]) -> str:
    """``sdp`` with one UDP host candidate per media section, at ``address``; others dropped."""
    out, seen = [], set()
    mline = -1
    for line in sdp.splitlines():
        if line.startswith("m="):
            mline += 1
        if line.startswith("a=candidate:"):
            match = _CANDIDATE.match(line.strip())
            if not match or match.group(7) != "host" or (mline, match.group(2)) in seen:
                continue
            seen.add((mline, match.group(2)))
            line = (f"a=candidate:{match.group(1)} {match.group(2)} udp {match.group(4)} "
                    f"{address[0]} {address[1]} typ host")
        out.append(line)
    return "\r\n".join(out) + "\r\n"


async def connect(a: RTCPeerConnection, b: RTCPeerConnection, relay: ImpairmentRelay,
                  around: Callable[[RTCPeerConnection], object] | None = None) -> None:
    """Offer from ``a``, answer from ``b``, both through ``relay`` (already started).

    ``around(pc)`` may return a context manager entered around each side's SDP calls (e.g. a
    :meth:`MediaEngine.activate` for the side that runs the engine).
    """
    import contextlib

    def ctx(pc: RTCPeerConnection) -> contextlib.AbstractContextManager[object]:
        made = around(pc) if around is not None else None
        return made if isinstance(made, contextlib.AbstractContextManager) else contextlib.nullcontext()

    with host_addresses(["127.0.0.1"]):
        with ctx(a):
            await a.setLocalDescription(await a.createOffer())
        offer = RTCSessionDescription(through_relay(a.localDescription.sdp, relay.address), "offer")
        with ctx(b):
            await b.setRemoteDescription(offer)
            await b.setLocalDescription(await b.createAnswer())
        relay.side_b = ("127.0.0.1", candidate_port(b.localDescription.sdp))
        answer = RTCSessionDescription(through_relay(b.localDescription.sdp, relay.address), "answer")
        with ctx(a):
            await a.setRemoteDescription(answer)
