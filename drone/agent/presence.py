"""What the drone says about itself in its heartbeat: a pure decision."""

from __future__ import annotations

from dataclasses import dataclass

from shared.protocol import DroneState


@dataclass(frozen=True, slots=True)
class Presence:
    """The inputs of the heartbeat's `state` and `ready`."""

    recovered: bool  # start-up adoption of existing containers is done
    draining: bool
    docker_available: bool
    running_backends: int
    max_backends: int

    @property
    def state(self) -> DroneState:
        if not self.recovered:
            return DroneState.STARTING
        if self.draining:
            return DroneState.DRAINED if self.running_backends == 0 else DroneState.DRAINING
        return DroneState.READY

    @property
    def ready(self) -> bool:
        """Whether the drone takes new backends now."""
        return (
            self.state is DroneState.READY
            and self.docker_available
            and self.running_backends < self.max_backends
        )
