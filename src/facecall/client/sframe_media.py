"""SFrame (RFC 9605) on the SDK's group media: every encoded frame this device sends through the
SFU is encrypted with its own sender key, and every frame it receives is decrypted before it is
decoded (docs/sframe.md, "In the SDK"). The SFU forwards ciphertext.

aiortc has no encoded-frame transform (the browser's ``RTCRtpScriptTransform``), so this module
adds one at the two places where aiortc holds whole encoded frames:

* **sending** — the encoder: aiortc's sender asks ``get_encoder`` for one
  (:func:`facecall.client.encoders.encoder_wrapper` hands it to :func:`sframe_encoder`). Opus
  returns one payload per frame, encrypted whole. VP8 packetizes inside ``encode`` (the
  ``_packetize`` class method): the encoder's instance gets its own ``_packetize`` that encrypts
  the frame first, so the RTP payload descriptor (RFC 7741 §4.2) is made over the SFrame and
  stays clear for the SFU;
* **receiving** — the receiver's queue to its decoder thread: a complete frame (the jitter
  buffer's output, payload descriptors removed) is decrypted on the event loop as it is queued
  (:func:`decrypt_frames`). A frame that does not decrypt is dropped, never decoded; for video
  the receiver is told its decoder failed, so it asks the sender for a key frame (PLI, RFC 4585
  §6.3.1) — the picture comes back once the key arrives.

**What stays clear** (:func:`clear_bytes`): the SFU needs to know a VP8 key frame to switch a
video slot, and reads it from the first byte of the VP8 frame (RFC 6386 §9.1). Like the
browsers' encoded-transform E2EE, the frame header stays clear — 10 bytes of a key frame (the
3-byte frame tag, start code and dimensions), 3 of any other — and is authenticated as SFrame
metadata (RFC 9605 §4.4.3: changed, the frame does not decrypt). Audio is encrypted whole; the
SFU's speaker detection reads the audio level header extension (RFC 6464), outside the payload.
A frame on the wire is ``clear || SFrame header || ciphertext || tag``.

No frame is ever sent in the clear: until this device has a key (:meth:`FrameCipher.use_key`)
its encoders produce nothing.

Private aiortc names used (aiortc==1.16.*, checked in ``tests/client/test_sframe_media.py``):
``Vp8Encoder._packetize``, ``RTCRtpReceiver._RTCRtpReceiver__decoder_queue`` (replaced before
the receiver starts) and ``RTCRtpReceiver._RTCRtpReceiver__decoder_error``.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from typing import Any, Protocol

from aiortc.codecs.base import Encoder
from aiortc.codecs.opus import OpusEncoder
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from av.packet import Packet

from facecall.e2ee.media_keys import KeyChanges
from facecall.e2ee.sframe import CipherSuite, Receiver, Sender, SFrameError, UnknownKeyId
from facecall.logs import get_logger

log = get_logger(__name__)

#: the cipher suite of group media (RFC 9605 §4.5): a full 16-byte tag; AES-GCM is what both
#: ``cryptography`` and WebCrypto do in one call
SUITE = CipherSuite.AES_128_GCM_SHA256_128
#: bytes of a VP8 frame left clear: key frame (frame tag, start code, dimensions), other frames
#: (frame tag) — RFC 6386 §9.1
VP8_KEY_FRAME_CLEAR, VP8_FRAME_CLEAR = 10, 3


def is_key_frame(frame: bytes) -> bool:
    """Whether a VP8 frame (or its SFrame, which leaves byte 0 clear) is a key frame: bit 0 of
    byte 0 is 0 (RFC 6386 §9.1)."""
    return bool(frame) and frame[0] & 1 == 0


def clear_bytes(kind: str, frame: bytes) -> int:
    """How many leading bytes of an encoded ``frame`` of ``kind`` stay clear (see above): the
    VP8 frame header for video (:func:`is_key_frame` reads it), none for audio. Never more than
    the frame."""
    if kind != "video" or not frame:
        return 0
    return min(len(frame), VP8_KEY_FRAME_CLEAR if is_key_frame(frame) else VP8_FRAME_CLEAR)


class FrameCipher:
    """The SFrame state of one device's group media: its :class:`~facecall.e2ee.sframe.Sender`
    (this device's keys; the current KID encrypts) and one
    :class:`~facecall.e2ee.sframe.Receiver` per sender device, holding that device's keys.

    **A frame decrypts only under the keys of the device it comes from**: the device the SFU
    names for the receive slot it arrives in (:func:`frames_from`). So a frame of member M that
    the server routes into the slot it labels V does not decrypt — the application can trust
    the name on a slot — and KIDs need be unique per sender only: a member cannot take another
    sender's tag (facecall.e2ee.media_keys).

    Encoders run in aiortc's executor threads and decryption on the event loop, so each side
    has a lock. :attr:`counts` counts frames: ``encrypted``, ``decrypted``, ``unsent`` (no key
    yet), ``unassigned`` (arrived in a slot that names no device), and per failure class name
    (``UnknownKeyId``: no such key of that sender, ``AuthenticationFailed``, ...)."""

    def __init__(self, suite: CipherSuite = SUITE) -> None:
        self._send_lock = threading.Lock()
        self._receive_lock = threading.Lock()
        self._suite = suite
        self._sender = Sender(suite)
        self._receivers: dict[str, Receiver] = {}
        self._kid: int | None = None
        self.counts: Counter[str] = Counter()

    @property
    def kid(self) -> int | None:
        """The KID this device encrypts with now (None: no key yet, nothing is sent)."""
        return self._kid

    def use_key(self, kid: int, base_key: bytes) -> None:
        """Encrypt with this key from the next frame on; the previous one is forgotten (a KID
        is never used again: facecall.e2ee.media_keys)."""
        with self._send_lock:
            self._sender.add_key(kid, base_key)
            previous, self._kid = self._kid, kid
            if previous is not None:
                self._sender.remove_key(previous)

    def stop(self) -> None:
        """Send nothing from now on, until :meth:`use_key` gives a new key (the one in use is
        forgotten)."""
        with self._send_lock:
            if self._kid is not None:
                self._sender.remove_key(self._kid)
            self._kid = None

    def apply(self, changes: KeyChanges) -> None:
        """Change the receiving keys: each sender device's own (a sender left with none is
        forgotten)."""
        with self._receive_lock:
            for device, kid in changes.removed:
                receiver = self._receivers.get(device)
                if receiver is not None:
                    receiver.remove_key(kid)
                    if not receiver.kids():
                        del self._receivers[device]
            for device, kid, base_key in changes.added:
                self._receivers.setdefault(device, Receiver(self._suite)).add_key(kid, base_key)

    def encrypt(self, kind: str, frame: bytes) -> bytes | None:
        """``clear || SFrame`` of one encoded frame, or None when there is no key yet."""
        with self._send_lock:
            if self._kid is None:
                self.counts["unsent"] += 1
                return None
            clear = frame[:clear_bytes(kind, frame)]
            protected = self._sender.encrypt(self._kid, clear, frame[len(clear):])
            self.counts["encrypted"] += 1
        return clear + protected

    def passes_clear(self) -> bool:
        """Never: every frame of group media is SFrame."""
        return False

    def decrypt(self, kind: str, data: bytes, sender: str | None) -> bytes | None:
        """The encoded frame in ``data`` (as :meth:`encrypt` made it) from device ``sender``
        (None: nobody), or None if it does not decrypt under that device's keys (counted by
        reason)."""
        if sender is None:
            self.counts["unassigned"] += 1
            return None
        clear = data[:clear_bytes(kind, data)]
        try:
            with self._receive_lock:
                receiver = self._receivers.get(sender)
                if receiver is None:
                    raise UnknownKeyId(f"no key of device {sender}")
                plain = receiver.decrypt(clear, data[len(clear):])
        except SFrameError as exc:
            self.counts[type(exc).__name__] += 1
            return None
        self.counts["decrypted"] += 1
        return clear + plain


class FrameProtection(Protocol):
    """What encrypts and decrypts the frames of one peer connection: a :class:`FrameCipher`, or
    a 1:1 connection's view of its call's (facecall.client.p2p_sframe.AgreedCipher)."""

    @property
    def counts(self) -> Counter[str]: ...

    def encrypt(self, kind: str, frame: bytes) -> bytes | None: ...

    def decrypt(self, kind: str, data: bytes, sender: str | None) -> bytes | None: ...

    def passes_clear(self) -> bool:
        """Whether frames go as they are (a connection known not to be SFrame-protected)."""
        ...


class _WrappedEncoder(Encoder):
    """An encoder around a codec's own (``inner``: the name the media engine looks for), whose
    rate is the inner one's."""

    inner: Encoder

    @property
    def target_bitrate(self) -> int:
        return int(getattr(self.inner, "target_bitrate", 0))

    @target_bitrate.setter
    def target_bitrate(self, bitrate: int) -> None:
        if hasattr(self.inner, "target_bitrate"):
            self.inner.target_bitrate = bitrate  # type: ignore[attr-defined]


