"""Prometheus metrics of the signaling service."""

from __future__ import annotations

from functools import cache

from prometheus_client import Counter, Gauge, Histogram

CONNECTED_DEVICES = Gauge("facecall_connected_devices", "Devices with a live signaling connection")
CALLS_STARTED = Counter("facecall_calls_started_total", "Calls placed", ["media"])
CALLS_ENDED = Counter("facecall_calls_ended_total", "Calls ended, by reason", ["reason"])
REQUESTS = Counter("facecall_signaling_requests_total", "Client requests, by type and outcome",
                   ["type", "outcome"])
STALE_RETRIES = Counter("facecall_call_save_conflicts_total",
                        "Call saves retried because another writer moved the call on")
REQUEST_SECONDS = Histogram("facecall_signaling_request_seconds", "Time to handle a request",
                            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5))


@cache
def requests_counter(kind: str, outcome: str) -> Counter:
    """The ``REQUESTS`` child of one (type, outcome): ``labels()`` hashes and locks on every
    call, and every request counts one. Both labels come from closed sets (validated message
    types, error codes), so the cache is bounded."""
    return REQUESTS.labels(kind, outcome)


@cache
def calls_started(media: str) -> Counter:
    """The ``CALLS_STARTED`` child of one media kind (audio or video)."""
    return CALLS_STARTED.labels(media)


@cache
def calls_ended(reason: str) -> Counter:
    """The ``CALLS_ENDED`` child of one end reason (an `EndReason` value)."""
    return CALLS_ENDED.labels(reason)
