"""One participant's media transport on the SFU: ICE (RFC 8445) and DTLS-SRTP (RFC 5764)
from aiortc's ORTC objects, handing each decrypted RTP and RTCP packet to the room instead of
to a decoder — an SFU forwards, it never decodes (DESIGN.md).

:class:`SfuTransport` builds an ``RTCIceGatherer`` → ``RTCIceTransport`` → ``RTCDtlsTransport``
chain, and no ``RTCRtpReceiver`` or ``RTCRtpSender`` (those own decoders and encoders). With
BUNDLE (RFC 8843) one transport carries all of a participant's m-lines; RTP and RTCP share
its port (RFC 5761).

ICE is full ICE in the controlled role, not ICE-lite (RFC 8445 §2.5): aioice has no lite mode,
so the SFU also runs connectivity checks towards the client. Host candidates are aioice's
choice; a caller that needs particular addresses (``FACECALL_SFU_HOST_ADDRESSES``, tests:
127.0.0.1) wraps :meth:`gather` in :func:`facecall.ice_hosts.host_addresses` (as
:class:`~facecall.sfu.room.Room` does; the mechanism the SDK uses too).

**aiortc private names relied on** (aiortc 1.16; ``tests/sfu/test_transport.py`` checks each
one, so an upgrade that changes them fails there first):

* ``RTCDtlsTransport._rtp_router`` — its ``RtpRouter``: ``register_receiver(receiver, ssrcs,
  payload_types, mid)``, ``register_sender(sender, ssrc)``, ``unregister_receiver``,
  ``unregister_sender``. The router delivers every RTP packet whose payload type is ours to
  the one receiver registered for it, and RTCP feedback about an SSRC we send to the
  "sender" registered for that SSRC (and for SSRC 0: FIR);
* the receiver/sender protocol the router calls: ``_handle_rtp_packet(packet,
  arrival_time_ms)``, ``_handle_rtcp_packet(packet)``, ``_handle_disconnect()``;
* ``RTCDtlsTransport._rtp_header_extensions_map`` — the bundle's header extension IDs;
* ``RTCDtlsTransport._send_rtp(data)`` — SRTP/SRTCP protect and send;
* ``RTCDtlsTransport._set_role(role)`` — the DTLS role the answer chose (RFC 8842 §5.3);
* ``RTCDtlsTransport._rx_srtp`` — the inbound ``pylibsrtp.Session``, set before the state
  becomes ``connected``; we stand a :class:`_BoundedSrtp` in front of it (and prune
  ``RtpRouter.ssrc_table`` with it): see :data:`MAX_INBOUND_SSRCS`.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol

import pylibsrtp
from aiortc.rtcdtlstransport import (
    RTCCertificate,
    RTCDtlsFingerprint,
    RTCDtlsParameters,
    RTCDtlsTransport,
    RtpRouter,
)
from aiortc.rtcicetransport import (
    RTCIceCandidate,
    RTCIceGatherer,
    RTCIceParameters,
    RTCIceServer,
    RTCIceTransport,
)
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpReceiveParameters
from aiortc.rtp import AnyRtcpPacket, RtcpRrPacket, RtcpSrPacket, RtpPacket

logger = logging.getLogger(__name__)

#: inbound SSRCs whose state is kept per participant. For every new SSRC of an authenticated
#: packet, libsrtp makes a stream (keys, a replay window: about half a kilobyte, and a key
#: derivation's CPU) and aiortc's router learns a table entry; neither ever forgets one, so a
#: participant sending on ever new SSRCs would grow both without bound. A real client uses a
#: few (audio, video, RTX, simulcast layers, its receivers' RTCP SSRCs); beyond this, the
#: least recently seen is forgotten (if it comes back, it starts a new replay window: RFC 3711
#: §3.3.2)
MAX_INBOUND_SSRCS = 32


class PacketHandler(Protocol):
    """What a transport hands its packets to (the room)."""

    async def handle_rtp(self, transport: SfuTransport, packet: RtpPacket, arrival: float) -> None:
        """A decrypted RTP packet; ``arrival`` on the ``time.monotonic`` clock."""

    async def handle_rtcp(self, transport: SfuTransport, packet: AnyRtcpPacket) -> None:
        """One decrypted RTCP packet (compound packets come one by one)."""

    def handle_closed(self, transport: SfuTransport) -> None:
        """The transport closed or failed (DTLS close_notify, ICE failure, or :meth:`close`)."""


class _BoundedSrtp:
    """Stands for a DTLS transport's inbound SRTP session (``RTCDtlsTransport._rx_srtp``):
    unprotects as it does, and keeps at most :data:`MAX_INBOUND_SSRCS` SSRCs' streams in
    libsrtp and in the router's SSRC table."""

    def __init__(self, session: pylibsrtp.Session, router: RtpRouter) -> None:
        self._session = session
        self._router = router
        self._ssrcs: OrderedDict[int, None] = OrderedDict()
        self.forgotten = 0

    def unprotect(self, data: bytes) -> bytes:
        out = self._session.unprotect(data)  # raises for what does not authenticate
        self._seen(int.from_bytes(data[8:12], "big"))  # RTP: the SSRC (RFC 3550 §5.1)
        return out

    def unprotect_rtcp(self, data: bytes) -> bytes:
        out = self._session.unprotect_rtcp(data)
        self._seen(int.from_bytes(data[4:8], "big"))  # RTCP: the sender's SSRC (§6.4.1)
        return out

    def _seen(self, ssrc: int) -> None:
        self._ssrcs[ssrc] = None
        self._ssrcs.move_to_end(ssrc)
        while len(self._ssrcs) > MAX_INBOUND_SSRCS:
            old, _ = self._ssrcs.popitem(last=False)
            self._router.ssrc_table.pop(old, None)
            try:
                self._session.remove_stream(old)
            except pylibsrtp.Error:
                pass
            self.forgotten += 1


