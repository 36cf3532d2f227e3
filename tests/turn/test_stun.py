"""The STUN codec against RFC 5769's test vectors and malformed input (RFC 8489)."""

from __future__ import annotations

import pytest

from facecall.turn import stun
from facecall.turn.auth import long_term_key
from facecall.turn.stun import StunError


def hexbytes(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


# RFC 5769 §2.1-§2.4, as printed in the RFC.
SAMPLE_REQUEST = hexbytes("""
    00 01 00 58 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 10 53 54 55 4e 20 74 65 73 74 20 63 6c 69 65 6e 74
    00 24 00 04 6e 00 01 ff
    80 29 00 08 93 2f f9 b1 51 26 3b 36
    00 06 00 09 65 76 74 6a 3a 68 36 76 59 20 20 20
    00 08 00 14 9a ea a7 0c bf d8 cb 56 78 1e f2 b5 b2 d3 f2 49 c1 b5 71 a2
    80 28 00 04 e5 7a 3b cf""")
SAMPLE_IPV4_RESPONSE = hexbytes("""
    01 01 00 3c 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
    00 20 00 08 00 01 a1 47 e1 12 a6 43
    00 08 00 14 2b 91 f5 99 fd 9e 90 c3 8c 74 89 f9 2a f9 ba 53 f0 6b e7 d7
    80 28 00 04 c0 7d 4c 96""")
SAMPLE_IPV6_RESPONSE = hexbytes("""
    01 01 00 48 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
    00 20 00 14 00 02 a1 47 01 13 a9 fa a5 d3 f1 79 bc 25 f4 b5 be d2 b9 d9
    00 08 00 14 a3 82 95 4e 4b e6 7b f1 17 84 c9 7c 82 92 c2 75 bf e3 ed 41
    80 28 00 04 c8 fb 0b 4c""")
SAMPLE_LONG_TERM_REQUEST = hexbytes("""
    00 01 00 60 21 12 a4 42 78 ad 34 33 c6 ad 72 c0 29 da 41 2e
    00 06 00 12 e3 83 9e e3 83 88 e3 83 aa e3 83 83 e3 82 af e3 82 b9 00 00
    00 15 00 1c 66 2f 2f 34 39 39 6b 39 35 34 64 36 4f 4c 33 34 6f 4c 39 46 53 54 76 79 36 34 73 41
    00 14 00 0b 65 78 61 6d 70 6c 65 2e 6f 72 67 00
    00 08 00 14 f6 70 24 65 6d d6 4a 3e 02 b8 e0 71 2e 85 c9 a2 8c a8 96 66""")
PASSWORD = b"VOkJxbRl1RmTxUk/WvJxBt"
TID = bytes.fromhex("b7e7a701bc34d686fa87dfae")


def test_rfc5769_sample_request() -> None:
    message = stun.parse_message(SAMPLE_REQUEST)
    assert (message.method, message.message_class) == (stun.Method.BINDING, stun.Class.REQUEST)
    assert message.transaction_id == TID
    assert message.get(stun.SOFTWARE) == b"STUN test client"
    assert message.get(stun.USERNAME) == b"evtj:h6vY"
    assert message.get(stun.PRIORITY) == bytes.fromhex("6e0001ff")
    assert message.get(stun.ICE_CONTROLLED) == bytes.fromhex("932ff9b151263b36")
    assert stun.check_fingerprint(message) is True
    assert stun.check_message_integrity(message, PASSWORD)
    assert not stun.check_message_integrity(message, b"wrong")


@pytest.mark.parametrize(
    ("vector", "mapped"),
    [
        (SAMPLE_IPV4_RESPONSE, ("192.0.2.1", 32853)),
        (SAMPLE_IPV6_RESPONSE, ("2001:db8:1234:5678:11:2233:4455:6677", 32853)),
    ],
)
def test_rfc5769_sample_responses(vector: bytes, mapped: tuple[str, int]) -> None:
    message = stun.parse_message(vector)
    assert message.message_class == stun.Class.SUCCESS
    assert stun.check_fingerprint(message) is True
    assert stun.check_message_integrity(message, PASSWORD)
    value = message.get(stun.XOR_MAPPED_ADDRESS)
    assert value is not None
    assert stun.decode_xor_address(value, message.transaction_id) == mapped


@pytest.mark.parametrize(
    ("vector", "mapped"),
    [
        (SAMPLE_IPV4_RESPONSE, ("192.0.2.1", 32853)),
        (SAMPLE_IPV6_RESPONSE, ("2001:db8:1234:5678:11:2233:4455:6677", 32853)),
    ],
)
def test_encoder_writes_the_rfc5769_responses_byte_for_byte(
    vector: bytes, mapped: tuple[str, int]
) -> None:
    """Our builder, MESSAGE-INTEGRITY and FINGERPRINT reproduce the vectors exactly. The RFC
    pads SOFTWARE with a space where we write zero (padding may be anything on the wire,
    RFC 8489 §14), so the test puts the RFC's padding byte in before the integrity."""
    buf = stun.encode_header_and_attributes(
        stun.Method.BINDING,
        stun.Class.SUCCESS,
        TID,
        [
            (stun.SOFTWARE, b"test vector"),
            (stun.XOR_MAPPED_ADDRESS, stun.encode_xor_address(mapped, TID)),
        ],
    )
    assert buf[20 + 4 + 11] == 0  # our padding is zero
    buf[20 + 4 + 11] = 0x20
    stun.append_message_integrity(buf, PASSWORD)
    stun.append_fingerprint(buf)
    assert bytes(buf) == vector


def test_rfc5769_long_term_request_byte_for_byte() -> None:
    message = stun.parse_message(SAMPLE_LONG_TERM_REQUEST)
    username = (message.get(stun.USERNAME) or b"").decode()
    assert username == "\u30de\u30c8\u30ea\u30c3\u30af\u30b9"
    assert message.get(stun.NONCE) == b"f//499k954d6OL34oL9FSTvy64sA"
    assert message.get(stun.REALM) == b"example.org"
    assert stun.check_fingerprint(message) is None
    key = long_term_key(username, "example.org", "TheMatrIX")
    assert stun.check_message_integrity(message, key)
    # Its padding is zero, so the encoder rebuilds it exactly.
    rebuilt = stun.Message(
        message.method,
        message.message_class,
        message.transaction_id,
        [a for a in message.attributes if a[0] != stun.MESSAGE_INTEGRITY],
    ).encode(integrity_key=key)
    assert rebuilt == SAMPLE_LONG_TERM_REQUEST


def test_message_types_interleave() -> None:
    for method, cls, value in [
        (stun.Method.BINDING, stun.Class.REQUEST, 0x0001),
        (stun.Method.BINDING, stun.Class.SUCCESS, 0x0101),
        (stun.Method.BINDING, stun.Class.ERROR, 0x0111),
        (stun.Method.ALLOCATE, stun.Class.ERROR, 0x0113),
        (stun.Method.SEND, stun.Class.INDICATION, 0x0016),
        (stun.Method.DATA, stun.Class.INDICATION, 0x0017),
        (stun.Method.CHANNEL_BIND, stun.Class.SUCCESS, 0x0109),
    ]:
        assert stun.message_type(method, cls) == value
        assert stun.split_message_type(value) == (method, cls)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b[:19],  # shorter than a header
        lambda b: b[:4] + b"\x00\x00\x00\x00" + b[8:],  # wrong cookie
        lambda b: b[:3] + bytes([b[3] + 4]) + b[4:],  # length past the datagram
        lambda b: b[:3] + bytes([b[3] - 2]) + b[4:],  # length not a multiple of 4
        lambda b: b"\xc0" + b[1:],  # first two bits set
        lambda b: b[:22] + b"\xff\xff" + b[24:],  # attribute runs past the message
        lambda b: b + b"\x00",  # trailing byte
    ],
)
def test_malformed_messages_raise_stun_error(mutate) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(StunError):
        stun.parse_message(mutate(SAMPLE_REQUEST))


