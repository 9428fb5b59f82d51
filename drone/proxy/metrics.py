"""The proxy's Prometheus metrics.

Everything on the data path is a plain int bumped without locks (the event
loop is the only writer) and read by a collector when scraped, the
response-time histogram included. No label carries a backend ID.

With worker processes, each one sends its `Counters` to the drone process
every second or so; a scrape there shows the sum of its own, the workers'
latest, and what workers that have exited had counted (their gauges drop out).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator

import msgspec
from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Counters(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    """One process's proxy metrics at a moment, as a worker reports them."""

    responses: list[int]
    received_bytes: int
    sent_bytes: int
    upstream_connect_errors: int
    client_connections: int
    upgraded_connections: int
    upstream_buckets: list[int]
    upstream_seconds_sum: float


def zero_counters() -> Counters:
    return Counters([0] * 6, 0, 0, 0, 0, 0, [0] * (len(BUCKETS) + 1), 0.0)


def total(parts: Iterable[Counters]) -> Counters:
    out = zero_counters()
    for part in parts:
        out.responses = [a + b for a, b in zip(out.responses, part.responses, strict=True)]
        out.received_bytes += part.received_bytes
        out.sent_bytes += part.sent_bytes
        out.upstream_connect_errors += part.upstream_connect_errors
        out.client_connections += part.client_connections
        out.upgraded_connections += part.upgraded_connections
        out.upstream_buckets = [
            a + b for a, b in zip(out.upstream_buckets, part.upstream_buckets, strict=True)
        ]
        out.upstream_seconds_sum += part.upstream_seconds_sum
    return out


def without_gauges(counters: Counters) -> Counters:
    """What stays counted after the process that counted it has gone."""
    return msgspec.structs.replace(counters, client_connections=0, upgraded_connections=0)


class ProxyMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.responses = [0] * 6  # indexed by status // 100
        self.received_bytes = 0  # from browsers
        self.sent_bytes = 0  # to browsers
        self.upstream_connect_errors = 0
        self.client_connections = 0
        self.upgraded_connections = 0
        self.upstream_buckets = [0] * (len(BUCKETS) + 1)  # the last one is +Inf
        self.upstream_seconds_sum = 0.0
        # Worker processes (drone process only): their latest reports, by worker index, and
        # the sum of what exited ones had counted.
        self.reports: dict[int, Counters] = {}
        self.retired = zero_counters()
        self.processes = 1  # processes serving the listener now, this one included
        self.worker_restarts = 0
        registry.register(_Collector(self))

    def counters(self) -> Counters:
        """This process's own figures."""
        return Counters(
            list(self.responses),
            self.received_bytes,
            self.sent_bytes,
            self.upstream_connect_errors,
            self.client_connections,
            self.upgraded_connections,
            list(self.upstream_buckets),
            self.upstream_seconds_sum,
        )

    def combined(self) -> Counters:
        """This process's figures plus every worker's."""
        if not self.reports and self.retired == zero_counters():
            return self.counters()
        return total([self.counters(), self.retired, *self.reports.values()])

    def worker_exited(self, index: int) -> None:
        last = self.reports.pop(index, None)
        if last is not None:
            self.retired = total([self.retired, without_gauges(last)])

    def observe_upstream(self, seconds: float) -> None:
        """Time from sending a request to a backend until its response head arrived."""
        self.upstream_buckets[bisect_left(BUCKETS, seconds)] += 1
        self.upstream_seconds_sum += seconds

    def count_response(self, status: int) -> None:
        self.responses[status // 100 if 100 <= status < 600 else 5] += 1


class _Collector(Collector):
    def __init__(self, metrics: ProxyMetrics) -> None:
        self._m = metrics

    def collect(self) -> Iterator[Metric]:
        m = self._m.combined()
        requests = CounterMetricFamily(
            "plane_proxy_requests",
            "Responses sent to browsers, by status class (the proxy's own included).",
            labels=["status_class"],
        )
        for index, name in enumerate(STATUS_CLASSES, start=1):
            requests.add_metric([name], m.responses[index])
        yield requests
        yield CounterMetricFamily(
            "plane_proxy_received_bytes", "Bytes received from browsers.", value=m.received_bytes
        )
        yield CounterMetricFamily(
            "plane_proxy_sent_bytes", "Bytes sent to browsers.", value=m.sent_bytes
        )
        yield CounterMetricFamily(
            "plane_proxy_upstream_connect_errors",
            "Connections to backends that were refused, failed or timed out.",
            value=m.upstream_connect_errors,
        )
        cumulative = 0
        buckets = []
        for bound, count in zip((*BUCKETS, float("inf")), m.upstream_buckets, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        yield HistogramMetricFamily(
            "plane_proxy_upstream_response_seconds",
            "Time from sending a request to a backend until its response head arrived.",
            buckets=buckets,
            sum_value=m.upstream_seconds_sum,
        )
        yield GaugeMetricFamily(
            "plane_proxy_client_connections",
            "Open browser connections.",
            value=m.client_connections,
        )
        yield GaugeMetricFamily(
            "plane_proxy_upgraded_connections",
            "Open upgraded (WebSocket) connections.",
            value=m.upgraded_connections,
        )
        yield GaugeMetricFamily(
            "plane_proxy_processes",
            "Processes serving the proxy's listener (the drone process and its workers).",
            value=self._m.processes,
        )
        yield CounterMetricFamily(
            "plane_proxy_worker_restarts",
            "Proxy worker processes started again after exiting unexpectedly.",
            value=self._m.worker_restarts,
        )
