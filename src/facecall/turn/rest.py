"""TURN REST ephemeral credentials (draft-uberti-behave-turn-rest-00 §2.2, as coturn uses them).

The HTTP API mints them, the TURN server checks them, both from the same shared secrets:
``username = "<expiry unix time>:<user>"``, ``password = base64(HMAC-SHA1(secret, username))``.
Several secrets may be valid at once so that operators can rotate them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

MAX_EXPIRY_DIGITS = 12


def rest_password(secret: str, username: str) -> str:
    """The password of a REST ``username`` under ``secret``."""
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def ephemeral_credentials(secret: str, user: str, ttl: int, now: float) -> tuple[str, str]:
    """``(username, password)`` valid until ``now + ttl`` for ``user``."""
    username = f"{int(now) + ttl}:{user}"
    return username, rest_password(secret, username)


def rest_expiry(username: str) -> int | None:
    """The expiry time of a REST username (``"<expiry>"`` or ``"<expiry>:<user>"``), or None
    when the username is not in that form. The expiry is ASCII digits only: ``str.isdigit``
    and ``int`` also take other Unicode digits ("²", "١٢"), which no minted username holds
    and on which ``int`` may even raise."""
    head = username.split(":", 1)[0]
    if not 0 < len(head) <= MAX_EXPIRY_DIGITS or not is_ascii_digits(head):
        return None
    return int(head)


def is_ascii_digits(text: str) -> bool:
    """Whether ``text`` is made of "0"-"9" only."""
    return text.isascii() and text.isdigit()
