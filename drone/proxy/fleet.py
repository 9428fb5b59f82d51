"""Proxy worker processes, as the drone process runs them.

With `proxy.workers = N > 1` the drone process serves the listener itself
(as worker 0, next to the agent) and runs N - 1 `drone.proxy.worker_main`
processes that bind the same port with SO_REUSEPORT, so the kernel spreads
new connections over all N. Each worker has a control socket (see
`drone.proxy.control`):

- routes: every change to the drone's `RouteTable` is copied to every worker
  as it happens; a worker (re)started gets all routes in its `Start`;
- activity: a worker's busy/idle transitions per backend become begins and
  ends on the drone's tracker (`drone.proxy.activity`), so the agent's
  sweeper sees a backend busy while any process has it busy;
- metrics: each worker's counters arrive every `report_secs` and are summed
  into the drone's `/metrics` (`drone.proxy.metrics`).

A worker that exits or stops answering is started again after a pause that
doubles from `restart_min_secs` up to `restart_max_secs` (back to the
shortest after a worker ran `stable_secs`); what it held busy ends at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from drone.config import ProxySettings
from drone.proxy import control
from drone.proxy.activity import Changes, HeldByWorker
from drone.proxy.metrics import Counters, ProxyMetrics
from drone.routes import Activity, Route, RouteTable

log = logging.getLogger(__name__)

# How long a worker that closed its control socket gets to exit before it is killed.
EXIT_AFTER_HANG_UP_SECS = 2.0


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    log_level: str = "info"
    log_format: str = "text"
    report_secs: float = 1.0  # how often a worker sends its metrics
    start_timeout_secs: float = 30.0  # from spawning a worker until it listens
    restart_min_secs: float = 0.1
    restart_max_secs: float = 5.0
    stable_secs: float = 10.0  # a worker that ran this long restarts after the shortest pause
    # Control messages a worker may leave unread before it is taken for stuck and killed.
    max_unread_bytes: int = 16 * 1024 * 1024


class WorkerState(enum.Enum):
    DOWN = "down"  # not started yet, or exited and waiting to start again
    STARTING = "starting"  # spawned and told to start; routes are being copied to it
    RUNNING = "running"  # listening
    STOPPED = "stopped"  # the proxy stopped


class WorkerProcess:
    """One worker process as the drone process sees it."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.state = WorkerState.DOWN
        self.pid: int | None = None
        self.activity = HeldByWorker()
        self.starts = 0
        self.started_at = 0.0
        self.process: asyncio.subprocess.Process | None = None
        self.channel: control.Channel | None = None
        self.ready: asyncio.Future[int] | None = None
        self.lost = asyncio.Event()
        self.pongs: dict[int, asyncio.Future[None]] = {}

    def __repr__(self) -> str:
        return f"<WorkerProcess {self.index} pid={self.pid} {self.state.value}>"

    @property
    def reachable(self) -> bool:
        """Whether messages sent now reach this worker after its `Start`."""
        return self.channel is not None and self.state in (
            WorkerState.STARTING,
            WorkerState.RUNNING,
        )


def restart_delay(previous: float | None, ran_secs: float, options: WorkerOptions) -> float:
    """The pause before starting an exited worker again: the shortest after its first exit
    or a long run, else twice the previous pause, up to the longest."""
    if previous is None or ran_secs >= options.stable_secs:
        return options.restart_min_secs
    return min(previous * 2, options.restart_max_secs)


