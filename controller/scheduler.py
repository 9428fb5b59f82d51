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

A request with a `lock` is get-or-create (`controller.locks`): the lock table
in JetStream says whether a live backend holds the lock (it is returned,
`spawned: false`), another request is placing one (it is waited for), or the
lock is free (this request claims it, then places its backend as above). The
lock is freed when no drone takes the backend, and when the backend ends:
right away by the controller that placed it, else by the next request that
finds its holder ended.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import string
import time
from collections.abc import Callable
from datetime import timedelta

import msgspec

from controller.index import BackendIndex, Entry
from controller.jetstream import StoreError
from controller.locks import Action, Decision, LockRecord, decide, fetch_answer, lock_key
from controller.lockstore import LockStore
from controller.metrics import ControllerMetrics, ScheduleOutcome
from controller.registry import DroneRegistry, SpawnOutcome
from shared import bus, subjects
from shared.ids import cluster_token, is_valid_cluster, new_id
from shared.protocol import (
    NO_BACKEND_FOR_LOCK,
    NO_DRONE_AVAILABLE,
    BackendState,
    FetchRequest,
    FetchResponse,
    ScheduleReply,
    ScheduleRequest,
    ScheduleResponse,
    SpawnReply,
    SpawnRequest,
    TerminationRequest,
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
CLAIM_MARGIN_SECS = 2.0  # past the last spawn deadline, for the drone's report to arrive
LOCK_POLL_SECS = 0.005  # waiting for another request's claim: first pause, doubled each time
LOCK_POLL_MAX_SECS = 0.1
MAX_HELD_LOCKS = 1_000_000  # locks this controller frees itself; beyond, the next request does
MAX_KNOWN_LOCKS = 100_000  # held records kept to answer without a read (then forgotten)


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
        locks: LockStore,
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
        self._locks = locks
        self._held: dict[str, tuple[str, int]] = {}  # backend → (lock key, revision)
        self._known: dict[str, tuple[LockRecord, int]] = {}  # lock key → held record
        # After this, no drone can still take a claim's backend (each spawn's deadline
        # falls within its offer's timeout), so an unfinished claim is abandoned.
        self._claim_timeout = timedelta(seconds=self._attempts * spawn_timeout + CLAIM_MARGIN_SECS)

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
        if request.lock is not None:
            try:
                return await self._schedule_locked(request, request.lock)
            except StoreError as exc:
                log.warning("lock table: %s", exc, extra={"cluster": cluster})
                return invalid_request(f"lock table unavailable: {exc}"), ScheduleOutcome.ERROR
        token = bearer_token() if request.require_bearer_token else None
        return await self._place(request, request.backend_id or new_id(), token)

    async def _schedule_locked(
        self, request: ScheduleRequest, lock: str
    ) -> tuple[ScheduleResponse, ScheduleOutcome]:
        """Get or create: the lock's live holder, else a new backend that holds it.

        The first try creates the record without reading it (most locks asked
        for are new); every lost race reads again and decides again
        (`controller.locks.decide`)."""
        key = lock_key(request.cluster, lock)
        give_up = self._clock() + self._claim_timeout.total_seconds() + self._spawn_timeout
        pause = LOCK_POLL_SECS
        found = self._known.get(key)
        if found is None:
            decision = Decision(Action.CLAIM)
        else:
            decision = self._decide(found)
            if decision.action is not Action.RETURN:
                self._known.pop(key, None)
        while True:
            record, revision = found if found is not None else (None, 0)
            if decision.action is Action.RETURN and record is not None:
                assert record.drone is not None
                self._remember(key, record, revision)
                reply = scheduled(record.drone, record.backend_id, record.bearer_token, False)
                return reply, ScheduleOutcome.LOCK_HELD
            if decision.action is Action.ADOPT and record is not None:
                held = msgspec.structs.replace(record, drone=decision.drone)
                adopted = await self._locks.update(key, held, revision)
                if adopted is not None:
                    log.info("lock %r adopted: %s", lock, decision.why, extra=_extra(held))
                    self._remember(key, held, adopted)
                    reply = scheduled(held.drone or "", held.backend_id, held.bearer_token, False)
                    return reply, ScheduleOutcome.LOCK_HELD
            elif decision.action is Action.CLAIM or decision.action is Action.REPLACE:
                claim = LockRecord(
                    cluster=request.cluster,
                    lock=lock,
                    backend_id=request.backend_id or new_id(),
                    claimed_at=utc_now(),
                    bearer_token=bearer_token() if request.require_bearer_token else None,
                )
                if decision.action is Action.CLAIM:
                    claimed = await self._locks.create(key, claim)
                else:
                    claimed = await self._locks.update(key, claim, revision)
                    if claimed is not None:
                        log.info("lock %r taken again: %s", lock, decision.why, extra=_extra(claim))
                if claimed is not None:
                    return await self._place_claimed(request, key, claim, claimed)
            elif decision.action is Action.WAIT:
                if self._clock() > give_up:
                    return NO_DRONE_AVAILABLE, ScheduleOutcome.NO_DRONE
                await asyncio.sleep(pause)
                pause = min(pause * 2, LOCK_POLL_MAX_SECS)
            found = await self._locks.get(key)
            decision = self._decide(found)

    def _decide(self, found: tuple[LockRecord, int] | None) -> Decision:
        record = found[0] if found is not None else None
        return decide(record, self._holder(record), utc_now(), self._claim_timeout)

    def _holder(self, record: LockRecord | None) -> Entry | None:
        """What the index holds of the record's backend (None: no record, or unheard of)."""
        return self._index.get(record.backend_id) if record is not None else None

    def _remember(self, key: str, record: LockRecord, revision: int) -> None:
        """Keep a held lock's record: asked again, it is answered with no read while
        the index holds its backend as live (a held record changes only after that)."""
        if len(self._known) >= MAX_KNOWN_LOCKS:
            self._known.clear()
        self._known[key] = (record, revision)

    async def _place_claimed(
        self, request: ScheduleRequest, key: str, claim: LockRecord, revision: int
    ) -> tuple[ScheduleResponse, ScheduleOutcome]:
        """Place the claim's backend; record its drone, or free the lock if none took it."""
        reply, outcome = await self._place(request, claim.backend_id, claim.bearer_token)
        placed = reply.Scheduled if isinstance(reply, ScheduleReply) else None
        if placed is None:
            await self._locks.delete(key, revision)
            return reply, outcome
        held = msgspec.structs.replace(claim, drone=placed.drone)
        held_revision = await self._locks.update(key, held, revision)
        if held_revision is None:
            # Only if placing outlasted the claim timeout, which the spawn deadlines
            # rule out; the lock then names another backend, so this one must go.
            log.error("lock %r was taken over while placed; stopping it", claim.lock)
            await self._terminate(request.cluster, claim.backend_id)
            return NO_DRONE_AVAILABLE, ScheduleOutcome.NO_DRONE
        if len(self._held) < MAX_HELD_LOCKS:
            self._held[claim.backend_id] = (key, held_revision)
        self._remember(key, held, held_revision)
        return reply, outcome

    def holds(self, backend_id: str) -> bool:
        """Whether this controller placed `backend_id` for a lock it still holds."""
        return backend_id in self._held

    async def release(self, backend_id: str) -> None:
        """The backend ended: free the lock it holds, if this controller placed it
        (any other holder's lock is freed by the next request for it)."""
        held = self._held.pop(backend_id, None)
        if held is None:
            return
        key, revision = held
        self._known.pop(key, None)
        try:
            if await self._locks.delete(key, revision):
                log.debug("lock freed", extra={"backend": backend_id})
        except StoreError as exc:
            log.warning("lock not freed (the next request frees it): %s", exc)

    async def _terminate(self, cluster: str, backend_id: str) -> None:
        message = TerminationRequest(cluster_id=cluster, backend_id=backend_id)
        try:
            await bus.publish(self._nc, subjects.terminate(cluster, backend_id), message)
        except Exception as exc:
            log.warning("termination not sent: %s", exc, extra={"backend": backend_id})

    async def fetch(self, request: FetchRequest, subject: str) -> FetchResponse:
        """The backend holding a lock, or "NoBackendForLock"; a claim is waited for."""
        problem = self._cluster_problem(request.cluster, subject)
        if problem is not None:
            return invalid_request(problem)
        key = lock_key(request.cluster, request.lock)
        give_up = self._clock() + self._spawn_timeout
        pause = LOCK_POLL_SECS
        try:
            while True:
                found = await self._locks.get(key)
                record = found[0] if found is not None else None
                answer = fetch_answer(record, self._holder(record))
                if answer is not None:
                    assert answer.drone is not None
                    return scheduled(answer.drone, answer.backend_id, answer.bearer_token, None)
                if record is None or not record.claimed or self._clock() > give_up:
                    return NO_BACKEND_FOR_LOCK
                await asyncio.sleep(pause)
                pause = min(pause * 2, LOCK_POLL_MAX_SECS)
        except StoreError as exc:
            log.warning("lock table: %s", exc, extra={"cluster": request.cluster})
            return invalid_request(f"lock table unavailable: {exc}")

    async def _place(
        self, request: ScheduleRequest, backend_id: str, token: str | None
    ) -> tuple[ScheduleResponse, ScheduleOutcome]:
        """Reserve the ID, then offer the backend to up to `attempts` drones."""
        cluster = request.cluster
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
        tried: list[str] = []
        invalid: list[str] = []
        try:
            for _ in range(self._attempts):
                drone = self._registry.choose(cluster, self._clock(), tried, request.pool)
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
            lock=request.lock,
            lifetime_limit_secs=request.lifetime_limit_secs,
            termination_grace_secs=request.termination_grace_secs,
            pool=request.pool,
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


def _extra(record: LockRecord) -> dict[str, str]:
    return {"backend": record.backend_id, "cluster": record.cluster}
