"""The SFU's side of the offer/answer exchange (RFC 8829 JSEP §5.3, RFC 3264 §6).

Each participant's client *offers*; the SFU *answers*. The offer's shape (one transport for
everything, so BUNDLE, RFC 8843, with RTP and RTCP on one port, RFC 8035/5761):

* at most one sending (``sendonly`` or ``sendrecv``) ``audio`` m-line with Opus and one sending
  ``video`` m-line with VP8 — the participant's own media;
* up to ``slots`` ``recvonly`` audio and ``slots`` ``recvonly`` video m-lines — its receive
  *slots*: each carries whichever other participant the room puts there, as one steady stream
  (:class:`facecall.sfu.munger.RtpMunger`);
* ICE credentials and every candidate (no trickle: aioice gathers before the offer is made),
  and a DTLS fingerprint (RFC 8122 §5).

The sending video m-line may be **simulcast** (RFC 8853): up to :data:`MAX_LAYERS` RTP streams
of one source, each named by a ``rid`` (``a=rid:<id> send``, RFC 8851 §4) and listed in
``a=simulcast:send`` (RFC 8853 §5.1), its packets carrying the ``rid`` in the RtpStreamId header
extension (RFC 8852 §3.1), which must be offered. The answer takes every listed layer
(``a=rid:<id> recv``, ``a=simulcast:recv``); the SFU forwards one per subscriber
(:mod:`facecall.sfu.layers`). Alternatives (``a,b``) keep their first; a paused one (``~``)
is taken as listed.

The answer (:func:`build_answer`) keeps the offer's m-lines in order (RFC 3264 §6), one codec
each — the offer's own payload type for Opus or VP8, with NACK, PLI (RFC 4585 §4.2) and FIR
(RFC 5104 §7.1) feedback for video — the header extensions the SFU reads (MID, RFC 8843
§14; audio level, RFC 6464; abs-send-time), and for every slot the SSRC and ``msid`` of the
stream the SFU will send there (RFC 5576 §4.1, RFC 8830 §2). Anything else is refused with an
:class:`SfuOfferError` naming what is wrong.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from aiortc.rtcdtlstransport import RTCDtlsFingerprint, RTCDtlsParameters
from aiortc.rtcicetransport import RTCIceCandidate, RTCIceParameters
from aiortc.rtcrtpparameters import (
    RTCRtcpFeedback,
    RTCRtpCodecParameters,
    RTCRtpHeaderExtensionParameters,
)
from aiortc.sdp import GroupDescription, MediaDescription, SessionDescription, SsrcDescription

#: an offer longer than this (UTF-8) is refused before it is parsed: 2 + 2K m-lines of a real
#: browser offer take about 12 kB at K = 3 (DESIGN.md invariant 3: size limits everywhere)
MAX_OFFER_BYTES = 64 * 1024
#: remote ICE candidates taken from one offer. The SFU runs connectivity checks towards each
#: (full ICE), so more would let one offer aim a burst of STUN requests at many addresses;
#: RFC 8445 §6.1.2.5 bounds the check list (100 pairs by default) for the same reason, and a
#: real client offers a handful (host, srflx, relay per interface)
MAX_CANDIDATES = 16
#: a ``mid`` is 1 to 16 token characters (RFC 8866 §9 token-char): the SFU writes it in the MID
#: header extension of every packet it sends (RFC 8843 §15.1), and 16 octets is the most a
#: one-byte header extension element holds (RFC 8285 §4.2); libwebrtc has the same limit
MID_PATTERN = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`{|}~]{1,16}")
#: ICE credentials (RFC 8839 §5.4): ice-char is ALPHA / DIGIT / "+" / "/"; the ufrag has 4 to
#: 256 of them, the password 22 to 256. They go into every STUN check the SFU sends (USERNAME)
ICE_UFRAG_PATTERN = re.compile(r"[A-Za-z0-9+/]{4,256}")
ICE_PWD_PATTERN = re.compile(r"[A-Za-z0-9+/]{22,256}")
#: header extensions the SFU reads or writes; others are left out of the answer
URI_MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
URI_AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
URI_ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
URI_RTP_STREAM_ID = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
EXTENSIONS = {"audio": (URI_MID, URI_AUDIO_LEVEL),
              "video": (URI_MID, URI_ABS_SEND_TIME, URI_RTP_STREAM_ID)}
CODECS = {"audio": ("audio/opus", 48000), "video": ("video/VP8", 90000)}
#: NACK, PLI, FIR, and REMB (draft-alvestrand-rmcat-remb §2.1: ``goog-remb``): the SFU reads
#: its subscribers' estimates (:mod:`facecall.sfu.layers`); it sends publishers none
#: (:mod:`facecall.sfu.upstream` says why)
VIDEO_FEEDBACK = (RTCRtcpFeedback("nack"), RTCRtcpFeedback("nack", "pli"),
                  RTCRtcpFeedback("ccm", "fir"), RTCRtcpFeedback("goog-remb"))
#: simulcast layers taken from one sending video m-line (a browser sends at most 3 for VP8)
MAX_LAYERS = 3
#: rid-id (RFC 8851 §10: ALPHA / DIGIT / "-" / "_"), at most 16 characters: one-byte header
#: extension elements hold 16 octets (RFC 8285 §4.2), and libwebrtc refuses longer ones too
RID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,16}")
SENDING = ("sendonly", "sendrecv")
ANSWER_DIRECTION = {"sendonly": "recvonly", "sendrecv": "recvonly", "recvonly": "sendonly",
                    "inactive": "inactive"}
CNAME = "facecall-sfu"


class SfuOfferError(ValueError):
    """An offer the SFU cannot answer; the message says why."""


@dataclass(slots=True)
class OfferedMedia:
    """One audio or video m-line of the offer, as the SFU uses it."""

    mid: str
    kind: str
    direction: str
    codec: RTCRtpCodecParameters
    """Opus or VP8 as offered (its payload type is the one used on this m-line)."""
    ssrc: int | None
    """The sender's SSRC (``a=ssrc``) on a sending m-line, if announced (never with rids)."""
    rids: tuple[str, ...] = ()
    """Its simulcast layers' rids in ``a=simulcast`` order (empty: one stream)."""

    @property
    def sends(self) -> bool:
        """The participant publishes on this m-line."""
        return self.direction in SENDING

    @property
    def is_slot(self) -> bool:
        """The participant receives on this m-line: a receive slot."""
        return self.direction == "recvonly"


