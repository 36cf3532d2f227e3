"""Prometheus metrics of the STUN/TURN server (default registry, served at /metrics).

Per-packet counts are kept as plain integers on each allocation (see
:class:`facecall.turn.allocation.Usage`) and added to these counters by the server's
housekeeping and when an allocation ends, so the data path pays no metrics cost.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from facecall.turn.allocation import Allocation

ALLOCATIONS = Gauge("facecall_turn_allocations", "Live TURN allocations")
ALLOCATIONS_TOTAL = Counter("facecall_turn_allocations_created", "TURN allocations created")
REQUESTS = Counter(
    "facecall_turn_requests", "STUN/TURN requests answered", ["method", "result"]
)
PACKETS = Counter(
    "facecall_turn_relayed_packets", "Packets relayed", ["direction"]
)  # direction: to_peer, from_peer, dropped
BYTES = Counter("facecall_turn_relayed_bytes", "Application bytes relayed", ["direction"])
CONNECTIONS = Gauge("facecall_turn_stream_connections", "Open TCP/TLS client connections")

_METHOD_NAMES = {
    0x001: "binding",
    0x003: "allocate",
    0x004: "refresh",
    0x008: "create_permission",
    0x009: "channel_bind",
}

_to_peer_packets = PACKETS.labels("to_peer")
_from_peer_packets = PACKETS.labels("from_peer")
_dropped_packets = PACKETS.labels("dropped")
_to_peer_bytes = BYTES.labels("to_peer")
_from_peer_bytes = BYTES.labels("from_peer")


def count_request(method: int, code: int | None) -> None:
    """Count one answered request; ``code`` is the error code or None for success."""
    REQUESTS.labels(_METHOD_NAMES.get(method, "other"), "ok" if code is None else str(code)).inc()


def report_usage(allocation: Allocation) -> None:
    """Add what ``allocation`` relayed since the last report to the counters."""
    usage, reported = allocation.usage, allocation.reported
    _to_peer_packets.inc(usage.packets_to_peer - reported.packets_to_peer)
    _from_peer_packets.inc(usage.packets_from_peer - reported.packets_from_peer)
    _dropped_packets.inc(usage.dropped - reported.dropped)
    _to_peer_bytes.inc(usage.bytes_to_peer - reported.bytes_to_peer)
    _from_peer_bytes.inc(usage.bytes_from_peer - reported.bytes_from_peer)
    reported.packets_to_peer = usage.packets_to_peer
    reported.packets_from_peer = usage.packets_from_peer
    reported.dropped = usage.dropped
    reported.bytes_to_peer = usage.bytes_to_peer
    reported.bytes_from_peer = usage.bytes_from_peer
