"""Simulated drones: test code that speaks the drone's side of the protocol.

A `SimDrone` registers, heartbeats on its own rhythm, answers spawn requests
as the test tells it (accept, refuse, or stay silent), counts what it
accepted in its heartbeats, and reports backend states through the
controller's relay like a real drone.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import Awaitable, Callable
from datetime import datetime

from shared import bus, subjects, wire
from shared.protocol import (
    BackendState,
    DroneConnectRequest,
    DroneInfo,
    DroneState,
    DroneStatusMessage,
    FenceBackends,
    SpawnRequest,
    UpdateBackendStateMessage,
    invalid_request,
    utc_now,
)


class Answer(enum.Enum):
    ACCEPT = "accept"
    REFUSE = "refuse"
    INVALID = "invalid"  # `{"InvalidRequest": ...}`: the request cannot run on this drone
    SILENT = "silent"  # never replies: the controller's spawn times out


class SimDrone:
    def __init__(
        self,
        nc: bus.NatsClient,
        drone_id: str,
        cluster: str,
        *,
        ip: str = "127.0.0.1",
        heartbeat_secs: float = 0.2,
        answer: Answer = Answer.ACCEPT,
        ready: bool = True,
        state: DroneState = DroneState.READY,
        reply_delay: float = 0.0,
        load: int = 0,
        report_loading: bool = False,
        pool: str | None = None,
    ) -> None:
        self.nc = nc
        self.drone_id = drone_id
        self.cluster = cluster
        self.ip = ip
        self.heartbeat_secs = heartbeat_secs
        self.answer = answer
        self.ready = ready
        self.state = state
        self.reply_delay = reply_delay  # a slow drone: answers spawns this late
        self.load = load  # backends it claims beyond those it accepted (to order choices)
        self.report_loading = report_loading  # report Loading once accepted, as drones do
        self.pool = pool
        self.offers: list[SpawnRequest] = []  # every spawn request received
        self.accepted: list[SpawnRequest] = []
        self.offered = asyncio.Event()  # set on each offer; tests clear it
        self.listed: list[str] | None = None  # backends named in heartbeats (None: no list)
        self.fences: asyncio.Queue[FenceBackends] = asyncio.Queue()
        self._sub: bus.Subscription | None = None
        self._fence_sub: bus.Subscription | None = None
        self._beat: asyncio.Task[None] | None = None

    @property
    def running(self) -> int:
        return len(self.accepted) + self.load

    async def start(self, *, register: bool = True) -> SimDrone:
        self._sub = await self.nc.subscribe(subjects.drone_spawn(self.drone_id), cb=self._on_spawn)
        self._fence_sub = await self.nc.subscribe(
            subjects.drone_fence(self.drone_id), cb=self._on_fence
        )
        if register:
            connect = DroneConnectRequest(drone_id=self.drone_id, cluster=self.cluster, ip=self.ip)
            await bus.publish(self.nc, subjects.drone_register(self.drone_id), connect)
        await self.beat()
        self.resume_heartbeats()
        return self

    def status(self) -> DroneStatusMessage:
        return DroneStatusMessage(
            drone_id=self.drone_id,
            cluster=self.cluster,
            drone_version="sim",
            ready=self.ready,
            state=self.state,
            running_backends=self.running,
            ip=self.ip,
            backends=self.listed,
            pool=self.pool,
        )

    async def beat(self) -> None:
        """Send one heartbeat now, and make sure it left."""
        await bus.publish(self.nc, subjects.drone_status(self.drone_id), self.status())
        await self.nc.flush(timeout=5)

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_secs)
            await bus.publish(self.nc, subjects.drone_status(self.drone_id), self.status())

    def stop_heartbeats(self) -> None:
        if self._beat is not None:
            self._beat.cancel()
            self._beat = None

    def resume_heartbeats(self) -> None:
        if self._beat is None:
            self._beat = asyncio.create_task(self._heartbeats())

    async def _on_spawn(self, msg: bus.Msg) -> None:
        request = wire.decode(SpawnRequest, msg.data)
        self.offers.append(request)
        self.offered.set()
        if self.answer is Answer.SILENT:
            return
        if self.reply_delay:
            await asyncio.sleep(self.reply_delay)
        if self.answer is Answer.INVALID:
            refusal = invalid_request("executable.volume_mounts: not allowed on this drone")
            await self.nc.publish(msg.reply, wire.encode(refusal))
            return
        accept = self.answer is Answer.ACCEPT
        if accept:
            self.accepted.append(request)
        await self.nc.publish(msg.reply, b"true" if accept else b"false")
        if accept and self.report_loading:
            await self.report(request.backend_id, BackendState.LOADING)

    async def _on_fence(self, msg: bus.Msg) -> None:
        await self.fences.put(wire.decode(FenceBackends, msg.data))

    async def report(
        self, backend: str, state: BackendState, *, time: datetime | None = None
    ) -> object:
        """Send one backend state through the controller's relay; returns the decoded reply."""
        update = UpdateBackendStateMessage(
            cluster=self.cluster,
            state=state,
            backend=backend,
            time=time or utc_now(),
            drone=self.drone_id,
        )
        reply = await self.nc.request(
            subjects.drone_update_backend_state(self.cluster, self.drone_id, backend),
            wire.encode(update),
            timeout=5,
        )
        return wire.decode(object, reply.data)

    async def stop(self) -> None:
        self.stop_heartbeats()
        for sub in (self._sub, self._fence_sub):
            if sub is not None:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
        self._sub = self._fence_sub = None


async def eventually(
    check: Callable[[], Awaitable[bool]], *, timeout: float = 10.0, what: str = "condition"
) -> None:
    """Ask the controller (over NATS) until `check` holds, failing after `timeout`.

    Used only where the answer depends on heartbeats arriving over the bus.
    """
    try:
        async with asyncio.timeout(timeout):
            while True:
                if await check():
                    return
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout:g}s waiting for {what}") from None


async def list_drones(nc: bus.NatsClient, cluster: str) -> list[DroneInfo]:
    result: list[DroneInfo] = await bus.request(
        nc, subjects.list_drones(cluster), None, list[DroneInfo], timeout=5
    )
    return result


async def wait_drones_ready(nc: bus.NatsClient, cluster: str, *drones: SimDrone) -> None:
    """Until the controller lists every one of `drones` as ready."""
    wanted = {d.drone_id for d in drones}

    async def ready() -> bool:
        listed = {d.drone_id for d in await list_drones(nc, cluster) if d.ready}
        return wanted <= listed

    await eventually(ready, what=f"drones {sorted(wanted)} to be listed ready")