class WorkerFleet:
    def __init__(
        self,
        count: int,
        settings: ProxySettings,
        cluster: str,
        routes: RouteTable,
        activity: Activity,
        metrics: ProxyMetrics,
        options: WorkerOptions,
    ) -> None:
        """`count` worker processes besides the drone process (numbered 1..count)."""
        self.workers = [WorkerProcess(index) for index in range(1, count + 1)]
        self.settings = settings
        self.cluster = cluster
        self.routes = routes
        self.activity = activity
        self.metrics = metrics
        self.options = options
        self._supervisors: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._grace = 0.0
        self._seq = 0
        self._changed = asyncio.Event()

    # -- start and stop

    async def start(self) -> None:
        """Start every worker and wait until each listens; raises OSError if one cannot."""
        self.routes.watch(self._on_route)
        try:
            results = await asyncio.gather(
                *(self._launch(worker) for worker in self.workers), return_exceptions=True
            )
        except BaseException:  # cancelled: leave no process behind
            await self.stop(0.0)
            raise
        for worker, result in zip(self.workers, results, strict=True):
            if isinstance(result, BaseException):
                await self.stop(0.0)
                if isinstance(result, OSError | TimeoutError):
                    raise OSError(f"proxy worker {worker.index}: {result}") from None
                raise result
        self._supervisors = [
            asyncio.create_task(self._supervise(worker)) for worker in self.workers
        ]

    async def stop(self, grace: float) -> None:
        """Tell every worker to stop with `grace` for requests in flight; kill laggards."""
        if self._stopping.is_set():
            return
        self._grace = grace
        self._stopping.set()
        self.routes.unwatch(self._on_route)
        for worker in self.workers:
            if worker.reachable and worker.channel is not None:
                worker.channel.send(control.Stop(grace))
        waits = [self._reap(worker) for worker in self.workers if worker.process is not None]
        if waits:
            await asyncio.gather(*waits)
        for task in self._supervisors:
            task.cancel()
        for task in self._supervisors:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for worker in self.workers:
            self._retire(worker)
            worker.state = WorkerState.STOPPED
        self._count_processes()

    async def _reap(self, worker: WorkerProcess) -> None:
        process = worker.process
        assert process is not None
        try:
            await asyncio.wait_for(asyncio.shield(process.wait()), self._grace + 2.0)
        except TimeoutError:
            log.warning(
                "proxy worker %d (pid %s) did not stop; killing it", worker.index, worker.pid
            )
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()

    # -- one worker's life

    async def _launch(self, worker: WorkerProcess) -> None:
        """Spawn, hand over settings and routes, and wait until it listens."""
        loop = asyncio.get_running_loop()
        worker.started_at = time.monotonic()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "drone.proxy.worker_main",
                str(theirs.fileno()),
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        worker.process = process
        worker.pid = process.pid
        worker.lost = asyncio.Event()
        worker.ready = loop.create_future()
        channel = control.Channel(
            control.TO_MAIN,
            self._on_message_from(worker),
            self._on_lost_from(worker),
        )
        try:
            await loop.create_unix_connection(lambda: channel, sock=ours)
        except OSError:
            ours.close()
            await self._kill(worker)
            raise
        worker.channel = channel
        worker.state = WorkerState.STARTING
        # The snapshot and the Start go out in one step: every later change follows them.
        channel.send(self._start_message(worker))
        if self._stopping.is_set():
            channel.send(control.Stop(self._grace))
        try:
            await asyncio.wait_for(asyncio.shield(worker.ready), self.options.start_timeout_secs)
        except BaseException:
            await self._kill(worker)
            self._retire(worker)
            worker.state = WorkerState.DOWN
            raise
        worker.state = WorkerState.RUNNING
        worker.starts += 1
        self._count_processes()
        log.info("proxy worker %d listening (pid %d)", worker.index, worker.pid)

    def _start_message(self, worker: WorkerProcess) -> control.Start:
        settings = self.settings
        return control.Start(
            index=worker.index,
            cluster=self.cluster,
            settings=settings,
            log_level=self.options.log_level,
            log_format=self.options.log_format,
            report_secs=self.options.report_secs,
            routes=[control.set_route(route) for route in self.routes.snapshot()],
        )

    async def _supervise(self, worker: WorkerProcess) -> None:
        delay: float | None = None
        while True:
            code = await self._exited(worker)
            self._retire(worker)
            worker.state = WorkerState.DOWN
            self._count_processes()
            if self._stopping.is_set():
                return
            delay = restart_delay(delay, time.monotonic() - worker.started_at, self.options)
            log.warning(
                "proxy worker %d (pid %s) exited with status %s; starting it again in %.1f s",
                worker.index,
                worker.pid,
                code,
                delay,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            if self._stopping.is_set():
                return
            try:
                await self._launch(worker)
            except (OSError, TimeoutError) as exc:
                log.error("proxy worker %d did not start: %s", worker.index, exc)
                continue
            self.metrics.worker_restarts += 1

    async def _exited(self, worker: WorkerProcess) -> int | None:
        """Wait until the worker is gone (its process ended or its channel closed); reap it."""
        process = worker.process
        if process is None:
            return None
        waiting = asyncio.ensure_future(process.wait())
        lost = asyncio.ensure_future(worker.lost.wait())
        try:
            await asyncio.wait({waiting, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
        if not waiting.done():  # it hung up: it should be on its way out
            try:
                await asyncio.wait_for(asyncio.shield(waiting), EXIT_AFTER_HANG_UP_SECS)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
        code = await waiting
        if worker.channel is not None:
            # What it wrote before it died is read before its activity is ended.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(worker.lost.wait(), 1.0)
        return code

    async def _kill(self, worker: WorkerProcess) -> None:
        process = worker.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()

    def _retire(self, worker: WorkerProcess) -> None:
        """The worker is gone: end what it held busy, keep what it counted."""
        if worker.channel is not None:
            worker.channel.close()
            worker.channel = None
        for backend_id in worker.activity.lost():
            self.activity.end(backend_id)
        self.metrics.worker_exited(worker.index)
        for pong in worker.pongs.values():
            if not pong.done():
                pong.set_result(None)  # a restarted worker gets every route anew
        worker.pongs.clear()
        self._changed.set()

    def _count_processes(self) -> None:
        running = sum(1 for worker in self.workers if worker.state is WorkerState.RUNNING)
        self.metrics.processes = 1 + running

    # -- messages

    def _on_route(self, backend_id: str, route: Route | None) -> None:
        data = control.frame(control.route_message(backend_id, route))
        for worker in self.workers:
            channel = worker.channel
            if channel is None or not worker.reachable:
                continue
            channel.send_frame(data)
            if channel.buffered() > self.options.max_unread_bytes:
                log.error("proxy worker %d reads no control messages; killing it", worker.index)
                if worker.process is not None and worker.process.returncode is None:
                    worker.process.kill()

    def _on_message_from(self, worker: WorkerProcess) -> Callable[[object], None]:
        def on_message(message: object) -> None:
            if worker.channel is None:
                return  # from a channel that was closed in the meantime
            match message:
                case control.ActivityBatch(busy, idle):
                    begins, ends = worker.activity.apply(Changes(busy, idle))
                    for backend_id in begins:
                        self.activity.begin(backend_id)
                    for backend_id in ends:
                        self.activity.end(backend_id)
                case control.Report(counters):
                    if worker.state is WorkerState.RUNNING:
                        self.metrics.reports[worker.index] = counters
                case control.Pong(seq):
                    pong = worker.pongs.pop(seq, None)
                    if pong is not None and not pong.done():
                        pong.set_result(None)
                case control.Started(pid):
                    if worker.ready is not None and not worker.ready.done():
                        worker.pid = pid
                        worker.ready.set_result(pid)
                case control.Failed(error):
                    if worker.ready is not None and not worker.ready.done():
                        worker.ready.set_exception(OSError(error))
            self._changed.set()

        return on_message

    def _on_lost_from(self, worker: WorkerProcess) -> Callable[[], None]:
        lost = worker.lost

        def on_lost() -> None:
            lost.set()
            ready = worker.ready
            if ready is not None and not ready.done():
                ready.set_exception(OSError("exited before it listened"))

        return on_lost

    # -- for tests and benchmarks

    async def synced(self, timeout: float = 10.0) -> None:
        """Return once every worker has applied every route change made before the call."""
        waits = []
        loop = asyncio.get_running_loop()
        for worker in self.workers:
            if worker.reachable and worker.channel is not None:
                self._seq += 1
                pong: asyncio.Future[None] = loop.create_future()
                worker.pongs[self._seq] = pong
                worker.channel.send(control.Ping(self._seq))
                waits.append(pong)
        if waits:
            await asyncio.wait_for(asyncio.gather(*waits), timeout)

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Return once `predicate()` holds, checked after every message from a worker and
        every worker exit; raises TimeoutError."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    def counters(self, index: int) -> Counters | None:
        """The latest metrics report of worker `index` (0: the drone process's own)."""
        if index == 0:
            return self.metrics.counters()
        return self.metrics.reports.get(index)
