"""Backend activity across proxy worker processes: the pure decisions.

A worker counts its own requests and tunnels per backend (`WorkerCounts`)
and tells the drone process only about transitions: a backend it now holds
busy, and one it no longer does. The drone process keeps, per worker, the set
of backends that worker holds busy (`HeldByWorker`) and turns each change
into one begin or end on its `ActivityTracker`, so a backend counts as busy
while any process has it busy and goes idle when the last one lets go.

Reports go out in batches. A backend that becomes busy is reported at once
(`begin` says so); one that becomes idle waits a little (`end` says when a
report is due), so a worker that serves request after request for a backend
sends nothing in between. The drone process stamps the idle moment when the
report arrives, so the delay only ever sweeps later, never earlier.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# How long a worker sits on "this backend went idle" before reporting it.
IDLE_REPORT_DELAY_SECS = 0.05


@dataclass(slots=True)
class Changes:
    """One batch for the drone process, applied in this order: busy, then idle.

    A backend in both lists was busy and idle again since the last batch,
    which restarts its idle clock."""

    busy: list[str] = field(default_factory=list)
    idle: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.busy or self.idle)


class WorkerCounts:
    """A worker's side: counts per backend and what the drone process was told."""

    __slots__ = ("_counts", "_dirty", "_reported")

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._reported: set[str] = set()  # backends the drone process believes busy here
        self._dirty: set[str] = set()  # changed since the last batch

    def begin(self, backend_id: str) -> bool:
        """Count one more; True when a batch should go out now."""
        count = self._counts.get(backend_id, 0)
        self._counts[backend_id] = count + 1
        if count == 0 and backend_id not in self._reported:
            self._dirty.add(backend_id)
            return True
        return False

    def end(self, backend_id: str) -> bool:
        """Count one less; True when the backend went idle here (a batch is due later)."""
        count = self._counts.get(backend_id, 0) - 1
        if count > 0:
            self._counts[backend_id] = count
            return False
        if self._counts.pop(backend_id, None) is None:
            return False  # not counted here: nothing to undo
        self._dirty.add(backend_id)
        return True

    def active(self, backend_id: str) -> int:
        return self._counts.get(backend_id, 0)

    def drain(self) -> Changes:
        """What changed since the last batch, as the drone process must hear it."""
        changes = Changes()
        for backend_id in self._dirty:
            busy = backend_id in self._counts
            reported = backend_id in self._reported
            if busy:
                if not reported:
                    changes.busy.append(backend_id)
                    self._reported.add(backend_id)
            elif reported:
                changes.idle.append(backend_id)
                self._reported.discard(backend_id)
            else:  # busy and idle again within one batch
                changes.busy.append(backend_id)
                changes.idle.append(backend_id)
        self._dirty.clear()
        return changes


class HeldByWorker:
    """The drone process's side: which backends one worker holds busy."""

    __slots__ = ("busy",)

    def __init__(self) -> None:
        self.busy: set[str] = set()

    def apply(self, changes: Changes) -> tuple[list[str], list[str]]:
        """A batch from the worker → (backends to begin, backends to end), in that order."""
        begins = []
        for backend_id in changes.busy:
            if backend_id not in self.busy:
                self.busy.add(backend_id)
                begins.append(backend_id)
        ends = []
        for backend_id in changes.idle:
            if backend_id in self.busy:
                self.busy.discard(backend_id)
                ends.append(backend_id)
        return begins, ends

    def lost(self) -> list[str]:
        """The worker is gone: every backend it held busy ends now."""
        ends = sorted(self.busy)
        self.busy.clear()
        return ends
