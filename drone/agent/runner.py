"""One backend's runner: feeds events to its state machine and carries out the instructions.

The runner is the I/O edge around `drone.agent.state`. Events arrive on a
queue (from its own Docker steps, probe and timers, and from the agent's
exit watcher, sweeper and terminate subscription); each is handed to the
pure machine, and the returned instructions are executed in order. Docker
steps run one at a time as a task that posts its result back, so a
termination during a long pull is seen at once. Before a container is
removed, an unfinished create or start is allowed to finish (each is
bounded by its timeout): a create abandoned half-way could otherwise leave
a container behind the removal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from drone.agent import probe, spec
from drone.agent.docker_runtime import DockerRuntime, DockerRuntimeError, NotFound
from drone.agent.metrics import AgentMetrics, Phase
from drone.agent.reporter import StatusReporter
from drone.agent.state import (
    ContainerExited,
    Created,
    DockerFailed,
    Event,
    HoldRequests,
    Instruction,
    LifetimeExpired,
    Machine,
    ProbeAnswered,
    Pulled,
    ReadyTimeout,
    RemoveContainer,
    Report,
    Route,
    RunStep,
    Started,
    Step,
    Unroute,
    WatchStarting,
)
from drone.agent.telemetry import LineBuffer, cpu_percent, memory_percent
from drone.config import DroneSettings
from drone.routes import ActivityTracker, RouteTable
from shared import subjects, wire
from shared.bus import NatsClient
from shared.protocol import (
    BackendState,
    BackendStatsMessage,
    DnsRecordKind,
    DroneLogMessage,
    EndReason,
    LogKind,
    PullPolicy,
    SetDnsRecord,
    SpawnRequest,
    UpdateBackendStateMessage,
    utc_now,
)

log = logging.getLogger(__name__)

OUTPUT_GRACE_SECS = 1.0  # how long the last output of a removed container may take to arrive


@dataclass(slots=True)
class Services:
    """What every runner of one drone shares."""

    settings: DroneSettings
    drone_id: str
    ip: str
    nc: NatsClient
    runtime: DockerRuntime
    routes: RouteTable
    activity: ActivityTracker
    reporter: StatusReporter
    metrics: AgentMetrics
    host_memory_bytes: Callable[[], int]


@dataclass(frozen=True, slots=True)
class Identity:
    """What a backend is, from its spawn request or from its container's labels."""

    backend_id: str
    cluster: str
    port: int
    max_idle_secs: int
    bearer_token: str | None
    began: datetime  # when this life began: the spawn accepted, or the container created
    lifetime_limit_secs: int | None = None  # terminated at this age
    termination_grace_secs: int | None = None  # SIGTERM → SIGKILL; None: the drone's setting


async def publish(nc: NatsClient, subject: str, message: Any) -> bool:
    """Publish without ever raising: telemetry is best effort while NATS is away."""
    try:
        await nc.publish(subject, wire.encode(message))
    except Exception as exc:  # nats-py raises several unrelated types here
        log.debug("publish on %s failed: %s", subject, exc)
        return False
    return True


