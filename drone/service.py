"""The drone process: settings, NATS, Docker, the agent, the proxy and metrics, wired.

Start-up order: the metrics endpoint, then NATS, then the agent, which
adopts running containers and routes them again; only then the proxy (with
its worker processes, when `proxy.workers` asks for more than one), so that
its first request already finds every backend that still runs (a request
for one not ready yet is held); last, the agent takes new spawns.

`stop` goes the other way: the agent stops heartbeats and work (leaving
backends running unless configured to terminate them), then the proxy lets
requests in flight finish, then NATS and the metrics endpoint close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from prometheus_client import CollectorRegistry

from drone.agent import statedir
from drone.agent.agent import Agent
from drone.agent.metrics import AgentMetrics
from drone.config import DroneSettings, check, enabled
from drone.proxy.fleet import WorkerOptions
from drone.proxy.server import ProxyServer
from drone.routes import ActivityTracker, RouteTable
from shared import bus, credentials, metrics
from shared.config import ConfigError

log = logging.getLogger(__name__)

PROXY_STOP_GRACE_SECS = 5.0


class DroneError(Exception):
    """The drone cannot start; the message says why."""


class Drone:
    def __init__(self, settings: DroneSettings) -> None:
        try:
            check(settings)
            self.drone_id = statedir.drone_id(
                Path(settings.state_dir), configured_drone_id(settings)
            )
        except (ConfigError, statedir.StateDirError) as exc:
            raise DroneError(str(exc)) from None
        self.settings = settings
        self.ip = settings.ip or statedir.discover_ip()
        self.registry = CollectorRegistry()
        self.metrics = AgentMetrics(self.registry)
        self.routes = RouteTable()
        self.activity = ActivityTracker()
        try:
            self.proxy = ProxyServer(
                settings.proxy,
                settings.cluster,
                self.routes,
                self.activity,
                self.registry,
                worker_options=WorkerOptions(
                    log_level=settings.log_level, log_format=settings.log_format
                ),
            )
        except ConfigError as exc:
            raise DroneError(str(exc)) from None
        self.agent: Agent | None = None
        self._nc: bus.NatsClient | None = None
        self._metrics_server: metrics.MetricsServer | None = None
        self._proxy_started = False
        self._stopping = False

    @property
    def proxy_port(self) -> int:
        return self.proxy.port

    @property
    def metrics_port(self) -> int | None:
        return self._metrics_server.port if self._metrics_server is not None else None

    async def start(self) -> None:
        s = self.settings
        listen = enabled(s.metrics_listen)
        if listen is not None:
            try:
                self._metrics_server = metrics.serve(listen, self.registry)
            except OSError as exc:
                raise DroneError(f"metrics on {listen}: {exc}") from None
        self._nc = nc = await bus.connect(
            s.nats,
            name=f"plane-drone {self.drone_id}",
            wait_forever=True,
            on_reconnect=self._on_reconnect,
            on_disconnect=self._on_disconnect,
        )
        self.metrics.nats_connected.set(1)
        try:
            agent = Agent(
                s,
                nc=nc,
                routes=self.routes,
                activity=self.activity,
                metrics=self.metrics,
                drone_id=self.drone_id,
                ip=self.ip,
            )
        except statedir.StateDirError as exc:
            raise DroneError(str(exc)) from None
        self.agent = agent
        await agent.start()
        try:
            await self.proxy.start()
        except OSError as exc:
            raise DroneError(f"proxy on {s.proxy.listen}: {exc}") from None
        except ConfigError as exc:
            raise DroneError(str(exc)) from None
        self._proxy_started = True
        await agent.take_spawns()
        log.info(
            "drone %s ready: cluster %s, ip %s, proxy on port %d%s",
            self.drone_id,
            s.cluster,
            self.ip,
            self.proxy_port,
            f", metrics on port {self.metrics_port}" if self._metrics_server else "",
            extra={"drone": self.drone_id},
        )

    async def stop(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        if self.agent is not None:
            await self.agent.stop()
        if self._proxy_started:
            await self.proxy.stop(grace=PROXY_STOP_GRACE_SECS)
        if self._nc is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await self._nc.close()
            self._nc = None
        if self._metrics_server is not None:
            await asyncio.to_thread(self._metrics_server.close)
            self._metrics_server = None

    async def _on_reconnect(self) -> None:
        self.metrics.nats_connected.set(1)
        log.info("NATS connection back", extra={"drone": self.drone_id})
        if self.agent is not None and not self._stopping:
            await self.agent.on_nats_reconnect()

    async def _on_disconnect(self) -> None:
        self.metrics.nats_connected.set(0)
        if not self._stopping:
            log.warning("NATS connection lost; reconnecting", extra={"drone": self.drone_id})


def configured_drone_id(settings: DroneSettings) -> str | None:
    """The ID drone credentials name (they are what NATS lets it speak as), else the setting."""
    found = credentials.check_role(settings.nats.credentials_file, "drone")
    if found is not None and found.drone:
        return found.drone
    return settings.drone_id
