"""The security code of a 1:1 call (facecall.e2ee.security_code): what it hashes, that both
ends agree, that any other certificate changes it, and two real peers agreeing on it."""

from __future__ import annotations

import asyncio

from aiortc import RTCPeerConnection

from facecall.e2ee.security_code import code_of, sdp_fingerprints, security_code

A = "8A:73:87:6D:C0:ED:1E:7A:DB:DB:A0:6A:67:1A:F9:E7:C7:0A:0A:05:91:41:77:59:08:6B:7D:59:7F:23:A2:32"
ZERO = ":".join(["00"] * 32)


def sdp(*lines: str) -> str:
    return "\r\n".join(["v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0", *lines, ""])


def test_the_published_known_answer() -> None:
    """The vector the web client's test checks too (docs/security.md)."""
    assert code_of(f"sha-256 {A}", f"sha-256 {ZERO}") == "39315 78335 00203 42381"
    assert security_code(sdp(f"a=fingerprint:sha-256 {A}"),
                         sdp("m=audio 9 UDP/TLS/RTP/SAVPF 111", f"a=fingerprint:sha-256 {ZERO}")) \
        == "39315 78335 00203 42381"


def test_only_sha256_fingerprints_count_in_any_case_and_place() -> None:
    text = sdp(f"a=fingerprint:SHA-256 {A.lower()}", "m=audio 9 UDP/TLS/RTP/SAVPF 111",
               f"a=fingerprint:sha-256 {A}", "a=fingerprint:sha-384 " + ":".join(["AB"] * 48),
               "a=fingerprint:sha-1 " + ":".join(["CD"] * 20), "a=fingerprint:sha-256 nothex",
               "a=fingerprint:sha-256")
    assert sdp_fingerprints(text) == f"sha-256 {A}"  # one certificate, said twice
    two = sdp(f"a=fingerprint:sha-256 {ZERO}", f"a=fingerprint:sha-256 {A}")
    assert sdp_fingerprints(two) == f"sha-256 {ZERO},sha-256 {A}"
    assert sdp_fingerprints(sdp("a=fingerprint:sha-512 " + ":".join(["00"] * 64))) is None
    assert security_code(sdp(), sdp(f"a=fingerprint:sha-256 {A}")) is None


def test_both_ends_agree_and_a_certificate_in_the_middle_shows() -> None:
    alice, bob, mallory = f"sha-256 {A}", f"sha-256 {ZERO}", "sha-256 " + ":".join(["11"] * 32)
    code = code_of(alice, bob)
    assert code == code_of(bob, alice)
    assert len(code) == 23 and [len(group) for group in code.split(" ")] == [5, 5, 5, 5]
    # the server swapped both fingerprints for its own: alice sees (alice, mallory), bob
    # (mallory, bob), and each pair differs from the true one
    assert len({code, code_of(alice, mallory), code_of(mallory, bob)}) == 3


async def test_two_real_peer_connections_agree_on_their_code() -> None:
    offerer, answerer = RTCPeerConnection(), RTCPeerConnection()
    try:
        offerer.addTransceiver("audio")
        await offerer.setLocalDescription(await offerer.createOffer())
        await answerer.setRemoteDescription(offerer.localDescription)
        await answerer.setLocalDescription(await answerer.createAnswer())
        await offerer.setRemoteDescription(answerer.localDescription)
        one = security_code(offerer.localDescription.sdp, offerer.remoteDescription.sdp)
        other = security_code(answerer.localDescription.sdp, answerer.remoteDescription.sdp)
        assert one is not None and one == other
        third = RTCPeerConnection()  # another certificate: another code
        try:
            third.addTransceiver("audio")
            await third.setLocalDescription(await third.createOffer())
            assert security_code(third.localDescription.sdp, offerer.localDescription.sdp) != one
        finally:
            await third.close()
    finally:
        await asyncio.gather(offerer.close(), answerer.close())
