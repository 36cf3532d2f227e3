"""Prometheus metrics of the SFU (default registry, served at ``/metrics`` with the rest).

The forwarding path counts in plain integers (:class:`facecall.sfu.room.RoomStats`, one per
room); each room adds what it counted since its last report to these counters on every tick
(:data:`facecall.sfu.room.TICK`) and when it closes, so no packet pays for a metric's lock. The
gauges move when a room opens or closes and a participant joins or leaves.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from prometheus_client import Counter, Gauge

ROOMS = Gauge("facecall_sfu_rooms", "Open group-call rooms on this node's SFU")
PARTICIPANTS = Gauge("facecall_sfu_participants", "Devices in this node's SFU rooms")
FORWARDED = Counter("facecall_sfu_forwarded_packets",
                    "RTP packets sent to subscribers' slots (retransmissions included)")
DROPPED = Counter("facecall_sfu_dropped_packets",
                  "RTP packets from participants not forwarded, by reason", ["reason"])
#: reason: unknown_ssrc (no stream of the sender's), invalid (payload type or size)
PLIS = Counter("facecall_sfu_plis_sent", "Picture loss indications sent to publishers")
NACKED = Counter("facecall_sfu_nacked_packets",
                 "Packets subscribers asked for again, by how they were answered", ["answer"])
#: answer: cache (resent from the SFU's cache), upstream (asked of the publisher), refused
#: (past the slot's retransmission budget)
FORWARD_ERRORS = Counter("facecall_sfu_forward_errors",
                         "Packets a slot could not be sent because of an error")
SENDER_REPORTS = Counter("facecall_sfu_sender_reports",
                         "Publishers' sender reports sent on to subscribers, translated")
CONGESTIONS = Counter("facecall_sfu_congestions",
                      "Subscribers' REMB or receiver reports that lowered what they are sent")
LAYER_SWITCHES = Counter("facecall_sfu_layer_switches",
                         "Video slots moved to another simulcast layer of the same publisher")

#: RoomStats field → the counter (and its label values) it adds to
_COUNTERS: dict[str, Any] = {
    "forwarded": FORWARDED,
    "dropped_unknown": DROPPED.labels("unknown_ssrc"),
    "dropped_invalid": DROPPED.labels("invalid"),
    "plis_sent": PLIS,
    "nacks_answered": NACKED.labels("cache"),
    "nacks_forwarded": NACKED.labels("upstream"),
    "nacks_refused": NACKED.labels("refused"),
    "forward_errors": FORWARD_ERRORS,
    "sender_reports": SENDER_REPORTS,
    "congestions": CONGESTIONS,
    "layer_switches": LAYER_SWITCHES,
}


def report(stats: Any, reported: Any) -> None:
    """Add what ``stats`` (a RoomStats) counted beyond ``reported`` (the same, as last
    reported) to the counters, and remember it in ``reported``."""
    for spec in fields(stats):
        now, before = getattr(stats, spec.name), getattr(reported, spec.name)
        if now > before and (counter := _COUNTERS.get(spec.name)) is not None:
            counter.inc(now - before)
        setattr(reported, spec.name, now)
