"""A proxy worker process: `python -m drone.proxy.worker_main FD`.

The drone process starts it with one end of a control socket as FD (see
`drone.proxy.control`), then sends its settings and routes. The worker binds
the shared listening port with SO_REUSEPORT, serves it with an ordinary
`ProxyServer` of its own, reloads its own TLS files, and reports backend
activity transitions and metrics back. It ignores SIGINT and SIGTERM (the
drone process stops it with the same grace as its own proxy) and stops by
itself when the control socket closes, that is when the drone process is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable

import msgspec
import uvloop
from prometheus_client import CollectorRegistry

from drone.proxy import control
from drone.proxy.activity import IDLE_REPORT_DELAY_SECS, Changes, WorkerCounts
from drone.proxy.server import ProxyServer
from drone.routes import RouteTable
from shared import logs
from shared.config import ConfigError

log = logging.getLogger(__name__)

# How long requests in flight may finish when the drone process vanished.
ORPHAN_GRACE_SECS = 5.0


class BatchedActivity:
    """The proxy's `Activity` in a worker: counts here, transitions to the drone process."""

    __slots__ = ("_later", "_loop", "_send", "_soon", "reporter")

    def __init__(self, loop: asyncio.AbstractEventLoop, send: Callable[[Changes], None]) -> None:
        self.reporter = WorkerCounts()
        self._loop = loop
        self._send = send
        self._soon: asyncio.Handle | None = None
        self._later: asyncio.TimerHandle | None = None

    def begin(self, backend_id: str) -> None:
        if self.reporter.begin(backend_id) and self._soon is None:
            self._soon = self._loop.call_soon(self.flush)

    def end(self, backend_id: str) -> None:
        if self.reporter.end(backend_id) and self._later is None:
            self._later = self._loop.call_later(IDLE_REPORT_DELAY_SECS, self.flush)

    def flush(self) -> None:
        for handle in (self._soon, self._later):
            if handle is not None:
                handle.cancel()
        self._soon = self._later = None
        changes = self.reporter.drain()
        if changes:
            self._send(changes)


class Worker:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.channel = control.Channel(control.TO_WORKER, self._on_message, self._on_lost)
        self.routes = RouteTable()
        self.activity = BatchedActivity(loop, self._send_activity)
        self.server: ProxyServer | None = None
        self.done: asyncio.Future[int] = loop.create_future()
        self._lost = asyncio.Event()
        self._hanging_up = False
        self._starting: asyncio.Task[None] | None = None
        self._stopping: asyncio.Task[None] | None = None
        self._report_timer: asyncio.TimerHandle | None = None
        self._reported: msgspec.Struct | None = None
        self._report_secs = 1.0
        self._index = 0

    # -- from the drone process

    def _on_message(self, message: object) -> None:
        match message:
            case control.SetRoute(backend_id, True, host, port, token):
                self.routes.set_ready(backend_id, host, port, token)
            case control.SetRoute(backend_id, False, _, _, token):
                self.routes.set_pending(backend_id, token)
            case control.RemoveRoute(backend_id):
                self.routes.remove(backend_id)
            case control.Ping(seq):
                self.channel.send(control.Pong(seq))
            case control.Start():
                if self._starting is None:
                    self._starting = self.loop.create_task(self._start(message))
            case control.Stop(grace):
                self._stop(grace)

    def _on_lost(self) -> None:
        self._lost.set()
        if self._hanging_up:
            return
        if self._stopping is None:
            log.warning("proxy worker %d: the drone process is gone; stopping", self._index)
        self._stop(ORPHAN_GRACE_SECS)

    # -- life

    async def _start(self, start: control.Start) -> None:
        logs.setup(start.log_level, start.log_format)
        self._index = start.index
        self._report_secs = start.report_secs
        for route in start.routes:
            self._on_message(route)
        try:
            server = ProxyServer(
                start.settings,
                start.cluster,
                self.routes,
                self.activity,
                CollectorRegistry(),
                reuse_port=True,
            )
            await server.start()
        except (OSError, ConfigError) as exc:
            self.channel.send(control.Failed(str(exc)))
            await self._hang_up()
            self._finish(1)
            return
        self.server = server
        self.channel.send(control.Started(os.getpid()))
        self._report_timer = self.loop.call_later(self._report_secs, self._report)

    def _stop(self, grace: float) -> None:
        if self._stopping is None and not self.done.done():
            self._stopping = self.loop.create_task(self._stop_after(grace))

    async def _stop_after(self, grace: float) -> None:
        if self._starting is not None and not self._starting.done():
            await self._starting
        if self._report_timer is not None:
            self._report_timer.cancel()
        if self.server is not None:
            await self.server.stop(grace)
            self.activity.flush()
            self.channel.send(control.Report(self.server.metrics.counters()))
        await self._hang_up()
        self._finish(0)

    async def _hang_up(self) -> None:
        """Close the control socket once what was sent on it has gone out."""
        self._hanging_up = True
        self.channel.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._lost.wait(), 2.0)

    def _finish(self, code: int) -> None:
        if not self.done.done():
            self.done.set_result(code)

    # -- to the drone process

    def _send_activity(self, changes: Changes) -> None:
        self.channel.send(control.ActivityBatch(changes.busy, changes.idle))

    def _report(self) -> None:
        assert self.server is not None
        counters = self.server.metrics.counters()
        if counters != self._reported:
            self.channel.send(control.Report(counters))
            self._reported = counters
        self._report_timer = self.loop.call_later(self._report_secs, self._report)


async def serve(fd: int) -> int:
    loop = asyncio.get_running_loop()
    worker = Worker(loop)
    sock = socket.socket(fileno=fd)
    await loop.create_unix_connection(lambda: worker.channel, sock=sock)
    return await worker.done


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: python -m drone.proxy.worker_main FD (started by the drone)", file=sys.stderr)
        return 2
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    with contextlib.suppress(KeyboardInterrupt):
        return uvloop.run(serve(int(argv[0])))
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
