"""Property-based fuzzing of the codec and the request handler (short run; the long run is
``bench/turn_fuzz.py``)."""

from __future__ import annotations

import asyncio
import os

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from facecall.turn import batched, stun
from facecall.turn.allocation import FiveTuple
from facecall.turn.auth import long_term_key
from facecall.turn.core import ClientContext, RelayOpener, TurnCore, asyncio_relay

from .conftest import PASSWORD, USER, FakeClock, loopback_config

TID = bytes(range(12))

attribute_types = st.one_of(
    st.sampled_from(
        [stun.USERNAME, stun.MESSAGE_INTEGRITY, stun.MESSAGE_INTEGRITY_SHA256, stun.FINGERPRINT,
         stun.REALM, stun.NONCE, stun.XOR_PEER_ADDRESS, stun.CHANNEL_NUMBER, stun.LIFETIME,
         stun.DATA, stun.REQUESTED_TRANSPORT, stun.REQUESTED_ADDRESS_FAMILY, stun.EVEN_PORT,
         stun.ERROR_CODE, stun.XOR_MAPPED_ADDRESS, stun.SOFTWARE, stun.UNKNOWN_ATTRIBUTES]
    ),
    st.integers(0, 0xFFFF),
)
attributes = st.lists(st.tuples(attribute_types, st.binary(max_size=64)), max_size=8)
methods = st.sampled_from([1, 3, 4, 6, 7, 8, 9, 0xFFF])
classes = st.sampled_from(list(stun.Class))


@given(st.binary(max_size=256))
def test_parse_raises_only_stun_error(data: bytes) -> None:
    try:
        message = stun.parse_message(data)
    except stun.StunError:
        return
    stun.check_fingerprint(message)
    stun.check_message_integrity(message, b"key")


@given(methods, classes, attributes)
def test_encode_parse_round_trip(method: int, cls: int, attrs: list[tuple[int, bytes]]) -> None:
    data = stun.Message(method, cls, TID, attrs).encode(integrity_key=b"k", fingerprint=True)
    message = stun.parse_message(data)
    assert (message.method, message.message_class, message.transaction_id) == (method, cls, TID)
    special = {stun.MESSAGE_INTEGRITY, stun.MESSAGE_INTEGRITY_SHA256, stun.FINGERPRINT}
    if not special & {kind for kind, _ in attrs}:
        assert stun.check_fingerprint(message) is True
        assert stun.check_message_integrity(message, b"k")
    # Attributes up to the first MESSAGE-INTEGRITY(-SHA256) or FINGERPRINT come back as given.
    expected: list[tuple[int, bytes]] = []
    for kind, value in attrs:
        expected.append((kind, value))
        if kind in (stun.MESSAGE_INTEGRITY, stun.MESSAGE_INTEGRITY_SHA256, stun.FINGERPRINT):
            break
    assert message.attributes[: len(expected)] == expected


@given(st.binary(min_size=12, max_size=12), st.binary(max_size=24))
def test_typed_decoders_raise_only_stun_error(tid: bytes, value: bytes) -> None:
    for decode in (
        lambda v: stun.decode_xor_address(v, tid),
        stun.decode_address,
        stun.decode_error_code,
        stun.decode_uint32,
        stun.decode_channel_number,
        lambda v: stun.decode_text(v, 16),
        stun.parse_channel_data,
    ):
        try:
            decode(value)
        except stun.StunError:
            pass