class _Sink:
    """Stands where aiortc's router expects an ``RTCRtpReceiver`` (and, for RTCP about the
    SSRCs we send, an ``RTCRtpSender``): the methods it calls, passing packets on."""

    def __init__(self, transport: SfuTransport) -> None:
        self._transport = transport

    async def _handle_rtp_packet(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        try:
            await self._transport._deliver_rtp(packet, time.monotonic())
        except Exception:  # an error escaping here would end aiortc's receive loop for good
            self._failed("RTP")

    async def _handle_rtcp_packet(self, packet: AnyRtcpPacket) -> None:
        try:
            await self._transport._deliver_rtcp(packet)
        except Exception:
            self._failed("RTCP")

    def _failed(self, what: str) -> None:
        """Log the 1st, 2nd, 4th, 8th... failure: a participant whose every packet makes the
        handler fail must not flood the log."""
        errors = self._transport.handler_errors = self._transport.handler_errors + 1
        if errors & (errors - 1) == 0:
            logger.exception("sfu transport: %s handler failed (%d times)", what, errors)

    def _handle_disconnect(self) -> None:
        self._transport._closed()


class SfuTransport:
    """ICE + DTLS-SRTP towards one participant.

    Use: :meth:`gather`, put :attr:`ice_parameters`, :attr:`candidates` and
    :attr:`fingerprints` in the answer, :meth:`configure` what the offer negotiated, then
    :meth:`connect`. Packets go to ``handler``; send with :meth:`send_rtp` / :meth:`send_rtcp`.
    """

    def __init__(self, handler: PacketHandler, *, ice_servers: Sequence[RTCIceServer] = (),
                 certificate: RTCCertificate | None = None) -> None:
        self.handler = handler
        self._gatherer = RTCIceGatherer(iceServers=list(ice_servers))
        self._ice = RTCIceTransport(self._gatherer)
        self._dtls = RTCDtlsTransport(self._ice, [certificate or RTCCertificate.generateCertificate()])
        self._sink = _Sink(self)
        self._sent_ssrcs: set[int] = set()
        self._is_closed = False
        #: our SSRC as the sender of RTCP feedback (RFC 4585 §6.1 "packet sender")
        self.rtcp_ssrc = secrets.randbits(32) or 1
        self.rtp_sent = self.rtp_received = self.rtcp_received = self.send_failures = 0
        self.handler_errors = 0
        self._dtls.on("statechange", self._dtls_state_changed)

    @property
    def state(self) -> str:
        """The DTLS state: ``new``, ``connecting``, ``connected``, ``closed`` or ``failed``."""
        return self._dtls.state

    @property
    def ice_state(self) -> str:
        return self._ice.state

    async def gather(self) -> None:
        """Gather local candidates (host addresses: see the module docstring)."""
        await self._gatherer.gather()

    @property
    def ice_parameters(self) -> RTCIceParameters:
        return self._gatherer.getLocalParameters()

    @property
    def candidates(self) -> list[RTCIceCandidate]:
        return self._gatherer.getLocalCandidates()

    @property
    def fingerprints(self) -> list[RTCDtlsFingerprint]:
        return self._dtls.getLocalParameters().fingerprints

    def configure(self, header_extensions: Sequence[RTCRtpHeaderExtensionParameters],
                  payload_types: Sequence[int], sent_ssrcs: Sequence[int]) -> None:
        """Take RTP with these payload types and header extension IDs (the offer's), and the
        RTCP feedback about ``sent_ssrcs`` (the streams we send: RR blocks, NACK, PLI, FIR,
        REMB)."""
        self._dtls._rtp_header_extensions_map.configure(
            RTCRtpReceiveParameters(headerExtensions=list(header_extensions)))
        router = self._dtls._rtp_router
        router.unregister_receiver(self._sink)
        router.register_receiver(self._sink, ssrcs=[], payload_types=sorted(set(payload_types)))
        self.set_sent_ssrcs(sent_ssrcs)

    def set_sent_ssrcs(self, ssrcs: Sequence[int]) -> None:
        router = self._dtls._rtp_router
        router.unregister_sender(self._sink)
        self._sent_ssrcs = set(ssrcs)
        # FIR names its streams in the FCI, with media source SSRC 0 (RFC 5104 §4.3.1.2); the
        # router looks only at the media source, so take what comes for 0 too
        for ssrc in self._sent_ssrcs | {0}:
            router.register_sender(self._sink, ssrc)

    async def connect(self, ice: RTCIceParameters, candidates: Sequence[RTCIceCandidate],
                      dtls: RTCDtlsParameters, role: str) -> bool:
        """Run ICE with the remote side's credentials and candidates (all known: no trickle),
        then the DTLS handshake as ``role`` (``server``: we answered ``a=setup:passive``).
        True once connected; False if ICE or DTLS failed or the transport was closed."""
        try:
            for candidate in candidates:
                await self._ice.addRemoteCandidate(candidate)
            await self._ice.addRemoteCandidate(None)
            await self._ice.start(ice)
            if self._ice.state != "completed" or self._is_closed:
                return False
            self._dtls._set_role(role)
            await self._dtls.start(RTCDtlsParameters(fingerprints=list(dtls.fingerprints), role="auto"))
        except (ConnectionError, OSError) as exc:  # a socket gone under a closing transport
            logger.debug("sfu transport: connect failed: %s", exc)
            return False
        return self.state == "connected"

    async def send_rtp(self, packet: RtpPacket) -> bool:
        """Protect and send one RTP packet (header extensions written with the negotiated IDs).
        False, and nothing sent, if the transport is not connected."""
        if self._dtls.state != "connected":
            return False
        try:
            await self._dtls._send_rtp(packet.serialize(self._dtls._rtp_header_extensions_map))
        except (ConnectionError, OSError):
            self.send_failures += 1
            return False
        self.rtp_sent += 1
        return True

    async def send_rtcp(self, packets: Sequence[AnyRtcpPacket]) -> bool:
        """Send one compound RTCP packet: ``packets``, after an empty receiver report unless
        they begin with one (RFC 3550 §6.1: a compound packet begins with SR or RR)."""
        if self._dtls.state != "connected":
            return False
        first = [] if packets and isinstance(packets[0], (RtcpRrPacket, RtcpSrPacket)) \
            else [RtcpRrPacket(ssrc=self.rtcp_ssrc)]
        data = b"".join(bytes(p) for p in [*first, *packets])
        try:
            await self._dtls._send_rtp(data)
        except (ConnectionError, OSError):
            self.send_failures += 1
            return False
        return True

    async def close(self) -> None:
        """Close DTLS (close_notify) and ICE; the handler hears :meth:`PacketHandler.handle_closed`."""
        self._closed()
        router = self._dtls._rtp_router
        router.unregister_receiver(self._sink)
        router.unregister_sender(self._sink)
        try:
            await self._dtls.stop()
        except (ConnectionError, OSError):
            pass
        await self._ice.stop()

    async def _deliver_rtp(self, packet: RtpPacket, arrival: float) -> None:
        self.rtp_received += 1
        await self.handler.handle_rtp(self, packet, arrival)

    async def _deliver_rtcp(self, packet: AnyRtcpPacket) -> None:
        self.rtcp_received += 1
        await self.handler.handle_rtcp(self, packet)

    def _dtls_state_changed(self) -> None:
        if self._dtls.state == "connected" and self._dtls._rx_srtp is not None \
                and not isinstance(self._dtls._rx_srtp, _BoundedSrtp):
            # before the first SRTP packet: aiortc starts its receive loop after this
            self._dtls._rx_srtp = _BoundedSrtp(self._dtls._rx_srtp, self._dtls._rtp_router)
        if self._dtls.state in ("closed", "failed"):
            self._closed()

    def _closed(self) -> None:
        if not self._is_closed:
            self._is_closed = True
            self.handler.handle_closed(self)

