"""SFrame (facecall.e2ee.sframe, RFC 9605): every published test vector (RFC 9605 Appendix C,
kept in tests/e2ee/vectors/sframe-rfc9605.json), then bad input — each refused with its own
error — and round trips over random KIDs, CTRs, metadata and plaintexts for every suite."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from facecall.e2ee.sframe import (
    MAX_FRAME,
    AesCtrHmac,  # the §4.5.1 AEAD, checked on its own vectors
    AuthenticationFailed,
    CipherSuite,
    CounterExhausted,
    CounterReused,
    FrameTooLarge,
    InvalidInput,
    KeyIdInUse,
    MalformedFrame,
    MalformedHeader,
    Receiver,
    ReplayedFrame,
    Sender,
    SFrameError,
    SFrameKey,
    UnknownKeyId,
    ValueOutOfRange,
    decode_header,
    derive_key_salt,
    derive_secret,
    encode_header,
    sframe_key_label,
    sframe_salt_label,
)

VECTORS_PATH = Path(__file__).parent / "vectors" / "sframe-rfc9605.json"
VECTORS: dict[str, list[dict[str, Any]]] = json.loads(VECTORS_PATH.read_text())
MAX64 = (1 << 64) - 1
KEY = bytes(range(16))
SUITES = list(CipherSuite)


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def vector_id(v: dict[str, Any]) -> str:
    return CipherSuite(v["cipher_suite"]).name


# -- the published vectors ----------------------------------------------------------------------

def test_the_vectors_file_has_every_kind() -> None:
    """289 header encodings, the three AES-CTR-HMAC suites, and all five suites end to end."""
    assert len(VECTORS["header"]) == 289
    assert sorted(v["cipher_suite"] for v in VECTORS["aes_ctr_hmac"]) == [1, 2, 3]
    assert sorted(v["cipher_suite"] for v in VECTORS["sframe"]) == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("v", VECTORS["header"], ids=lambda v: f"kid{v['kid']}-ctr{v['ctr']}")
def test_header_vector(v: dict[str, Any]) -> None:
    encoded = h(v["encoded"])
    assert encode_header(v["kid"], v["ctr"]) == encoded
    header, length = decode_header(encoded + b"rest of the frame")
    assert (header.kid, header.ctr, length) == (v["kid"], v["ctr"], len(encoded))
    assert header.encode() == encoded


@pytest.mark.parametrize("v", VECTORS["aes_ctr_hmac"], ids=vector_id)
def test_aes_ctr_hmac_vector(v: dict[str, Any]) -> None:
    suite = CipherSuite(v["cipher_suite"])
    key = h(v["key"])
    assert key[:16] == h(v["enc_key"]) and key[16:] == h(v["auth_key"])  # derive_subkeys
    aead = AesCtrHmac(suite, key)
    ct = aead.encrypt(h(v["nonce"]), h(v["pt"]), h(v["aad"]))
    assert ct.hex() == v["ct"]
    assert len(ct) == len(h(v["pt"])) + suite.tag_length
    assert aead.decrypt(h(v["nonce"]), ct, h(v["aad"])).hex() == v["pt"]


@pytest.mark.parametrize("v", VECTORS["sframe"], ids=vector_id)
def test_sframe_vector(v: dict[str, Any]) -> None:
    suite, kid, ctr = CipherSuite(v["cipher_suite"]), v["kid"], v["ctr"]
    base_key, metadata = h(v["base_key"]), h(v["metadata"])
    assert sframe_key_label(suite, kid).hex() == v["sframe_key_label"]
    assert sframe_salt_label(suite, kid).hex() == v["sframe_salt_label"]
    assert derive_secret(suite, base_key).hex() == v["sframe_secret"]
    assert derive_key_salt(suite, kid, base_key) == (h(v["sframe_key"]), h(v["sframe_salt"]))
    assert SFrameKey(suite, kid, base_key).nonce(ctr).hex() == v["nonce"]
    assert (encode_header(kid, ctr) + metadata).hex() == v["aad"]

    sender = Sender(suite)
    sender.add_key(kid, base_key)
    frame = sender.encrypt(kid, metadata, h(v["pt"]), ctr=ctr)
    assert frame.hex() == v["ct"]
    assert sender.next_ctr(kid) == ctr + 1

    receiver = Receiver(suite)
    receiver.add_key(kid, base_key)
    assert receiver.decrypt_frame(metadata, h(v["ct"])) == (kid, ctr, h(v["pt"]))


# -- headers that are not --------------------------------------------------------------------------

@pytest.mark.parametrize("data", [
    b"",
    h("80"), h("08"), h("88ff"),  # a KID or CTR byte missing
    h("f0ffffffffffffff"), h("ffffffffffffffffffffffffffffffff"),  # 7 of 8, 15 of 16
    h("99012345"),  # KID 0x0123, CTR needs 2 bytes, has 1
], ids=lambda d: d.hex() or "empty")
def test_truncated_headers(data: bytes) -> None:
    with pytest.raises(MalformedHeader, match=r"empty|truncated"):
        decode_header(data)


@pytest.mark.parametrize("data", [
    h("8005"),  # KID 5 in the long form
    h("0807"),  # CTR 7 in the long form
    h("900010"),  # KID 16 in two bytes
    h("0f00000000000000ff"),  # CTR 255 in eight bytes
    h("f000ffffffffffffff"),  # a leading zero byte
], ids=lambda d: d.hex())
def test_non_minimal_headers_are_refused(data: bytes) -> None:
    """RFC 9605 §4.3: the value MUST be encoded in the minimum number of bytes."""
    with pytest.raises(MalformedHeader, match="minimal"):
        decode_header(data)


@pytest.mark.parametrize("kid, ctr, error", [
    (-1, 0, ValueOutOfRange), (0, -1, ValueOutOfRange), (1 << 64, 0, ValueOutOfRange),
    (0, 1 << 64, ValueOutOfRange), (True, 0, InvalidInput), (0, 1.0, InvalidInput),
    ("1", 0, InvalidInput),
])
def test_values_that_are_not_64_bit_integers(kid: Any, ctr: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        encode_header(kid, ctr)


@pytest.mark.parametrize("data", ["00", None, 0, [0]])
def test_decode_header_takes_only_bytes(data: Any) -> None:
    with pytest.raises(InvalidInput, match="must be bytes"):
        decode_header(data)
    assert issubclass(InvalidInput, TypeError)


@given(st.binary(max_size=20))
def test_any_bytes_decode_or_give_malformed_header(data: bytes) -> None:
    try:
        header, length = decode_header(data)
    except MalformedHeader:
        return
    assert data[:length] == encode_header(header.kid, header.ctr)  # the only encoding


# -- frames that are not ---------------------------------------------------------------------------

def pair(suite: CipherSuite, *kids: int, **receiver: Any) -> tuple[Sender, Receiver]:
    sender, rx = Sender(suite), Receiver(suite, **receiver)
    for kid in kids:
        sender.add_key(kid, KEY)
        rx.add_key(kid, KEY)
    return sender, rx


@pytest.mark.parametrize("suite", SUITES, ids=lambda s: s.name)
def test_every_truncation_is_refused(suite: CipherSuite) -> None:
    """Shorter than its header: MalformedHeader; than header and tag: MalformedFrame; else the tag
    fails. The full frame still decrypts afterwards (nothing moved the replay window)."""
    sender, rx = pair(suite, 291)
    frame = sender.encrypt(291, b"meta", b"a frame of media", ctr=17767)
    header_length = decode_header(frame)[1]
    for n in range(len(frame)):
        expected: type[SFrameError]
        if n < header_length:
            expected = MalformedHeader
        elif n < header_length + suite.tag_length:
            expected = MalformedFrame
        else:
            expected = AuthenticationFailed
        with pytest.raises(SFrameError) as caught:
            rx.decrypt(b"meta", frame[:n])
        assert type(caught.value) is expected, (n, caught.value)
    assert rx.decrypt(b"meta", frame) == b"a frame of media"


@pytest.mark.parametrize("suite", SUITES, ids=lambda s: s.name)
def test_every_flipped_bit_is_refused(suite: CipherSuite) -> None:
    """A bit flipped anywhere in the frame (header, ciphertext, tag) or in the metadata."""
    sender, rx = pair(suite, 291)
    frame = sender.encrypt(291, b"meta", b"a frame of media", ctr=17767)
    header_length = decode_header(frame)[1]
    for bit in range(len(frame) * 8):
        bad = bytearray(frame)
        bad[bit // 8] ^= 1 << (bit % 8)
        expected: type[SFrameError] = AuthenticationFailed
        if bit // 8 < header_length:  # the header now says something else
            try:
                header, length = decode_header(bytes(bad))
            except MalformedHeader:
                expected = MalformedHeader
            else:
                if len(bad) - length < suite.tag_length:
                    expected = MalformedFrame
                elif header.kid != 291:
                    expected = UnknownKeyId
        with pytest.raises(SFrameError) as caught:
            rx.decrypt(b"meta", bytes(bad))
        assert type(caught.value) is expected, (bit, caught.value)
    for bit in range(len(b"meta") * 8):
        bad_metadata = bytearray(b"meta")
        bad_metadata[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(AuthenticationFailed):
            rx.decrypt(bytes(bad_metadata), frame)
    with pytest.raises(AuthenticationFailed):
        rx.decrypt(b"", frame)
    assert rx.decrypt(b"meta", frame) == b"a frame of media"


def test_specific_flips_give_authentication_failed() -> None:
    """A header naming another known KID or another CTR, a ciphertext byte and a tag byte."""
    suite = CipherSuite.AES_128_CTR_HMAC_SHA256_32
    sender, rx = pair(suite, 9, 10)
    frame = sender.encrypt(9, b"", b"x" * 40)
    assert frame[:2] == h("8009")  # KID 9, CTR 0
    for bad in (h("800a") + frame[2:], h("8109") + frame[2:], frame[:5] + b"y" + frame[6:],
                frame[:-1] + bytes((frame[-1] ^ 0x80,))):
        with pytest.raises(AuthenticationFailed, match="authentication failed"):
            rx.decrypt(b"", bad)


def test_wrong_kid() -> None:
    """No key for the KID: UnknownKeyId; the same base_key under another KID: another key."""
    suite = CipherSuite.AES_128_GCM_SHA256_128
    sender, _ = pair(suite, 1)
    rx = Receiver(suite)
    rx.add_key(2, KEY)
    with pytest.raises(UnknownKeyId, match="KID 1"):
        rx.decrypt(b"", sender.encrypt(1, b"", b"hello"))
    assert derive_key_salt(suite, 1, KEY) != derive_key_salt(suite, 2, KEY)
    with pytest.raises(UnknownKeyId):
        sender.encrypt(2, b"", b"hello")
    rx.remove_key(2)
    with pytest.raises(UnknownKeyId):
        rx.remove_key(2)


def test_replay_window() -> None:
    """RFC 9605 §7.4 leaves replay to the application: a window of 4 CTRs per KID here."""
    suite = CipherSuite.AES_128_GCM_SHA256_128
    sender, rx = pair(suite, 1, 2, replay_window=4)
    frames = [sender.encrypt(1, b"", bytes([i])) for i in range(10)]
    assert rx.decrypt(b"", frames[5]) == b"\x05"
    with pytest.raises(ReplayedFrame, match="already received"):
        rx.decrypt(b"", frames[5])
    assert rx.decrypt(b"", frames[3]) == b"\x03"  # late, within the window
    with pytest.raises(ReplayedFrame, match="already received"):
        rx.decrypt(b"", frames[3])
    assert rx.decrypt(b"", frames[2]) == b"\x02"  # the oldest the window holds (5 - 3)
    with pytest.raises(ReplayedFrame, match="older than the replay window"):
        rx.decrypt(b"", frames[1])
    assert rx.decrypt(b"", frames[9]) == b"\x09"  # a jump: 5 leaves the window
    with pytest.raises(ReplayedFrame, match="older than the replay window"):
        rx.decrypt(b"", frames[5])
    assert rx.decrypt(b"", frames[6]) == b"\x06"
    # another KID has its own window
    assert rx.decrypt(b"", sender.encrypt(2, b"", b"other")) == b"other"
    # a forged frame with a high CTR does not move the window
    forged = encode_header(1, 1000) + bytes(16)
    with pytest.raises(AuthenticationFailed):
        rx.decrypt(b"", forged)
    assert rx.decrypt(b"", frames[7]) == b"\x07"
    # removing and adding the KID again starts a new window
    rx.remove_key(1)
    rx.add_key(1, KEY)
    assert rx.decrypt(b"", frames[5]) == b"\x05"


def test_the_size_limits() -> None:
    suite = CipherSuite.AES_128_CTR_HMAC_SHA256_80
    sender, rx = pair(suite, 1)
    frame = sender.encrypt(1, b"", bytes(MAX_FRAME))  # exactly the limit
    assert rx.decrypt(b"", frame) == bytes(MAX_FRAME)
    with pytest.raises(FrameTooLarge, match="plaintext"):
        sender.encrypt(1, b"", bytes(MAX_FRAME + 1))
    with pytest.raises(FrameTooLarge, match="metadata"):
        sender.encrypt(1, bytes(MAX_FRAME + 1), b"")
    with pytest.raises(FrameTooLarge, match="ciphertext"):
        rx.decrypt(b"", frame + bytes(1 + 17))
    small_sender, small_rx = Sender(suite, max_frame=100), Receiver(suite, max_frame=100)
    small_sender.add_key(1, KEY)
    small_rx.add_key(1, KEY)
    assert small_rx.max_ciphertext == 100 + 17 + 10  # the longest header, the 80-bit tag
    with pytest.raises(FrameTooLarge):
        small_rx.decrypt(b"", h("11") + bytes(127))
    with pytest.raises(AuthenticationFailed):  # one byte less: not too large
        small_rx.decrypt(b"", h("11") + bytes(126))
    with pytest.raises(FrameTooLarge):
        small_sender.encrypt(1, b"", bytes(101))
    assert small_rx.decrypt(b"", small_sender.encrypt(1, b"", bytes(100))) == bytes(100)


@pytest.mark.parametrize("bad", ["text", None, 5, [1, 2]], ids=repr)
def test_non_bytes_input(bad: Any) -> None:
    sender, rx = pair(CipherSuite.AES_128_GCM_SHA256_128, 1)
    frame = sender.encrypt(1, b"", b"ok")
    for work in (lambda: sender.encrypt(1, b"", bad), lambda: sender.encrypt(1, bad, b""),
                 lambda: rx.decrypt(b"", bad), lambda: rx.decrypt(bad, frame),
                 lambda: rx.add_key(2, bad)):
        with pytest.raises(InvalidInput, match="must be bytes"):
            work()
    # bytes-like input is taken as bytes
    assert rx.decrypt(memoryview(b""), bytearray(frame)) == b"ok"
    assert sender.encrypt(1, bytearray(b"m"), memoryview(b"p"))[:1] == h("11")


def test_counters_never_repeat() -> None:
    """RFC 9605 §7.4: a sender never encrypts twice with the same key and nonce."""
    suite = CipherSuite.AES_128_GCM_SHA256_128
    sender, rx = pair(suite, 3)
    assert [decode_header(sender.encrypt(3, b"", b""))[0].ctr for _ in range(3)] == [0, 1, 2]
    assert decode_header(sender.encrypt(3, b"", b"", ctr=10))[0].ctr == 10
    with pytest.raises(CounterReused, match="below"):
        sender.encrypt(3, b"", b"", ctr=10)
    with pytest.raises(CounterReused):
        sender.encrypt(3, b"", b"", ctr=0)
    last = sender.encrypt(3, b"", b"last", ctr=MAX64)
    assert rx.decrypt(b"", last) == b"last"
    with pytest.raises(CounterExhausted, match="2\\^64-1"):
        sender.encrypt(3, b"", b"")
    with pytest.raises(ValueOutOfRange):
        sender.encrypt(3, b"", b"", ctr=MAX64 + 1)
    assert sender.next_ctr(3) == MAX64 + 1
    # a KID cannot be taken again, even after removal: its counter would restart at 0
    sender.remove_key(3)
    with pytest.raises(KeyIdInUse):
        sender.add_key(3, KEY)
    with pytest.raises(KeyIdInUse):
        rx.add_key(3, KEY)


def test_bad_keys_and_settings() -> None:
    with pytest.raises(ValueOutOfRange, match="at least 16 bytes"):
        Sender(CipherSuite.AES_128_GCM_SHA256_128).add_key(1, bytes(15))
    with pytest.raises(ValueOutOfRange, match="cipher suite"):
        Sender(6)  # type: ignore[arg-type]
    with pytest.raises(ValueOutOfRange, match="replay window"):
        Receiver(CipherSuite.AES_128_GCM_SHA256_128, replay_window=0)
    with pytest.raises(ValueOutOfRange, match="max_frame"):
        Receiver(CipherSuite.AES_128_GCM_SHA256_128, max_frame=-1)
    with pytest.raises(ValueOutOfRange):
        AesCtrHmac(CipherSuite.AES_128_CTR_HMAC_SHA256_80, bytes(16))
    assert CipherSuite(4) is Sender(4).suite  # type: ignore[arg-type]  # the IANA id works


# -- round trips -----------------------------------------------------------------------------------

@pytest.mark.parametrize("suite", SUITES, ids=lambda s: s.name)
@settings(max_examples=60, deadline=None)
@given(kid=st.integers(0, MAX64), ctr=st.integers(0, MAX64), metadata=st.binary(max_size=64),
       plaintext=st.binary(max_size=2000), base_key=st.binary(min_size=16, max_size=64))
def test_round_trip(suite: CipherSuite, kid: int, ctr: int, metadata: bytes, plaintext: bytes,
                    base_key: bytes) -> None:
    sender, rx = Sender(suite), Receiver(suite)
    sender.add_key(kid, base_key)
    rx.add_key(kid, base_key)
    frame = sender.encrypt(kid, metadata, plaintext, ctr=ctr)
    header = encode_header(kid, ctr)
    assert frame.startswith(header)
    assert len(frame) == len(header) + len(plaintext) + suite.tag_length
    assert rx.decrypt_frame(metadata, frame) == (kid, ctr, plaintext)
    with pytest.raises(ReplayedFrame):
        rx.decrypt(metadata, frame)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=60), metadata=st.binary(max_size=8))
def test_arbitrary_frames_give_only_sframe_errors(data: bytes, metadata: bytes) -> None:
    rx = Receiver(CipherSuite.AES_128_CTR_HMAC_SHA256_32)
    for kid in range(8):
        rx.add_key(kid, KEY)
    with pytest.raises(SFrameError):
        rx.decrypt(metadata, data)
