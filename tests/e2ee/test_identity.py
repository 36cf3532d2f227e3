"""Device identity keys (facecall.e2ee.identity): the known answer both clients check, and
that any change to what was signed, or another key, or a malformed key or signature, fails."""

from __future__ import annotations

import base64

import pytest

from facecall.e2ee.identity import (
    SMALL_ORDER_KEYS,
    IdentityError,
    new_private_key,
    private_key_from_text,
    private_key_text,
    public_key_from_text,
    public_key_text,
    sign_description,
    statement,
    verify_description,
)

#: RFC 8032 §7.1, TEST 1: its secret key (seed) and public key
SEED_HEX = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
PUBLIC = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
SDP = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=fingerprint:sha-256 AB:CD\r\n"
CALL = ("call-1", "user-a", "device-a", "device-b", "offer", SDP)
#: the signature of CALL with TEST 1's key (Ed25519 is deterministic): web/js/identity.js's
#: test checks the same
KNOWN_SIGNATURE = ("LkQfzYgPEajuTffMoright_KVtXSggOo77PXVCd2fSsBMqZdK3Wvah_ob6UuEDiQm8vYF8mzTCp1fr4"
                   "YZ0hPCw")


def rfc8032_key() -> str:
    return base64.urlsafe_b64encode(bytes.fromhex(SEED_HEX)).rstrip(b"=").decode()


def test_the_published_known_answer() -> None:
    key = private_key_from_text(rfc8032_key())
    assert public_key_text(key) == PUBLIC
    assert statement(*CALL) == (
        b"facecall sdp v1\ncall-1\nuser-a\ndevice-a\ndevice-b\noffer\n" + SDP.encode())
    assert sign_description(key, *CALL) == KNOWN_SIGNATURE
    verify_description(PUBLIC, KNOWN_SIGNATURE, *CALL)


@pytest.mark.parametrize("index, value", [
    (0, "call-2"),  # replayed into another call
    (1, "user-x"),  # claimed for another user
    (2, "device-x"),  # or another of the sender's devices
    (3, "device-c"),  # sent on to a third device
    (4, "answer"),
    (5, SDP.replace("AB:CD", "AB:CE")),  # the server's own fingerprint
    (5, SDP + "a=fingerprint:sha-512 00:11\r\n"),  # one more line (the BUNDLE trick)
    (5, SDP.replace("\r\n", "\n")),  # even line endings
])
def test_any_change_to_what_was_signed_fails(index: int, value: str) -> None:
    changed = list(CALL)
    changed[index] = value
    with pytest.raises(IdentityError, match="not signed by its identity key"):
        verify_description(PUBLIC, KNOWN_SIGNATURE, *changed)


def test_another_key_fails_and_a_new_key_round_trips() -> None:
    mine = new_private_key()
    signature = sign_description(mine, *CALL)
    with pytest.raises(IdentityError, match="not signed"):
        verify_description(PUBLIC, signature, *CALL)
    verify_description(public_key_text(mine), signature, *CALL)
    again = private_key_from_text(private_key_text(mine))
    assert sign_description(again, *CALL) == signature


@pytest.mark.parametrize("signature, match", [
    (None, "without a signature"),
    (42, "base64url string"),
    ("", "86 base64url"),
    ("A" * 87, "86 base64url"),
    ("A" * 10_000, "86 base64url"),
    ("*" * 86, "not base64url|canonical"),
    (KNOWN_SIGNATURE[:-1] + "x", "canonical"),  # spare bits set: not the canonical text
    ("A" * 86, "not signed"),
])
def test_malformed_signatures_are_refused(signature: object, match: str) -> None:
    with pytest.raises(IdentityError, match=match):
        verify_description(PUBLIC, signature, *CALL)


@pytest.mark.parametrize("key", ["", "A" * 42, "A" * 44, "~" * 43, PUBLIC[:-1] + "p", "x" * 5000])
def test_malformed_keys_are_refused(key: str) -> None:
    with pytest.raises(IdentityError):
        public_key_from_text(key)
    with pytest.raises(IdentityError):
        verify_description(key, KNOWN_SIGNATURE, *CALL)


@pytest.mark.parametrize("index, value", [(0, ""), (1, "a\nb"), (3, "d\r"), (4, "pranswer")])
def test_a_statement_needs_plain_ids_and_a_known_type(index: int, value: str) -> None:
    changed = list(CALL)
    changed[index] = value
    with pytest.raises(IdentityError):
        statement(*changed)


@pytest.mark.parametrize("point", sorted(SMALL_ORDER_KEYS))
def test_keys_of_small_order_are_refused(point: bytes) -> None:
    """A small-order point verifies forged signatures; no device has one (audit, session 16)."""
    text = base64.urlsafe_b64encode(point).rstrip(b"=").decode()
    with pytest.raises(IdentityError, match="small order"):
        public_key_from_text(text)


def test_a_description_that_is_not_unicode_is_refused_not_crashed_on() -> None:
    """A lone surrogate (which a server could relay) has no UTF-8: an IdentityError, which
    ends the call as refused, not another exception that drops the event (audit, session 16)."""
    with pytest.raises(IdentityError, match="not valid Unicode"):
        statement("call-1", "user-a", "device-a", "device-b", "offer", "v=0\ud800")
