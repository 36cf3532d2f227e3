"""The long-term credential mechanism (RFC 8489 §9.2) as the server runs it.

Keys are ``MD5(username ":" realm ":" password)`` (§9.2.2; SASLprep is not applied, so
passwords should be ASCII). Passwords come from static users or from TURN REST secrets
(:mod:`facecall.turn.rest`); with several secrets there are several candidate keys, and a
request is accepted if its MESSAGE-INTEGRITY checks under any of them.

Nonces are stateless: ``<expiry hex><HMAC(server key, expiry)>``, so a restarted server refuses
the old ones with 438 (Stale Nonce, §9.2.4) and clients simply retry.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from facecall.turn import stun
from facecall.turn.rest import rest_expiry, rest_password
from facecall.turn.stun import Message, StunError

NONCE_DIGEST_HEX = 24
MAX_USERNAME = 512  # RFC 8489 §14.3: < 513 bytes
MAX_REALM = 763  # RFC 8489 §14.9: < 128 characters, < 763 bytes
MAX_NONCE = 763
NONCE_EXPIRY_HEX_MAX = 16
_LOWER_HEX = frozenset("0123456789abcdef")


def is_lower_hex(text: str) -> bool:
    """Whether ``text`` is made of "0"-"9" and "a"-"f" only."""
    return _LOWER_HEX.issuperset(text)


def long_term_key(username: str, realm: str, password: str) -> bytes:
    """The long-term credential key (RFC 8489 §9.2.2, MD5 algorithm)."""
    return hashlib.md5(f"{username}:{realm}:{password}".encode()).digest()


class RequestError(Exception):
    """Ends processing of a request with an error response: ``code`` and its attributes."""

    def __init__(self, code: int, attributes: list[tuple[int, bytes]] | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.attributes = attributes or []


@dataclass(frozen=True)
class Authenticated:
    """Who signed a request, and the key it was signed with (responses are signed with it)."""

    username: str
    key: bytes


@dataclass(frozen=True)
class Rejection:
    """Why a request was not authenticated: the STUN error code to answer with."""

    code: int
    reason: str


class Authenticator:
    """Checks USERNAME / REALM / NONCE / MESSAGE-INTEGRITY (RFC 8489 §9.2.4)."""

    def __init__(
        self,
        realm: str,
        static_users: Mapping[str, str],
        rest_secrets: Sequence[str],
        nonce_lifetime: float,
        clock: Callable[[], float],
    ) -> None:
        self.realm = realm
        self._static_users = dict(static_users)
        self._rest_secrets = list(rest_secrets)
        self._nonce_lifetime = nonce_lifetime
        self._clock = clock
        self._nonce_key = os.urandom(16)

    def new_nonce(self) -> str:
        """A fresh NONCE value (RFC 8489 §9.2.3)."""
        expiry = f"{int(self._clock() + self._nonce_lifetime):x}"
        return expiry + self._nonce_mac(expiry)

    def _nonce_mac(self, expiry: str) -> str:
        mac = hmac.new(self._nonce_key, expiry.encode(), hashlib.sha256).hexdigest()
        return mac[:NONCE_DIGEST_HEX]

    def nonce_is_valid(self, nonce: str) -> bool:
        """Whether ``nonce`` was issued by this server and has not expired (a false answer is
        a 438, RFC 8489 §9.2.4). Only the exact form :meth:`new_nonce` writes is looked at:
        lowercase hex throughout (``hmac.compare_digest`` raises on non-ASCII text, and
        ``int(_, 16)`` would take other Unicode digits, "_", "0x" and spaces)."""
        expiry, mac = nonce[:-NONCE_DIGEST_HEX], nonce[-NONCE_DIGEST_HEX:]
        if not 0 < len(expiry) <= NONCE_EXPIRY_HEX_MAX or not is_lower_hex(nonce):
            return False
        return hmac.compare_digest(self._nonce_mac(expiry), mac) and (
            int(expiry, 16) >= self._clock()
        )

    def candidate_keys(self, username: str) -> list[bytes] | Rejection:
        """The keys ``username`` may have signed with, or why it is refused (401).

        Static users win over the REST form; a REST username past its expiry is refused.
        """
        password = self._static_users.get(username)
        if password is not None:
            return [long_term_key(username, self.realm, password)]
        expiry = rest_expiry(username)
        if expiry is None or not self._rest_secrets:
            return Rejection(401, "unknown user")
        if expiry < self._clock():
            return Rejection(401, "expired credentials")
        return [
            long_term_key(username, self.realm, rest_password(secret, username))
            for secret in self._rest_secrets
        ]

    def challenge(self) -> list[tuple[int, bytes]]:
        """REALM and a fresh NONCE for 401 and 438 answers (RFC 8489 §9.2.4)."""
        return [(stun.REALM, self.realm.encode()), (stun.NONCE, self.new_nonce().encode())]

    def authenticate(self, message: Message) -> Authenticated:
        """The long-term credential checks of RFC 8489 §9.2.4, in the RFC's order; raises
        :class:`RequestError` with the answer (401 and 438 carry a challenge)."""
        if message.get(stun.MESSAGE_INTEGRITY) is None and (
            message.get(stun.MESSAGE_INTEGRITY_SHA256) is None
        ):
            raise RequestError(401, self.challenge())
        raw_username = message.get(stun.USERNAME)
        raw_realm = message.get(stun.REALM)
        raw_nonce = message.get(stun.NONCE)
        if raw_username is None or raw_realm is None or raw_nonce is None:
            raise RequestError(400)
        try:
            username = stun.decode_text(raw_username, MAX_USERNAME)
            realm = stun.decode_text(raw_realm, MAX_REALM)
            nonce = stun.decode_text(raw_nonce, MAX_NONCE)
        except StunError as exc:
            raise RequestError(400) from exc
        if not self.nonce_is_valid(nonce):
            raise RequestError(438, self.challenge())
        if realm != self.realm:
            raise RequestError(401, self.challenge())
        keys = self.candidate_keys(username)
        if isinstance(keys, Rejection):
            raise RequestError(keys.code, self.challenge())
        for key in keys:
            if stun.check_message_integrity(message, key):
                return Authenticated(username, key)
        raise RequestError(401, self.challenge())
