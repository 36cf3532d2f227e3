"""The security code of a 1:1 call: twenty digits both people see, the same on both sides
exactly when their devices' DTLS connection has no one in the middle (docs/security.md).

The media of a 1:1 call is DTLS-SRTP (RFC 5763, RFC 5764) between the two devices, relayed or
not. What makes it end-to-end is that each side's DTLS checks the other's certificate against
the fingerprint in the other's SDP (``a=fingerprint``, RFC 8122 §5) — and that SDP travels
through our signaling server. A server (ours, or whoever controls it) that swapped both
fingerprints for its own could sit in the middle of the DTLS and read the media. Both sides
would then hold different pairs of fingerprints: the code, a hash of the pair, differs.

Version 1, for implementations that must agree (the web client computes it in
``web/js/security-code.js``):

1. Each side's fingerprints are the ``a=fingerprint`` lines of its SDP (session or media level)
   whose hash function is ``sha-256`` (every WebRTC stack offers one), written
   ``sha-256 <HEX:HEX:…>`` with the hex in upper case; a side that lists several (several
   certificates) joins them, sorted and distinct, with ``,``. The other side's must be those
   its DTLS checked: aiortc checks every line, so its remote description will do; Chromium
   keeps only the line it checks (not always sha-256), so the web client hashes the
   certificate the DTLS presented (docs/security.md, "Which fingerprint of the other side").
2. The two sides' strings are sorted, so that both ends hash the same bytes:
   ``SHA-256("facecall security code v1\\n" + first + "\\n" + second)`` (UTF-8).
3. The first 10 bytes of that hash, as a big-endian integer, modulo 10^20, written with 20
   digits (leading zeros kept) in four groups of five: ``01234 56789 01234 56789``.

Someone in the middle who wants both codes to match must find a certificate of their own whose
fingerprint makes one hash agree with another in those ~66 bits, between the offer and the
DTLS handshake: each try costs them a certificate signature, and 2^66 of them are out of reach.
"""

from __future__ import annotations

import hashlib
import re

#: what the hash starts with: the code's version (a new derivation gets a new one)
DOMAIN = b"facecall security code v1\n"
#: digits in the code
DIGITS = 20

_FINGERPRINT = re.compile(r"a=fingerprint:(\S+)[ \t]+([0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2})+)[ \t]*")


def sdp_fingerprints(sdp: str) -> str | None:
    """The ``sha-256`` certificate fingerprints of ``sdp`` (RFC 8122 §5: ``a=fingerprint:<hash
    function> <fingerprint>``, at session or media level) as the code hashes them: distinct,
    sorted, joined by ``,``; None if it has none."""
    matches = (_FINGERPRINT.fullmatch(line) for line in sdp.splitlines())  # CRLF or LF
    found = sorted({f"sha-256 {match[2].upper()}" for match in matches
                    if match is not None and match[1].lower() == "sha-256"})
    return ",".join(found) if found else None


def code_of(one: str, other: str) -> str:
    """The code of two sides' fingerprint strings (as :func:`sdp_fingerprints` writes them), in
    either order."""
    first, second = sorted((one, other))
    digest = hashlib.sha256(DOMAIN + first.encode() + b"\n" + second.encode()).digest()
    number = int.from_bytes(digest[:10], "big") % 10**DIGITS
    digits = f"{number:0{DIGITS}d}"
    return " ".join(digits[i:i + 5] for i in range(0, DIGITS, 5))


def security_code(local_sdp: str, remote_sdp: str) -> str | None:
    """The code of a peer connection from its local and remote descriptions (the fingerprint
    this side's DTLS presents, and the one it checks the other side's certificate against);
    None while either has no ``sha-256`` fingerprint."""
    mine, theirs = sdp_fingerprints(local_sdp), sdp_fingerprints(remote_sdp)
    if mine is None or theirs is None:
        return None
    return code_of(mine, theirs)
