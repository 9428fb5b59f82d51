"""Delivers backend state updates to the controller, in order, in the background.

`report` only appends to the backend's queue and returns: a state machine, the
proxy or the sweeper never wait for NATS or for a controller. One task per
backend with pending updates sends them one after another as requests on
`cluster.{c}.drone.{d}.backend.{b}.status` (the subject names the drone, so
NATS permissions can pin it), each retried with growing pauses until a
controller acknowledges it with `null` (stored). The update keeps its original
time across retries, so a controller storing a resent update recognises it.
An update that a controller refuses for a reason other than "send again" is
dropped with a warning: repeating it could never succeed.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random

from drone.agent.metrics import AgentMetrics
from shared import bus, subjects
from shared.protocol import ScheduleReply, UpdateBackendStateMessage

log = logging.getLogger(__name__)

FIRST_RETRY_SECS = 0.1
RESEND_HINT = "send again"


class StatusReporter:
    def __init__(
        self,
        nc: bus.NatsClient,
        metrics: AgentMetrics,
        *,
        timeout: float = 5.0,
        retry_max_secs: float = 5.0,
    ) -> None:
        self._nc = nc
        self._metrics = metrics
        self._timeout = timeout
        self._retry_max = retry_max_secs
        self._queues: dict[str, collections.deque[UpdateBackendStateMessage]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def pending(self) -> int:
        return sum(len(queue) for queue in self._queues.values())

    def report(self, update: UpdateBackendStateMessage) -> None:
        """Queue `update` behind the earlier ones of its backend; never blocks."""
        queue = self._queues.setdefault(update.backend, collections.deque())
        queue.append(update)
        self._idle.clear()
        if update.backend not in self._tasks:
            task = asyncio.create_task(self._deliver(update.backend, queue))
            self._tasks[update.backend] = task

    async def flush(self, timeout: float) -> bool:
        """Wait until every queued update is delivered; False if `timeout` passes first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        if self.pending:
            log.warning("%d backend state update(s) not delivered", self.pending)

    async def _deliver(
        self, backend: str, queue: collections.deque[UpdateBackendStateMessage]
    ) -> None:
        try:
            while queue:
                await self._send_until_stored(queue[0])
                queue.popleft()
        finally:
            if self._queues.get(backend) is queue and not queue:
                del self._queues[backend]
            self._tasks.pop(backend, None)
            if not self._tasks:
                self._idle.set()

    async def _send_until_stored(self, update: UpdateBackendStateMessage) -> None:
        subject = subjects.drone_update_backend_state(update.cluster, update.drone, update.backend)
        pause = FIRST_RETRY_SECS
        attempt = 0
        while True:
            attempt += 1
            try:
                reply = await bus.request(
                    self._nc, subject, update, ScheduleReply | None, timeout=self._timeout
                )
            except bus.BadReply as exc:
                self._drop(update, str(exc))
                return
            except bus.BusError as exc:
                problem = str(exc)
            except Exception as exc:  # nats-py errors outside bus's translation
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if reply is None:
                    return
                message = reply.InvalidRequest.message if reply.InvalidRequest else str(reply)
                if RESEND_HINT not in message:
                    self._drop(update, message)
                    return
                problem = message
            self._metrics.status_retries.inc()
            if attempt == 1 or attempt % 10 == 0:
                log.info(
                    "state %s not delivered yet (attempt %d): %s",
                    update.state.value,
                    attempt,
                    problem,
                    extra={"backend": update.backend},
                )
            await asyncio.sleep(pause * random.uniform(0.8, 1.2))
            pause = min(self._retry_max, pause * 2)

    def _drop(self, update: UpdateBackendStateMessage, why: str) -> None:
        self._metrics.status_dropped.inc()
        log.warning(
            "state %s refused by the controller, not sent again: %s",
            update.state.value,
            why,
            extra={"backend": update.backend},
        )
