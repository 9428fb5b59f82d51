"""Which drone gets the next backend: least loaded first, random among equals.

A `LoadQueue` holds the usable drones of one cluster in a heap keyed by
(load, random key). Choosing is O(log n) instead of a scan over every drone,
which matters with a thousand drones and thousands of schedules a second.
Entries are never updated in place: a new load pushes a new entry and the old
one is skipped when it surfaces (lazy deletion). The random key is drawn when
a drone reaches its current load, so among drones of equal load each is
equally likely to be first. The RNG is injectable to make tests exact.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Container

_Entry = tuple[int, float, str]


class LoadQueue:
    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()
        self._heap: list[_Entry] = []
        self._live: dict[str, tuple[int, float]] = {}  # drone -> its current (load, key)

    def __len__(self) -> int:
        return len(self._live)

    @property
    def heap_size(self) -> int:
        """Entries held, stale ones included (bounded by compaction)."""
        return len(self._heap)

    def __contains__(self, drone: object) -> bool:
        return drone in self._live

    def set(self, drone: str, load: int) -> None:
        """Make `drone` a candidate with this load (a no-op if the load is unchanged)."""
        current = self._live.get(drone)
        if current is not None and current[0] == load:
            return
        key = self._rng.random()
        self._live[drone] = (load, key)
        heapq.heappush(self._heap, (load, key, drone))
        if len(self._heap) > 2 * len(self._live) + 64:
            self._compact()

    def discard(self, drone: str) -> None:
        self._live.pop(drone, None)

    def best(self, usable: Callable[[str], bool], exclude: Container[str] = ()) -> str | None:
        """The least loaded usable drone not in `exclude`, or None.

        A drone that `usable` rejects is dropped from the queue (it comes back
        with its next `set`); excluded drones stay.
        """
        heap = self._heap
        skipped: list[_Entry] = []
        found: str | None = None
        while heap:
            load, key, drone = entry = heap[0]
            if self._live.get(drone) != (load, key):
                heapq.heappop(heap)
            elif drone in exclude:
                skipped.append(heapq.heappop(heap))
            elif not usable(drone):
                heapq.heappop(heap)
                del self._live[drone]
            else:
                found = entry[2]
                break
        for entry in skipped:
            heapq.heappush(heap, entry)
        return found

    def _compact(self) -> None:
        self._heap = [(load, key, drone) for drone, (load, key) in self._live.items()]
        heapq.heapify(self._heap)
