"""What a drone's heartbeat tells about backends it should no longer run: a pure decision.

A heartbeat may name the backends its drone runs (`DroneStatusMessage.backends`,
ext). Where that disagrees with the index, the index wins, because it is what
the stream holds and every client has seen:

* a backend the index holds as `Lost` on this drone: its end was announced
  while the drone was silent (frozen, cut off, restarted too late), so that
  life must stop, without a word, at once;
* a backend the index holds as live on another drone: a spawn this drone ran
  after the controller had given up on it.

Each fence names the time of the stored state, and the drone stops only a
life that began before it, so a later life of a reused ID is never touched.
A held `Lost` backend that the heartbeat does not name is no longer running
there: its ID may be given out again (`cleared`). Backends the index does not
know are left alone: their first report may simply not have arrived yet.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from controller.index import BackendIndex
from shared.protocol import BackendState, Fence


@dataclass(frozen=True, slots=True)
class FencePlan:
    fences: list[Fence] = field(default_factory=list)
    cleared: list[str] = field(default_factory=list)  # held Lost IDs its drone no longer runs


def plan(drone: str, listed: Iterable[str], index: BackendIndex) -> FencePlan:
    running = set(listed)
    result = FencePlan()
    for backend in sorted(running):
        entry = index.get(backend)
        if entry is None or entry.drone is None:
            continue
        if entry.state is BackendState.LOST and entry.drone == drone:
            reason = f"declared Lost at {entry.time.isoformat()} while this drone was silent"
        elif not entry.state.terminal and entry.drone != drone:
            reason = f"placed on drone {entry.drone}"
        else:
            continue
        result.fences.append(Fence(backend=backend, since=entry.time, reason=reason))
    result.cleared.extend(e.backend for e in index.held_on(drone) if e.backend not in running)
    return result
