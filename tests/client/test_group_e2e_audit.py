"""Audit of the SDK's end-to-end encrypted group media (facecall.client.group_keys,
facecall.client.sframe_media) against a server that lies and members that misbehave.

Each device here is real (its own :class:`~facecall.client.identity.Identity`, real sealing and
SFrame); what stands in for the server is the little it does for :class:`GroupKeys`: the list
of published keys (``GET /v1/users/{id}/identity-keys``) and the relay of ``call.key`` — exactly
the parts a malicious server controls.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from facecall.client import group_keys as group_keys_module
from facecall.client.group_keys import GroupKeys
from facecall.client.identity import Identity
from facecall.client.sframe_media import FrameCipher
from facecall.e2ee.media_keys import (
    MAX_NUMBER,
    KeyChanges,
    OpenedKey,
    ReceivedKeys,
    SenderKeys,
    StaleKey,
    make_kid,
)

CALL = "call-audit"
SECRET = b"what was said after the member left"


class Party:
    """A device of the call, with its own identity and agreement keys."""

    def __init__(self, user: str, device: str) -> None:
        self.user, self.device = user, device
        self.identity = Identity()
        self.joined = 1

    def listing(self, with_agreement_key: bool) -> dict[str, Any]:
        cert = self.identity.agreement_certificate(self.user, self.device)
        return {"device_id": self.device, "identity_key": self.identity.public_key,
                "agreement_key": ({"key": cert["key"], "signature": cert["signature"]}
                                  if with_agreement_key else None)}

    def member(self) -> dict[str, Any]:
        return {"user_id": self.user, "device_id": self.device, "joined": self.joined}


class Server:
    """The server as GroupKeys meets it: it lists keys (and may withhold agreement keys, or
    stall) and relays ``call.key`` (recorded in :attr:`sent`)."""

    def __init__(self, *parties: Party) -> None:
        self.parties = {p.device: p for p in parties}
        self.withheld: set[str] = set()
        self.stall: asyncio.Event | None = None
        self.sent: list[tuple[str, str, dict[str, Any]]] = []  # (from device, to device, key)

    async def identity_keys(self, token: str, user_id: str) -> dict[str, Any]:
        if self.stall is not None:
            await self.stall.wait()
        return {"user_id": user_id,
                "devices": [p.listing(p.device not in self.withheld)
                            for p in self.parties.values() if p.user == user_id]}

    def keys_to(self, device: str) -> list[dict[str, Any]]:
        return [key for _, to, key in self.sent if to == device]


class FakeDevice:
    def __init__(self, party: Party, server: Server) -> None:
        self.identity, self.user_id, self.device_id = party.identity, party.user, party.device
        self.token, self.api, self._server = "token", server, server

    async def request(self, type_: str, **fields: Any) -> dict[str, Any]:
        assert type_ == "call.key"
        self._server.sent.append((self.device_id, fields["to_device"], fields["key"]))
        return {}


class FakeCall:
    def __init__(self, device: FakeDevice) -> None:
        self.id, self.device = CALL, device

    def _in_background(self, coro: Any) -> asyncio.Future[None]:
        return asyncio.ensure_future(coro)


def group_keys(party: Party, server: Server) -> tuple[GroupKeys, FrameCipher]:
    cipher = FrameCipher()
    return GroupKeys(FakeCall(FakeDevice(party, server)), cipher), cipher  # type: ignore[arg-type]


async def settle() -> None:
    """Let the key tasks run to the end of what they were given (no I/O here: a few turns)."""
    for _ in range(5):
        await asyncio.sleep(0.01)


def members_event(*parties: Party) -> dict[str, Any]:
    return {"type": "sfu.members", "call_id": CALL, "members": [p.member() for p in parties]}


def reader_of(sender: Party, reader: Party, server: Server) -> FrameCipher:
    """A FrameCipher holding every key ``sender`` sealed to ``reader`` (what ``reader`` could
    decrypt with, having left or not)."""
    cipher = FrameCipher()
    for message in server.keys_to(reader.device):
        opened = reader.identity.open_sender_key(
            message, call_id=CALL, sender_key=sender.identity.public_key, user_id=reader.user,
            device_id=reader.device)
        cipher.apply(KeyChanges([], [(sender.device, opened.kid, opened.base_key)]))
    return cipher


def readable_by(reader: FrameCipher, sender: FrameCipher, device: Party) -> bool:
    """Whether ``reader`` reads what ``sender`` (``device``'s cipher) sends now, shown as
    ``device``'s."""
    frame = sender.encrypt("audio", SECRET)
    return frame is not None and reader.decrypt("audio", frame, device.device) == SECRET


@pytest.fixture(autouse=True)
def no_switch_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(group_keys_module, "SWITCH_DELAY", 0.0)


# ---------------------------------------------------------------- forward secrecy on leave


async def test_a_member_who_left_last_cannot_read_what_is_sent_after() -> None:
    """A and D in the room; D leaves (or is removed). A is alone: it has nobody to seal a new
    key to, and kept encrypting with the key D holds — a server that records the SFU's input
    (it receives every frame) hands D what A says after D left."""
    a, d = Party("alice", "a1"), Party("dave", "d1")
    server = Server(a, d)
    keys, cipher = group_keys(a, server)
    keys.members_replied([a.member(), d.member()])
    await settle()
    d_reader = reader_of(a, d, server)
    assert readable_by(d_reader, cipher, a)  # D was a member: it reads A
    keys.deliver(members_event(a))  # D left
    await settle()
    assert not readable_by(d_reader, cipher, a)
    keys.close()


async def test_a_member_who_left_cannot_read_when_the_server_withholds_the_others_keys() -> None:
    """A, B, D in the room. D leaves at the moment B joins again (B restarted: its agreement
    key must be read again), and the server does not list B's agreement key. A had no key to
    seal to, so it made none — and went on with the key D holds."""
    a, b, d = Party("alice", "a1"), Party("bob", "b1"), Party("dave", "d1")
    server = Server(a, b, d)
    keys, cipher = group_keys(a, server)
    keys.members_replied([a.member(), b.member(), d.member()])
    await settle()
    d_reader = reader_of(a, d, server)
    assert readable_by(d_reader, cipher, a)
    b.joined = 2
    server.withheld.add("b1")
    keys.deliver(members_event(a, b))
    await settle()
    assert keys.unsealed == {"b1"}
    assert not readable_by(d_reader, cipher, a)
    keys.close()


async def test_a_member_who_left_cannot_read_when_no_new_key_can_be_made() -> None:
    """A failed rotation (here: the sender's KIDs are used up — a server can force 65,536
    membership changes) is logged and the follower goes on; A must not go on with the key the
    departed member holds."""
    a, b, d = Party("alice", "a1"), Party("bob", "b1"), Party("dave", "d1")
    server = Server(a, b, d)
    keys, cipher = group_keys(a, server)
    keys.members_replied([a.member(), b.member(), d.member()])
    await settle()
    d_reader = reader_of(a, d, server)
    keys._sender._next = MAX_NUMBER + 1  # the state 65,536 changes leave
    keys.deliver(members_event(a, b))
    await settle()
    assert not readable_by(d_reader, cipher, a)
    keys.close()


async def test_a_new_member_without_a_key_does_not_stop_the_others_media() -> None:
    """The fix above must not turn a join into a denial of service: a newcomer whose agreement
    key cannot be had is left out, and the members who hold the current key go on reading."""
    a, b, n = Party("alice", "a1"), Party("bob", "b1"), Party("nina", "n1")
    server = Server(a, b, n)
    keys, cipher = group_keys(a, server)
    keys.members_replied([a.member(), b.member()])
    await settle()
    server.withheld.add("n1")
    keys.deliver(members_event(a, b, n))
    await settle()
    assert keys.unsealed == {"n1"}
    assert readable_by(reader_of(a, b, server), cipher, a)
    keys.close()


async def test_media_starts_again_with_a_fresh_key_when_someone_joins() -> None:
    a, d, n = Party("alice", "a1"), Party("dave", "d1"), Party("nina", "n1")
    server = Server(a, d, n)
    keys, cipher = group_keys(a, server)
    keys.members_replied([a.member(), d.member()])
    await settle()
    d_reader = reader_of(a, d, server)
    keys.deliver(members_event(a))
    await settle()
    keys.deliver(members_event(a, n))
    await settle()
    assert readable_by(reader_of(a, n, server), cipher, a)
    assert not readable_by(d_reader, cipher, a)
    keys.close()


async def test_a_stalled_lookup_does_not_keep_the_departed_members_key_in_use() -> None:
    """D leaves as N joins (one change). A must read N's agreement key, and the server stalls
    that lookup (the SDK tries again for about 12 s, and a server can make every change need
    one). Meanwhile A must not go on with the key D holds: B's key is known, so A re-keys to B
    at once and to N when its key comes."""
    a, b, d, n = Party("alice", "a1"), Party("bob", "b1"), Party("dave", "d1"), Party("nina", "n1")
    server = Server(a, b, d, n)
    keys, cipher = group_keys(a, server)
    keys.members_replied([a.member(), b.member(), d.member()])
    await settle()
    d_reader = reader_of(a, d, server)
    server.stall = asyncio.Event()
    keys.deliver(members_event(a, b, n))
    await settle()
    assert not readable_by(d_reader, cipher, a)
    assert readable_by(reader_of(a, b, server), cipher, a)  # B goes on hearing A
    server.stall.set()
    await settle()
    assert readable_by(reader_of(a, n, server), cipher, a)
    assert readable_by(reader_of(a, b, server), cipher, a)
    assert not readable_by(d_reader, cipher, a)
    keys.close()


async def test_changes_that_keep_coming_do_not_keep_the_departed_members_key_in_use(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """D leaves; A seals a new key to B and switches SWITCH_DELAY later. Before that, and then
    every half SWITCH_DELAY, the server says N (no agreement key published) joined, then left,
    then joined... — each a change, and A seals B another key. Each newer key's switch used to
    cancel the pending one, so the key D holds stayed in use while the changes kept coming, for
    as long as the server liked. The pending switch goes on now (D holds none of the keys sealed
    after it left): a moment later D reads nothing."""
    monkeypatch.setattr(group_keys_module, "SWITCH_DELAY", 0.2)
    a, b, d, n = Party("alice", "a1"), Party("bob", "b1"), Party("dave", "d1"), Party("nina", "n1")
    server = Server(a, b, d, n)
    server.withheld = {n.device}
    keys, cipher = group_keys(a, server)
    keys.members_replied([a.member(), b.member(), d.member()])
    await settle()
    d_reader = reader_of(a, d, server)
    assert readable_by(d_reader, cipher, a)
    keys.deliver(members_event(a, b))  # D left
    loop = asyncio.get_running_loop()
    left = loop.time()
    read_later = []
    for step in range(8):  # N joins, leaves, joins... every 0.1 s, for 0.8 s
        await asyncio.sleep(0.1)
        keys.deliver(members_event(a, b, n) if step % 2 == 0 else members_event(a, b))
        if loop.time() - left > 0.35:
            read_later.append(readable_by(d_reader, cipher, a))
    assert read_later and not any(read_later), read_later
    assert keys.rotations >= 6 and cipher.kid is not None  # A went on sending to B
    keys.close()


async def test_a_stalled_lookup_with_no_key_known_stops_the_media_meanwhile() -> None:
    """D leaves as B joins again (its key must be read again), and the server stalls it: A
    knows nobody's key, so it sends nothing until it has one."""
    a, b, d = Party("alice", "a1"), Party("bob", "b1"), Party("dave", "d1")
    server = Server(a, b, d)
    keys, cipher = group_keys(a, server)
    keys.members_replied([a.member(), b.member(), d.member()])
    await settle()
    d_reader = reader_of(a, d, server)
    server.stall = asyncio.Event()
    b.joined = 2
    keys.deliver(members_event(a, b))
    await settle()
    assert cipher.encrypt("audio", SECRET) is None
    server.stall.set()
    await settle()
    assert readable_by(reader_of(a, b, server), cipher, a)
    assert not readable_by(d_reader, cipher, a)
    keys.close()


async def test_a_member_that_joins_again_gets_a_new_key() -> None:
    """(The fix above re-keys at most once per change; a device that joins again — same id,
    a new ``joined``, a program without keys — still gets a key of its own.)"""
    a, b = Party("alice", "a1"), Party("bob", "b1")
    server = Server(a, b)
    keys, cipher = group_keys(a, server)
    keys.members_replied([a.member(), b.member()])
    await settle()
    b.joined = 2
    keys.deliver(members_event(a, b))
    await settle()
    assert len(server.keys_to("b1")) == 2 and keys.rotations == 2
    newest = FrameCipher()
    opened = b.identity.open_sender_key(server.keys_to("b1")[-1], call_id=CALL,
                                        sender_key=a.identity.public_key, user_id=b.user,
                                        device_id=b.device)
    newest.apply(KeyChanges([], [(a.device, opened.kid, opened.base_key)]))
    assert readable_by(newest, cipher, a)
    keys.close()


# ---------------------------------------------------------------- bounded memory


async def test_member_lists_do_not_pile_up_while_a_lookup_stalls() -> None:
    """A server that stalls the key lookup (the SDK retries for about 12 s) and meanwhile
    sends sfu.members after sfu.members: only the newest list matters, only it is kept."""
    a, b = Party("alice", "a1"), Party("bob", "b1")
    server = Server(a, b)
    keys, _ = group_keys(a, server)
    server.stall = asyncio.Event()
    keys.members_replied([a.member(), b.member()])
    await settle()  # the follower waits on the lookup
    for joined in range(2, 2002):
        b.joined = joined
        keys.deliver(members_event(a, b))
    assert keys._member_lists.qsize() <= 1
    server.stall.set()
    await settle()
    assert keys.members == {"b1": ("bob", 2001)}
    keys.close()


async def test_checked_agreement_keys_are_kept_for_current_members_only() -> None:
    a, b = Party("alice", "a1"), Party("bob", "b1")
    server = Server(a, b)
    keys, _ = group_keys(a, server)
    keys.members_replied([a.member(), b.member()])
    await settle()
    for joined in range(2, 50):  # the server says B joined again, and again
        b.joined = joined
        keys.deliver(members_event(a, b))
        await settle()
    assert len(keys._agreement_keys) == 1
    keys.close()


# ---------------------------------------------------------------- a hostile participant


def call_key(sender: Party, message: dict[str, Any]) -> dict[str, Any]:
    return {"type": "call.key", "call_id": CALL, "from_user": sender.user,
            "from_device": sender.device, "key": message}


async def test_a_member_cannot_squat_another_senders_tag() -> None:
    """M (a member) reads V's tag from V's frames (the KID is in the clear SFrame header) and
    from the key V sealed to M. When R joins, M sends R a key of its own under V's tag — V's
    very KID — before V's key reaches R. (Session 18's audit: R refused V's key and could not
    decode V for the rest of the call.) Tags are each sender's own now: R takes both keys, and
    reads V's frames as V's, M's as M's."""
    r, m, v = Party("rita", "r1"), Party("mallory", "m1"), Party("victor", "v1")
    server = Server(r, m, v)
    keys, cipher = group_keys(r, server)
    keys.members_replied([m.member(), v.member(), r.member()])
    await settle()
    r_agreement = await Identity().agreement_key_of(server, "t", r.user, r.device)  # type: ignore[arg-type]
    victims = SenderKeys(v.identity._key, CALL, v.user, v.device)
    squatter = SenderKeys(m.identity._key, CALL, m.user, m.device, tag=victims.tag)
    keys.deliver(call_key(m, squatter.rotate([r_agreement])))
    keys.deliver(call_key(v, victims.rotate([r_agreement])))
    await settle()
    assert keys.senders() == {"v1", "m1"} and not keys.refused, dict(keys.refused)
    assert squatter.kid == victims.kid
    v_cipher, m_cipher = FrameCipher(), FrameCipher()
    v_cipher.use_key(victims.kid, victims.base_key)  # type: ignore[arg-type]
    m_cipher.use_key(squatter.kid, squatter.base_key)  # type: ignore[arg-type]
    assert readable_by(cipher, v_cipher, v) and readable_by(cipher, m_cipher, m)
    keys.close()


async def test_a_members_frames_shown_as_another_senders_do_not_decrypt() -> None:
    """A server routes M's genuine frames into the slot it labels V (session 18's audit: they
    decrypted, and R's application showed them as V's). R holds both keys; M's frames decrypt
    only as M's."""
    r, m, v = Party("rita", "r1"), Party("mallory", "m1"), Party("victor", "v1")
    server = Server(r, m, v)
    keys, cipher = group_keys(r, server)
    keys.members_replied([m.member(), v.member(), r.member()])
    await settle()
    r_agreement = await Identity().agreement_key_of(server, "t", r.user, r.device)  # type: ignore[arg-type]
    m_keys = SenderKeys(m.identity._key, CALL, m.user, m.device)
    keys.deliver(call_key(m, m_keys.rotate([r_agreement])))
    keys.deliver(call_key(v, SenderKeys(v.identity._key, CALL, v.user, v.device).rotate([r_agreement])))
    await settle()
    assert keys.senders() == {"v1", "m1"}
    m_cipher = FrameCipher()
    m_cipher.use_key(m_keys.kid, m_keys.base_key)  # type: ignore[arg-type]
    assert not readable_by(cipher, m_cipher, v)
    assert readable_by(cipher, m_cipher, m)
    keys.close()


async def test_keys_of_other_calls_senders_and_garbage_change_nothing() -> None:
    """Malformed call.key events, keys for another call, keys relayed from another device than
    their sender, and keys not addressed to this device: each refused and counted, nothing
    escapes, the keys held do not change."""
    r, v, m = Party("rita", "r1"), Party("victor", "v1"), Party("mallory", "m1")
    server = Server(r, v, m)
    keys, _ = group_keys(r, server)
    keys.members_replied([r.member(), v.member(), m.member()])
    await settle()
    r_agreement = await Identity().agreement_key_of(server, "t", r.user, r.device)  # type: ignore[arg-type]
    m_agreement = await Identity().agreement_key_of(server, "t", m.user, m.device)  # type: ignore[arg-type]
    good = SenderKeys(v.identity._key, CALL, v.user, v.device).rotate([r_agreement])
    other_call = SenderKeys(v.identity._key, "another", v.user, v.device).rotate([r_agreement])
    not_mine = SenderKeys(v.identity._key, CALL, v.user, v.device).rotate([m_agreement])
    events: list[dict[str, Any]] = [
        {"type": "call.key"}, {"type": "call.key", "from_user": "victor", "from_device": "v1"},
        call_key(v, "garbage"), call_key(v, {**good, "kid": "1" * 40}), call_key(v, other_call),
        call_key(m, good),  # V's key relayed as M's
        {**call_key(v, good), "from_user": "mallory"},  # V named as a device of another user
        call_key(v, not_mine), call_key(v, {**good, "recipients": good["recipients"] * 65}),
    ]
    for event in events:
        keys.deliver(event)
    await settle()
    assert sum(keys.refused.values()) == len(events)
    assert keys.senders() == set()
    keys.deliver(call_key(v, good))
    await settle()
    assert keys.senders() == {"v1"}
    keys.close()


def test_frames_of_every_shape_are_dropped_never_raised() -> None:
    """What a hostile member (or the SFU) can put in a frame: empty, one byte, a flipped
    key-frame bit, garbage headers, another KID, huge frames — decrypt returns None."""
    sender, receiver = FrameCipher(), FrameCipher()
    kid = make_kid(7, 0)
    sender.use_key(kid, bytes(range(32)))
    receiver.apply(KeyChanges([], [("v1", kid, bytes(range(32)))]))
    frame = sender.encrypt("video", bytes([0x10, 0x02, 0x00, 0x9D, 0x01, 0x2A]) + bytes(200))
    assert frame is not None and receiver.decrypt("video", frame, "v1") is not None
    flipped = bytes([frame[0] ^ 1]) + frame[1:]
    shapes = [b"", b"\x00", b"\x01", b"\xff" * 3, b"\x00" * 10, flipped, frame[:-1],
              frame[:12], bytes([0x00]) * 10 + b"\x7f" + bytes(40), b"\x8f" + bytes(40),
              bytes(2 * 1024 * 1024), b"\x01\x02\x03\x0f" + bytes(100)]
    for kind in ("video", "audio"):
        for data in shapes:
            assert receiver.decrypt(kind, data, "v1") is None, (kind, data[:16])
    assert receiver.decrypt("video", frame, "v1") is None  # replay


# ---------------------------------------------------------------- a removed member's keys


def test_a_departed_senders_key_replayed_does_not_come_back() -> None:
    """remove_sender promises that a replay of a departed device's keys stays refused; its
    *current* key, replayed (or still in flight when the member list said it left), came back."""
    keys = ReceivedKeys(CALL)
    key = OpenedKey(CALL, "dave", "d1", make_kid(5, 3), bytes(32))
    keys.add(key, 0.0)
    assert keys.remove_sender("d1").removed == [("d1", key.kid)]
    with pytest.raises(StaleKey):
        keys.add(key, 1.0)
    assert keys.held() == set() and keys.senders() == set()
    # a new key of that device (it came back: a new tag) is taken
    assert keys.add(OpenedKey(CALL, "dave", "d1", make_kid(6, 0), bytes(32)), 2.0).added


async def test_a_key_in_flight_when_its_sender_left_is_not_taken() -> None:
    """V sent R a key, then left; R applies the member list first (V's keys dropped), then
    opens the key that was in flight: it must not bring V's key back."""
    r, v, b = Party("rita", "r1"), Party("victor", "v1"), Party("bob", "b1")
    server = Server(r, v, b)
    keys, _ = group_keys(r, server)
    keys.members_replied([r.member(), v.member(), b.member()])
    await settle()
    r_agreement = await Identity().agreement_key_of(server, "t", r.user, r.device)  # type: ignore[arg-type]
    message = SenderKeys(v.identity._key, CALL, v.user, v.device).rotate([r_agreement])
    keys.deliver(call_key(v, message))
    await settle()
    assert keys.senders() == {"v1"}
    keys.deliver(members_event(r, b))  # V left
    await settle()
    keys.deliver(call_key(v, message))  # the same key again (in flight, or replayed)
    await settle()
    assert keys.senders() == set()
    assert keys.refused["StaleKey"] == 1
    keys.close()


async def test_a_member_whose_key_could_not_be_had_gets_one_when_it_can(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The server withheld V's agreement key (or did not answer): V is unsealed. Looked up again
    later (the wait doubling), it is had: a new key goes to every member, V can read."""
    monkeypatch.setattr(group_keys_module, "RETRY_FIRST", 0.05)
    r, v, w = Party("rita", "r1"), Party("victor", "v1"), Party("wendy", "w1")
    server = Server(r, v, w)
    server.withheld.add("v1")
    keys, cipher = group_keys(r, server)
    keys.members_replied([r.member(), v.member(), w.member()])
    await settle()
    assert keys.unsealed == {"v1"} and keys.rotations == 1 and server.keys_to("v1") == []
    await asyncio.sleep(0.2)  # two lookups more (0.05, 0.1 s): still withheld, no new key
    assert keys.rotations == 1 and keys.unsealed == {"v1"}
    server.withheld.clear()
    for _ in range(200):  # the next lookup (at most 0.8 s after the last, on a slow machine)
        if not keys.unsealed:
            break
        await asyncio.sleep(0.05)
    await settle()
    assert keys.unsealed == frozenset() and keys.rotations == 2
    assert len(server.keys_to("v1")) == 1 and len(server.keys_to("w1")) == 2
    assert readable_by(reader_of(r, v, server), cipher, r)
    keys.close()
