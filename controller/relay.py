"""Backend states, from drones into the `backend_status` stream.

A drone's `UpdateBackendStateMessage` is stored as a `BackendStateMessage`
(with the drone, so an index can be rebuilt from the stream alone) and only
then acknowledged with `null`: a drone whose update was not stored gets an
`InvalidRequest` reply saying why; "send again" in it asks for a resend.

Subscribers of `backend.{b}.status` see every publish, including those that
JetStream drops as duplicates, so duplicates are stopped before the publish:
a resend that the index holds already (every controller hears every stored
state) is acknowledged without one. A resend that arrives before its first
copy was heard carries the same message ID (backend, state and time), so the
stream still keeps one. An update that the index would never take
(`index.admits`: the life already ended, or the backend runs on another
drone) is refused for good.

When a drone is Lost, each of its live backends is stored as `Lost`. Every
controller sees the drone go silent; each publishes only what its index
still holds as live there, so the first controller's Lost, once heard, stops
the others. Two that publish at the same moment share the message ID
(backend and the time of the state being replaced, which all controllers
read from the same stream), so JetStream keeps only the first. Their times
differ, and both reach subscribers: a controller whose Lost was dropped
keeps it out of its index, and an index that hears both takes the stored
one (`controller.readback`).
"""

from __future__ import annotations

import logging
import time

from controller import identity
from controller.identity import Refusal
from controller.index import BackendIndex, Entry, admits, duplicate
from controller.jetstream import JetStream, StoreError
from controller.metrics import ControllerMetrics, RelayOutcome
from shared import subjects, wire
from shared.protocol import (
    BackendState,
    BackendStateMessage,
    EndReason,
    ScheduleReply,
    UpdateBackendStateMessage,
    invalid_request,
    utc_now,
)

log = logging.getLogger(__name__)

_WARN_EVERY_SECS = 10.0


class StateRelay:
    def __init__(self, store: JetStream, index: BackendIndex, metrics: ControllerMetrics) -> None:
        self._store = store
        self._index = index
        self._metrics = metrics
        self._last_warning = float("-inf")

    async def handle_update(
        self, msg: UpdateBackendStateMessage, subject: str
    ) -> ScheduleReply | None:
        problem = identity.update_subject(msg, subject)
        if problem is not None:
            self._metrics.backend_updates[RelayOutcome.INVALID].inc()
            self._metrics.refused[Refusal.SUBJECT_MISMATCH].inc()
            log.info("backend update refused: %s", problem, extra={"backend": msg.backend})
            return invalid_request(problem)
        current = self._index.get(msg.backend)
        if duplicate(current, msg.state, msg.drone, msg.time):
            self._metrics.backend_updates[RelayOutcome.DUPLICATE].inc()
            return None
        why = admits(current, msg.state, msg.drone, msg.time)
        if why is not None:
            self._metrics.backend_updates[RelayOutcome.REFUSED].inc()
            ended = current is not None and current.state.terminal
            self._metrics.refused[Refusal.ENDED if ended else Refusal.NOT_OWNER].inc()
            log.info(
                "backend update (%s from %s) not stored: %s",
                msg.state.value,
                msg.drone,
                why,
                extra={"backend": msg.backend, "drone": msg.drone},
            )
            return invalid_request(f"not stored: {why}")
        state = BackendStateMessage(
            cluster=msg.cluster,
            state=msg.state,
            backend=msg.backend,
            time=msg.time,
            drone=msg.drone,
            reason=msg.reason if msg.state.terminal else None,
            exit_code=msg.exit_code if msg.state.terminal else None,
        )
        msg_id = f"{msg.backend}:{msg.state.value}:{msg.time.isoformat()}"
        try:
            await self._store.publish(
                subjects.BACKEND_STATUS_STREAM,
                subjects.backend_status(msg.backend),
                wire.encode(state),
                msg_id,
            )
        except StoreError as exc:
            self._metrics.backend_updates[RelayOutcome.FAILED].inc()
            self._warn("backend update not stored: %s", exc, backend=msg.backend)
            return invalid_request(f"not stored, send again: {exc}")
        self._metrics.backend_updates[RelayOutcome.STORED].inc()
        if state.state.terminal:
            self._metrics.count_end(state.state, state.reason)
        self._index.apply(state)
        return None

    async def publish_lost(self, drone: str) -> int:
        """Store `Lost` for every live backend of a lost drone; returns how many were new."""
        published = 0
        # Index entries change in place while this awaits (another controller's
        # Lost may arrive first), so the IDs that make both controllers' Lost
        # one message are taken before the first await.
        live = [
            (entry.backend, entry.cluster, _lost_id(entry)) for entry in self._index.live_on(drone)
        ]
        for backend, cluster, msg_id in live:
            entry = self._index.get(backend)
            if entry is None or entry.state.terminal or entry.drone != drone:
                continue  # another controller's Lost (or a report) came in meanwhile
            lost = BackendStateMessage(
                cluster=cluster,
                state=BackendState.LOST,
                backend=backend,
                time=utc_now(),
                drone=drone,
                reason=EndReason.LOST.value,
            )
            try:
                fresh = await self._store.publish(
                    subjects.BACKEND_STATUS_STREAM,
                    subjects.backend_status(backend),
                    wire.encode(lost),
                    msg_id,
                )
            except StoreError as exc:
                self._warn("Lost state not stored: %s", exc, backend=backend)
                continue
            self._metrics.lost_backends["stored" if fresh else "duplicate"].inc()
            if fresh:  # else another controller's Lost is the stored one, heard on the feed
                self._index.apply(lost)
                self._metrics.count_end(BackendState.LOST, lost.reason)
                published += 1
                log.info(
                    "backend lost with its drone",
                    extra={"backend": backend, "drone": drone},
                )
        return published

    def _warn(self, text: str, exc: StoreError, *, backend: str) -> None:
        now = time.monotonic()
        if now - self._last_warning >= _WARN_EVERY_SECS:
            self._last_warning = now
            log.warning(text, exc, extra={"backend": backend})


def _lost_id(entry: Entry) -> str:
    return f"lost:{entry.backend}:{entry.time.isoformat()}"