class _SFrameEncoder(_WrappedEncoder):
    """An aiortc encoder whose frames leave encrypted (see the module docstring)."""

    def __init__(self, inner: Encoder, kind: str, cipher: FrameProtection) -> None:
        self.inner, self.kind, self.cipher = inner, kind, cipher
        if isinstance(inner, Vp8Encoder):  # encrypt before the RTP payload descriptor is added
            inner._packetize = self._vp8_packetize  # type: ignore[method-assign]

    def _vp8_packetize(self, buffer: bytes, picture_id: int) -> list[bytes]:
        protected = self.cipher.encrypt("video", buffer)
        return [] if protected is None else Vp8Encoder._packetize(protected, picture_id)

    def _protect(self, payloads: list[bytes], timestamp: int) -> tuple[list[bytes], int]:
        if isinstance(self.inner, Vp8Encoder):
            return payloads, timestamp  # already (see _vp8_packetize)
        out = []
        for payload in payloads:  # Opus: one payload is one frame
            protected = self.cipher.encrypt(self.kind, payload)
            if protected is not None:
                out.append(protected)
        return out, timestamp

    def encode(self, frame: Any, force_keyframe: bool = False) -> tuple[list[bytes], int]:
        return self._protect(*self.inner.encode(frame, force_keyframe))

    def pack(self, packet: Packet) -> tuple[list[bytes], int]:
        return self._protect(*self.inner.pack(packet))