def test_changed_byte_breaks_fingerprint_and_integrity() -> None:
    data = bytearray(SAMPLE_REQUEST)
    data[30] ^= 1
    message = stun.parse_message(bytes(data))
    assert stun.check_fingerprint(message) is False
    assert not stun.check_message_integrity(message, PASSWORD)


def test_attributes_after_fingerprint_are_ignored() -> None:
    data = bytearray(SAMPLE_IPV4_RESPONSE + b"\x00\x06\x00\x04abcd")
    data[3] += 8
    message = stun.parse_message(bytes(data))
    assert message.get(stun.USERNAME) is None
    assert stun.check_fingerprint(message) is True


def test_xor_address_round_trips_and_maps_ipv4_in_ipv6() -> None:
    for address in [("203.0.113.5", 1), ("2001:db8::1", 65535)]:
        assert stun.decode_xor_address(stun.encode_xor_address(address, TID), TID) == address
    mapped = stun.encode_xor_address(("::ffff:192.0.2.7", 3478), TID)
    assert stun.decode_xor_address(mapped, TID) == ("192.0.2.7", 3478)
    for bad in [b"", b"\x00\x01\x00", b"\x00\x03\x00\x01abcd", b"\x00\x01\x00\x01abc"]:
        with pytest.raises(StunError):
            stun.decode_xor_address(bad, TID)
    assert stun.decode_address(stun.encode_address(("10.1.2.3", 7))) == ("10.1.2.3", 7)


def test_error_code_round_trip_and_bounds() -> None:
    assert stun.decode_error_code(stun.encode_error_code(438)) == (438, "Stale Nonce")
    for bad in [b"\x00\x00\x02\x00", b"\x00\x00\x04\x64", b"\x00\x00\x04", b"\x00\x00\x04\x00\xff"]:
        with pytest.raises(StunError):
            stun.decode_error_code(bad)


def test_channel_data() -> None:
    frame = stun.encode_channel_data(0x4ABC, b"voice")
    assert stun.parse_channel_data(frame) == (0x4ABC, b"voice")
    assert stun.parse_channel_data(frame + b"\x00\x00\x00") == (0x4ABC, b"voice")
    assert len(stun.encode_channel_data(0x4000, b"voice", pad=True)) == 12
    for bad in [frame[:3], frame[:6], stun.encode_channel_data(0x3FFF, b"x")]:
        with pytest.raises(StunError):
            stun.parse_channel_data(bad)
    assert stun.frame_length(frame[:4]) == 12
    assert stun.frame_length(SAMPLE_REQUEST[:4]) == len(SAMPLE_REQUEST)
    assert stun.frame_length(b"\x80\x00\x00\x00") is None


def test_oversized_values_are_refused_by_the_encoder() -> None:
    with pytest.raises(StunError):
        stun.Message(1, 0, TID, [(stun.DATA, bytes(0x10000))]).encode()
    with pytest.raises(StunError):
        stun.Message(1, 0, TID, [(stun.DATA, bytes(40000)), (stun.DATA, bytes(40000))]).encode()
    with pytest.raises(StunError):
        stun.decode_text(b"x" * 600, 512)
    with pytest.raises(StunError):
        stun.decode_text(b"\xff", 512)
