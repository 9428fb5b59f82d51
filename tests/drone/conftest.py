"""Fixtures for the drone: a simulated controller on real NATS, drones on real Docker.

The simulated controller answers every backend state update with `null` (as
a controller does once it has stored it) and records what it heard, so tests
can await a backend's states and a drone's heartbeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiodocker
import httpx
import pytest

from controller.jetstream import BACKEND_LOG_MAX_PER_SUBJECT
from drone.config import AgentSettings, DockerSettings, DroneSettings, ProxySettings
from drone.service import Drone
from shared import bus, subjects, wire
from shared.protocol import (
    BackendState,
    DroneConnectRequest,
    DroneStatusMessage,
    Executable,
    SpawnReply,
    SpawnRequest,
    UpdateBackendStateMessage,
)
from tests.support.docker import TEST_LABEL
from tests.support.natsserver import NatsServer

CLUSTER = "drone.test"


async def settle(nc: bus.NatsClient) -> None:
    """Wait until the server has this client's subscriptions.

    Two flushes: nats-py writes a flush's PING ahead of the SUBs still queued
    for its writer task; the second PING goes out after them.
    """
    for _ in range(2):
        await nc.flush(timeout=5)


class Changes:
    """Something tests await: an event set whenever new facts arrive."""

    def __init__(self) -> None:
        self._changed = asyncio.Event()

    def notify(self) -> None:
        self._changed.set()

    async def until(self, check: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            self._changed.clear()
            found = check()
            if found:
                return found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)


class ControllerSim:
    """Records backend states (answering `null`, resends once), heartbeats and registrations."""

    def __init__(self, nc: bus.NatsClient) -> None:
        self.nc = nc
        self.states: dict[str, list[BackendState]] = {}
        self.updates: list[UpdateBackendStateMessage] = []
        self.statuses: list[DroneStatusMessage] = []
        self.registrations: list[DroneConnectRequest] = []
        self.changes = Changes()
        self.answer = True
        self._endpoints: list[bus.Endpoint[Any]] = []

    async def start(self) -> ControllerSim:
        # The controllers create the stream the drones' output goes to.
        await bus.ensure_stream(
            self.nc,
            subjects.BACKEND_LOG_STREAM,
            [subjects.BACKEND_LOG_STREAM_SUBJECTS],
            max_msgs_per_subject=BACKEND_LOG_MAX_PER_SUBJECT,
        )
        self._endpoints = [
            await bus.serve(
                self.nc,
                subjects.DRONE_BACKEND_STATUS_ALL,
                UpdateBackendStateMessage,
                self._on_update,
            ),
            await bus.serve(
                self.nc,
                subjects.DRONE_STATUS_ALL,
                DroneStatusMessage,
                self._on_status,
                replies=False,
            ),
            await bus.serve(
                self.nc,
                subjects.DRONE_REGISTER_ALL,
                DroneConnectRequest,
                self._on_register,
                replies=False,
            ),
        ]
        await settle(self.nc)
        return self

    async def stop(self) -> None:
        for endpoint in self._endpoints:
            await endpoint.stop(timeout=1)

    async def _on_update(self, msg: UpdateBackendStateMessage, subject: str) -> None:
        # A resend of an update already taken (its acknowledgement was lost, say, to a
        # NATS restart) is acknowledged and not recorded again, as the controller does.
        if any((u.backend, u.state, u.time) == (msg.backend, msg.state, msg.time)
               for u in self.updates):  # fmt: skip
            return None
        self.updates.append(msg)
        self.states.setdefault(msg.backend, []).append(msg.state)
        self.changes.notify()
        return None

    async def _on_status(self, msg: DroneStatusMessage, subject: str) -> None:
        self.statuses.append(msg)
        self.changes.notify()

    async def _on_register(self, msg: DroneConnectRequest, subject: str) -> None:
        self.registrations.append(msg)
        self.changes.notify()

    def history(self, backend: str) -> list[BackendState]:
        return list(self.states.get(backend, []))

    async def wait_state(
        self, backend: str, state: BackendState, timeout: float = 30.0
    ) -> list[BackendState]:
        """The backend's states once `state` is among them."""
        await self.changes.until(
            lambda: state in self.states.get(backend, []), timeout, f"{backend} to be {state}"
        )
        return self.history(backend)

    async def wait_terminal(self, backend: str, timeout: float = 30.0) -> BackendState:
        def ended() -> BackendState | None:
            return next((s for s in self.states.get(backend, []) if s.terminal), None)

        found: BackendState = await self.changes.until(
            ended, timeout, f"{backend} to reach a terminal state"
        )
        return found

    async def wait_status(
        self,
        drone: str,
        check: Callable[[DroneStatusMessage], bool],
        timeout: float = 15.0,
        after: int = 0,
    ) -> DroneStatusMessage:
        """The first heartbeat of `drone` (from index `after` on) that passes `check`."""

        def found() -> DroneStatusMessage | None:
            for status in self.statuses[after:]:
                if status.drone_id == drone and check(status):
                    return status
            return None

        result: DroneStatusMessage = await self.changes.until(
            found, timeout, f"a status of {drone} that passes the check"
        )
        return result


def new_drone_id() -> str:
    return f"drone-{uuid.uuid4().hex[:10]}"