@dataclass(slots=True)
class Offer:
    """A checked offer: transport parameters and the m-lines in order."""

    ice: RTCIceParameters
    candidates: list[RTCIceCandidate]
    dtls: RTCDtlsParameters
    media: list[OfferedMedia]
    header_extensions: list[RTCRtpHeaderExtensionParameters] = field(default_factory=list)

    @property
    def sfu_dtls_role(self) -> str:
        """``server`` (``a=setup:passive``) unless the offerer insists on being the server
        (RFC 8842 §5.3: the answerer must not answer ``actpass``)."""
        return "client" if self.dtls.role == "server" else "server"

    def sending(self, kind: str) -> OfferedMedia | None:
        return next((m for m in self.media if m.kind == kind and m.sends), None)

    def slots(self, kind: str) -> list[OfferedMedia]:
        return [m for m in self.media if m.kind == kind and m.is_slot]


def parse_offer(sdp: str, slots: int) -> Offer:
    """Check an offer against the shape above; :class:`SfuOfferError` if it does not fit."""
    if not isinstance(sdp, str):
        raise SfuOfferError("empty offer")
    # characters first (cheap, and a bound on the encoding below), then the UTF-8 bytes
    if len(sdp) > MAX_OFFER_BYTES or len(sdp.encode("utf-8", "surrogatepass")) > MAX_OFFER_BYTES:
        raise SfuOfferError(f"offer larger than {MAX_OFFER_BYTES} bytes")
    if not sdp.strip():
        raise SfuOfferError("empty offer")
    if not sdp.lstrip().startswith("v=0"):
        raise SfuOfferError("not an SDP offer (it must begin with v=0)")
    try:
        session = SessionDescription.parse(sdp)
    except Exception as exc:  # aiortc's parser raises whatever a malformed line causes
        raise SfuOfferError(f"not an SDP offer: {type(exc).__name__} {exc}".strip()) from None
    if not session.media:
        raise SfuOfferError("the offer has no m-lines")
    if len(session.media) > 2 + 2 * slots:
        raise SfuOfferError(f"too many m-lines: {len(session.media)} (at most {2 + 2 * slots}: "
                            f"one audio and one video to send, {slots} of each to receive)")
    media = [_check_media(m) for m in session.media]
    for offered, (rids, simulcast), m in zip(media, _sections_simulcast(sdp), session.media,
                                               strict=False):
        if rids or simulcast:
            _take_layers(offered, m, rids, simulcast)
    mids = [m.mid for m in media]
    if len(set(mids)) != len(mids):
        raise SfuOfferError("two m-lines share a mid")
    bundle = next((g for g in session.group if g.semantic == "BUNDLE"), None)
    if bundle is None:
        raise SfuOfferError("no BUNDLE group: the SFU takes all media on one transport (RFC 8843)")
    if set(map(str, bundle.items)) != set(mids):
        raise SfuOfferError("the BUNDLE group must hold every m-line")
    ssrcs = [m.ssrc for m in media if m.ssrc is not None]
    if len(set(ssrcs)) != len(ssrcs):
        raise SfuOfferError("two m-lines announce the same SSRC")
    for kind in ("audio", "video"):
        if sum(m.kind == kind and m.sends for m in media) > 1:
            raise SfuOfferError(f"more than one sending {kind} m-line")
        if sum(m.kind == kind and m.is_slot for m in media) > slots:
            raise SfuOfferError(f"more than {slots} recvonly {kind} m-lines (receive slots)")
    first = session.media[0]
    ice, dtls = first.ice, first.dtls
    if ice is None or not ice.usernameFragment or not ice.password:
        raise SfuOfferError("no ICE ufrag/pwd")
    if not (ICE_UFRAG_PATTERN.fullmatch(ice.usernameFragment)
            and ICE_PWD_PATTERN.fullmatch(ice.password)):
        raise SfuOfferError("malformed ICE ufrag/pwd (RFC 8839 §5.4)")
    if dtls is None or not dtls.fingerprints:
        raise SfuOfferError("no DTLS fingerprint")
    candidates = _candidates(session)
    if not candidates:
        raise SfuOfferError("no ICE candidates in the offer (the SFU takes no trickled ones)")
    if len(candidates) > MAX_CANDIDATES:
        raise SfuOfferError(f"too many ICE candidates: {len(candidates)} (at most {MAX_CANDIDATES})")
    return Offer(ice=ice, candidates=candidates, dtls=dtls, media=media,
                 header_extensions=_header_extensions(session))


