"""The safety number of two people: sixty digits over the identity keys of all their devices,
the same on both sides exactly when each sees the other's devices as they are
(docs/security.md, "Safety numbers").

Device identity keys (:mod:`facecall.e2ee.identity`) make a device refuse a description that a
device it has met did not sign. What they cannot tell is whether a device it meets for the
first time is the person's: the server lists the keys, and a server in the middle could list a
device of its own for bob, or another key for one of his devices it has not been seen with yet.
Two people close that gap by comparing their safety number once, in person or over a call:
it covers every device key of both, so a device the server added or a key it swapped in for one
of them changes it. After that, their clients remember the number they compared and say so
when it changes (a new device, or someone in the middle).

Version 1, for implementations that must agree (the web client computes the same in
``web/js/safety-number.js``):

1. Each person's half: ``SHA-512("facecall safety number v1\\n" + user_id + "\\n" + keys)``,
   where ``keys`` are the person's devices' public keys as published (43 base64url characters
   each, :mod:`facecall.e2ee.identity`), distinct, sorted, joined by ``,``. The first 13 bytes of
   the hash, as a big-endian integer modulo 10^30, written with 30 digits.
2. The two halves sorted (as strings) and joined: 60 digits, shown in twelve groups of five.

Each half holds about 100 bits: someone who wants their own device key to leave a half as it
was must find a key whose half collides with it, 2^100 tries, out of reach.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from facecall.e2ee.identity import IdentityError, public_key_from_text

#: what each half's hash starts with: the number's version
DOMAIN = "facecall safety number v1\n"
#: digits of each person's half, and of the whole number
HALF_DIGITS = 30
DIGITS = 2 * HALF_DIGITS


def half(user_id: str, keys: Iterable[str]) -> str:
    """One person's 30 digits over the public keys of their devices (step 1);
    :class:`IdentityError` for a key that is not one, or a person with no key at all."""
    distinct = sorted(set(keys))
    if not distinct:
        raise IdentityError(f"user {user_id} has no device with an identity key")
    for key in distinct:
        public_key_from_text(key)
    if not user_id or "\n" in user_id:
        raise IdentityError("a user id is non-empty and has no line break")
    text = DOMAIN + user_id + "\n" + ",".join(distinct)
    number = int.from_bytes(hashlib.sha512(text.encode("utf-8")).digest()[:13], "big")
    return f"{number % 10**HALF_DIGITS:0{HALF_DIGITS}d}"


def safety_number(one: tuple[str, Iterable[str]], other: tuple[str, Iterable[str]]) -> str:
    """The safety number of two people, each given as ``(user_id, device keys)``, in either
    order: sixty digits in twelve groups of five (step 2)."""
    digits = "".join(sorted((half(*one), half(*other))))
    return " ".join(digits[i:i + 5] for i in range(0, DIGITS, 5))
