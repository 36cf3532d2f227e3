"""SFrame on 1:1 P2P media in the SDK (facecall.client.p2p_sframe, docs/sframe.md "1:1 calls"):
the declaration in the signed description, the cipher that waits for the negotiation, the keys
that follow the remote device, and real calls whose frames are SFrame on the wire."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import pytest

from facecall.client import Call, Device
from facecall.client import group_keys as group_keys_module
from facecall.client.p2p_sframe import SFRAME_LINE, AgreedCipher, PeerKeys, declare, declares
from facecall.client.sframe_media import FrameCipher, _DecryptingQueue, clear_bytes
from facecall.e2ee.sframe_header import decode_header
from tests.client.conftest import MakeDevice
from tests.client.test_calls import connected_call, stamped_frames
from tests.client.test_group_e2e_audit import (
    CALL,
    FakeCall,
    FakeDevice,
    Party,
    Server,
    call_key,
    readable_by,
    reader_of,
    settle,
)

OFFER = ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
         "m=audio 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\n")


@pytest.fixture(autouse=True)
def no_switch_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(group_keys_module, "SWITCH_DELAY", 0.0)


# ---------------------------------------------------------------- the declaration


def test_the_declaration_ends_the_session_section() -> None:
    declared = declare(OFFER)
    assert declared == OFFER.replace("\r\nm=audio", f"\r\n{SFRAME_LINE}\r\nm=audio")
    assert declares(declared) and not declares(OFFER)
    assert declare(declared) == declared  # once
    lf = OFFER.replace("\r\n", "\n")
    assert declare(lf) == lf.replace("\nm=audio", f"\n{SFRAME_LINE}\nm=audio")
    assert declares(declare("v=0\r\ns=-\r\nt=0 0\r\n"))  # no media section: at the end


def test_only_a_session_level_line_declares() -> None:
    assert not declares(OFFER + f"{SFRAME_LINE}\r\n")  # in a media section: not the connection's
    assert not declares(OFFER.replace("t=0 0", f"t=0 0\r\n{SFRAME_LINE}:x"))
    assert declares(OFFER.replace("t=0 0", f"t=0 0\r\n{SFRAME_LINE}  "))
    assert not declares("") and not declares("garbage\x00")


def test_a_connection_sends_and_decodes_nothing_until_negotiated() -> None:
    cipher = FrameCipher()
    cipher.use_key(1, b"k" * 16)
    agreed = AgreedCipher(cipher)
    assert agreed.encrypt("audio", b"hello") is None and agreed.decrypt("audio", b"x", "d") is None
    assert cipher.counts["unagreed"] == 2
    agreed.agreed = False  # the other device does not declare: DTLS-SRTP only
    assert agreed.encrypt("audio", b"hello") == b"hello" and agreed.decrypt("audio", b"x", "d") == b"x"
    agreed.agreed = True
    protected = agreed.encrypt("audio", b"hello")
    assert protected is not None and protected != b"hello" and cipher.counts["encrypted"] == 1


# ---------------------------------------------------------------- the keys follow the remote device


def peer_keys(party: Party, server: Server) -> PeerKeys:
    return PeerKeys(FakeCall(FakeDevice(party, server)))  # type: ignore[arg-type]


async def agreed_keys(party: Party, server: Server, user: str, device: str) -> PeerKeys:
    """``party``'s keys once a protected connection with ``device`` (of ``user``) is agreed."""
    keys = peer_keys(party, server)
    keys.agreed(user, device, protected=True)
    await settle()
    return keys


async def test_a_protected_connection_keys_the_remote_device_and_reads_its_keys() -> None:
    a, b = Party("alice", "a1"), Party("bob", "b1")
    server = Server(a, b)
    keys = await agreed_keys(a, server, "bob", "b1")
    assert len(server.keys_to("b1")) == 1 and keys.remote_device == "b1"
    assert readable_by(reader_of(a, b, server), keys.cipher, a)
    b_keys = peer_keys(b, server)  # bob's side sends alice a key of its own
    b_keys.agreed("alice", "a1", protected=True)
    await settle()
    keys.deliver(call_key(b, server.keys_to("a1")[0]))
    await settle()
    assert keys.keys.senders() == {"b1"} and not keys.keys.refused
    assert readable_by(keys.cipher, b_keys.cipher, b)
    keys.agreed("bob", "b1", protected=True)  # an ICE restart: the same device, no new key
    await settle()
    assert len(server.keys_to("b1")) == 1
    keys.close()
    b_keys.close()