def _check_media(m: MediaDescription) -> OfferedMedia:
    mid = m.rtp.muxId
    if m.kind not in CODECS:
        raise SfuOfferError(f"unsupported m-line kind {m.kind!r} (only audio and video)")
    if not mid:
        raise SfuOfferError(f"a {m.kind} m-line without a=mid")
    if not MID_PATTERN.fullmatch(mid):
        raise SfuOfferError(f"a=mid {mid[:20]!r}: not 1 to 16 token characters")
    if not m.rtcp_mux:
        raise SfuOfferError(f"m-line {mid}: no a=rtcp-mux (RFC 5761)")
    direction = m.direction or "sendrecv"
    mime, rate = CODECS[m.kind]
    codec = next((c for c in m.rtp.codecs if c.mimeType.lower() == mime.lower()
                  and c.clockRate == rate), None)
    if codec is None:
        raise SfuOfferError(f"m-line {mid}: no {mime.split('/')[1]} offered")
    ssrc = m.ssrc[0].ssrc if m.ssrc and direction in SENDING else None
    return OfferedMedia(mid=mid, kind=m.kind, direction=direction, codec=codec, ssrc=ssrc)


def _sections_simulcast(sdp: str) -> list[tuple[list[str], list[str]]]:
    """Per m-section, its ``a=rid:`` and ``a=simulcast:`` values (aiortc's parser drops them)."""
    sections: list[tuple[list[str], list[str]]] = []
    for line in sdp.splitlines():
        if line.startswith("m="):
            sections.append(([], []))
        elif sections and line.startswith("a=rid:"):
            sections[-1][0].append(line[6:].strip())
        elif sections and line.startswith("a=simulcast:"):
            sections[-1][1].append(line[12:].strip())
    return sections