def fast_settings(
    nats_url: str, state_dir: Path, test_id: str, drone_id: str | None, **agent: Any
) -> DroneSettings:
    docker = {"image_gc": False, **agent.pop("docker", {})}  # never on the shared engine
    proxy = {"listen": "127.0.0.1:0", "hold_until_ready_secs": 5.0, **agent.pop("proxy", {})}
    return DroneSettings(
        nats=bus.NatsSettings(servers=[nats_url], reconnect_wait_secs=0.2),
        cluster=CLUSTER,
        drone_id=drone_id,
        ip="127.0.0.1",
        state_dir=str(state_dir),
        metrics_listen="127.0.0.1:0",
        docker=DockerSettings(
            extra_labels={TEST_LABEL: test_id}, api_timeout_secs=20.0, check_secs=0.3, **docker
        ),
        agent=AgentSettings(
            **{
                "ready_timeout_secs": 10.0,
                "heartbeat_secs": 0.3,
                "stats_secs": 0.5,
                "dns_refresh_secs": 0.5,
                "reconcile_secs": 1.0,
                "sweep_interval_secs": 0.1,
                "termination_grace_secs": 2,
                "status_timeout_secs": 1.0,
                "status_retry_max_secs": 0.3,
                **agent,
            }
        ),
        proxy=ProxySettings(**proxy),
    )


MakeDrone = Callable[..., Awaitable[Drone]]


@pytest.fixture
async def sim(nc: bus.NatsClient) -> AsyncIterator[ControllerSim]:
    controller = await ControllerSim(nc).start()
    yield controller
    await controller.stop()


@pytest.fixture
async def make_drone(
    nats_server: NatsServer,
    tmp_path: Path,
    test_id: str,
    docker: aiodocker.Docker,
    testbackend_image: str,
    sim: ControllerSim,
) -> AsyncIterator[MakeDrone]:
    """Start drones in this process; each is stopped (its backends terminated) after the test.

    Depends on `sim` so the simulated controller outlives the drones and hears
    their last states.
    """
    drones: list[Drone] = []

    async def make(state_dir: Path | None = None, drone_id: str | None = "", **agent: Any) -> Drone:
        """A started drone; `drone_id` "" makes a fresh one, None keeps it in `state_dir`."""
        agent.setdefault("terminate_on_shutdown", True)
        where = state_dir or tmp_path / f"drone-{len(drones)}"
        chosen = new_drone_id() if drone_id == "" else drone_id
        drone = Drone(fast_settings(nats_server.url, where, test_id, chosen, **agent))
        drones.append(drone)
        await drone.start()
        return drone

    yield make
    for drone in drones:
        await drone.stop()
    # Every drone here terminates its backends when it stops: nothing may remain.
    for drone in drones:
        left = await docker.containers.list(
            all=True,
            filters={"label": [f"dev.plane.drone={drone.drone_id}", f"{TEST_LABEL}={test_id}"]},
        )
        assert left == [], f"containers of drone {drone.drone_id} left behind"


def spawn_request(
    drone: Drone | str,
    image: str,
    *,
    backend_id: str | None = None,
    max_idle_secs: int = 30,
    env: dict[str, str] | None = None,
    bearer_token: str | None = None,
    **executable: Any,
) -> SpawnRequest:
    drone_id = drone if isinstance(drone, str) else drone.drone_id
    return SpawnRequest(
        cluster=CLUSTER,
        drone_id=drone_id,
        backend_id=backend_id or f"b-{uuid.uuid4().hex[:12]}",
        max_idle_secs=max_idle_secs,
        executable=Executable(image=image, env=env or {}, **executable),
        bearer_token=bearer_token,
    )


async def spawn(nc: bus.NatsClient, request: SpawnRequest) -> SpawnReply:
    """Send a SpawnRequest as the controller does; returns the drone's answer."""
    answer: SpawnReply = await bus.request(
        nc, subjects.drone_spawn(request.drone_id), request, SpawnReply, timeout=10
    )
    return answer


def refused_as_invalid(answer: Any) -> str:
    """The message of an `{"InvalidRequest": ...}` answer (fails on any other answer)."""
    assert isinstance(answer, dict) and set(answer) == {"InvalidRequest"}, answer
    message: str = answer["InvalidRequest"]["message"]
    return message


async def spawn_raw(nc: bus.NatsClient, drone_id: str, payload: bytes) -> Any:
    reply = await nc.request(subjects.drone_spawn(drone_id), payload, timeout=10)
    return wire.decode(Any, reply.data)


async def containers_of(docker: aiodocker.Docker, backend: str) -> list[str]:
    found = await docker.containers.list(
        all=True, filters={"label": [f"dev.plane.backend={backend}"]}
    )
    return [c.id for c in found]


async def wait_no_container(docker: aiodocker.Docker, backend: str, timeout: float = 20) -> None:
    """Poll Docker (external state) until the backend's container is gone."""
    deadline = time.monotonic() + timeout
    while await containers_of(docker, backend):
        if time.monotonic() > deadline:
            raise AssertionError(f"container of {backend} still there after {timeout}s")
        await asyncio.sleep(0.1)


def proxy_client(drone: Drone) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{drone.proxy_port}", timeout=10, trust_env=False
    )


def backend_host(drone: Drone, backend: str) -> str:
    return f"{backend}.{CLUSTER}:{drone.proxy_port}"