async def test_the_call_moved_to_another_device_is_keyed_anew_and_the_first_reads_nothing_more() -> None:
    """bob moved the call from b1 to b2 (a handoff): b2 gets a new key, b1 none, and what alice
    sends from then on b1 cannot read; b1's keys are dropped at once."""
    a, b1, b2 = Party("alice", "a1"), Party("bob", "b1"), Party("bob", "b2")
    server = Server(a, b1, b2)
    keys = await agreed_keys(a, server, "bob", "b1")
    b1_keys = await agreed_keys(b1, server, "alice", "a1")
    keys.deliver(call_key(b1, server.keys_to("a1")[0]))
    await settle()
    assert keys.keys.senders() == {"b1"}
    keys.agreed("bob", "b2", protected=True)
    await settle()
    assert keys.keys.senders() == set() and keys.remote_device == "b2"
    assert len(server.keys_to("b1")) == 1 and len(server.keys_to("b2")) == 1
    assert readable_by(reader_of(a, b2, server), keys.cipher, a)
    assert not readable_by(reader_of(a, b1, server), keys.cipher, a)
    keys.close()
    b1_keys.close()


async def test_a_device_that_lost_its_state_gets_a_new_key() -> None:
    """``call.rejoin`` from the remote device (a reloaded page): a new key for it; its old keys
    are dropped (it makes new ones). A rejoin of another device changes nothing."""
    a, b = Party("alice", "a1"), Party("bob", "b1")
    server = Server(a, b)
    keys = await agreed_keys(a, server, "bob", "b1")
    keys.rejoined("b9")
    await settle()
    assert len(server.keys_to("b1")) == 1
    keys.rejoined("b1")
    await settle()
    assert len(server.keys_to("b1")) == 2 and keys.keys.rotations == 2
    opened = b.identity.open_sender_key(server.keys_to("b1")[-1], call_id=CALL,
                                        sender_key=a.identity.public_key, user_id=b.user,
                                        device_id=b.device)
    assert opened.kid == keys.cipher.kid  # the newest key is the one in use
    keys.close()


async def test_an_unprotected_connection_stops_what_the_previous_device_could_read() -> None:
    """The call moved to a device that does not declare SFrame: nothing more goes out under the
    key the previous device holds, and no key goes to the new one."""
    a, b1, b2 = Party("alice", "a1"), Party("bob", "b1"), Party("bob", "b2")
    server = Server(a, b1, b2)
    keys = await agreed_keys(a, server, "bob", "b1")
    assert keys.cipher.kid is not None
    keys.agreed("bob", "b2", protected=False)
    await settle()
    assert keys.cipher.kid is None and keys.remote_device is None
    assert keys.cipher.encrypt("audio", b"after") is None
    assert server.keys_to("b2") == []
    keys.close()


async def test_forged_and_misrouted_keys_change_nothing() -> None:
    a, b, m = Party("alice", "a1"), Party("bob", "b1"), Party("mallory", "m1")
    server = Server(a, b, m)
    keys = await agreed_keys(a, server, "bob", "b1")
    m_keys = await agreed_keys(m, server, "alice", "a1")  # mallory seals a real key to alice...
    forged = server.keys_to("a1")[0]
    keys.deliver(call_key(b, forged))  # ...relayed as bob's
    keys.deliver(call_key(b, {**forged, "epk": "AAAA"}))
    keys.deliver(call_key(b, "garbage"))
    await settle()
    assert sum(keys.keys.refused.values()) == 3 and keys.keys.senders() == set()
    keys.close()
    m_keys.close()


# ---------------------------------------------------------------- real calls


async def connected_call_from(caller: Device, callee: Device) -> tuple[Call, Call]:
    """``caller`` calls ``callee`` (video), which answers: both calls, connected."""
    outgoing = await caller.call(callee.username or "", video=True)
    incoming = await callee.next_call(timeout=10)
    await incoming.answer()
    await asyncio.gather(outgoing.wait_connected(30), incoming.wait_connected(30))
    return outgoing, incoming


