"""Whether a drone takes a spawn request: a pure decision, made before any Docker call.

The answer must be honest and quick (the controller waits for it), so it
rests only on what the agent knows at that moment, passed in as `Facts`,
and on the clock reading passed in as `now`.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass
from datetime import datetime

from drone.agent import spec
from drone.agent.metrics import SpawnOutcome
from shared.protocol import SpawnRequest


@dataclass(frozen=True, slots=True)
class Facts:
    drone_id: str
    cluster: str
    recovered: bool  # start-up adoption is done
    draining: bool
    docker_available: bool
    live_backends: int
    max_backends: int
    allow_volume_mounts: bool
    pool: str | None = None  # the drone's pool; None: the unnamed pool


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: SpawnOutcome
    reason: str = ""

    @property
    def accepted(self) -> bool:
        return self.outcome is SpawnOutcome.ACCEPTED

    @property
    def request_at_fault(self) -> bool:
        """The request itself cannot run here (the controller tells the client so)."""
        return self.outcome is SpawnOutcome.INVALID


def decide(request: SpawnRequest, facts: Facts, running: Container[str], now: datetime) -> Decision:
    """Accept, or the first reason to refuse, in the order a person would look for it."""
    if request.deadline is not None and now > request.deadline:
        late = (now - request.deadline).total_seconds()
        return Decision(SpawnOutcome.STALE, f"arrived {late:.1f}s after its deadline")
    if request.drone_id != facts.drone_id:
        return Decision(SpawnOutcome.MISADDRESSED, f"addressed to drone {request.drone_id}")
    if request.cluster != facts.cluster:
        return Decision(SpawnOutcome.MISADDRESSED, f"for cluster {request.cluster}")
    if (request.pool or None) != (facts.pool or None):
        wanted = f"pool {request.pool}" if request.pool else "the unnamed pool"
        return Decision(SpawnOutcome.MISADDRESSED, f"for {wanted}")
    if not facts.recovered:
        return Decision(SpawnOutcome.UNAVAILABLE, "still adopting existing containers")
    if facts.draining:
        return Decision(SpawnOutcome.DRAINING, "draining")
    if not facts.docker_available:
        return Decision(SpawnOutcome.UNAVAILABLE, "Docker is unavailable")
    if request.backend_id in running:
        return Decision(SpawnOutcome.DUPLICATE, "this backend ID already runs here")
    if facts.live_backends >= facts.max_backends:
        return Decision(SpawnOutcome.FULL, f"at the limit of {facts.max_backends}")
    problem = spec.refusal(request, allow_volume_mounts=facts.allow_volume_mounts)
    if problem is not None:
        return Decision(SpawnOutcome.INVALID, problem)
    return Decision(SpawnOutcome.ACCEPTED)
