"""SFrame (RFC 9605) on a 1:1 call's peer-to-peer media (docs/sframe.md, "1:1 calls"): the
same frames and keys as group media, between the two devices of the call.

P2P media is DTLS-SRTP between two devices whose fingerprints their identity keys sign; SFrame
adds the end-to-end layer DESIGN.md's first invariant asks of every call's media, so that no
hop that might terminate DTLS-SRTP (a misissued certificate, a relay that does) reads a frame.

* **Declared in the signed description.** A device that protects its 1:1 media with SFrame puts
  the session-level line :data:`SFRAME_LINE` (before the first ``m=`` line) in the text of every
  description it sends (:func:`declare`): the text its identity key signs, so a server cannot
  strip it. A connection's media is SFrame-protected when the description sent and the one
  received both carry it (:func:`declares`); with a device that does not (an older client, or
  an SDK device sending H.264, which SFrame cannot ride here) the media is DTLS-SRTP only, and
  :attr:`~facecall.client.call.Call.sframe` says so. The browser client follows the same rule.
* **Frames**: group media's wire form and code (:mod:`facecall.client.sframe_media`). A device
  that declares offers its codecs with VP8 first, and answers an offer that declares with VP8
  only (and Opus): an H.264 frame never goes out on a protected connection (the encoder sends
  nothing then), only on one the other device did not declare. Until the connection is known to be protected
  (:class:`AgreedCipher`) nothing is sent and nothing received is decoded; a connection
  that turns out unprotected passes frames through as they are.
* **Keys**: ``call.key``, exactly as in group media (:class:`~facecall.client.group_keys.GroupKeys`),
  with a member list of one — the remote device, and an epoch that counts how often this
  device set the media up anew with a device that lost its state (``call.rejoin``: a reloaded
  page has none of this device's keys). Every change (the first protected connection, a
  rejoin, another device of the other user after a handoff) makes a new sender key, sealed to
  the remote device; keys of a device that is no longer the remote one are dropped at once.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from facecall.client.group_keys import GroupKeys
from facecall.client.sframe_media import FrameCipher
from facecall.logs import get_logger

if TYPE_CHECKING:
    from facecall.client.call import Call

log = get_logger(__name__)

#: the session-level SDP attribute line by which a device says it SFrame-protects its 1:1 media
SFRAME_LINE = "a=facecall-sframe"
#: the only video codec a declaring device answers with: the one whose frames SFrame rides here
#: (the VP8 payload descriptor stays clear, RFC 7741 §4.2; H.264's packetization would cut the
#: ciphertext at start codes)
SFRAME_VIDEO_CODEC = "VP8"


def declare(sdp: str) -> str:
    """``sdp`` with :data:`SFRAME_LINE` at the end of its session section (RFC 8866 §5: session
    attributes come before the first media description); unchanged if it has the line."""
    if declares(sdp):
        return sdp
    newline = "\r\n" if "\r\n" in sdp else "\n"
    at = sdp.find(f"{newline}m=")
    if at < 0:  # no media description: the end of the session section is the end
        return f"{sdp.rstrip()}{newline}{SFRAME_LINE}{newline}"
    return f"{sdp[:at]}{newline}{SFRAME_LINE}{sdp[at:]}"


def declares(sdp: str) -> bool:
    """Whether a description's session section carries :data:`SFRAME_LINE` (a media section's
    line of that name does not count: the declaration is about the whole connection)."""
    for line in sdp.splitlines():
        line = line.strip()
        if line.startswith("m="):
            return False
        if line == SFRAME_LINE:
            return True
    return False


class AgreedCipher:
    """A call's :class:`~facecall.client.sframe_media.FrameCipher` as one peer connection uses
    it: :attr:`agreed` is None until that connection's descriptions are both known (nothing is
    sent, nothing decoded), then True (frames go through the cipher) or False (the other device
    does not declare SFrame: frames pass as they are, DTLS-SRTP only). Duck-types the cipher for
    the encoder wrapper and the decrypting queue."""

    def __init__(self, cipher: FrameCipher) -> None:
        self.cipher = cipher
        self.agreed: bool | None = None

    @property
    def counts(self) -> Counter[str]:
        return self.cipher.counts

    def encrypt(self, kind: str, frame: bytes) -> bytes | None:
        if self.agreed is None:
            self.cipher.counts["unagreed"] += 1
            return None
        return self.cipher.encrypt(kind, frame) if self.agreed else frame

    def passes_clear(self) -> bool:
        return self.agreed is False

    def decrypt(self, kind: str, data: bytes, sender: str | None) -> bytes | None:
        if self.agreed is None:
            self.cipher.counts["unagreed"] += 1
            return None
        return self.cipher.decrypt(kind, data, sender) if self.agreed else data


class PeerKeys:
    """The SFrame keys of one device's 1:1 media in one call (see the module docstring): the
    call's :class:`FrameCipher`, and the :class:`GroupKeys` that send this device's keys to the
    remote device and open the ones it sends."""

    def __init__(self, call: Call) -> None:
        self.cipher = FrameCipher()
        self.keys = GroupKeys(call, self.cipher)
        self.call_id = call.id
        self._member: tuple[str, str, int] | None = None
        """The remote device the keys go to now: (device id, user id, epoch)."""

    @property
    def remote_device(self) -> str | None:
        """The device this device's keys go to now (None: none, or not protected)."""
        return None if self._member is None else self._member[0]

    def agreed(self, user: str, device: str, protected: bool) -> None:
        """A connection with ``device`` (of ``user``) was negotiated, SFrame-``protected`` or
        not: the member list follows (a new device replaces the old one; an unprotected
        connection has none, and this device stops sending under a key the other one held)."""
        if not protected:
            if self._member is not None:
                log.warning("p2p_sframe.unprotected", call_id=self.call_id, device_id=device)
            self._set(None)
        elif self._member is None or self._member[0] != device:
            self._set((device, user, 0))

    def rejoined(self, device: str) -> None:
        """``device`` asked for the media anew (``call.rejoin``): it lost this device's keys, so
        it gets a new one (its own old keys are dropped: it makes new ones too)."""
        if self._member is not None and self._member[0] == device:
            self._set((device, self._member[1], self._member[2] + 1))

    def _set(self, member: tuple[str, str, int] | None) -> None:
        self._member = member
        members = {} if member is None else {member[0]: (member[1], member[2])}
        self.keys.set_members(members)

    def deliver(self, event: dict[str, object]) -> None:
        """A ``call.key`` event of this call."""
        self.keys.deliver(event)  # type: ignore[arg-type]

    def close(self) -> None:
        self.keys.close()