class _Unprotectable(_WrappedEncoder):
    """What a codec SFrame cannot carry here gets: an encoder whose frames go out only on a
    connection that is not SFrame-protected at all (a 1:1 call whose other device does not
    declare SFrame and chose H.264: :meth:`FrameProtection.passes_clear`), else nothing — never
    clear media where SFrame was agreed. Group media offers Opus and VP8 only, and a device
    that declares SFrame answers VP8 only, so on a protected connection this is a guard."""

    def __init__(self, inner: Encoder, codec: RTCRtpCodecParameters, cipher: FrameProtection) -> None:
        self.inner, self.codec_name, self.cipher = inner, codec.mimeType, cipher
        self._refused = False

    def _allowed(self) -> bool:
        if self.cipher.passes_clear():
            return True
        self.cipher.counts["unprotectable"] += 1
        if not self._refused:
            self._refused = True
            log.error("sframe.codec_refused", codec=self.codec_name)
        return False

    def encode(self, frame: Any, force_keyframe: bool = False) -> tuple[list[bytes], int]:
        return self.inner.encode(frame, force_keyframe) if self._allowed() else ([], 0)

    def pack(self, packet: Packet) -> tuple[list[bytes], int]:
        return self.inner.pack(packet) if self._allowed() else ([], 0)


def sframe_encoder(cipher: FrameProtection) -> Any:
    """The encoder wrapper (for :func:`facecall.client.encoders.encoder_wrapper`) that encrypts
    what Opus and VP8 encoders make with ``cipher``."""
    def wrap(encoder: Encoder, codec: RTCRtpCodecParameters) -> Encoder:
        if isinstance(encoder, OpusEncoder):
            return _SFrameEncoder(encoder, "audio", cipher)
        if isinstance(encoder, Vp8Encoder):
            return _SFrameEncoder(encoder, "video", cipher)
        return _Unprotectable(encoder, codec, cipher)
    return wrap


