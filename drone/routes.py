"""What the agent and the proxy share inside one drone process.

The agent owns the backends' lives and tells the route table where each one
listens; the proxy looks routes up by backend ID and reports traffic to the
activity tracker, which the agent's sweeper reads. Neither side does I/O here.
With several proxy worker processes, the main process's table is the source:
its watchers copy every change to the workers, and the workers' traffic comes
back to the main tracker as begin/end pairs (`drone.proxy.fleet`).
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol


class RouteState(enum.Enum):
    PENDING = "pending"  # Loading or Starting: the proxy may hold requests until Ready
    READY = "ready"


@dataclass(frozen=True, slots=True)
class Route:
    backend_id: str
    state: RouteState
    host: str = ""
    port: int = 0
    bearer_token: str | None = None


@dataclass(slots=True)
class _Entry:
    route: Route
    changed: asyncio.Event = field(default_factory=asyncio.Event)


RouteWatcher = Callable[[str, Route | None], None]


class RouteTable:
    """Backend ID → where the proxy sends its traffic."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._watchers: list[RouteWatcher] = []

    def watch(self, watcher: RouteWatcher) -> None:
        """Call `watcher(backend_id, route or None when removed)` after every change."""
        self._watchers.append(watcher)

    def unwatch(self, watcher: RouteWatcher) -> None:
        if watcher in self._watchers:
            self._watchers.remove(watcher)

    def snapshot(self) -> list[Route]:
        """Every route as it is now."""
        return [entry.route for entry in self._entries.values()]

    def set_pending(self, backend_id: str, bearer_token: str | None = None) -> None:
        self._replace(backend_id, Route(backend_id, RouteState.PENDING, bearer_token=bearer_token))

    def set_ready(self, backend_id: str, host: str, port: int, bearer_token: str | None) -> None:
        self._replace(backend_id, Route(backend_id, RouteState.READY, host, port, bearer_token))

    def remove(self, backend_id: str) -> None:
        entry = self._entries.pop(backend_id, None)
        if entry is not None:
            entry.changed.set()
            for watcher in self._watchers:
                watcher(backend_id, None)

    def _replace(self, backend_id: str, route: Route) -> None:
        old = self._entries.get(backend_id)
        self._entries[backend_id] = _Entry(route)
        if old is not None:
            old.changed.set()
        for watcher in self._watchers:
            watcher(backend_id, route)

    def get(self, backend_id: str) -> Route | None:
        entry = self._entries.get(backend_id)
        return entry.route if entry is not None else None

    def __len__(self) -> int:
        return len(self._entries)

    async def wait_ready(self, backend_id: str, timeout: float) -> Route | None:
        """The backend's route once Ready; None if it goes away or `timeout` passes."""
        deadline = time.monotonic() + timeout
        while True:
            entry = self._entries.get(backend_id)
            if entry is None:
                return None
            if entry.route.state is RouteState.READY:
                return entry.route
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                await asyncio.wait_for(entry.changed.wait(), remaining)
            except TimeoutError:
                return None


def sweep_due(now: float, idle_since: float | None, max_idle_secs: float) -> bool:
    """Whether a backend idle since `idle_since` (None: busy) must be swept at `now`."""
    return idle_since is not None and now - idle_since >= max_idle_secs


class Activity(Protocol):
    """What the proxy reports: one begin and one end per request or tunnel."""

    def begin(self, backend_id: str) -> None: ...

    def end(self, backend_id: str) -> None: ...


class ActivityTracker:
    """Per backend: requests in flight plus open upgraded connections.

    A backend becomes idle the moment its count drops to zero; an idle
    keep-alive socket holds no count, so it does not keep a backend alive.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._busy: dict[str, int] = {}
        self._idle_since: dict[str, float] = {}

    def track(self, backend_id: str) -> None:
        """Start the idle clock for a backend that just became Ready."""
        if self._busy.get(backend_id, 0) == 0:
            self._idle_since[backend_id] = self._clock()

    def forget(self, backend_id: str) -> None:
        self._busy.pop(backend_id, None)
        self._idle_since.pop(backend_id, None)

    def begin(self, backend_id: str) -> None:
        self._busy[backend_id] = self._busy.get(backend_id, 0) + 1
        self._idle_since.pop(backend_id, None)

    def end(self, backend_id: str) -> None:
        count = self._busy.get(backend_id, 0) - 1
        if count > 0:
            self._busy[backend_id] = count
            return
        self._busy.pop(backend_id, None)
        self._idle_since[backend_id] = self._clock()

    def active(self, backend_id: str) -> int:
        return self._busy.get(backend_id, 0)

    def idle_since(self, backend_id: str) -> float | None:
        """Monotonic time the backend became idle; None while it is busy or unknown."""
        return self._idle_since.get(backend_id)
