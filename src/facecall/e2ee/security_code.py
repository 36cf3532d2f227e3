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

1. Each side's fingerprint is the ``sha-256`` fingerprint (RFC 8122 §5) of the certificate
   its end of the DTLS uses, written ``sha-256 <HEX:HEX:…>`` with the hex in upper case (as an
   ``a=fingerprint`` line has it; :func:`sdp_fingerprints` reads a side's own description,
   joining several, sorted and distinct, with ``,``). The other side's must be the certificate
   its DTLS presented and this side's DTLS accepted, **never** the lines of the remote
   description: with BUNDLE only the first m-section's lines are checked (aiortc), or only one
   line is kept (Chromium), so other lines prove nothing (docs/security.md, "Which fingerprint
   of the other side"). The SDK takes it from aiortc's DTLS transport
   (:func:`facecall.client.peer.dtls_fingerprints`), the web client from
   ``RTCDtlsTransport.getRemoteCertificates()``.
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
    """The code of two descriptions' ``sha-256`` lines; None while either has none. Right only
    where each description's lines are exactly the certificates in use — each side's own
    description, as in the cross-checks of the two implementations — and not for a remote
    description received over signaling (see step 1 above)."""
    mine, theirs = sdp_fingerprints(local_sdp), sdp_fingerprints(remote_sdp)
    if mine is None or theirs is None:
        return None
    return code_of(mine, theirs)
