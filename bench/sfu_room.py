"""What forwarding through a Room costs the SFU (docs/sfu.md), per forwarded packet, beside the
anchor: aiortc's own SRTP work for the same packets (libsrtp unprotect of each incoming packet
and protect of each copy going out), measured in the same run.

N aiortc peers (no media tracks: nothing encodes or decodes) join a Room on 127.0.0.1 and
connect for real (ICE, DTLS-SRTP). Then every peer "publishes" real VP8 packets (720p, ~1,200
bytes, from aiortc's encoder): each is SRTP-protected beforehand and, in the timed loop, goes
the whole way an incoming packet goes on the SFU — SRTP unprotect, aiortc's RTP parse and
router, the room (munging, VP8 picture numbers, NACK cache) — and out to the N-1 others
(SRTP protect, UDP send). CPU is this thread's (``time.thread_time``), so the peers' own
receiving, in other turns of the loop, is not counted.

    .venv/bin/python bench/sfu_room.py [--participants 4] [--packets 5000]

As root, run it in a loopback-only namespace like the tests:
``unshare -n sh -c 'ip link set lo up && .venv/bin/python bench/sfu_room.py'``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import time

from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.rtcrtpparameters import RTCRtpReceiveParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket
from pylibsrtp import Policy, Session

from facecall.client.ice import host_addresses
from facecall.sfu.room import Room
from facecall.sfu.sdp import parse_offer
from sfu_forward import vp8_packets

LOOPBACK = ["127.0.0.1"]


def srtp_pair() -> tuple[Session, Session]:
    """A protect session and the matching unprotect session (AES-CM-128 + HMAC-SHA1-80)."""
    key = os.urandom(30)
    profile = Policy.SRTP_PROFILE_AES128_CM_SHA1_80
    tx = Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile)
    rx = Policy(key=key, ssrc_type=Policy.SSRC_ANY_INBOUND, srtp_profile=profile)
    return Session(tx), Session(rx)


def streams(payloads: list[RtpPacket], ssrcs: list[int], count: int, pt: int,
            extensions: HeaderExtensionsMap, mid: str) -> list[bytes]:
    """``count`` packets of every publisher, interleaved; the clip repeats one second later
    each time round, sequence numbers running on. Each carries the header extensions a
    browser's or aiortc's video packets carry: MID and abs-send-time (30 packets a frame of
    33 ms apart)."""
    out = []
    for n in range(count):
        base = payloads[n % len(payloads)]
        timestamp = (base.timestamp + n // len(payloads) * 90000) % (1 << 32)
        for ssrc in ssrcs:
            packet = RtpPacket(payload_type=pt, marker=base.marker, sequence_number=n % 65536,
                               timestamp=timestamp, ssrc=ssrc, payload=base.payload)
            packet.extensions.mid = mid
            packet.extensions.abs_send_time = int(n / 30 / 30 * 262144) & 0xFFFFFF
            out.append(bytes(packet.serialize(extensions)))
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--participants", type=int, default=4)
    parser.add_argument("--packets", type=int, default=5000, help="per publisher (default 5000)")
    args = parser.parse_args()
    n = args.participants
    room = Room(slots=n - 1, silence_timeout=3600)
    peers = []
    for i in range(n):
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        pc.addTransceiver("video", direction="sendonly")
        for _ in range(n - 1):
            pc.addTransceiver("video", direction="recvonly")
        with host_addresses(LOOPBACK):
            await pc.setLocalDescription(await pc.createOffer())
            answer = await room.join(f"p{i}", pc.localDescription.sdp)
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        peers.append(pc)
    deadline = time.monotonic() + 20
    while any(p.transport.state != "connected" for p in room.participants.values()):
        if time.monotonic() > deadline:
            raise SystemExit("the peers did not connect")
        await asyncio.sleep(0.05)

    raw = [RtpPacket.parse(b) for b in vp8_packets()]
    offer = parse_offer(peers[0].localDescription.sdp, slots=n - 1)
    pt = offer.media[0].codec.payloadType
    extensions = HeaderExtensionsMap()
    extensions.configure(RTCRtpReceiveParameters(headerExtensions=offer.header_extensions))
    participants = list(room.participants.values())
    ssrcs = [p.source("video") for p in participants]
    packets = streams(raw, ssrcs, args.packets, pt, extensions, offer.media[0].mid)
    by_ssrc = {p.source("video"): p for p in participants}
    tx, rx = srtp_pair()
    protected = [tx.protect(b) for b in packets]
    anchor_tx, anchor_rx = srtp_pair()
    anchor_in = [anchor_tx.protect(b) for b in packets]
    out_sessions = [srtp_pair()[0] for _ in range(n - 1)]

    await asyncio.sleep(0.5)  # let the slots settle
    forwarded = room.stats.forwarded
    started = time.thread_time()
    for data in protected:
        clear = rx.unprotect(data)
        transport = by_ssrc[int.from_bytes(clear[8:12], "big")].transport
        await transport._dtls._handle_rtp_data(clear, arrival_time_ms=0)  # parse, route, room, send
    ours = time.thread_time() - started
    forwarded = room.stats.forwarded - forwarded

    started = time.thread_time()
    for data in anchor_in:
        clear = anchor_rx.unprotect(data)
        for session in out_sessions:
            session.protect(clear)
    anchor = time.thread_time() - started

    anchor_tx, anchor_rx = srtp_pair()
    anchor_in = [anchor_tx.protect(b) for b in packets]
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    out.setblocking(False)
    out_sessions = [srtp_pair()[0] for _ in range(n - 1)]
    started = time.thread_time()
    for data in anchor_in:
        clear = anchor_rx.unprotect(data)
        for session in out_sessions:
            try:
                out.sendto(session.protect(clear), sink.getsockname())
            except BlockingIOError:
                pass
    with_send = time.thread_time() - started
    sink.close()
    out.close()

    print(f"{n} participants, {len(packets)} packets in ({len(packets) // n} per publisher), "
          f"{forwarded} forwarded (expected {len(packets) * (n - 1)})")
    print(f"room (unprotect, parse, munge, protect, send): {ours / forwarded * 1e6:6.2f} µs per forwarded "
          f"packet ({forwarded / ours:,.0f} packets per CPU-second)")
    print(f"anchor (SRTP unprotect + protect only):         {anchor / forwarded * 1e6:6.2f} µs per "
          "forwarded packet")
    print(f"  the same with a UDP send per copy:             {with_send / forwarded * 1e6:6.2f} µs")
    print(f"ratio: {ours / anchor:.2f}")
    await room.close()
    for pc in peers:
        await pc.close()


if __name__ == "__main__":
    asyncio.run(main())
