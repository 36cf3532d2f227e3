"""Prometheus metrics of the signaling service.

Per-request figures (every client request counts once and is timed) are kept in plain ints and
floats by :class:`RequestStats` and turned into metric families only when ``/metrics`` is
scraped (a prometheus_client custom collector): a labelled ``Counter.inc`` plus a
``Histogram.observe`` take a lock and run a Python loop over the buckets on every request,
~2-4 % of the server's CPU in the signaling benchmark. The rarer events use ordinary metrics.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from functools import cache

from prometheus_client import REGISTRY, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

CONNECTED_DEVICES = Gauge("facecall_connected_devices", "Devices with a live signaling connection")
CALLS_STARTED = Counter("facecall_calls_started_total", "Calls placed", ["media"])
CALLS_ENDED = Counter("facecall_calls_ended_total", "Calls ended, by reason", ["reason"])
STALE_RETRIES = Counter("facecall_call_save_conflicts_total",
                        "Call saves retried because another writer moved the call on")

#: upper bounds (seconds) of the request-time histogram's buckets
REQUEST_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5)


class RequestStats(Collector):
    """``facecall_signaling_requests_total{type,outcome}`` and the histogram
    ``facecall_signaling_request_seconds``, counted on the event loop's thread without locks
    (one process, one loop: no other thread counts) and exported at scrape time."""

    def __init__(self, buckets: tuple[float, ...] = REQUEST_BUCKETS) -> None:
        self.bounds = buckets
        self.counts: dict[tuple[str, str], int] = {}  # (type, outcome) -> requests
        self.bucket_counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.seconds_sum = 0.0

    def count(self, kind: str, outcome: str) -> None:
        """One request of ``kind`` ended with ``outcome`` (``ok`` or an error code); both come
        from closed sets, so the label space is bounded."""
        key = (kind, outcome)
        self.counts[key] = self.counts.get(key, 0) + 1

    def observe(self, seconds: float) -> None:
        """One request took ``seconds`` to handle."""
        self.bucket_counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.seconds_sum += seconds

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("facecall_signaling_requests",
                                       "Client requests, by type and outcome",
                                       labels=["type", "outcome"])
        # copies taken in one step each (a scrape may run on another thread than the loop)
        counts, bucket_counts = list(self.counts.items()), list(self.bucket_counts)
        for (kind, outcome), value in sorted(counts):
            requests.add_metric([kind, outcome], value)
        yield requests
        cumulative, buckets = 0, []
        for bound, value in zip((*map(str, self.bounds), "+Inf"), bucket_counts, strict=True):
            cumulative += value
            buckets.append((bound, cumulative))
        yield HistogramMetricFamily("facecall_signaling_request_seconds",
                                    "Time to handle a request", buckets=buckets,
                                    sum_value=self.seconds_sum)


REQUEST_STATS = RequestStats()
REGISTRY.register(REQUEST_STATS)


@cache
def calls_started(media: str) -> Counter:
    """The ``CALLS_STARTED`` child of one media kind (audio or video)."""
    return CALLS_STARTED.labels(media)


@cache
def calls_ended(reason: str) -> Counter:
    """The ``CALLS_ENDED`` child of one end reason (an `EndReason` value)."""
    return CALLS_ENDED.labels(reason)