@pytest.fixture
def wire(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[bytes]]:
    """Every frame as it reached a receiver, before decryption: video through the decoder
    queue, Opus through the media engine's payload hook (or the queue, on the stock path)."""
    seen: dict[str, list[bytes]] = defaultdict(list)
    put, open_payload = _DecryptingQueue.put, _DecryptingQueue.open_payload

    def recording_put(self: _DecryptingQueue, item: Any) -> None:
        if item is not None:
            seen[self.kind].append(bytes(item[1].data))
        put(self, item)

    def recording_open(self: _DecryptingQueue, data: bytes) -> bytes | None:
        seen[self.kind].append(bytes(data))
        return open_payload(self, data)

    monkeypatch.setattr(_DecryptingQueue, "put", recording_put)
    monkeypatch.setattr(_DecryptingQueue, "open_payload", recording_open)
    return seen


def kids_on_the_wire(kind: str, frames: list[bytes]) -> set[int]:
    kids = set()
    for frame in frames:
        header, _ = decode_header(frame[clear_bytes(kind, frame):])
        kids.add(header.kid)
    return kids


@pytest.mark.parametrize("engine", [True, False], ids=["engine", "stock"])
async def test_a_call_s_media_is_sframe_on_the_wire(make_device: MakeDevice, wire: dict[str, list[bytes]],
                                                    engine: bool) -> None:
    """Both devices declare SFrame: every frame that reaches a receiver is ``clear || SFrame``
    under the sender's own key (audio and video, on the media engine and on aiortc's stock
    path), and the pictures decode with their stamps intact."""
    _alice, _bob, outgoing, incoming = await connected_call(make_device, media_engine=engine)
    for call in (outgoing, incoming):
        assert (await stamped_frames(call, 10)).summary().stamped >= 10
        assert call.sframe is True
    await asyncio.sleep(0.5)  # some audio too
    assert outgoing._p2p_keys is not None and incoming._p2p_keys is not None
    sent_kids = {outgoing._p2p_keys.cipher.kid, incoming._p2p_keys.cipher.kid}
    for kind in ("audio", "video"):
        assert len(wire[kind]) >= 10, kind
        assert kids_on_the_wire(kind, wire[kind]) <= sent_kids, kind
    for call in (outgoing, incoming):
        counts = call.sframe_counts
        assert counts["encrypted"] > 20 and counts["decrypted"] > 20, counts
        assert "AuthenticationFailed" not in counts, counts
    assert outgoing._p2p_keys.keys.senders() == {incoming.device.device_id}


async def test_a_device_that_does_not_declare_gets_dtls_srtp_media(make_device: MakeDevice,
                                                                   wire: dict[str, list[bytes]]) -> None:
    """alice's device sends H.264, which SFrame cannot ride here: it does not declare, bob's
    answer follows, and the call has DTLS-SRTP media only — said by ``Call.sframe``."""
    alice = await make_device("alice", video_codec="H264")
    outgoing, incoming = await connected_call_from(alice, await make_device("bob"))
    assert (await stamped_frames(incoming, 5)).summary().stamped >= 5
    assert (await stamped_frames(outgoing, 5)).summary().stamped >= 5
    assert outgoing.sframe is False and incoming.sframe is False
    assert outgoing.sframe_counts == {} and incoming.sframe_counts == {}
    assert not wire  # no receiver of this call decrypts anything


async def test_a_device_that_declares_calls_one_that_sends_h264_only(make_device: MakeDevice) -> None:
    """bob declares and offers VP8 first; alice's device sends H.264 only and declares nothing:
    she answers H.264, and the call's media is DTLS-SRTP only, both ways."""
    bob = await make_device("bob")
    outgoing, incoming = await connected_call_from(bob, await make_device("alice", video_codec="H264"))
    assert (await stamped_frames(incoming, 5)).summary().stamped >= 5
    assert (await stamped_frames(outgoing, 5)).summary().stamped >= 5
    assert outgoing.sframe is False and incoming.sframe is False
    counts = outgoing.sframe_counts
    assert "encrypted" not in counts and "decrypted" not in counts, counts


async def test_a_device_the_server_has_no_agreement_key_of_declares_nothing(make_device: MakeDevice) -> None:
    """No key could be sealed to a device the server has no agreement key of (its publication
    was refused): it declares nothing, and its calls are DTLS-SRTP only instead of silent."""
    alice = await make_device("alice")
    alice.enrolment._state.pop("agreement_published")  # as after a refused publication
    assert not alice.enrolment.agreement_published
    outgoing, incoming = await connected_call_from(alice, await make_device("bob"))
    assert (await stamped_frames(incoming, 5)).summary().stamped >= 5
    assert (await stamped_frames(outgoing, 5)).summary().stamped >= 5
    assert outgoing.sframe is False and incoming.sframe is False
