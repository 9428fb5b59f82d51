"""The drone agent: presence, spawns, and the loops that watch every backend.

Per backend the work is done by a `BackendRunner`; the agent owns what spans
backends:

- presence: `DroneConnectRequest` at start (and after a NATS reconnect), a
  `DroneStatusMessage` every `heartbeat_secs` and on every change of what it
  says, the drain flag (kept in the state directory, so it survives restarts);
- spawn requests, answered after validation and before any Docker call;
- one Docker events stream for the exits of this drone's containers;
- maintenance: start-up recovery from container labels, then a periodic
  reconcile against Docker (exits the events stream missed, containers that
  vanished, leftovers without a runner), which doubles as the health check of
  the engine;
- the idle sweeper and the DNS refresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import logging
import time
from collections.abc import Awaitable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from drone.agent import admission, spec, statedir
from drone.agent.docker_runtime import (
    ContainerInfo,
    DockerRuntime,
    DockerRuntimeError,
    DockerUnavailable,
    ExitEvent,
    StreamRestarted,
)
from drone.agent.imagecollector import ImageCollector
from drone.agent.metrics import AgentMetrics
from drone.agent.presence import Presence
from drone.agent.reporter import StatusReporter
from drone.agent.runner import BackendRunner, Identity, Services, publish
from drone.agent.state import (
    Adopted,
    ContainerExited,
    DockerFailed,
    Fenced,
    IdleSwept,
    Spawned,
    TerminateRequested,
)
from drone.config import DroneSettings
from drone.routes import ActivityTracker, RouteTable, sweep_due
from shared import bus, subjects
from shared.protocol import (
    BackendState,
    DrainDrone,
    DroneConnectRequest,
    DroneState,
    DroneStatusMessage,
    FenceBackends,
    SpawnReply,
    SpawnRequest,
    TerminationRequest,
    invalid_request,
    utc_now,
)

log = logging.getLogger(__name__)


def _version() -> str:
    try:
        return importlib.metadata.version("plane")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0+unknown"


VERSION = _version()
TERMINATE_REPLY_WAIT_SECS = 5.0  # a terminate request is answered once the state is decided
STREAM_TIMEOUT_SECS = 5.0
HEALTH_CHECK_OPERATIONS = frozenset({"list", "info"})  # the maintenance pass's own calls
NEVER = datetime.min.replace(tzinfo=UTC)  # the beginning of a life whose start is unknown


def next_sweep_delay(now: float, due_times: list[float], interval: float) -> float:
    """How long the sweeper may sleep: until the earliest known due time, at most `interval`.

    A backend that turns idle while we sleep is due `max_idle_secs` later, so the
    interval bounds its lateness; the ones already idle are swept on time.
    """
    if not due_times:
        return interval
    return max(0.001, min(interval, min(due_times) - now))


class Agent:
    def __init__(
        self,
        settings: DroneSettings,
        *,
        nc: bus.NatsClient,
        routes: RouteTable,
        activity: ActivityTracker,
        metrics: AgentMetrics,
        drone_id: str,
        ip: str,
    ) -> None:
        self.settings = settings
        self.drone_id = drone_id
        self.ip = ip
        self.metrics = metrics
        self.state_dir = Path(settings.state_dir)
        self.runtime = DockerRuntime(settings.docker, on_error=self._on_docker_error)
        self.reporter = StatusReporter(
            nc,
            metrics,
            timeout=settings.agent.status_timeout_secs,
            retry_max_secs=settings.agent.status_retry_max_secs,
        )
        self.services = Services(
            settings=settings,
            drone_id=drone_id,
            ip=ip,
            nc=nc,
            runtime=self.runtime,
            routes=routes,
            activity=activity,
            reporter=self.reporter,
            metrics=metrics,
            host_memory_bytes=lambda: self._host_memory,
        )
        self._nc = nc
        self._runners: dict[str, BackendRunner] = {}
        self._runner_tasks: dict[str, asyncio.Task[None]] = {}
        self._terminate_endpoints: dict[str, bus.Endpoint[Any]] = {}
        self._endpoints: list[bus.Endpoint[Any]] = []
        self._loops: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()
        self._draining = statedir.load_draining(self.state_dir)
        self._recovered = False
        self._docker_available = True
        self._host_memory = 0
        self._wake_maintenance = asyncio.Event()
        self._stopping = False
        self._last_said: tuple[DroneState, bool] | None = None
        metrics.count_backends_with(self._count)
        metrics.docker_available.set(1)

    # --- what others read -------------------------------------------------------------

    @property
    def draining(self) -> bool:
        return self._draining

    @property
    def docker_available(self) -> bool:
        return self._docker_available

    def runner(self, backend_id: str) -> BackendRunner | None:
        return self._runners.get(backend_id)

    async def wait_gone(self, backend_id: str, timeout: float) -> bool:
        """Wait until the backend's runner is done (container removed); False on timeout."""
        task = self._runner_tasks.get(backend_id)
        if task is None:
            return True
        done, _ = await asyncio.wait({task}, timeout=timeout)
        return bool(done)

    def live_runners(self) -> list[BackendRunner]:
        return [r for r in self._runners.values() if not r.state.terminal]

    def presence(self) -> Presence:
        return Presence(
            recovered=self._recovered,
            draining=self._draining,
            docker_available=self._docker_available,
            running_backends=len(self.live_runners()),
            max_backends=self.settings.agent.max_backends,
        )

    # --- life ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Announce and adopt what runs (routing it again); spawns come with `take_spawns`."""
        await self.announce()
        self._loop("heartbeat", self._heartbeat())
        nc = self._nc
        self._endpoints.append(
            await bus.serve(
                nc,
                subjects.drain(self.settings.cluster, self.drone_id),
                DrainDrone,
                self._on_drain,
            )
        )
        self._endpoints.append(
            await bus.serve(
                nc,
                subjects.drone_fence(self.drone_id),
                FenceBackends,
                self._on_fence,
                replies=False,
                concurrent=False,
            )
        )
        await self._maintain_once()
        self._loop("maintenance", self._maintenance())
        self._loop("exits", self._watch_exits())
        self._loop("sweeper", self._sweeper())
        self._loop("dns", self._dns_refresh())
        if self.settings.docker.image_gc:
            collector = ImageCollector(self.runtime, self.settings.docker, self.metrics)
            self._loop("image-gc", collector.run())

    async def take_spawns(self) -> None:
        """Serve spawn requests; returns once the server has the subscription."""
        self._endpoints.append(
            await bus.serve(
                self._nc,
                subjects.drone_spawn(self.drone_id),
                SpawnRequest,
                self._on_spawn,
                error_reply=invalid_request,
            )
        )
        await bus.settle(self._nc, STREAM_TIMEOUT_SECS)
        self._send_status_soon()
        log.info(
            "agent ready: %d backend(s) adopted%s",
            len(self._runners),
            ", draining" if self._draining else "",
            extra={"drone": self.drone_id},
        )

    async def stop(self) -> None:
        """Stop heartbeats and work; leave backends running unless configured otherwise."""
        if self._stopping:
            return
        self._stopping = True
        for endpoint in self._endpoints:
            await endpoint.stop(timeout=2.0)
        self._endpoints.clear()
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        self._loops.clear()
        agent = self.settings.agent
        tasks = list(self._runner_tasks.values())
        if agent.terminate_on_shutdown:
            for runner in self.live_runners():
                runner.post(TerminateRequested())
            if tasks:
                grace = agent.termination_grace_secs + self.settings.docker.api_timeout_secs
                await asyncio.wait(tasks, timeout=grace)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        for endpoint in list(self._terminate_endpoints.values()):
            await endpoint.stop(timeout=1.0)
        self._terminate_endpoints.clear()
        await self._publish_status(DroneState.STOPPED, ready=False)
        await self.reporter.flush(timeout=2.0)
        await self.reporter.close()
        for task in list(self._background):
            task.cancel()
        await self.runtime.close()

    def _loop(self, name: str, work: Awaitable[None]) -> None:
        async def guarded() -> None:
            try:
                await work
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("agent loop %s failed", name, extra={"drone": self.drone_id})

        self._loops.append(asyncio.create_task(guarded(), name=f"agent-{name}"))

    def _background_task(self, work: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # --- presence ----------------------------------------------------------------------------

    async def announce(self) -> None:
        """Tell controllers this drone exists (at start and after every NATS reconnect)."""
        message = DroneConnectRequest(
            drone_id=self.drone_id, cluster=self.settings.cluster, ip=self.ip
        )
        await publish(self._nc, subjects.drone_register(self.drone_id), message)

    async def on_nats_reconnect(self) -> None:
        await self.announce()
        await self.send_status()

    async def _heartbeat(self) -> None:
        while True:
            await self.send_status()
            await asyncio.sleep(self.settings.agent.heartbeat_secs)

    async def send_status(self) -> None:
        presence = self.presence()
        self.metrics.ready.set(1 if presence.ready else 0)
        self._last_said = (presence.state, presence.ready)
        await self._publish_status(presence.state, ready=presence.ready)

    async def _publish_status(self, state: DroneState, *, ready: bool) -> None:
        message = DroneStatusMessage(
            drone_id=self.drone_id,
            cluster=self.settings.cluster,
            drone_version=VERSION,
            ready=ready,
            state=state,
            running_backends=len(self.live_runners()),
            ip=self.ip,
            backends=[runner.backend_id for runner in self.live_runners()],
            pool=self.settings.pool,
        )
        await publish(self._nc, subjects.drone_status(self.drone_id), message)

    def _send_status_soon(self) -> None:
        """A heartbeat now, when what it would say changed (ready, state)."""
        presence = self.presence()
        if self._stopping or self._last_said == (presence.state, presence.ready):
            return
        self._background_task(self.send_status())

    async def _on_drain(self, request: DrainDrone, subject: str) -> None:
        if request.drain != self._draining:
            self._draining = request.drain
            try:
                statedir.save_draining(self.state_dir, request.drain)
            except statedir.StateDirError as exc:
                log.error("drain flag not kept across restarts: %s", exc)
            log.info("drain %s", "on" if request.drain else "off", extra={"drone": self.drone_id})
        self._send_status_soon()
        return None

    # --- spawning ----------------------------------------------------------------------------

    def _admission_facts(self) -> admission.Facts:
        return admission.Facts(
            drone_id=self.drone_id,
            cluster=self.settings.cluster,
            recovered=self._recovered,
            draining=self._draining,
            docker_available=self._docker_available,
            live_backends=len(self.live_runners()),
            max_backends=self.settings.agent.max_backends,
            allow_volume_mounts=self.settings.docker.allow_volume_mounts,
            pool=self.settings.pool,
        )

    async def _on_spawn(self, request: SpawnRequest, subject: str) -> SpawnReply:
        now = utc_now()
        decision = admission.decide(request, self._admission_facts(), self._runners, now)
        self.metrics.spawn_requests.labels(decision.outcome.value).inc()
        extra = {"backend": request.backend_id, "drone": self.drone_id}
        if not decision.accepted:
            log.info("spawn refused: %s", decision.reason, extra=extra)
            return invalid_request(decision.reason) if decision.request_at_fault else False
        identity = Identity(
            backend_id=request.backend_id,
            cluster=request.cluster,
            port=spec.backend_port(request),
            max_idle_secs=request.max_idle_secs,
            bearer_token=request.bearer_token,
            began=now,
            lifetime_limit_secs=request.lifetime_limit_secs,
            termination_grace_secs=request.termination_grace_secs,
        )
        runner = BackendRunner(identity, self.services, spawn=request)
        self._runners[identity.backend_id] = runner  # before any await: no duplicate slips in
        await self._launch(runner)
        runner.post(Spawned())
        log.info("spawn accepted: %s", request.executable.image, extra=extra)
        self._send_status_soon()
        return True

    async def _on_fence(self, request: FenceBackends, subject: str) -> None:
        """Stop the lives the controllers hold as over; a later life of the same ID stays."""
        if request.drone != self.drone_id or request.cluster != self.settings.cluster:
            log.info("fence for drone %s of %s ignored", request.drone, request.cluster)
            return
        for fence in request.backends:
            runner = self._runners.get(fence.backend)
            if runner is None or runner.state.terminal:
                continue
            if fence.since is not None and runner.identity.began >= fence.since:
                continue
            reason = fence.reason or "the controllers hold this backend as ended"
            if runner.post_once(Fenced(reason)):
                self.metrics.fenced.inc()
                log.warning(
                    "stopping at once: %s",
                    reason,
                    extra={"backend": fence.backend, "drone": self.drone_id},
                )

    async def _launch(self, runner: BackendRunner) -> None:
        backend_id = runner.backend_id
        self._runners[backend_id] = runner
        try:
            self._terminate_endpoints[backend_id] = await bus.serve(
                self._nc,
                subjects.terminate(runner.identity.cluster, backend_id),
                TerminationRequest,
                self._on_terminate,
            )
        except Exception as exc:  # a NATS hiccup must not stop the backend from running
            log.warning("terminate subject not subscribed: %s", exc, extra={"backend": backend_id})
        self._runner_tasks[backend_id] = asyncio.create_task(self._run(runner))

    async def _run(self, runner: BackendRunner) -> None:
        backend_id = runner.backend_id
        try:
            await runner.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("runner failed", extra={"backend": backend_id})
            self.services.routes.remove(backend_id)
            self.services.activity.forget(backend_id)
        finally:
            if self._runners.get(backend_id) is runner:
                del self._runners[backend_id]
            self._runner_tasks.pop(backend_id, None)
            endpoint = self._terminate_endpoints.pop(backend_id, None)
            if endpoint is not None and not self._stopping:
                self._background_task(endpoint.stop(timeout=1.0))
            self._send_status_soon()

    def _count(self, state: BackendState) -> int:
        """Backends in `state`, read by the metrics thread at each scrape."""
        return sum(1 for runner in list(self._runners.values()) if runner.state is state)

    async def _on_terminate(self, request: TerminationRequest, subject: str) -> None:
        backend_id = subjects.token_at(subject, 3) or request.backend_id
        runner = self._runners.get(backend_id)
        if runner is None:
            return None
        log.info("termination requested", extra={"backend": backend_id, "drone": self.drone_id})
        runner.post(TerminateRequested(hard=request.hard))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(runner.terminal.wait(), TERMINATE_REPLY_WAIT_SECS)
        return None

    # --- watching Docker -------------------------------------------------------------------

    def _on_docker_error(self, operation: str, error: DockerRuntimeError) -> None:
        """Count it; if it looks like the engine, have maintenance check the engine.

        One request's error never marks the engine unavailable by itself: only
        the maintenance pass, asking the engine for this drone's containers,
        decides that (a hostile image name must not take the drone out).
        """
        self.metrics.docker_errors.labels(operation).inc()
        if isinstance(error, DockerUnavailable) and operation not in HEALTH_CHECK_OPERATIONS:
            self._wake_maintenance.set()

    def _set_docker_available(self, available: bool, why: str = "") -> None:
        if available == self._docker_available:
            return
        self._docker_available = available
        self.metrics.docker_available.set(1 if available else 0)
        if available:
            log.info("Docker answers again", extra={"drone": self.drone_id})
            self._wake_maintenance.set()
        else:
            log.warning("Docker is unavailable: %s", why, extra={"drone": self.drone_id})
        self._send_status_soon()

    async def _watch_exits(self) -> None:
        async for item in self.runtime.exits(spec.LABEL_DRONE, self.drone_id):
            if isinstance(item, StreamRestarted):
                self._wake_maintenance.set()
            elif isinstance(item, ExitEvent):
                self._on_exit(item)

    def _on_exit(self, event: ExitEvent) -> None:
        backend_id = event.labels.get(spec.LABEL_BACKEND)
        runner = self._runners.get(backend_id) if backend_id else None
        if runner is None:
            return
        if runner.container_id is not None and runner.container_id != event.container_id:
            return
        runner.post(ContainerExited(event.exit_code))

    async def _maintenance(self) -> None:
        check = self.settings.docker.check_secs
        while True:
            interval = (
                self.settings.agent.reconcile_secs
                if self._docker_available and self._recovered
                else check
            )
            started = time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake_maintenance.wait(), interval)
            # Woken early by errors: at most one extra pass every `check_secs`.
            await asyncio.sleep(max(0.0, check - (time.monotonic() - started)))
            self._wake_maintenance.clear()
            await self._maintain_once()

    async def _maintain_once(self) -> None:
        """Recover or reconcile; the one place that decides whether Docker is available."""
        try:
            if not self._recovered:
                await self._recover()
            else:
                await self._reconcile()
            if not self._host_memory:
                self._host_memory = await self.runtime.host_memory_bytes()
        except DockerUnavailable as exc:
            self._set_docker_available(False, str(exc))
            return
        except DockerRuntimeError as exc:
            log.warning("reconcile with Docker failed: %s", exc)
            return
        self._set_docker_available(True)

    async def _recover(self) -> None:
        """Adopt this drone's containers: route running ones again, end the others."""
        found = await self.runtime.list_labelled(spec.LABEL_DRONE, self.drone_id)
        adopted = 0
        for info in found:
            adoption = spec.adoption_from_labels(info.labels, self.drone_id)
            if adoption is None or adoption.backend_id in self._runners:
                continue
            await self._adopt(info, adoption)
            adopted += 1
        self._recovered = True
        self._set_docker_available(True)
        log.info("recovered %d container(s)", adopted, extra={"drone": self.drone_id})
        self._send_status_soon()

    async def _adopt(self, info: ContainerInfo, adoption: spec.Adoption) -> None:
        identity = Identity(
            backend_id=adoption.backend_id,
            cluster=adoption.cluster,
            port=adoption.port,
            max_idle_secs=adoption.max_idle_secs,
            bearer_token=adoption.bearer_token,
            began=adoption.created or NEVER,
            lifetime_limit_secs=adoption.lifetime_limit_secs,
            termination_grace_secs=adoption.termination_grace_secs,
        )
        runner = BackendRunner(
            identity, self.services, container_id=info.id, ip=info.ip, logs_since=time.time()
        )
        await self._launch(runner)
        if info.running:
            runner.post(Adopted())
        elif not info.ever_started:
            runner.post(ContainerExited(info.exit_code or 0))
        else:
            runner.post(Adopted(exit_code=info.exit_code or 0))
        log.info(
            "adopted %s container",
            "running" if info.running else "stopped",
            extra={"backend": adoption.backend_id, "drone": self.drone_id},
        )

    async def _reconcile(self) -> None:
        """Catch what the events stream missed; remove containers nobody runs.

        Only backends that had a started container before the listing are
        judged by it: one that starts while the listing is under way is not
        in it yet and must not be taken for vanished.
        """
        watched = {
            runner.container_id: runner
            for runner in self._runners.values()
            if runner.state in (BackendState.STARTING, BackendState.READY) and runner.container_id
        }
        found = await self.runtime.list_labelled(spec.LABEL_DRONE, self.drone_id)
        by_id = {info.id: info for info in found}
        for container_id, runner in watched.items():
            info = by_id.get(container_id)
            if info is None:
                runner.post(DockerFailed("the container vanished"))
            elif not info.running and info.ever_started:
                runner.post(ContainerExited(info.exit_code or 0))
        for info in found:
            backend_id = info.labels.get(spec.LABEL_BACKEND)
            if backend_id is None or backend_id in self._runners:
                continue
            log.info("removing leftover container %s", info.name, extra={"backend": backend_id})
            await self.runtime.stop_and_remove(info.id, self.settings.agent.termination_grace_secs)

    # --- sweeping and DNS ------------------------------------------------------------------

    async def _sweeper(self) -> None:
        activity = self.services.activity
        delay = self.settings.agent.sweep_interval_secs
        while True:
            await asyncio.sleep(delay)
            now = time.monotonic()
            due_times: list[float] = []
            for runner in list(self._runners.values()):
                if runner.state is not BackendState.READY:
                    continue
                idle_since = activity.idle_since(runner.backend_id)
                if sweep_due(now, idle_since, runner.identity.max_idle_secs):
                    runner.post_once(IdleSwept())
                elif idle_since is not None:
                    due_times.append(idle_since + runner.identity.max_idle_secs)
            delay = next_sweep_delay(now, due_times, self.settings.agent.sweep_interval_secs)

    async def _dns_refresh(self) -> None:
        while True:
            await asyncio.sleep(self.settings.agent.dns_refresh_secs)
            for runner in list(self._runners.values()):
                if runner.state is BackendState.READY:
                    await runner.publish_dns()
