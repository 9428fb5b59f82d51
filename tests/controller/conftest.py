"""Fixtures for controller tests: an in-process controller on port-0 listeners, sim drones."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
import pytest

from controller.config import ControllerSettings, DnsSettings
from controller.service import Controller
from shared import bus
from tests.controller.sim import SimDrone
from tests.support.natsserver import NatsServer

CLUSTER = "plane.test"
HEARTBEAT = 0.2


def fast_settings(url: str, **overrides: Any) -> ControllerSettings:
    """Settings with test timings: 0.2 s heartbeats, short timeouts, port-0 listeners."""
    base = ControllerSettings(
        nats=bus.NatsSettings(servers=[url], reconnect_wait_secs=0.2),
        metrics_listen="127.0.0.1:0",
        heartbeat_secs=HEARTBEAT,
        fresh_heartbeats=3,
        lost_after_secs=30.0,
        spawn_timeout_secs=0.5,
        nats_timeout_secs=2.0,
        shutdown_grace_secs=5.0,
        dns=DnsSettings(listen="127.0.0.1:0"),
    )
    return msgspec.structs.replace(base, **overrides)


StartController = Callable[..., Awaitable[Controller]]
MakeDrone = Callable[..., Awaitable[SimDrone]]


@pytest.fixture
async def start_controller(nats_server: NatsServer) -> AsyncIterator[StartController]:
    """Start controllers with fast settings (keyword overrides); all stopped after the test."""
    started: list[Controller] = []

    async def start(**overrides: Any) -> Controller:
        controller = Controller(fast_settings(nats_server.url, **overrides))
        started.append(controller)
        await controller.start()
        return controller

    try:
        yield start
    finally:
        for controller in started:
            await controller.stop()


@pytest.fixture
async def controller(start_controller: StartController) -> Controller:
    return await start_controller()


@pytest.fixture
async def make_drone(nc: bus.NatsClient) -> AsyncIterator[MakeDrone]:
    """Start simulated drones (registered and heartbeating); all stopped after the test."""
    drones: list[SimDrone] = []

    async def make(drone_id: str | None = None, cluster: str = CLUSTER, **kw: Any) -> SimDrone:
        drone = SimDrone(nc, drone_id or f"drone-{uuid.uuid4().hex[:8]}", cluster, **kw)
        drones.append(drone)
        return await drone.start()

    try:
        yield make
    finally:
        for drone in drones:
            await drone.stop()
