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
* a `Lost` never replaces a `Lost`. Two controllers that declare one drone
  Lost at once both publish, with one message ID, so the stream keeps one of
  the two times while every subscriber hears both. The first heard stays;
  when the second differs (`contests`), the stored one is read back and put
  in place (`settle`), so that every index holds the time the stream holds;
* a reservation gives way to any real report.

A backend ID "collides" when the index holds it in a live state, in any
cluster: the state stream's subjects carry no cluster, so one ID in two
clusters would mix two histories. It also collides while it is `Lost` and
"held": its drone went silent with it and may still run it. The hold ends
when that drone is heard again without it (`clear_lost`), or
`lost_hold` after the Lost state, when the drone is long forgotten.
Terminal entries are kept for `retention` (the stream's age limit) and then
pruned.

`admits` says whether a drone's update belongs in the stream: the index is
what every controller rebuilds from it, so an update the index would never
take (a stale report of a life already ended, a report from a drone other
than the one running the backend) must not be stored either.
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
    held: bool = False  # Lost, and its drone has not been heard without it since

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
        if current.state is BackendState.LOST and state is BackendState.LOST:
            return False
        return time > current.time
    if state.rank != current.state.rank:
        return state.rank > current.state.rank
    return time >= current.time


def admits(current: Entry | None, state: BackendState, drone: str, time: datetime) -> str | None:
    """Why a drone's report of `state` at `time` must not be stored (None: store it)."""
    if current is None or (current.reserved and current.drone is None):
        return None
    if current.state.terminal:
        if state is BackendState.LOADING and time > current.time:
            return None  # a new life of a reused ID
        return (
            f"backend {current.backend} already ended as {current.state.value} "
            f"at {current.time.isoformat()}"
        )
    if current.drone is not None and current.drone != drone:
        return f"backend {current.backend} runs on drone {current.drone}, not {drone}"
    return None


def duplicate(current: Entry | None, state: BackendState, drone: str, time: datetime) -> bool:
    """A report the index holds already (a resend): acknowledged, not stored again."""
    return (
        current is not None
        and not current.reserved
        and current.state is state
        and current.drone == drone
        and current.time == time
    )


class BackendIndex:
    def __init__(self, lost_hold: timedelta = timedelta(hours=1)) -> None:
        self.lost_hold = lost_hold
        self._entries: dict[str, Entry] = {}
        self._held_by_drone: dict[str, set[str]] = {}
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
            held = msg.state is BackendState.LOST
            self._add(Entry(msg.backend, msg.cluster, msg.drone, msg.state, msg.time, held=held))
            return True
        if not supersedes(current, msg.state, msg.time):
            return False
        self._unlink(current)
        current.cluster = msg.cluster
        current.drone = msg.drone or current.drone
        current.state = msg.state
        current.time = msg.time
        current.reserved = False
        current.held = msg.state is BackendState.LOST
        self._link(current)
        return True

    def contests(self, msg: BackendStateMessage) -> bool:
        """A second controller's Lost for the life the index holds as Lost at another time."""
        current = self._entries.get(msg.backend)
        return (
            current is not None
            and current.state is BackendState.LOST
            and msg.state is BackendState.LOST
            and current.time != msg.time
        )

    def settle(self, stored: BackendStateMessage) -> bool:
        """Take in a state read from the stream, whose Lost wins over any other heard."""
        if self.contests(stored):
            # Only the time: a hold already ended by the drone's heartbeat stays ended.
            self._entries[stored.backend].time = stored.time
            return True
        return self.apply(stored)

    def reserve(self, backend: str, cluster: str, now: datetime) -> Entry | None:
        """Claim `backend` for a new life; returns the entry in the way (live or held), if any."""
        current = self._entries.get(backend)
        if current is not None:
            if not current.state.terminal:
                return current
            if current.held and now - current.time < self.lost_hold:
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

    def clear_lost(self, backend: str) -> None:
        """Its drone was heard without it: the ID may be given out again."""
        entry = self._entries.get(backend)
        if entry is not None and entry.held:
            self._unlink(entry)
            entry.held = False
            self._link(entry)

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

    def held_on(self, drone: str) -> list[Entry]:
        """The Lost backends of `drone` that it has not been heard without since."""
        return [self._entries[b] for b in self._held_by_drone.get(drone, ())]

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
        if entry.held and entry.drone is not None:
            self._held_by_drone.setdefault(entry.drone, set()).add(entry.backend)
        if entry.state.terminal:
            return
        self._live_by_cluster.setdefault(entry.cluster, set()).add(entry.backend)
        if entry.drone is not None:
            self._live_by_drone.setdefault(entry.drone, set()).add(entry.backend)

    def _unlink(self, entry: Entry) -> None:
        self._counts[entry.state] -= 1
        if entry.held and entry.drone is not None:
            _discard(self._held_by_drone, entry.drone, entry.backend)
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
