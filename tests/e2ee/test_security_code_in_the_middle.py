"""A server in the middle of a video call between two SDK devices: the security codes show it
(facecall.e2ee.security_code, facecall.client.peer.dtls_fingerprints, ``Call.security_code``).

The server forges only the SDP it relays. aiortc's DTLS checks the remote certificate only
against the fingerprints of the m-section whose transport it uses (the BUNDLE's first; the SDK
bundles with MAX_BUNDLE), and accepts a section that lists only a ``sha-512`` line. So the
server puts its own certificate as a ``sha-512`` line in the first m-section and the honest
other side's ``sha-256`` line in the second: both DTLS sessions end at the server. A code
hashing the remote description's ``sha-256`` lines would be the honest one on both ends (an
audit found the SDK doing that); the certificates the DTLS accepted give it away.
"""

from __future__ import annotations

import asyncio
import re

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.rtcconfiguration import RTCBundlePolicy

from facecall.client.ice import host_addresses
from facecall.client.peer import dtls_fingerprints
from facecall.e2ee.security_code import code_of, sdp_fingerprints, security_code

FP = re.compile(r"^a=fingerprint:.*$", re.M)


def fingerprint_line(sdp: str, algorithm: str) -> str:
    for line in sdp.splitlines():
        if line.startswith(f"a=fingerprint:{algorithm} "):
            return line
    raise AssertionError(f"no {algorithm} fingerprint in {sdp!r}")


def forge(sdp: str, first: str, second: str) -> str:
    """``sdp`` with the first m-section's fingerprint lines replaced by ``first`` and the
    others' by ``second`` (what a server relaying the SDP can do)."""
    head, *sections = re.split(r"(?m)^(?=m=)", sdp)
    assert len(sections) == 2, sdp
    out = [FP.sub("", head)]
    for index, section in enumerate(sections):
        lines = [line for line in section.split("\r\n") if not line.startswith("a=fingerprint:")]
        lines.insert(1, first if index == 0 else second)
        out.append("\r\n".join(lines))
    return "".join(out)


def new_pc() -> RTCPeerConnection:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
    pc.addTransceiver("audio")
    pc.addTransceiver("video")
    return pc


async def connected(*pcs: RTCPeerConnection) -> None:
    async def one(pc: RTCPeerConnection) -> None:
        for _ in range(200):
            if pc.connectionState == "connected":
                return
            if pc.connectionState == "failed":
                raise AssertionError("DTLS/ICE failed")
            await asyncio.sleep(0.05)
        raise AssertionError(f"not connected: {pc.connectionState}")
    await asyncio.gather(*(one(pc) for pc in pcs))


async def test_a_server_in_the_middle_of_a_video_call_between_sdk_devices_shows() -> None:
    alice, bob, m1, m2 = new_pc(), new_pc(), new_pc(), new_pc()
    try:
        with host_addresses(["127.0.0.1"]):
            # alice (the caller) offers; the server keeps it and answers her itself (m1)
            await alice.setLocalDescription(await alice.createOffer())
            a_offer = alice.localDescription.sdp
            # toward bob, the server offers itself (m2), naming alice's sha-256 in section 2
            await m2.setLocalDescription(await m2.createOffer())
            m2_offer = m2.localDescription.sdp
            await bob.setRemoteDescription(RTCSessionDescription(
                forge(m2_offer, fingerprint_line(m2_offer, "sha-512"),
                      fingerprint_line(a_offer, "sha-256")), "offer"))
            await bob.setLocalDescription(await bob.createAnswer())
            b_answer = bob.localDescription.sdp
            await m2.setRemoteDescription(bob.localDescription)
            # toward alice, m1 answers, naming bob's sha-256 in section 2
            await m1.setRemoteDescription(alice.localDescription)
            await m1.setLocalDescription(await m1.createAnswer())
            m1_answer = m1.localDescription.sdp
            await alice.setRemoteDescription(RTCSessionDescription(
                forge(m1_answer, fingerprint_line(m1_answer, "sha-512"),
                      fingerprint_line(b_answer, "sha-256")), "answer"))
            await connected(alice, bob, m1, m2)  # both DTLS sessions end at the server

        honest = code_of(sdp_fingerprints(a_offer) or "", sdp_fingerprints(b_answer) or "")
        # the trap: the remote descriptions' sha-256 lines are the honest ones
        assert security_code(alice.localDescription.sdp, alice.remoteDescription.sdp) == honest
        assert security_code(bob.localDescription.sdp, bob.remoteDescription.sdp) == honest
        # what the SDK shows: the certificates the DTLS accepted, the server's
        alice_sees, bob_sees = dtls_fingerprints(alice), dtls_fingerprints(bob)
        assert alice_sees is not None and bob_sees is not None
        assert alice_sees[1] == sdp_fingerprints(m1.localDescription.sdp)
        assert bob_sees[1] == sdp_fingerprints(m2.localDescription.sdp)
        alice_code, bob_code = code_of(*alice_sees), code_of(*bob_sees)
        assert alice_code != bob_code and honest not in (alice_code, bob_code)
        # and with nobody in the middle, the server's own two ends agree with theirs
        assert code_of(*alice_sees) == code_of(*(dtls_fingerprints(m1) or ("", "")))
    finally:
        await asyncio.gather(*(pc.close() for pc in (alice, bob, m1, m2)))
