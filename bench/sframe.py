"""What SFrame (facecall.e2ee.sframe, RFC 9605; docs/sframe.md) costs per media frame, beside
the anchor: the ``cryptography`` library's AESGCM encrypt and decrypt of the same bytes, measured
in the same run.

Each row is one frame encrypted by a ``Sender`` (header, nonce, counter) and decrypted by a
``Receiver`` (header parse, key lookup, replay window), for a 1200-byte (video packet) and a
20-byte (audio frame) payload, with AES_128_GCM_SHA256_128 and AES_128_CTR_HMAC_SHA256_80; and
one row more, ``group media``: the SDK's frame transform (facecall.client.sframe_media's
``FrameCipher``: a video frame with its VP8 header clear as metadata, an audio frame whole, under
locks), what group media pays per frame on top of the codec. The
anchor is AESGCM.encrypt + AESGCM.decrypt with a 128-bit key, the same plaintext and the same
AAD (the frame's header), for every row: what the frame would cost with nothing but the cipher.

    .venv/bin/python bench/sframe.py [--seconds 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from facecall.client.sframe_media import FrameCipher
from facecall.e2ee.media_keys import KeyChanges
from facecall.e2ee.sframe import CipherSuite, Receiver, Sender, encode_header
from identity import per_call_us  # bench/identity.py: the same timing loop

SUITES = (CipherSuite.AES_128_GCM_SHA256_128, CipherSuite.AES_128_CTR_HMAC_SHA256_80)
SIZES = (1200, 20)
KID = 0x1234  # a KID above 7: a 3-byte header, as with a real key generation


def sframe_round_trip(suite: CipherSuite, plaintext: bytes) -> Callable[[], object]:
    sender, receiver = Sender(suite), Receiver(suite)
    base_key = os.urandom(16)
    sender.add_key(KID, base_key)
    receiver.add_key(KID, base_key)

    def work() -> bytes:
        return receiver.decrypt(b"", sender.encrypt(KID, b"", plaintext))

    return work


def frame_cipher_round_trip(plaintext: bytes) -> Callable[[], object]:
    cipher, base_key = FrameCipher(), os.urandom(16)
    cipher.use_key(KID, base_key)
    cipher.apply(KeyChanges([], [("self", KID, base_key)]))
    kind = "video" if len(plaintext) > 100 else "audio"
    frame = bytes([0x10]) + plaintext[1:] if kind == "video" else plaintext  # a VP8 key frame

    def work() -> bytes | None:
        return cipher.decrypt(kind, cipher.encrypt(kind, frame) or b"", "self")

    return work


def aesgcm_round_trip(plaintext: bytes) -> Callable[[], object]:
    aead, nonce = AESGCM(os.urandom(16)), os.urandom(12)
    aad = encode_header(KID, 1 << 20)  # as long as a frame's header a few hours into a call

    def work() -> bytes:
        return aead.decrypt(nonce, aead.encrypt(nonce, plaintext, aad), aad)

    return work


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement (default 2)")
    parser.add_argument("--json", action="store_true", help="one JSON list instead of the table")
    args = parser.parse_args()
    rows = []
    for size in SIZES:
        plaintext = os.urandom(size)
        anchor = per_call_us(aesgcm_round_trip(plaintext), args.seconds)
        for suite in SUITES:
            ours = per_call_us(sframe_round_trip(suite, plaintext), args.seconds)
            rows.append({"suite": suite.name, "bytes": size, "sframe_us": round(ours, 2),
                         "aesgcm_us": round(anchor, 2), "ratio": round(ours / anchor, 2)})
        ours = per_call_us(frame_cipher_round_trip(plaintext), args.seconds)
        rows.append({"suite": "group media (FrameCipher)", "bytes": size, "sframe_us": round(ours, 2),
                     "aesgcm_us": round(anchor, 2), "ratio": round(ours / anchor, 2)})
    if args.json:
        print(json.dumps(rows))
        return
    print("per frame: encrypt + decrypt")
    print(f"{'suite':28}{'bytes':>6}{'facecall µs':>14}{'AESGCM µs':>12}{'ratio':>8}")
    for r in rows:
        print(f"{r['suite']:28}{r['bytes']:6}{r['sframe_us']:14.2f}{r['aesgcm_us']:12.2f}{r['ratio']:8.2f}")


if __name__ == "__main__":
    main()