class BackendRunner:
    def __init__(
        self,
        identity: Identity,
        services: Services,
        *,
        spawn: SpawnRequest | None = None,
        container_id: str | None = None,
        ip: str | None = None,
        logs_since: float | None = None,
    ) -> None:
        self.identity = identity
        self.services = services
        self.spawn = spawn
        self.container_id = container_id
        self.ip = ip
        self.machine = Machine()
        self.terminal = asyncio.Event()
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._logs_since = logs_since
        self._op: asyncio.Task[None] | None = None
        self._op_step: Step | None = None
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._started_at: float | None = None  # set by a start of ours, not by adoption
        self._posted_once: set[type] = set()

    @property
    def backend_id(self) -> str:
        return self.identity.backend_id

    @property
    def state(self) -> BackendState:
        return self.machine.state

    def __repr__(self) -> str:
        return f"<BackendRunner {self.backend_id} {self.state.value}>"

    def post(self, event: Event) -> None:
        self._events.put_nowait(event)

    def post_once(self, event: Event) -> bool:
        """Post an event of this kind once in the backend's life (sweeps and fences come
        again and again until the machine acts on the first); True if posted now."""
        kind = type(event)
        if kind in self._posted_once:
            return False
        self._posted_once.add(kind)
        self.post(event)
        return True

    # --- the loop --------------------------------------------------------------------

    @property
    def grace_secs(self) -> int:
        """How long a stopped container has between SIGTERM and SIGKILL."""
        own = self.identity.termination_grace_secs
        return own if own is not None else self.services.settings.agent.termination_grace_secs

    async def run(self) -> None:
        limit = self.identity.lifetime_limit_secs
        if limit is not None:
            ends = self.identity.began + timedelta(seconds=limit)
            self._watch("lifetime", self._lifetime((ends - utc_now()).total_seconds()))
        try:
            while not self.machine.state.terminal:
                event = await self._events.get()
                before = self.machine.state
                transition = self.machine.feed(event)
                if transition.changed:
                    self._log_change(before, transition.state, transition.reason)
                if transition.state.terminal:
                    self.terminal.set()
                for instruction in transition.instructions:
                    await self._execute(instruction)
        finally:
            await self._cancel_all()

    def _log_change(self, before: BackendState, after: BackendState, reason: str) -> None:
        level = logging.INFO
        if after in (
            BackendState.ERROR_LOADING,
            BackendState.ERROR_STARTING,
            BackendState.FAILED,
            BackendState.TIMED_OUT_BEFORE_READY,
        ):
            level = logging.WARNING
        if before is after:
            log.debug("%s: %s", after.value, reason, extra=self._extra())
        else:
            log.log(level, "%s → %s: %s", before.value, after.value, reason, extra=self._extra())

    def _extra(self) -> dict[str, str]:
        return {"backend": self.backend_id, "drone": self.services.drone_id}

    async def _execute(self, instruction: Instruction) -> None:
        match instruction:
            case Report(state=state, reason=reason, exit_code=exit_code):
                self._report(state, reason, exit_code)
            case HoldRequests():
                self.services.routes.set_pending(self.backend_id, self.identity.bearer_token)
            case RunStep(step=step):
                self._op_step = step
                self._op = asyncio.create_task(self._run_step(step))
            case WatchStarting():
                self._watch_starting()
            case Route():
                self._route()
            case Unroute():
                self._unroute()
            case RemoveContainer(at_once=at_once):
                await self._remove_container(at_once)

    def _report(
        self, state: BackendState, reason: EndReason | None = None, exit_code: int | None = None
    ) -> None:
        s = self.services
        s.reporter.report(
            UpdateBackendStateMessage(
                cluster=self.identity.cluster,
                state=state,
                backend=self.backend_id,
                time=utc_now(),
                drone=s.drone_id,
                reason=reason.value if reason is not None else None,
                exit_code=exit_code,
            )
        )
        if state.terminal:
            s.metrics.backends_ended.labels(state.value).inc()

    # --- loading ------------------------------------------------------------------------

    async def _run_step(self, step: Step) -> None:
        started = time.monotonic()
        try:
            event = await self._do_step(step)
        except DockerRuntimeError as exc:
            event = DockerFailed(str(exc))
        except Exception as exc:  # a surprise from the engine must still end the backend
            log.exception("%s failed", step.value, extra=self._extra())
            event = DockerFailed(f"{step.value}: {type(exc).__name__}: {exc}")
        if not isinstance(event, DockerFailed):
            phase = {Step.PULL: Phase.PULL, Step.CREATE: Phase.CREATE, Step.START: Phase.START}
            elapsed = time.monotonic() - started
            self.services.metrics.spawn_phase.labels(phase[step].value).observe(elapsed)
        self.post(event)

    async def _do_step(self, step: Step) -> Event:
        runtime = self.services.runtime
        assert self.spawn is not None, "only spawned backends load"
        executable = self.spawn.executable
        if step is Step.PULL:
            policy = executable.pull_policy
            if policy is PullPolicy.ALWAYS or not await runtime.image_present(executable.image):
                if policy is PullPolicy.NEVER:
                    return DockerFailed(f"image {executable.image} is not present (pull: Never)")
                await runtime.pull(executable.image, executable.credentials)
            return Pulled()
        if step is Step.CREATE:
            config = spec.container_config(
                self.spawn, self.services.drone_id, utc_now(), self.services.settings.docker
            )
            self.container_id = await runtime.create(spec.container_name(self.backend_id), config)
            return Created()
        assert self.container_id is not None
        await runtime.start(self.container_id)
        info = await runtime.inspect(self.container_id)
        self._started_at = time.monotonic()  # the start phase ends once we know its address
        self.ip = info.ip
        if not info.running and info.exit_code is not None:
            # Gone already: say so in order, after Started.
            self.post(Started())
            return ContainerExited(info.exit_code)
        return Started()

    # --- starting and ready ------------------------------------------------------------

    def _watch(self, name: str, work: Awaitable[None]) -> None:
        self._watchers[name] = asyncio.create_task(self._guarded(name, work))

    async def _guarded(self, name: str, work: Awaitable[None]) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s watcher failed", name, extra=self._extra())

    def _watch_starting(self) -> None:
        agent = self.services.settings.agent
        # the probe first: its connect goes out before the Docker requests of the others
        self._watch("probe", self._probe())
        self._watch("ready-timer", self._ready_timer(agent.ready_timeout_secs))
        if self.container_id is not None:
            for kind in (LogKind.STDOUT, LogKind.STDERR):
                self._watch(f"logs-{kind.value}", self._forward_output(kind))
            self._watch("stats", self._send_stats())

    async def _probe(self) -> None:
        agent = self.services.settings.agent
        host = self.ip or "127.0.0.1"
        await probe.wait_until_answering(
            host,
            self.identity.port,
            attempt_timeout=agent.ready_probe_timeout_secs,
            max_interval=agent.ready_probe_interval_secs,
        )
        self.post(ProbeAnswered())

    async def _lifetime(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))
        self.post(LifetimeExpired())

    async def _ready_timer(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self.post(ReadyTimeout())

    def _route(self) -> None:
        s = self.services
        self._stop_watcher("ready-timer")
        if self._started_at is not None:
            elapsed = time.monotonic() - self._started_at
            s.metrics.spawn_phase.labels(Phase.READY.value).observe(elapsed)
        host = self.ip or "127.0.0.1"
        s.routes.set_ready(self.backend_id, host, self.identity.port, self.identity.bearer_token)
        s.activity.track(self.backend_id)
        self._watch("dns", self.publish_dns())

    async def publish_dns(self) -> None:
        s = self.services
        record = SetDnsRecord(
            cluster=self.identity.cluster, kind=DnsRecordKind.A, name=self.backend_id, value=s.ip
        )
        subject = subjects.drone_dns_record(
            self.identity.cluster, s.drone_id, DnsRecordKind.A.value
        )
        await publish(s.nc, subject, record)

    async def _forward_output(self, kind: LogKind) -> None:
        s = self.services
        assert self.container_id is not None
        lines = LineBuffer(s.settings.agent.log_line_max_bytes)
        subject = subjects.backend_log(self.backend_id)
        since = self._logs_since
        while True:
            try:
                async for chunk in s.runtime.output(self.container_id, kind, since):
                    for line in lines.feed(chunk):
                        await self._publish_line(subject, kind, line)
            except DockerRuntimeError as exc:
                log.debug("output stream ended: %s", exc, extra=self._extra())
            if not await self._still_running():
                break
            # The stream broke while the container runs (the engine went away): follow
            # again from here. Docker counts `since` in whole seconds, so lines of this
            # very second may come twice; none are lost.
            since = time.time()
            await asyncio.sleep(s.settings.docker.check_secs)
        for line in lines.flush():
            await self._publish_line(subject, kind, line)

    async def _still_running(self) -> bool:
        """Whether the container runs, asking Docker until it answers (or the backend ends)."""
        assert self.container_id is not None
        while not self.machine.state.terminal:
            try:
                return (await self.services.runtime.inspect(self.container_id)).running
            except NotFound:
                return False
            except DockerRuntimeError:
                await asyncio.sleep(self.services.settings.docker.check_secs)
        return False

    async def _publish_line(self, subject: str, kind: LogKind, line: str) -> None:
        message = DroneLogMessage(backend_id=self.backend_id, kind=kind, text=line)
        if await publish(self.services.nc, subject, message):
            self.services.metrics.log_lines.inc()

    async def _send_stats(self) -> None:
        s = self.services
        assert self.container_id is not None
        subject = subjects.backend_stats(self.backend_id)
        while True:
            await asyncio.sleep(s.settings.agent.stats_secs)
            try:
                sample = await s.runtime.stats(self.container_id)
            except DockerRuntimeError as exc:
                log.debug("no stats: %s", exc, extra=self._extra())
                continue
            message = BackendStatsMessage(
                backend_id=self.backend_id,
                cpu_use_percent=round(cpu_percent(sample), 3),
                mem_use_percent=round(memory_percent(sample, s.host_memory_bytes()), 3),
            )
            await publish(s.nc, subject, message)

    # --- the end ---------------------------------------------------------------------

    def _unroute(self) -> None:
        self.services.routes.remove(self.backend_id)
        self.services.activity.forget(self.backend_id)
        for name in ("probe", "ready-timer", "stats", "dns"):
            self._stop_watcher(name)

    async def _remove_container(self, at_once: bool = False) -> None:
        await self._settle_op()
        runtime = self.services.runtime
        grace = 0 if at_once else self.grace_secs
        try:
            target = self.container_id or await self._own_container_by_name()
            if target is not None:
                await runtime.stop_and_remove(target, grace)
        except DockerRuntimeError as exc:
            # The reconcile loop removes it once Docker answers again.
            log.warning("container not removed yet: %s", exc, extra=self._extra())

    async def _own_container_by_name(self) -> str | None:
        """The container a create abandoned half-way may have left, if it is this drone's.

        A container of that name made by someone else (another drone on the same
        engine, say) is never touched.
        """
        try:
            info = await self.services.runtime.inspect(spec.container_name(self.backend_id))
        except NotFound:
            return None
        if info.labels.get(spec.LABEL_DRONE) != self.services.drone_id:
            return None
        if info.labels.get(spec.LABEL_BACKEND) != self.backend_id:
            return None
        return info.id

    async def _settle_op(self) -> None:
        """Let a create or start in flight finish; a pull can simply be abandoned."""
        op = self._op
        if op is None or op.done():
            return
        if self._op_step is Step.PULL:
            op.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait({op})

    def _stop_watcher(self, name: str) -> None:
        task = self._watchers.pop(name, None)
        if task is not None:
            task.cancel()

    async def _cancel_all(self) -> None:
        if self.machine.state.terminal:
            # The container is gone: its output streams end on their own once read out.
            output = [t for n, t in self._watchers.items() if n.startswith("logs-")]
            if output:
                await asyncio.wait(output, timeout=OUTPUT_GRACE_SECS)
        tasks = list(self._watchers.values())
        if self._op is not None and not self._op.done():
            tasks.append(self._op)
        self._watchers.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
