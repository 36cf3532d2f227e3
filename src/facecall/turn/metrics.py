"""Prometheus metrics of the STUN/TURN server (default registry, served at /metrics).

Per-packet counts are kept as plain integers on each allocation (see
:class:`facecall.turn.allocation.Usage`) and added to these counters by the server's
housekeeping and when an allocation ends, so the data path pays no metrics cost.
"""

from __future__ import annotations

from collections.abc import Iterable

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
CONNECTIONS_REFUSED = Counter(
    "facecall_turn_stream_connections_refused",
    "TCP/TLS connections closed at once because a cap was reached",
    ["reason"],
)  # reason: total (max_tcp_connections), per_address (max_tcp_connections_per_address)
INTERNAL_ERRORS = Counter(
    "facecall_turn_internal_errors",
    "STUN messages dropped because handling them raised an unexpected exception",
)

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


def report_usage(allocations: Iterable[Allocation]) -> None:
    """Add what ``allocations`` relayed since their last report to the counters (five
    counter updates in all, whatever the number of allocations)."""
    totals = [0, 0, 0, 0, 0]
    for allocation in allocations:
        usage, reported = allocation.usage, allocation.reported
        totals[0] += usage.packets_to_peer - reported.packets_to_peer
        totals[1] += usage.packets_from_peer - reported.packets_from_peer
        totals[2] += usage.dropped - reported.dropped
        totals[3] += usage.bytes_to_peer - reported.bytes_to_peer
        totals[4] += usage.bytes_from_peer - reported.bytes_from_peer
        allocation.reported = usage
    for counter, amount in zip(
        (_to_peer_packets, _from_peer_packets, _dropped_packets, _to_peer_bytes, _from_peer_bytes),
        totals,
        strict=True,
    ):
        if amount:
            counter.inc(amount)
