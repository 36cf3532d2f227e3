"""`facecall.signaling.metrics.RequestStats`: per-request counters exported at scrape time,
the same text prometheus_client's own Counter and Histogram would give."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from facecall.client.signaling import SignalingError
from facecall.signaling.metrics import REQUEST_BUCKETS, RequestStats
from tests.live import LiveServer

SAMPLES = (0.0001, 0.0005, 0.0007, 0.003, 0.5, 2.0)
REQUESTS = (("call.start", "ok"), ("call.start", "ok"), ("call.sdp", "not_in_call"))


def _lines(registry: CollectorRegistry, name: str) -> list[str]:
    return [line for line in generate_latest(registry).decode().splitlines()
            if line.startswith(name) and "_created" not in line]


def test_exported_text_matches_prometheus_client_metrics() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    stats = RequestStats()
    ours.register(stats)
    counter = Counter("facecall_signaling_requests", "x", ["type", "outcome"], registry=theirs)
    histogram = Histogram("facecall_signaling_request_seconds", "x", buckets=REQUEST_BUCKETS,
                          registry=theirs)
    for seconds in SAMPLES:  # bucket edges included: le is "less than or equal"
        stats.observe(seconds)
        histogram.observe(seconds)
    for kind, outcome in REQUESTS:
        stats.count(kind, outcome)
        counter.labels(kind, outcome).inc()
    for name in ("facecall_signaling_requests_total", "facecall_signaling_request_seconds"):
        assert sorted(_lines(ours, name)) == sorted(_lines(theirs, name))
    assert 'facecall_signaling_request_seconds_bucket{le="0.0005"} 2.0' in _lines(
        ours, "facecall_signaling_request_seconds")


def test_nothing_counted_exports_zeroes() -> None:
    registry = CollectorRegistry()
    registry.register(RequestStats())
    text = generate_latest(registry).decode()
    assert 'facecall_signaling_request_seconds_bucket{le="+Inf"} 0.0' in text
    assert "facecall_signaling_request_seconds_count 0.0" in text


async def test_live_server_exports_request_counts(server: LiveServer) -> None:
    _, (a1,) = await server.user_with_devices("metrics-alice", 1)
    bob, _ = await server.user_with_devices("metrics-bob", 1)
    call_id = (await a1.request("call.start", to=[bob["user"]["id"]], media="audio"))["call_id"]
    with pytest.raises(SignalingError):
        await a1.request("call.answer", call_id="no-such-call")
    await a1.request("call.cancel", call_id=call_id)
    text = (await server.http.get("/metrics")).text
    counts = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
              if line.startswith("facecall_signaling_request")}
    assert counts['facecall_signaling_requests_total{outcome="ok",type="call.start"}'] >= 1
    assert counts['facecall_signaling_requests_total{outcome="unknown_call",type="call.answer"}'] >= 1
    assert counts["facecall_signaling_request_seconds_count"] >= 2  # the two that succeeded