def _take_layers(offered: OfferedMedia, m: MediaDescription, rids: list[str],
                 simulcast: list[str]) -> None:
    """Check an m-line's rids and simulcast list (RFC 8851 §4, RFC 8853 §5.1); set its layers."""
    where = f"m-line {offered.mid}"
    if offered.kind != "video" or not offered.sends:
        raise SfuOfferError(f"{where}: simulcast (a=rid, a=simulcast) only on the sending video m-line")
    if len(rids) > 2 * MAX_LAYERS:
        raise SfuOfferError(f"{where}: too many a=rid lines ({len(rids)})")
    declared: list[str] = []
    for value in rids:
        rid, _, rest = value.partition(" ")
        direction = rest.split(" ", 1)[0]
        if not RID_PATTERN.fullmatch(rid):
            raise SfuOfferError(f"{where}: a=rid {rid[:20]!r}: not 1 to 16 letters, digits, - or _")
        if direction != "send":
            raise SfuOfferError(f"{where}: a=rid:{rid} must be 'send' (the SFU receives simulcast)")
        if rid in declared:
            raise SfuOfferError(f"{where}: a=rid:{rid} declared twice")
        declared.append(rid)
    if len(simulcast) != 1:
        raise SfuOfferError(f"{where}: a=rid needs exactly one a=simulcast line (RFC 8853 §5.1)"
                            if simulcast == [] else f"{where}: more than one a=simulcast line")
    direction, _, streams = simulcast[0].partition(" ")
    if direction != "send" or not streams or " " in streams.strip():
        raise SfuOfferError(f"{where}: a=simulcast must be 'send <rid>;<rid>...' "
                            f"(the SFU receives simulcast)")
    layers: list[str] = []
    for entry in streams.strip().split(";"):
        rid = entry.split(",", 1)[0].lstrip("~")  # first alternative; paused taken as listed
        if rid not in declared:
            raise SfuOfferError(f"{where}: a=simulcast names {rid[:20]!r}, which no a=rid declares")
        if rid in layers:
            raise SfuOfferError(f"{where}: a=simulcast names {rid} twice")
        layers.append(rid)
    if len(layers) > MAX_LAYERS:
        raise SfuOfferError(f"{where}: {len(layers)} simulcast layers (at most {MAX_LAYERS})")
    if not any(ext.uri == URI_RTP_STREAM_ID for ext in m.rtp.headerExtensions):
        raise SfuOfferError(f"{where}: simulcast without the rtp-stream-id header extension "
                            f"(RFC 8852 §3.1): the SFU could not tell the layers apart")
    offered.rids = tuple(layers)
    offered.ssrc = None  # each layer's SSRC comes with its rid


def _candidates(session: SessionDescription) -> list[RTCIceCandidate]:
    seen, out = set(), []
    for m in session.media:
        for c in m.ice_candidates:
            key = (c.foundation, c.component, c.protocol, c.ip, c.port)
            if c.component == 1 and key not in seen:
                _check_candidate(c)
                seen.add(key)
                out.append(c)
    return out


def _check_candidate(c: RTCIceCandidate) -> None:
    """A candidate the SFU may send STUN checks to: a port (asyncio closes the socket on a
    send to one out of range), and a unicast IP address or an mDNS name (.local), never a
    multicast, broadcast or unspecified address (RFC 8445 §5.1.1.1 gathers none of those)."""
    if not 1 <= c.port <= 65535:
        raise SfuOfferError(f"ICE candidate port {c.port} out of range")
    if c.ip.endswith(".local"):
        return
    try:
        address = ipaddress.ip_address(c.ip)
    except ValueError:
        raise SfuOfferError(f"ICE candidate address {c.ip[:40]!r}: not an IP address or "
                            f"an mDNS name") from None
    if address.is_multicast or address.is_unspecified or address == ipaddress.ip_address(
            "255.255.255.255"):
        raise SfuOfferError(f"ICE candidate address {c.ip} is not a unicast address")