#: seconds between two key frame requests of one receiver while it waits for one
KEY_FRAME_ASK_INTERVAL = 0.2


class _DecryptingQueue:
    """Stands for a receiver's decoder queue: what is put in is decrypted first, with the keys
    of the device that fills the receiver's slot now (:attr:`sender`).

    Video waits for a key frame: at the start, after a frame that did not decrypt, and when the
    slot changes hands, the delta frames that follow refer to pictures the decoder never got
    and would decode to garbage (an SFU slot switches at a key frame, and a key changes under
    way), so they are dropped (``counts["awaiting_key_frame"]``) and the sender is asked for a
    key frame (a PLI, RFC 4585 §6.3.1, at most every :data:`KEY_FRAME_ASK_INTERVAL`)."""

    def __init__(self, inner: queue.Queue[Any], receiver: RTCRtpReceiver, kind: str,
                 cipher: FrameProtection) -> None:
        self.inner, self.receiver, self.kind, self.cipher = inner, receiver, kind, cipher
        self._sender: str | None = None
        self._key_frame_needed = kind == "video"
        self._asked = float("-inf")

    @property
    def sender(self) -> str | None:
        return self._sender

    @sender.setter
    def sender(self, device: str | None) -> None:
        if device != self._sender:
            self._sender = device
            self._key_frame_needed = self.kind == "video"

    def put(self, item: Any) -> None:
        if item is None:  # the receiver stops
            self.inner.put(None)
            return
        codec, frame = item
        if self._key_frame_needed and not is_key_frame(frame.data):
            self.cipher.counts["awaiting_key_frame"] += 1
            self._ask_for_key_frame()
            return
        plain = self.cipher.decrypt(self.kind, frame.data, self._sender)
        if plain is None:
            if self.kind == "video":
                self._key_frame_needed = True
                self._ask_for_key_frame()
            return
        self._key_frame_needed = False
        frame.data = plain
        self.inner.put((codec, frame))

    def _ask_for_key_frame(self) -> None:
        """The receiver sends a PLI with its next packet (aiortc's decoder-error path)."""
        now = time.monotonic()
        if now - self._asked >= KEY_FRAME_ASK_INTERVAL:
            self._asked = now
            self.receiver._RTCRtpReceiver__decoder_error.set()  # type: ignore[attr-defined]

    def open_payload(self, data: bytes) -> bytes | None:
        """One audio frame decrypted, for a receive path that decodes without this queue (the
        media engine's Opus buffer, facecall.media.engine.receiver); None: it does not."""
        return self.cipher.decrypt(self.kind, data, self._sender)

    def get(self, *args: Any, **kwargs: Any) -> Any:
        return self.inner.get(*args, **kwargs)


_DECODER_QUEUE = "_RTCRtpReceiver__decoder_queue"


def decrypt_frames(receiver: RTCRtpReceiver, kind: str, cipher: FrameProtection) -> None:
    """Make ``receiver`` (of ``kind``) decrypt every frame before its decoder sees it, with the
    keys of the device :func:`frames_from` names (until then it decodes nothing). Call before
    the receiver starts (before the remote description is applied)."""
    current = getattr(receiver, _DECODER_QUEUE)
    if isinstance(current, _DecryptingQueue):
        return
    setattr(receiver, _DECODER_QUEUE, _DecryptingQueue(current, receiver, kind, cipher))


def frames_from(receiver: RTCRtpReceiver, device: str | None) -> None:
    """The frames ``receiver`` gets come from ``device`` from now on (None: nobody): who the SFU
    says fills its slot. Only that device's keys decrypt them."""
    queue_ = getattr(receiver, _DECODER_QUEUE)
    if not isinstance(queue_, _DecryptingQueue):
        raise TypeError("frames_from needs a receiver that decrypt_frames set up")
    queue_.sender = device
