"""The schedule handler: validate a request, pick a drone, hand it the backend, answer.

Each request runs as its own task (the endpoint is concurrent), so a slow
drone delays only the requests it was offered. The choice itself is
synchronous and counts the backend against the drone at once, so a burst of
requests spreads over the drones instead of piling onto the one that looked
emptiest when the burst began.

A request is tried on up to `attempts` drones, best first: a drone that
refuses or does not answer within `spawn_timeout` is passed over for the
next. When none accepts, the answer is `"NoDroneAvailable"`, or the drones'
`InvalidRequest` when every drone asked said the request itself cannot run.

Each spawn carries a deadline, `spawn_timeout` less a margin for clock skew
and transit: a drone that reads it later refuses it, so a drone that was
frozen or cut off never starts a backend that was meanwhile placed on
another. Right after a NATS reconnect, drones may not have subscribed again:
"no responders" is then tried again within the spawn's time, not taken for
an absent drone.

A client-chosen `backend_id` that the index holds as live, or as Lost on a
drone that has not been heard without it since (see `controller.index`), is
refused with `InvalidRequest`: one ID never runs twice. The ID is reserved in
the index before the first drone is asked, so a concurrent second request for
it is refused too; the reservation is dropped if no drone takes the backend.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import string
import time
from collections.abc import Callable
from datetime import timedelta

from controller.index import BackendIndex
from controller.metrics import ControllerMetrics, ScheduleOutcome
from controller.registry import DroneRegistry, SpawnOutcome
from shared import bus, subjects
from shared.ids import cluster_token, is_valid_cluster, new_id
from shared.protocol import (
    NO_DRONE_AVAILABLE,
    BackendState,
    ScheduleReply,
    ScheduleRequest,
    ScheduleResponse,
    SpawnReply,
    SpawnRequest,
    invalid_request,
    scheduled,
    utc_now,
)

log = logging.getLogger(__name__)

TOKEN_ALPHABET = string.ascii_letters + string.digits
TOKEN_LENGTH = 30
# Of the spawn timeout, what a drone may not use: clocks a little apart, the reply's way back.
DEADLINE_MARGIN_SECS = 1.0
NO_RESPONDERS_PAUSE_SECS = 0.05
MAX_CLUSTER_CHECKS = 4096


def bearer_token() -> str:
    """A 30-character alphanumeric token from the operating system's secure source."""
    return "".join(secrets.choice(TOKEN_ALPHABET) for _ in range(TOKEN_LENGTH))