def _header_extensions(session: SessionDescription) -> list[RTCRtpHeaderExtensionParameters]:
    """The offered extensions the SFU uses; one ID means one URI across the bundle
    (RFC 8843 §9.1)."""
    by_id: dict[int, str] = {}
    for m in session.media:
        for ext in m.rtp.headerExtensions:
            if by_id.setdefault(ext.id, ext.uri) != ext.uri:
                raise SfuOfferError(f"extmap id {ext.id} names two extensions in one bundle")
    wanted = {uri for uris in EXTENSIONS.values() for uri in uris}
    for i, uri in by_id.items():
        if uri in wanted and not 1 <= i <= 255:  # RFC 8285 §5: 1-14 one-byte, up to 255 two-byte
            raise SfuOfferError(f"extmap id {i} for {uri} is out of range (1 to 255)")
    return [RTCRtpHeaderExtensionParameters(id=i, uri=u) for i, u in by_id.items() if u in wanted]


def build_answer(offer: Offer, *, ice: RTCIceParameters, candidates: list[RTCIceCandidate],
                 fingerprints: list[RTCDtlsFingerprint], slot_ssrcs: dict[str, int],
                 session_id: int) -> str:
    """The SFU's answer to ``offer``: its ICE credentials and candidates, its DTLS fingerprint
    and role, and per slot (``slot_ssrcs``: mid → the slot's outgoing SSRC) the stream it sends."""
    session = SessionDescription()
    session.origin = f"- {session_id} 1 IN IP4 0.0.0.0"
    session.group.append(GroupDescription(semantic="BUNDLE", items=[m.mid for m in offer.media]))
    session.msid_semantic.append(GroupDescription(semantic="WMS", items=["*"]))
    ids = {ext.uri: ext.id for ext in offer.header_extensions}
    for offered in offer.media:
        m = MediaDescription(kind=offered.kind, port=9, profile="UDP/TLS/RTP/SAVPF",
                             fmt=[offered.codec.payloadType])
        m.host = "0.0.0.0"
        m.rtcp_port, m.rtcp_host, m.rtcp_mux = 9, "0.0.0.0", True
        m.direction = ANSWER_DIRECTION[offered.direction]
        m.rtp.muxId = offered.mid
        m.rtp.codecs = [RTCRtpCodecParameters(
            mimeType=offered.codec.mimeType, clockRate=offered.codec.clockRate,
            channels=offered.codec.channels, payloadType=offered.codec.payloadType,
            rtcpFeedback=list(VIDEO_FEEDBACK) if offered.kind == "video" else [],
            parameters=dict(offered.codec.parameters))]
        m.rtp.headerExtensions = [RTCRtpHeaderExtensionParameters(id=ids[uri], uri=uri)
                                  for uri in EXTENSIONS[offered.kind] if uri in ids
                                  and (uri != URI_RTP_STREAM_ID or offered.rids)]
        if offered.is_slot:
            stream = f"slot-{offered.mid}"
            m.msid = f"{stream} {stream}-{offered.kind}"
            m.ssrc = [SsrcDescription(ssrc=slot_ssrcs[offered.mid], cname=CNAME, msid=m.msid)]
        m.ice = ice
        m.ice_candidates = list(candidates)
        m.ice_candidates_complete = True
        m.dtls = RTCDtlsParameters(fingerprints=list(fingerprints), role=offer.sfu_dtls_role)
        session.media.append(m)
    return _with_simulcast(str(session), offer)


def _with_simulcast(answer: str, offer: Offer) -> str:
    """The answer with ``a=rid:<id> recv`` and ``a=simulcast:recv`` (RFC 8853 §5.3) after the
    ``a=mid`` of each simulcast m-line (aiortc's writer has no such attributes)."""
    layered = {m.mid: m.rids for m in offer.media if m.rids}
    if not layered:
        return answer
    out: list[str] = []
    for line in answer.split("\r\n"):
        out.append(line)
        if line.startswith("a=mid:") and (rids := layered.get(line[6:])):
            out.extend(f"a=rid:{rid} recv" for rid in rids)
            out.append("a=simulcast:recv " + ";".join(rids))
    return "\r\n".join(out)
