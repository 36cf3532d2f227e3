"""Peer denylist (RFC 8656 §21.3; coturn CVE-2020-26262 / CVE-2026-27624) and REST credentials."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from facecall.turn.auth import Authenticator, Rejection, long_term_key
from facecall.turn.peers import PeerPolicy
from facecall.turn.rest import ephemeral_credentials, rest_expiry

REFUSED = [
    "127.0.0.1", "127.255.255.254", "0.0.0.0", "0.1.2.3", "10.0.0.1", "172.16.5.4",
    "172.31.255.255", "192.168.1.1", "100.64.0.1", "100.100.100.200", "169.254.169.254",
    "169.254.0.1", "224.0.0.1", "239.255.255.250", "255.255.255.255", "240.0.0.1",
    "192.0.0.170", "198.18.0.1", "192.0.2.1",
    "::1", "::", "fc00::1", "fd00:ec2::254", "fe80::1", "ff02::1", "fec0::1", "2001:db8::1",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "::127.0.0.1",
    "::ffff:0.0.0.0", "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "2002:7f00:1::1",
    "2002:c0a8:101::", "2001::1", "100::1", "fe80::1%lo", "not an address", "",
    "0000:0000:0000:0000:0000:ffff:7f00:0001",
]
ALLOWED = ["8.8.8.8", "1.1.1.1", "203.0.114.1", "2606:4700:4700::1111", "::ffff:8.8.8.8",
           "64:ff9b::808:808", "2002:808:808::1"]


@pytest.mark.parametrize("host", REFUSED)
def test_special_purpose_peers_are_refused_by_default(host: str) -> None:
    assert not PeerPolicy().is_allowed(host)


@pytest.mark.parametrize("host", ALLOWED)
def test_public_peers_are_allowed(host: str) -> None:
    # ::ffff:8.8.8.8 is refused: the mapped range stays denied in its IPv6 spelling.
    expected = host != "::ffff:8.8.8.8"
    assert PeerPolicy().is_allowed(host) is expected


def test_operator_allow_wins_and_covers_embedded_forms() -> None:
    policy = PeerPolicy(allowed=["127.0.0.0/8"])
    assert policy.is_allowed("127.0.0.1")
    assert policy.is_allowed("::ffff:127.0.0.1")
    assert not policy.is_allowed("::1")
    assert not policy.is_allowed("10.0.0.1")
    assert not PeerPolicy(denied=["8.8.8.0/24"]).is_allowed("8.8.8.8")
    # An allowed IPv6 range does not open the IPv4 space an address embeds.
    assert not PeerPolicy(allowed=["::/0"]).is_allowed("::ffff:10.0.0.1")


def test_ephemeral_credentials_are_coturn_rest() -> None:
    username, password = ephemeral_credentials("s3cret", "alice", 600, 1_700_000_000.9)
    assert username == "1700000600:alice"
    expected = base64.b64encode(hmac.new(b"s3cret", username.encode(), hashlib.sha1).digest())
    assert password == expected.decode()
    assert rest_expiry(username) == 1700000600
    assert rest_expiry("alice") is None
    assert rest_expiry("1" * 40 + ":x") is None


def test_authenticator_rotation_expiry_and_nonces() -> None:
    now = [1_700_000_000.0]
    auth = Authenticator("facecall", {"bob": "pw"}, ["new", "old"], 60, lambda: now[0])
    username, password = ephemeral_credentials("old", "alice", 600, now[0])
    keys = auth.candidate_keys(username)
    assert not isinstance(keys, Rejection)
    assert long_term_key(username, "facecall", password) in keys
    assert auth.candidate_keys("bob") == [long_term_key("bob", "facecall", "pw")]
    assert isinstance(auth.candidate_keys("mallory"), Rejection)
    nonce = auth.new_nonce()
    assert auth.nonce_is_valid(nonce)
    assert not auth.nonce_is_valid(nonce[:-1] + ("0" if nonce[-1] != "0" else "1"))
    assert not auth.nonce_is_valid("zz" + nonce[2:])
    assert not auth.nonce_is_valid("")
    now[0] += 601
    assert isinstance(auth.candidate_keys(username), Rejection)
    assert not auth.nonce_is_valid(nonce)
    other = Authenticator("facecall", {}, [], 60, lambda: now[0])
    assert not other.nonce_is_valid(auth.new_nonce())
