"""The backend index: backend → cluster, drone, state and time, from the state stream.

Pure. It is fed every `BackendStateMessage` (rebuilt at start-up from the
`backend_status` stream, then kept current from the live subject), plus
reservations the scheduler makes the moment it picks an ID, so that two
requests for one client-chosen ID cannot both go ahead.

Messages may arrive twice or out of order (a catch-up read overlaps the live
feed, two controllers may both publish a Lost). `supersedes` decides:

* a live entry moves forward in the order of life (`BackendState.rank`);
  at equal rank the later time wins;
* a terminal entry changes only for a later time: a later report of its end,
  or a new life of a reused ID;
* a reservation gives way to any real report.

A backend ID "collides" when the index holds it in a live state, in any
cluster: the state stream's subjects carry no cluster, so one ID in two
clusters would mix two histories. Terminal entries are kept for
`retention` (the stream's age limit) and then pruned.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.protocol import BackendInfo, BackendState, BackendStateMessage


@dataclass(slots=True)
class Entry:
    backend: str
    cluster: str
    drone: str | None
    state: BackendState
    time: datetime
    reserved: bool = False  # picked by this controller's scheduler; no report heard yet

    def info(self) -> BackendInfo:
        return BackendInfo(
            backend_id=self.backend,
            cluster=self.cluster,
            drone=self.drone,
            state=self.state,
            time=self.time,
        )


def supersedes(current: Entry, state: BackendState, time: datetime) -> bool:
    """Whether a report of `state` at `time` replaces what the index holds."""
    if current.reserved:
        return True
    if current.state.terminal:
        return time > current.time
    if state.rank != current.state.rank:
        return state.rank > current.state.rank
    return time >= current.time


class BackendIndex:
    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}
        self._live_by_drone: dict[str, set[str]] = {}
        self._live_by_cluster: dict[str, set[str]] = {}
        self._counts: Counter[BackendState] = Counter()

    def __len__(self) -> int:
        return len(self._entries)

    # --- updates -------------------------------------------------------------

    def apply(self, msg: BackendStateMessage) -> bool:
        """Take in one reported state; True when the index changed."""
        current = self._entries.get(msg.backend)
        if current is None:
            self._add(Entry(msg.backend, msg.cluster, msg.drone, msg.state, msg.time))
            return True
        if not supersedes(current, msg.state, msg.time):
            return False
        self._unlink(current)
        current.cluster = msg.cluster
        current.drone = msg.drone or current.drone
        current.state = msg.state
        current.time = msg.time
        current.reserved = False
        self._link(current)
        return True

    def reserve(self, backend: str, cluster: str, now: datetime) -> Entry | None:
        """Claim `backend` for a new life; returns the live entry in the way, if any."""
        current = self._entries.get(backend)
        if current is not None:
            if not current.state.terminal:
                return current
            self._remove(current)
        self._add(Entry(backend, cluster, None, BackendState.LOADING, now, reserved=True))
        return None

    def assign(self, backend: str, drone: str) -> None:
        """The reserved backend is being offered to `drone`."""
        entry = self._entries.get(backend)
        if entry is not None and entry.reserved:
            self._unlink(entry)
            entry.drone = drone
            self._link(entry)

    def release(self, backend: str) -> None:
        """No drone took the reserved backend: forget it (unless a report came in)."""
        entry = self._entries.get(backend)
        if entry is not None and entry.reserved:
            self._remove(entry)

    def prune(self, now: datetime, retention: timedelta) -> int:
        """Drop terminal entries older than `retention`; returns how many."""
        oldest = now - retention
        stale = [e for e in self._entries.values() if e.state.terminal and e.time < oldest]
        for entry in stale:
            self._remove(entry)
        return len(stale)

    # --- questions -----------------------------------------------------------

    def get(self, backend: str) -> Entry | None:
        return self._entries.get(backend)

    def live_on(self, drone: str) -> list[Entry]:
        return [self._entries[b] for b in self._live_by_drone.get(drone, ())]

    def live_drones(self) -> dict[str, str]:
        """Drone → cluster, for every drone that runs a live backend."""
        return {
            drone: self._entries[next(iter(ids))].cluster
            for drone, ids in self._live_by_drone.items()
        }

    def live_count(self, drone: str) -> int:
        return len(self._live_by_drone.get(drone, ()))

    def backends(self, cluster: str) -> list[BackendInfo]:
        """The live backends of `cluster`, by ID."""
        ids = sorted(self._live_by_cluster.get(cluster, ()))
        return [self._entries[b].info() for b in ids]

    def clusters(self) -> set[str]:
        return {cluster for cluster, ids in self._live_by_cluster.items() if ids}

    def count_by_state(self) -> dict[BackendState, int]:
        return {state: self._counts[state] for state in BackendState}

    # --- bookkeeping ---------------------------------------------------------

    def _add(self, entry: Entry) -> None:
        self._entries[entry.backend] = entry
        self._link(entry)

    def _remove(self, entry: Entry) -> None:
        self._unlink(entry)
        del self._entries[entry.backend]

    def _link(self, entry: Entry) -> None:
        self._counts[entry.state] += 1
        if entry.state.terminal:
            return
        self._live_by_cluster.setdefault(entry.cluster, set()).add(entry.backend)
        if entry.drone is not None:
            self._live_by_drone.setdefault(entry.drone, set()).add(entry.backend)

    def _unlink(self, entry: Entry) -> None:
        self._counts[entry.state] -= 1
        if entry.state.terminal:
            return
        _discard(self._live_by_cluster, entry.cluster, entry.backend)
        if entry.drone is not None:
            _discard(self._live_by_drone, entry.drone, entry.backend)


def _discard(groups: dict[str, set[str]], key: str, member: str) -> None:
    group = groups.get(key)
    if group is not None:
        group.discard(member)
        if not group:
            del groups[key]
