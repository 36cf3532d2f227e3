"""SFrame on the SDK's media path (facecall.client.sframe_media): what leaves the encoders is
ciphertext with only the VP8 frame header clear, what reaches the decoders is the frame again,
and a frame under a key the receiver lacks is never decoded. Real aiortc encoders, decoders and
peer connections on loopback."""

from __future__ import annotations

import asyncio
import fractions
import os
import queue

import av
import numpy as np
import pytest
from aiortc import RTCPeerConnection
from aiortc.codecs.opus import OpusDecoder, OpusEncoder
from aiortc.codecs.vpx import Vp8Decoder, Vp8Encoder, vp8_depayload
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpreceiver import RTCRtpReceiver

from facecall.client.encoders import encoder_wrapper
from facecall.client.peer import PeerSession
from facecall.client.sframe_media import (
    VP8_FRAME_CLEAR,
    VP8_KEY_FRAME_CLEAR,
    FrameCipher,
    clear_bytes,
    decrypt_frames,
    frames_from,
    sframe_encoder,
)
from facecall.client.tracks import LocalTrack, RemoteTrack
from facecall.e2ee.media_keys import KeyChanges
from facecall.e2ee.sframe import decode_header
from facecall.media.sources import SyntheticAudioTrack, SyntheticVideoTrack
from facecall.sfu.vp8 import is_keyframe
from tests.sfu.test_transport import LOOPBACK, until

KID, BASE_KEY = 0x1234_0000, bytes(range(32))
SENDER = "v1"  # the device whose frames the tests read (as if its slot named it)


def holding(device: str, kid: int, base_key: bytes) -> KeyChanges:
    return KeyChanges([], [(device, kid, base_key)])


def keyed(kid: int = KID, base_key: bytes = BASE_KEY) -> FrameCipher:
    """A cipher that sends under ``kid`` and can read its own frames, as device SENDER's."""
    cipher = FrameCipher()
    cipher.use_key(kid, base_key)
    cipher.apply(holding(SENDER, kid, base_key))
    return cipher