def _signed_requests(core: TurnCore, nonce: str) -> list[bytes]:
    key = long_term_key(USER, "facecall", PASSWORD)
    auth = [(stun.USERNAME, USER.encode()), (stun.REALM, b"facecall"), (stun.NONCE, nonce.encode())]
    peer = stun.encode_xor_address(("127.0.0.1", 9), TID)
    return [
        stun.Message(m, stun.Class.REQUEST, TID, [*extra, *auth]).encode(key, fingerprint=True)
        for m, extra in [
            (stun.Method.ALLOCATE, [(stun.REQUESTED_TRANSPORT, bytes([17, 0, 0, 0]))]),
            (stun.Method.REFRESH, [(stun.LIFETIME, b"\x00\x00\x02\x58")]),
            (stun.Method.CREATE_PERMISSION, [(stun.XOR_PEER_ADDRESS, peer)]),
            (stun.Method.CHANNEL_BIND, [(stun.CHANNEL_NUMBER, b"\x40\x00\x00\x00"),
                                        (stun.XOR_PEER_ADDRESS, peer)]),
        ]
    ]


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.integers(0, 3),
    st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), min_size=1, max_size=4),
    st.integers(0, 220),
)
@example(which=0, flips=[(0, 1), (0, 0)], cut=120)  # flips that cancel out: a valid request
def test_mutated_signed_requests_never_escape_or_allocate(
    which: int, flips: list[tuple[int, int]], cut: int
) -> None:
    """A signed request with bytes changed or cut is answered or dropped, never raises, and
    never creates an allocation if a change falls under its MESSAGE-INTEGRITY. (Changes after
    it may leave a valid request: attributes after MESSAGE-INTEGRITY are ignored, §14.5.)"""

    async def scenario() -> None:
        core = TurnCore(loopback_config(), FakeClock())
        sent: list[bytes] = []
        ctx = ClientContext(FiveTuple("udp", ("127.0.0.1", 5), ("127.0.0.1", 3478)),
                            sent.append, stream=False, index={}, index_key=("127.0.0.1", 5))
        data = bytearray(_signed_requests(core, core.auth.new_nonce())[which])
        original = bytes(data)
        signed_end = (stun.parse_message(original).offset_of(stun.MESSAGE_INTEGRITY) or 0) + 24
        for position, value in flips:
            data[position % len(data)] = value
        # Judged on the final bytes: flips that undo each other leave the request valid.
        touched = cut < signed_end or bytes(data[:signed_end]) != original[:signed_end]
        mutated = bytes(data[: max(cut, 1)] if cut < len(data) else data)
        core.handle_stun(mutated, ctx)
        await asyncio.sleep(0)
        for response in sent:
            stun.parse_message(response)
        if touched:
            assert core.allocations == {} and not core._pending
        await core.close()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "open_relay", [asyncio_relay, batched.open_relay], ids=["asyncio", "batched"]
)
def test_random_datagrams_against_a_live_core(open_relay: RelayOpener) -> None:
    """Seeded random bytes and random well-formed messages at a core with a live allocation
    (its relay socket on either UDP data path)."""

    async def scenario() -> None:
        import random

        rng = random.Random(1)
        core = TurnCore(loopback_config(), FakeClock(), open_relay)
        sent: list[bytes] = []
        index: dict[object, object] = {}
        ctx = ClientContext(FiveTuple("udp", ("127.0.0.1", 5), ("127.0.0.1", 3478)),
                            sent.append, stream=False, index=index, index_key="k")  # type: ignore[arg-type]
        core.handle_stun(_signed_requests(core, core.auth.new_nonce())[0], ctx)
        await asyncio.sleep(0.05)
        assert len(core.allocations) == 1
        allocation = next(iter(core.allocations.values()))
        for _ in range(3000):
            kind = rng.random()
            if kind < 0.3:
                data = os.urandom(rng.randint(0, 100))
            elif kind < 0.6:
                attrs = [(rng.randint(0, 0xFFFF), os.urandom(rng.randint(0, 20)))
                         for _ in range(rng.randint(0, 5))]
                data = stun.Message(rng.choice([1, 3, 4, 6, 8, 9]), rng.choice(list(stun.Class)),
                                    os.urandom(12), attrs).encode()
            else:
                data = bytes([rng.randint(0x40, 0x7F)]) + os.urandom(rng.randint(0, 40))
            if data[:1] and 0x40 <= data[0] < 0x80:
                allocation.on_channel_data(data)
            else:
                core.handle_stun(data, ctx)
        assert len(core.allocations) == 1
        assert allocation.permissions == {} and allocation.channels == {}
        await core.close()
        assert core.allocations == {} and index == {}

    asyncio.run(scenario())