class Scheduler:
    def __init__(
        self,
        nc: bus.NatsClient,
        registry: DroneRegistry,
        index: BackendIndex,
        metrics: ControllerMetrics,
        *,
        spawn_timeout: float,
        attempts: int,
        on_cluster: Callable[[str], None] = lambda cluster: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._nc = nc
        self._registry = registry
        self._index = index
        self._metrics = metrics
        self._spawn_timeout = spawn_timeout
        self._attempts = max(1, attempts)
        self._on_cluster = on_cluster
        self._clock = clock
        self._cluster_checked: dict[tuple[str, str], str | None] = {}

    async def handle(self, request: ScheduleRequest, subject: str) -> ScheduleResponse:
        started = time.perf_counter()
        try:
            reply, outcome = await self._schedule(request, subject)
        except Exception as exc:
            log.exception("schedule request failed", extra={"cluster": request.cluster})
            reply = invalid_request(f"internal error: {type(exc).__name__}")
            outcome = ScheduleOutcome.ERROR
        self._metrics.schedule_requests[outcome].inc()
        self._metrics.schedule_seconds.observe(time.perf_counter() - started)
        return reply

    def undecodable(self, message: str) -> ScheduleResponse:
        """The answer to a request that did not decode (counted as invalid)."""
        self._metrics.schedule_requests[ScheduleOutcome.INVALID].inc()
        return invalid_request(message)

    async def _schedule(
        self, request: ScheduleRequest, subject: str
    ) -> tuple[ScheduleResponse, ScheduleOutcome]:
        cluster = request.cluster
        problem = self._cluster_problem(cluster, subject)
        if problem is not None:
            return invalid_request(problem), ScheduleOutcome.INVALID
        backend_id = request.backend_id or new_id()
        in_the_way = self._index.reserve(backend_id, cluster, utc_now())
        if in_the_way is not None:
            if in_the_way.state is BackendState.LOST:
                message = (
                    f"backend_id: {backend_id!r} was lost with drone {in_the_way.drone} at "
                    f"{in_the_way.time.isoformat()} and may still run there; it is free again "
                    "once that drone is heard without it"
                )
            else:
                message = (
                    f"backend_id: {backend_id!r} is already live in cluster "
                    f"{in_the_way.cluster} (state {in_the_way.state.value})"
                )
            return invalid_request(message), ScheduleOutcome.INVALID
        self._on_cluster(cluster)
        token = bearer_token() if request.require_bearer_token else None
        tried: list[str] = []
        invalid: list[str] = []
        try:
            for _ in range(self._attempts):
                drone = self._registry.choose(cluster, self._clock(), tried)
                if drone is None:
                    break
                tried.append(drone)
                self._index.assign(backend_id, drone)
                outcome, why = await self._offer(drone, request, backend_id, token)
                if outcome is SpawnOutcome.ACCEPTED:
                    return scheduled(drone, backend_id, token), ScheduleOutcome.SCHEDULED
                if outcome is SpawnOutcome.INVALID:
                    invalid.append(why)
        except BaseException:
            self._index.release(backend_id)
            raise
        self._index.release(backend_id)
        if invalid and len(invalid) == len(tried):
            return invalid_request(invalid[0]), ScheduleOutcome.INVALID
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "no drone took backend %s after %d offer(s)",
                backend_id,
                len(tried),
                extra={"backend": backend_id, "cluster": cluster},
            )
        return NO_DRONE_AVAILABLE, ScheduleOutcome.NO_DRONE

    def _cluster_problem(self, cluster: str, subject: str) -> str | None:
        """Why this cluster cannot be scheduled here (None: it can). Remembered per subject."""
        key = (cluster, subject)
        try:
            return self._cluster_checked[key]
        except KeyError:
            pass
        # Bounded in count, and each key in size: the cluster field is at most
        # MAX_CLUSTER_LENGTH characters, and the subject was built from a valid one
        # (nobody serves subjects of other shapes).
        if len(self._cluster_checked) >= MAX_CLUSTER_CHECKS:
            self._cluster_checked.clear()
        problem = self._cluster_checked[key] = self._check_cluster(cluster, subject)
        return problem

    def _check_cluster(self, cluster: str, subject: str) -> str | None:
        if not is_valid_cluster(cluster):
            return f"cluster: {cluster!r} is not a domain name (optionally with :port)"
        token = subjects.token_at(subject, 1)
        if token != cluster_token(cluster):
            return f"cluster: {cluster!r} does not match the subject {subject!r}"
        if not self._registry.serves(cluster):
            return f"cluster: this controller does not serve {cluster!r}"
        return None

    async def _offer(
        self, drone: str, request: ScheduleRequest, backend_id: str, token: str | None
    ) -> tuple[SpawnOutcome, str]:
        """Ask one drone to run the backend; the registry learns how it went."""
        deadline = utc_now() + timedelta(seconds=self._spawn_timeout - self._deadline_margin)
        spawn = SpawnRequest(
            cluster=request.cluster,
            drone_id=drone,
            backend_id=backend_id,
            max_idle_secs=request.max_idle_secs,
            metadata=request.metadata,
            executable=request.executable,
            bearer_token=token,
            deadline=deadline,
        )
        outcome, why = SpawnOutcome.FAILED, ""
        try:
            outcome, why = await self._spawn(drone, spawn)
        finally:
            self._registry.spawn_result(drone, outcome, self._clock())
            self._metrics.spawn_attempts[outcome].inc()
        return outcome, why

    @property
    def _deadline_margin(self) -> float:
        return min(DEADLINE_MARGIN_SECS, self._spawn_timeout / 2)

    async def _spawn(self, drone: str, spawn: SpawnRequest) -> tuple[SpawnOutcome, str]:
        extra = {"drone": drone, "backend": spawn.backend_id}
        try:
            reply = await self._request_spawn(drone, spawn)
        except (bus.RequestTimeout, bus.NoResponders) as exc:
            log.warning("drone did not take a spawn request: %s", exc, extra=extra)
            return SpawnOutcome.UNREACHABLE, str(exc)
        except bus.BadReply as exc:
            log.warning("drone answered a spawn request strangely: %s", exc, extra=extra)
            return SpawnOutcome.REFUSED, str(exc)
        except bus.BusUnavailable as exc:
            log.warning("spawn request not sent: %s", exc, extra=extra)
            return SpawnOutcome.FAILED, str(exc)
        if isinstance(reply, ScheduleReply):
            message = reply.InvalidRequest.message if reply.InvalidRequest else str(reply)
            log.info("drone says the request cannot run there: %s", message, extra=extra)
            return SpawnOutcome.INVALID, message
        if not reply and log.isEnabledFor(logging.DEBUG):
            log.debug("drone refused the backend", extra=extra)
        return (SpawnOutcome.ACCEPTED, "") if reply else (SpawnOutcome.REFUSED, "")

    async def _request_spawn(self, drone: str, spawn: SpawnRequest) -> SpawnReply:
        """The spawn request, with "no responders" tried again right after a reconnect.

        Every try stays within the spawn's own timeout, so the drone's
        deadline is never passed by a request still on its way.
        """
        started = self._clock()
        while True:
            left = self._spawn_timeout - (self._clock() - started)
            try:
                reply: SpawnReply = await bus.request(
                    self._nc, subjects.drone_spawn(drone), spawn, SpawnReply, timeout=left
                )
                return reply
            except bus.NoResponders:
                if not self._registry.reconnected_lately(self._clock()):
                    raise
                if left <= NO_RESPONDERS_PAUSE_SECS + self._deadline_margin:
                    raise
            self._metrics.spawn_retries.inc()
            await asyncio.sleep(NO_RESPONDERS_PAUSE_SECS)