def picture(index: int, width: int = 320, height: int = 180) -> av.VideoFrame:
    rows = np.arange(height * 3 // 2, dtype=np.uint16)[:, None]
    cols = np.arange(width, dtype=np.uint16)[None, :]
    plane = ((rows + cols + 7 * index) % 251).astype(np.uint8)
    frame = av.VideoFrame.from_ndarray(plane, format="yuv420p")
    frame.pts, frame.time_base = index * 3000, fractions.Fraction(1, 90000)
    return frame


def tone(index: int) -> av.AudioFrame:
    samples = np.arange(index * 960, (index + 1) * 960)
    pcm = (8000 * np.sin(2 * np.pi * 440 * samples / 48000)).astype(np.int16).reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
    frame.sample_rate, frame.pts, frame.time_base = 48000, index * 960, fractions.Fraction(1, 48000)
    return frame


# ---------------------------------------------------------------------------- the frame rules


def test_clear_bytes_keep_the_vp8_frame_header_and_nothing_of_audio() -> None:
    key_frame, delta = bytes([0x10]) + os.urandom(40), bytes([0x31]) + os.urandom(40)
    assert clear_bytes("video", key_frame) == VP8_KEY_FRAME_CLEAR == 10  # RFC 6386 §9.1
    assert clear_bytes("video", delta) == VP8_FRAME_CLEAR == 3
    assert clear_bytes("video", b"\x10\x00") == 2  # never more than the frame
    assert clear_bytes("video", b"") == 0
    assert clear_bytes("audio", key_frame) == 0


def test_a_frame_round_trips_with_its_header_clear_and_authenticated() -> None:
    cipher = keyed()
    frame = bytes([0x10]) + os.urandom(500)
    wire = cipher.encrypt("video", frame)
    assert wire is not None and wire[:10] == frame[:10] and frame[10:] not in wire
    header, _ = decode_header(wire[10:])
    assert (header.kid, header.ctr) == (KID, 0)
    # the clear header is metadata: changed, the frame does not decrypt (RFC 9605 §4.4.3)
    tampered = bytes([wire[0]]) + bytes([wire[1] ^ 1]) + wire[2:]
    assert cipher.decrypt("video", tampered, SENDER) is None
    assert cipher.counts["AuthenticationFailed"] == 1
    assert cipher.decrypt("video", wire, SENDER) == frame
    # a replay is refused too
    assert cipher.decrypt("video", wire, SENDER) is None and cipher.counts["ReplayedFrame"] == 1


def test_nothing_is_sent_without_a_key_and_nothing_read_without_one() -> None:
    cipher = FrameCipher()
    assert cipher.kid is None and cipher.encrypt("audio", b"\x78" * 60) is None
    assert cipher.counts["unsent"] == 1
    wire = keyed().encrypt("audio", b"\x78" * 60)
    assert wire is not None and cipher.decrypt("audio", wire, SENDER) is None
    assert cipher.counts["UnknownKeyId"] == 1
    assert cipher.decrypt("audio", wire, None) is None  # a slot that names nobody
    assert cipher.counts["unassigned"] == 1


def test_a_new_key_replaces_the_old_one_for_sending() -> None:
    cipher = keyed()
    cipher.use_key(KID + 1, bytes(32))
    wire = cipher.encrypt("audio", b"abc")
    assert wire is not None and decode_header(wire)[0].kid == KID + 1
    reader = FrameCipher()
    reader.apply(holding(SENDER, KID + 1, bytes(32)))
    assert reader.decrypt("audio", wire, SENDER) == b"abc"
    reader.apply(KeyChanges([(SENDER, KID + 1)], []))
    assert reader.decrypt("audio", cipher.encrypt("audio", b"abc") or b"", SENDER) is None


def test_a_frame_decrypts_only_under_the_keys_of_the_device_its_slot_names() -> None:
    """Member M's genuine frame, routed by the server into the slot it labels V, does not
    decrypt, although the receiver holds M's key; two senders may even use the same KID."""
    victor, mallory = keyed(KID, BASE_KEY), keyed(KID, bytes(32))  # one KID, two keys
    reader = FrameCipher()
    reader.apply(KeyChanges([], [("v1", KID, BASE_KEY), ("m1", KID, bytes(32))]))
    from_mallory = mallory.encrypt("video", bytes([0x10]) + os.urandom(300))
    from_victor = victor.encrypt("video", bytes([0x10]) + os.urandom(300))
    assert from_mallory is not None and from_victor is not None
    assert reader.decrypt("video", from_mallory, "v1") is None  # shown as V's: refused
    assert reader.counts["AuthenticationFailed"] == 1
    assert reader.decrypt("video", from_mallory, "c1") is None  # a device it holds no key of
    assert reader.counts["UnknownKeyId"] == 1
    assert reader.decrypt("video", from_mallory, "m1") is not None
    assert reader.decrypt("video", from_victor, "v1") is not None
    # a sender whose last key goes is forgotten; the other keeps its own
    reader.apply(KeyChanges([("m1", KID)], []))
    assert reader.decrypt("video", mallory.encrypt("video", b"\x31abc") or b"", "m1") is None
    assert reader.decrypt("video", victor.encrypt("video", b"\x31abc") or b"", "v1") == b"\x31abc"


# ---------------------------------------------------------------------------- the encoders


def test_vp8_frames_leave_encrypted_with_the_key_frame_bit_readable_by_the_sfu() -> None:
    sender, reader = keyed(), keyed()
    plain_frames: list[bytes] = []
    encrypt = sender.encrypt
    sender.encrypt = lambda kind, frame: (plain_frames.append(frame), encrypt(kind, frame))[1]  # type: ignore[method-assign]
    encoder = sframe_encoder(sender)(Vp8Encoder(), None)  # type: ignore[arg-type]
    decoder = Vp8Decoder()
    decoded = 0
    for index in range(6):
        payloads, timestamp = encoder.encode(picture(index), force_keyframe=index == 0)
        assert payloads
        # the RTP payload descriptor is made over the SFrame: the SFU reads it, and the VP8
        # frame's key-frame bit (clear) from the first packet
        assert is_keyframe(payloads[0]) is (index == 0)
        wire = b"".join(vp8_depayload(p) for p in payloads)
        plain = plain_frames[index]
        assert wire[:clear_bytes("video", plain)] == plain[:clear_bytes("video", plain)]
        assert plain[16:48] not in wire  # the frame's own bytes are ciphertext
        frame = reader.decrypt("video", wire, SENDER)
        assert frame == plain
        decoded += len(decoder.decode(JitterFrame(frame, timestamp)))
    assert decoded == 6 and sender.counts["encrypted"] == 6


def test_opus_frames_leave_encrypted_and_decode_after_decryption() -> None:
    sender, reader = keyed(), keyed()
    encoder = sframe_encoder(sender)(OpusEncoder(), None)  # type: ignore[arg-type]
    plain_encoder, decoder = OpusEncoder(), OpusDecoder()
    decoded = 0
    for index in range(10):
        payloads, timestamp = encoder.encode(tone(index))
        plain_payloads, _ = plain_encoder.encode(tone(index))
        assert len(payloads) == len(plain_payloads)
        for payload, plain in zip(payloads, plain_payloads, strict=True):
            assert payload != plain and plain not in payload
            frame = reader.decrypt("audio", payload, SENDER)
            assert frame is not None and len(frame) == len(plain)
            decoded += len(decoder.decode(JitterFrame(frame, timestamp)))
    assert decoded >= 9


def test_an_encoder_sends_nothing_until_there_is_a_key() -> None:
    cipher = FrameCipher()
    vp8 = sframe_encoder(cipher)(Vp8Encoder(), None)  # type: ignore[arg-type]
    assert vp8.encode(picture(0))[0] == []
    opus = sframe_encoder(cipher)(OpusEncoder(), None)  # type: ignore[arg-type]
    assert all(opus.encode(tone(i))[0] == [] for i in range(3))
    assert cipher.counts["unsent"] >= 4


def test_a_codec_sframe_cannot_carry_sends_nothing_unless_the_connection_is_unprotected() -> None:
    from aiortc import RTCRtpCodecParameters
    from aiortc.codecs.h264 import H264Encoder

    from facecall.client.p2p_sframe import AgreedCipher
    h264 = RTCRtpCodecParameters(mimeType="video/H264", clockRate=90000, payloadType=102)
    cipher = keyed()
    encoder = sframe_encoder(cipher)(H264Encoder(), h264)
    assert encoder.encode(picture(0)) == ([], 0)  # group media: never
    assert cipher.counts["unprotectable"] == 1
    agreed = AgreedCipher(cipher)
    encoder = sframe_encoder(agreed)(H264Encoder(), h264)
    assert encoder.encode(picture(0)) == ([], 0)  # 1:1, not negotiated yet
    agreed.agreed = True
    assert encoder.encode(picture(1)) == ([], 0)  # protected: nothing, never clear
    agreed.agreed = False  # the other device declares nothing and chose H.264
    encrypted = cipher.counts["encrypted"]
    payloads, _ = encoder.encode(picture(2))
    assert payloads and cipher.counts["encrypted"] == encrypted  # as H.264 made them


def test_the_encoder_wrapper_acts_only_inside_its_context() -> None:
    import aiortc.rtcrtpsender
    from aiortc import RTCRtpCodecParameters
    vp8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
    with encoder_wrapper(sframe_encoder(keyed())):
        assert type(aiortc.rtcrtpsender.get_encoder(vp8)).__name__ == "_SFrameEncoder"
    assert type(aiortc.rtcrtpsender.get_encoder(vp8)) is Vp8Encoder


# ---------------------------------------------------------------------------- aiortc's names


async def test_the_private_aiortc_names_relied_on_exist() -> None:
    assert callable(Vp8Encoder._packetize)
    pc = RTCPeerConnection()
    receiver = pc.addTransceiver("video").receiver
    assert isinstance(receiver, RTCRtpReceiver)
    assert isinstance(receiver._RTCRtpReceiver__decoder_queue, queue.Queue)  # type: ignore[attr-defined]
    assert hasattr(receiver._RTCRtpReceiver__decoder_error, "set")  # type: ignore[attr-defined]
    cipher = keyed()
    decrypt_frames(receiver, "video", cipher)
    decrypt_frames(receiver, "video", cipher)  # once only
    proxy = receiver._RTCRtpReceiver__decoder_queue  # type: ignore[attr-defined]
    assert isinstance(proxy.inner, queue.Queue)
    await pc.close()


# ---------------------------------------------------------------------------- a real connection


async def connect(sender_cipher: FrameCipher, receiver_cipher: FrameCipher,
                  ) -> tuple[PeerSession, PeerSession, dict[str, RemoteTrack]]:
    """A sending PeerSession (audio+video) and a receiving one, straight over loopback."""
    a = PeerSession(ice_servers=[], ice_host_addresses=LOOPBACK, video_codec="VP8",
                    frame_cipher=sender_cipher)
    b = PeerSession(ice_servers=[], ice_host_addresses=LOOPBACK, video_codec="VP8",
                    frame_cipher=receiver_cipher)
    a.add_tracks([LocalTrack(SyntheticAudioTrack()), LocalTrack(SyntheticVideoTrack(320, 180, 15))],
                 ["audio", "video"])
    b.add_tracks([], ["audio", "video"])
    answer = await b.accept_offer(await a.create_offer())
    await a.accept_answer(answer)
    tracks = {kind: RemoteTrack(kind) for kind in ("audio", "video")}
    for transceiver in b.pc.getTransceivers():
        tracks[transceiver.kind].attach(transceiver.receiver.track)
        frames_from(transceiver.receiver, SENDER)
    return a, b, tracks


async def count_frames(track: RemoteTrack, counts: dict[str, int], kind: str) -> None:
    while True:
        await track.recv()
        counts[kind] += 1


async def test_media_decodes_through_a_real_connection_with_the_key() -> None:
    a, b, tracks = await connect(keyed(), receiver := keyed())
    counts = {"audio": 0, "video": 0}
    readers = [asyncio.create_task(count_frames(t, counts, k)) for k, t in tracks.items()]
    try:
        await until(lambda: counts["video"] >= 10 and counts["audio"] >= 20, what="decoded media")
        assert receiver.counts["decrypted"] > 0
    finally:
        for reader in readers:
            reader.cancel()
        await a.close()
        await b.close()


async def test_without_the_key_nothing_is_decoded_and_the_receiver_asks_for_key_frames() -> None:
    reader = FrameCipher()  # no key: every frame is refused
    a, b, tracks = await connect(keyed(), reader)
    video = next(t.receiver for t in b.pc.getTransceivers() if t.kind == "video")
    plis: list[int] = []
    send_pli = video._send_rtcp_pli

    async def counted(media_ssrc: int) -> None:
        plis.append(media_ssrc)
        await send_pli(media_ssrc)

    video._send_rtcp_pli = counted  # type: ignore[method-assign]
    counts = {"audio": 0, "video": 0}
    readers = [asyncio.create_task(count_frames(t, counts, k)) for k, t in tracks.items()]
    try:
        await until(lambda: reader.counts["UnknownKeyId"] >= 30 and plis, what="refused frames, a PLI")
        assert counts == {"audio": 0, "video": 0}  # nothing reached a decoder
        # the key arrives: frames decode from then on (the key frame the PLIs asked for)
        reader.apply(holding(SENDER, KID, BASE_KEY))
        await until(lambda: counts["video"] >= 5 and counts["audio"] >= 10, what="media after the key")
    finally:
        for task in readers:
            task.cancel()
        await a.close()
        await b.close()


async def test_a_slot_labelled_with_another_device_decodes_nothing_until_it_names_the_sender() -> None:
    """The receiver holds the sender's key, but its slot names another device (a server
    passing one member's media off as another's): nothing reaches a decoder. Named right,
    media decodes."""
    reader = FrameCipher()
    reader.apply(KeyChanges([], [(SENDER, KID, BASE_KEY), ("m1", KID + 1, bytes(32))]))
    a, b, tracks = await connect(keyed(), reader)
    for transceiver in b.pc.getTransceivers():
        frames_from(transceiver.receiver, "m1")
    counts = {"audio": 0, "video": 0}
    readers = [asyncio.create_task(count_frames(t, counts, k)) for k, t in tracks.items()]
    try:
        await until(lambda: reader.counts["UnknownKeyId"] >= 30, what="refused frames")
        assert counts == {"audio": 0, "video": 0} and reader.counts["decrypted"] == 0
        for transceiver in b.pc.getTransceivers():
            frames_from(transceiver.receiver, SENDER)
        await until(lambda: counts["video"] >= 5 and counts["audio"] >= 10, what="media, named right")
    finally:
        for task in readers:
            task.cancel()
        await a.close()
        await b.close()


async def test_frames_from_needs_a_decrypting_receiver() -> None:
    pc = RTCPeerConnection()
    receiver = pc.addTransceiver("audio").receiver
    try:
        with pytest.raises(TypeError, match="decrypt_frames"):
            frames_from(receiver, SENDER)
    finally:
        await pc.close()


async def test_video_waits_for_a_key_frame_after_a_gap_and_asks_for_one() -> None:
    """Delta frames refer to pictures before them: after a frame that did not decrypt, at the
    start, and when the slot changes hands, they are dropped until a key frame decrypts (else
    they decode to garbage), and the sender is asked for one (rate-limited)."""
    sender, reader = keyed(), FrameCipher()
    reader.apply(holding(SENDER, KID, BASE_KEY))
    pc = RTCPeerConnection()
    receiver = pc.addTransceiver("video").receiver
    decrypt_frames(receiver, "video", reader)
    frames_from(receiver, SENDER)
    proxy = receiver._RTCRtpReceiver__decoder_queue  # type: ignore[attr-defined]
    asked = receiver._RTCRtpReceiver__decoder_error  # type: ignore[attr-defined]

    def put(frame: bytes) -> bool:
        """Whether ``frame`` reached the decoder."""
        before = proxy.inner.qsize()
        proxy.put(("VP8", JitterFrame(frame, 0)))
        return proxy.inner.qsize() > before

    def key() -> bytes:
        return sender.encrypt("video", bytes([0x10]) + os.urandom(200)) or b""

    def delta() -> bytes:
        return sender.encrypt("video", bytes([0x31]) + os.urandom(100)) or b""

    try:
        assert not put(delta()) and reader.counts["awaiting_key_frame"] == 1 and asked.is_set()
        asked.clear()
        assert not put(delta()) and not asked.is_set()  # asked a moment ago: not again yet
        assert put(key()) and put(delta()) and put(delta())
        assert not put(delta()[:-1])  # does not decrypt: a gap
        assert not put(delta()) and reader.counts["awaiting_key_frame"] == 3
        assert put(key()) and put(delta())
        frames_from(receiver, "m1")
        frames_from(receiver, SENDER)  # the slot changed hands (and back): a key frame first
        assert not put(delta()) and put(key())
    finally:
        await pc.close()
