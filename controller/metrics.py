"""The controller's Prometheus metrics, in a registry of its own.

Label values are fixed sets (outcomes, states, DNS results), never IDs.
Children of labelled metrics are resolved once here, so the scheduling path
pays for an increment and nothing else. Gauges of drones and backends by
state are set from the event loop on each housekeeping tick, not computed by
the scraping thread, which must not walk structures the loop is changing.
"""

from __future__ import annotations

import enum

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from controller.dnsanswer import Result
from controller.identity import Refusal
from controller.registry import SpawnOutcome
from shared.protocol import BackendState, DroneState, EndReason

_REASONS = frozenset(reason.value for reason in EndReason)


class ScheduleOutcome(enum.StrEnum):
    SCHEDULED = "scheduled"
    LOCK_HELD = "lock_held"  # a lock's running holder was returned
    NO_DRONE = "no_drone"
    INVALID = "invalid"
    ERROR = "error"


class RelayOutcome(enum.StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"  # a resend of a state already stored: acknowledged, not stored
    REFUSED = "refused"  # a stale or misplaced report (see `controller.index.admits`)
    INVALID = "invalid"
    FAILED = "failed"


_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip


class ControllerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        requests = Counter(
            "plane_controller_schedule_requests",
            "Schedule requests answered, by outcome",
            ["outcome"],
            registry=r,
        )
        self.schedule_requests = {o: requests.labels(o.value) for o in ScheduleOutcome}
        self.schedule_seconds = Histogram(
            "plane_controller_schedule_duration_seconds",
            "Time from receiving a schedule request to answering it",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        spawns = Counter(
            "plane_controller_spawn_attempts",
            "Spawn requests sent to drones, by how the drone answered",
            ["outcome"],
            registry=r,
        )
        self.spawn_attempts = {o: spawns.labels(o.value) for o in SpawnOutcome}
        drones = Gauge("plane_controller_drones", "Drones known, by state", ["state"], registry=r)
        self.drones = {s: drones.labels(s.value) for s in DroneState}
        backends = Gauge(
            "plane_controller_backends",
            "Backends in the index, by state (terminal ones until pruned)",
            ["state"],
            registry=r,
        )
        self.backends = {s: backends.labels(s.value) for s in BackendState}
        updates = Counter(
            "plane_controller_backend_updates",
            "Backend state updates from drones, by outcome",
            ["outcome"],
            registry=r,
        )
        self.backend_updates = {o: updates.labels(o.value) for o in RelayOutcome}
        lost = Counter(
            "plane_controller_lost_backends",
            "Backends published as Lost because their drone went silent, by whether this"
            " controller stored it first or another controller already had",
            ["result"],
            registry=r,
        )
        self.lost_backends = {result: lost.labels(result) for result in ("stored", "duplicate")}
        self._ends = Counter(
            "plane_controller_backend_ends",
            "Terminal states stored, by state and reason (an EndReason, or 'unknown' from"
            " drones that send none); each end is counted by the one controller storing it",
            ["state", "reason"],
            registry=r,
        )
        self.spawn_retries = Counter(
            "plane_controller_spawn_retries",
            "Spawn requests sent again after 'no responders' right after a NATS reconnect",
            registry=r,
        )
        refused = Counter(
            "plane_controller_refused",
            "Messages refused for who sent them or what they claim, by reason",
            ["reason"],
            registry=r,
        )
        self.refused = {reason: refused.labels(reason.value) for reason in Refusal}
        self.fenced = Counter(
            "plane_controller_fenced_backends",
            "Backends a drone was told to stop: held as Lost, or placed on another drone",
            registry=r,
        )
        self.nats_reconnects = Counter(
            "plane_controller_nats_reconnects", "Reconnections to NATS", registry=r
        )
        self.nats_connected = Gauge(
            "plane_controller_nats_connected", "1 while connected to NATS", registry=r
        )
        queries = Counter(
            "plane_controller_dns_queries",
            "DNS queries answered, by result and transport",
            ["result", "transport"],
            registry=r,
        )
        self.dns_queries = {
            (res, transport): queries.labels(res.value, transport)
            for res in Result
            for transport in ("udp", "tcp")
        }

    def count_end(self, state: BackendState, reason: str | None) -> None:
        known = reason if reason in _REASONS else "unknown"  # bounded label values
        self._ends.labels(state.value, known).inc()

    def dns_query(self, result: Result, transport: str) -> None:
        self.dns_queries[(result, transport)].inc()

    def set_drones(self, counts: dict[DroneState, int]) -> None:
        for state, gauge in self.drones.items():
            gauge.set(counts.get(state, 0))

    def set_backends(self, counts: dict[BackendState, int]) -> None:
        for state, gauge in self.backends.items():
            gauge.set(counts.get(state, 0))
