"""The agent's Prometheus metrics, on the drone's own registry.

Labels are bounded: backend states, spawn phases, Docker operations and
refusal reasons are fixed sets; backend IDs never become labels.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from shared.protocol import BackendState

PHASE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class Phase(enum.StrEnum):
    PULL = "pull"
    CREATE = "create"
    START = "start"
    READY = "ready"


class SpawnOutcome(enum.StrEnum):
    ACCEPTED = "accepted"
    DRAINING = "draining"
    FULL = "full"
    DUPLICATE = "duplicate"
    INVALID = "invalid"  # the request cannot run on this drone
    MISADDRESSED = "misaddressed"  # meant for another drone or cluster
    STALE = "stale"  # read after its deadline
    UNAVAILABLE = "unavailable"  # starting up, or Docker unreachable


class AgentMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.backends = Gauge(
            "plane_drone_backends", "Backends of this drone by state.", ["state"], registry=r
        )
        self.backends_ended = Counter(
            "plane_drone_backends_ended",
            "Backends that reached a terminal state, by that state.",
            ["state"],
            registry=r,
        )
        self.images_removed = Counter(
            "plane_drone_images_removed",
            "Unused images removed by image GC (disk use above docker.image_gc_high_percent).",
            registry=r,
        )
        self.image_bytes_removed = Counter(
            "plane_drone_image_bytes_removed",
            "Bytes of the images image GC removed, as Docker sized them.",
            registry=r,
        )
        self.spawn_phase = Histogram(
            "plane_drone_spawn_phase_seconds",
            "Time of each phase of a spawn: pull, create, start, ready (start to answering).",
            ["phase"],
            buckets=PHASE_BUCKETS,
            registry=r,
        )
        self.spawn_requests = Counter(
            "plane_drone_spawn_requests",
            "Spawn requests by answer (accepted, or the reason for refusing).",
            ["outcome"],
            registry=r,
        )
        self.docker_errors = Counter(
            "plane_drone_docker_errors",
            "Docker API calls that failed, by operation.",
            ["operation"],
            registry=r,
        )
        self.docker_available = Gauge(
            "plane_drone_docker_available", "1 while the Docker engine answers.", registry=r
        )
        self.ready = Gauge("plane_drone_ready", "1 while the drone takes new backends.", registry=r)
        self.nats_connected = Gauge(
            "plane_drone_nats_connected", "1 while connected to NATS.", registry=r
        )
        self.status_retries = Counter(
            "plane_drone_status_delivery_retries",
            "Backend state updates sent again after a failed delivery.",
            registry=r,
        )
        self.status_dropped = Counter(
            "plane_drone_status_delivery_dropped",
            "Backend state updates a controller refused for good.",
            registry=r,
        )
        self.fenced = Counter(
            "plane_drone_backends_fenced",
            "Backends stopped because the controllers hold them as ended or placed elsewhere.",
            registry=r,
        )
        self.log_lines = Counter(
            "plane_drone_backend_log_lines",
            "Container output lines published to the backend_log stream.",
            registry=r,
        )
        for state in BackendState:
            if state.terminal:
                self.backends_ended.labels(state.value)  # every series there from the start
            else:
                self.backends.labels(state.value)
        for phase in Phase:
            self.spawn_phase.labels(phase.value)
        for outcome in SpawnOutcome:
            self.spawn_requests.labels(outcome.value)

    def count_backends_with(self, count: Callable[[BackendState], int]) -> None:
        """Read the backends gauge from `count` at each scrape, so it is never stale."""
        for state in BackendState:
            if not state.terminal:
                self.backends.labels(state.value).set_function(functools.partial(count, state))
