"""The drone registry: what every drone last said, and which may take a backend now.

Pure: it is fed heartbeats with the time they arrived and answers questions
for a given time; it never reads a clock or touches the network. Each
controller keeps its own from the heartbeats it hears.

Rules:

* A drone is a candidate while its last status said `ready`, its state is not
  Draining/Drained/Stopped/Lost, and it was heard within `fresh_secs`.
* Its load is the running count of its last heartbeat plus the backends
  assigned to it since: spawns in flight, and spawns it accepted that no
  heartbeat has reported yet. An accepted spawn is counted until the drone's
  next heartbeat (NATS keeps one connection's messages in order, so a
  heartbeat that arrives after the drone's `true` was sent after it and
  includes the backend), or until `assignment_ttl_secs` for a drone that
  never reports again.
* A drone that did not answer a spawn is skipped until its next heartbeat; one
  that refused is not (a refusal may be about that one request).
* A drone silent for `lost_after_secs` is Lost. Time without a NATS
  connection does not count as silence: after a reconnect every drone gets a
  fresh grace period, both before it is Lost and before it stops being a
  candidate. Lost drones are forgotten after `forget_after_secs`.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Container
from dataclasses import dataclass
from datetime import datetime

from controller.placement import LoadQueue
from shared.protocol import DroneConnectRequest, DroneInfo, DroneState, DroneStatusMessage

_NOT_TAKING = frozenset(
    {DroneState.DRAINING, DroneState.DRAINED, DroneState.STOPPED, DroneState.LOST}
)


class SpawnOutcome(enum.Enum):
    ACCEPTED = "accepted"
    REFUSED = "refused"
    INVALID = "invalid"  # refused because the request itself cannot run on that drone
    UNREACHABLE = "unreachable"  # no answer in time, or nobody listening
    FAILED = "failed"  # could not be asked (NATS itself unavailable): says nothing of the drone


@dataclass(frozen=True, slots=True)
class DroneJoined:
    drone: str
    cluster: str


@dataclass(frozen=True, slots=True)
class DroneStateChanged:
    drone: str
    cluster: str
    old: DroneState
    new: DroneState


@dataclass(frozen=True, slots=True)
class DroneLost:
    drone: str
    cluster: str


@dataclass(frozen=True, slots=True)
class DroneForgotten:
    drone: str
    cluster: str


Change = DroneJoined | DroneStateChanged | DroneLost | DroneForgotten


class DroneRecord:
    __slots__ = (
        "acked",
        "cluster",
        "drone_id",
        "heard",
        "ip",
        "last_seen",
        "last_seen_wall",
        "lost_at",
        "pending",
        "pool",
        "ready",
        "running",
        "state",
        "suspended",
        "version",
    )

    def __init__(self, drone_id: str, cluster: str, now: float, wall: datetime) -> None:
        self.drone_id = drone_id
        self.cluster = cluster
        self.ip: str | None = None
        self.state = DroneState.STARTING
        self.ready = False
        self.version = ""
        self.running = 0
        self.pending = 0
        self.acked: list[float] = []
        self.last_seen = now
        self.last_seen_wall = wall
        self.suspended = False
        self.lost_at: float | None = None
        self.heard = True  # False: known only from backends in the index, never heard
        self.pool = ""  # the drone's pool; "" is the unnamed one

    @property
    def queue_key(self) -> tuple[str, str]:
        return self.cluster, self.pool

    @property
    def load(self) -> int:
        return self.running + self.pending + len(self.acked)

    @property
    def taking(self) -> bool:
        """Willing to take backends, judging by what it said (freshness aside)."""
        return self.ready and self.state not in _NOT_TAKING and not self.suspended

    def info(self, fresh: bool) -> DroneInfo:
        """As listed; `ready` only while a schedule may choose it (`fresh`: heard lately)."""
        return DroneInfo(
            drone_id=self.drone_id,
            cluster=self.cluster,
            ip=self.ip,
            state=self.state,
            ready=self.taking and fresh,
            running_backends=self.running,
            last_seen=self.last_seen_wall,
            drone_version=self.version,
            pool=self.pool or None,
        )

    def __repr__(self) -> str:
        return f"<Drone {self.drone_id} {self.cluster} {self.state.value} load={self.load}>"


class DroneRegistry:
    def __init__(
        self,
        *,
        fresh_secs: float,
        lost_after_secs: float,
        forget_after_secs: float,
        assignment_ttl_secs: float | None = None,
        clusters: Container[str] | None = None,
        rng: random.Random | None = None,
        max_drones: int = 10_000,
    ) -> None:
        self.fresh_secs = fresh_secs
        self.lost_after_secs = lost_after_secs
        self.forget_after_secs = forget_after_secs
        self.assignment_ttl_secs = (
            fresh_secs if assignment_ttl_secs is None else assignment_ttl_secs
        )
        self._clusters = clusters
        self.max_drones = max_drones
        self.refused_drones = 0  # heard, but past `max_drones`: not kept
        self._rng = rng or random.Random()
        self._drones: dict[str, DroneRecord] = {}
        self._queues: dict[tuple[str, str], LoadQueue] = {}  # by cluster and pool
        self._paused_at: float | None = None
        self._resumed_at = float("-inf")

    # --- what drones say -----------------------------------------------------

    def serves(self, cluster: str) -> bool:
        return self._clusters is None or cluster in self._clusters

    def _full(self, drone: str) -> bool:
        """No room for a drone not known yet: a flood of made-up IDs stops here."""
        if drone in self._drones or len(self._drones) < self.max_drones:
            return False
        self.refused_drones += 1
        return True

    def register(self, msg: DroneConnectRequest, now: float, wall: datetime) -> list[Change]:
        if not self.serves(msg.cluster) or self._full(msg.drone_id):
            return []
        record, changes = self._heard(msg.drone_id, msg.cluster, now, wall)
        record.ip = msg.ip
        if record.state == DroneState.LOST:
            changes.append(
                DroneStateChanged(msg.drone_id, msg.cluster, DroneState.LOST, DroneState.STARTING)
            )
            record.state = DroneState.STARTING
            record.ready = False
        return changes

    def status(self, msg: DroneStatusMessage, now: float, wall: datetime) -> list[Change]:
        if not self.serves(msg.cluster) or self._full(msg.drone_id):
            return []
        record, changes = self._heard(msg.drone_id, msg.cluster, now, wall)
        if record.state != msg.state and not changes:  # a new drone says DroneJoined only
            changes.append(
                DroneStateChanged(record.drone_id, record.cluster, record.state, msg.state)
            )
        pool = msg.pool or ""
        if record.pool != pool:
            self._queue(record.queue_key).discard(record.drone_id)
            record.pool = pool
        record.state = msg.state
        record.ready = msg.ready
        record.version = msg.drone_version
        record.running = msg.running_backends or 0
        record.acked.clear()
        record.suspended = False
        if msg.ip is not None:
            record.ip = msg.ip
        self._requeue(record)
        return changes

    def _heard(
        self, drone: str, cluster: str, now: float, wall: datetime
    ) -> tuple[DroneRecord, list[Change]]:
        changes: list[Change] = []
        record = self._drones.get(drone)
        if record is None:
            record = self._drones[drone] = DroneRecord(drone, cluster, now, wall)
            changes.append(DroneJoined(drone, cluster))
        elif record.cluster != cluster:
            self._queue(record.queue_key).discard(drone)
            record.cluster = cluster
        record.lost_at = None
        record.heard = True
        record.last_seen = now
        record.last_seen_wall = wall
        return record, changes

    def expect(self, drone: str, cluster: str, now: float, wall: datetime) -> None:
        """The index says `drone` runs backends: if it stays silent it is Lost like any other.

        A restarted controller learns of drones from the stream before it hears
        them; one that never speaks again must not keep its backends live forever.
        """
        if drone not in self._drones and self.serves(cluster) and not self._full(drone):
            record = self._drones[drone] = DroneRecord(drone, cluster, now, wall)
            record.heard = False

    def lost(self) -> list[str]:
        return [r.drone_id for r in self._drones.values() if r.state == DroneState.LOST]

    # --- scheduling ----------------------------------------------------------

    def choose(
        self, cluster: str, now: float, exclude: Container[str] = (), pool: str | None = None
    ) -> str | None:
        """The best candidate of `cluster` in `pool` (None: the unnamed pool), already
        counted as assigned; None if none."""
        queue = self._queues.get((cluster, pool or ""))
        if queue is None:
            return None
        drones = self._drones
        oldest = self._fresh_since(now)

        def usable(drone: str) -> bool:
            record = drones.get(drone)
            return record is not None and record.taking and record.last_seen >= oldest

        drone = queue.best(usable, exclude)
        if drone is None:
            return None
        record = drones[drone]
        record.pending += 1
        queue.set(drone, record.load)
        return drone

    def spawn_result(self, drone: str, outcome: SpawnOutcome, now: float) -> None:
        record = self._drones.get(drone)
        if record is None:
            return
        record.pending = max(0, record.pending - 1)
        if outcome is SpawnOutcome.ACCEPTED:
            record.acked.append(now)
        elif outcome is SpawnOutcome.UNREACHABLE:
            record.suspended = True
        self._requeue(record)

    def _queue(self, key: tuple[str, str]) -> LoadQueue:
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = LoadQueue(self._rng)
        return queue

    def _requeue(self, record: DroneRecord) -> None:
        queue = self._queue(record.queue_key)
        if record.taking:
            queue.set(record.drone_id, record.load)
        else:
            queue.discard(record.drone_id)

    # --- the passing of time -------------------------------------------------

    def pause(self, now: float) -> None:
        """NATS is gone: silence from now on says nothing about the drones."""
        if self._paused_at is None:
            self._paused_at = now

    def resume(self, now: float) -> None:
        self._paused_at = None
        self._resumed_at = now

    def sweep(self, now: float) -> list[Change]:
        """Expire old assignments, declare silent drones Lost, forget long-lost ones."""
        changes: list[Change] = []
        if self._paused_at is not None:
            return changes
        oldest_assignment = now - self.assignment_ttl_secs
        for record in list(self._drones.values()):
            if record.acked and record.acked[0] < oldest_assignment:
                record.acked = [t for t in record.acked if t >= oldest_assignment]
                self._requeue(record)
            if record.state == DroneState.LOST:
                if record.lost_at is None:  # a drone that called itself Lost
                    record.lost_at = now
                if now - record.lost_at >= self.forget_after_secs:
                    del self._drones[record.drone_id]
                    changes.append(DroneForgotten(record.drone_id, record.cluster))
                continue
            heard = max(record.last_seen, self._resumed_at)
            if now - heard >= self.lost_after_secs:
                record.state = DroneState.LOST
                record.ready = False
                record.lost_at = now
                record.pending = 0
                record.acked.clear()
                self._queue(record.queue_key).discard(record.drone_id)
                changes.append(DroneLost(record.drone_id, record.cluster))
        return changes

    # --- questions -----------------------------------------------------------

    def get(self, drone: str) -> DroneRecord | None:
        return self._drones.get(drone)

    def ip_of(self, drone: str) -> str | None:
        record = self._drones.get(drone)
        return None if record is None else record.ip

    def reconnected_lately(self, now: float) -> bool:
        """Within `fresh_secs` of a NATS reconnect: drones may not have subscribed again yet."""
        return self._resumed_at >= now - self.fresh_secs

    def _fresh_since(self, now: float) -> float:
        """A drone last heard at or after this is fresh. Silence while NATS was away is
        not the drone's: within `fresh_secs` of a reconnect, every drone is fresh."""
        oldest = now - self.fresh_secs
        return float("-inf") if self._resumed_at >= oldest else oldest

    def drones(self, cluster: str, now: float) -> list[DroneInfo]:
        """The drones of `cluster` that were heard, as they stand at `now`."""
        oldest = self._fresh_since(now)
        return sorted(
            (
                r.info(r.last_seen >= oldest)
                for r in self._drones.values()
                if r.cluster == cluster and r.heard
            ),
            key=lambda info: info.drone_id,
        )

    def clusters(self) -> set[str]:
        return {r.cluster for r in self._drones.values()}

    def count_by_state(self) -> dict[DroneState, int]:
        counts = dict.fromkeys(DroneState, 0)
        for record in self._drones.values():
            if record.heard:
                counts[record.state] += 1
        return counts

    def __len__(self) -> int:
        return sum(r.heard for r in self._drones.values())
