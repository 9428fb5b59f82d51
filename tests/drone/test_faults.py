"""Faults around the drone: the Docker engine or NATS going away, and coming back."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from pathlib import Path

import aiodocker
import httpx
from nats.js.api import DeliverPolicy

from drone.service import Drone
from shared import bus, subjects, wire
from shared.bus import NatsClient
from shared.protocol import BackendState, DroneLogMessage
from tests.drone.conftest import (
    ControllerSim,
    MakeDrone,
    backend_host,
    containers_of,
    fast_settings,
    new_drone_id,
    proxy_client,
    spawn,
    spawn_request,
    wait_no_container,
)
from tests.support.natsserver import NatsServer
from tests.support.relay import UnixRelay

R = BackendState.READY


def docker_socket() -> str:
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    assert host.startswith("unix://"), f"these tests relay a unix socket, not {host}"
    return host.removeprefix("unix://")


async def test_docker_unavailable_makes_the_drone_unready_but_keeps_serving(
    make_drone: MakeDrone,
    sim: ControllerSim,
    nc: NatsClient,
    docker: aiodocker.Docker,
    testbackend_image: str,
    tmp_path: Path,
) -> None:
    relay = UnixRelay(tmp_path / "docker.sock", docker_socket())
    await relay.start()
    try:
        drone = await make_drone(docker={"socket": str(relay.path)})
        serving = spawn_request(drone, testbackend_image)
        swept = spawn_request(drone, testbackend_image, max_idle_secs=1)
        for request in (serving, swept):
            assert await spawn(nc, request)
            await sim.wait_state(request.backend_id, R)
        mark = len(sim.statuses)
        await relay.cut()
        await sim.wait_status(drone.drone_id, lambda s: not s.ready, after=mark)
        assert await spawn(nc, spawn_request(drone, testbackend_image)) is False
        # The proxy keeps serving, and sweeping goes on: the state is decided and reported,
        # though Docker cannot remove the container yet.
        async with proxy_client(drone) as client:
            response = await client.get(
                "/", headers={"Host": backend_host(drone, serving.backend_id)}
            )
        assert response.status_code == 200
        assert await sim.wait_terminal(swept.backend_id) is BackendState.SWEPT
        assert await containers_of(docker, swept.backend_id) != []
        # The engine comes back: ready again, and the leftover is removed.
        mark = len(sim.statuses)
        await relay.start()
        await sim.wait_status(drone.drone_id, lambda s: s.ready, after=mark)
        await wait_no_container(docker, swept.backend_id)
        again = spawn_request(drone, testbackend_image)
        assert await spawn(nc, again) is True
        await sim.wait_state(again.backend_id, R)
        b = serving.backend_id
        assert sim.history(b) == [BackendState.LOADING, BackendState.STARTING, R]
        errors = drone.registry.get_sample_value(
            "plane_drone_docker_errors_total", {"operation": "events"}
        )
        assert errors is not None and errors >= 1
        # Output and exits of a backend that ran through the outage are followed again.
        async with proxy_client(drone) as client:
            with contextlib.suppress(httpx.HTTPError):
                await client.get("/exit/0", headers={"Host": backend_host(drone, b)})
        assert await sim.wait_terminal(b) is BackendState.EXITED
        subscription = await nc.jetstream().subscribe(
            subjects.backend_log(b), ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
        )
        try:
            async with asyncio.timeout(10):
                while True:
                    msg = await subscription.next_msg(timeout=10)
                    line = wire.decode(DroneLogMessage, msg.data)
                    if line.text.startswith("testbackend exiting with code 0"):
                        break
        finally:
            await subscription.unsubscribe()
    finally:
        # The drone's own teardown terminates its backends through the relay.
        if not relay.serving:
            await relay.start()


async def test_nats_outage_does_not_stop_sweeping_and_updates_arrive_afterwards(
    docker: aiodocker.Docker,
    testbackend_image: str,
    test_id: str,
    tmp_path: Path,
) -> None:
    server = await NatsServer.start(tmp_path / "nats")
    client: NatsClient | None = None
    drone: Drone | None = None
    sim: ControllerSim | None = None
    try:
        client = await bus.connect(
            bus.NatsSettings(servers=[server.url], reconnect_wait_secs=0.2), name="test"
        )
        sim = await ControllerSim(client).start()
        settings = fast_settings(server.url, tmp_path / "state", test_id, new_drone_id())
        drone = Drone(settings)
        await drone.start()
        request = spawn_request(drone, testbackend_image, max_idle_secs=2)
        b = request.backend_id
        assert await spawn(client, request)
        await sim.wait_state(b, R)
        await server.stop()
        # NATS is gone: the idle backend is swept all the same.
        await wait_no_container(docker, b)
        async with proxy_client(drone) as http:
            gone = await http.get("/", headers={"Host": backend_host(drone, b)})
        assert gone.status_code == 404
        restarted = await NatsServer.start(server.store, server.port)
        server = restarted
        assert await sim.wait_terminal(b, timeout=30) is BackendState.SWEPT
        assert sim.history(b) == [
            BackendState.LOADING,
            BackendState.STARTING,
            R,
            BackendState.SWEPT,
        ]
        # And the drone takes work again.
        again = spawn_request(drone, testbackend_image, backend_id=f"b-{uuid.uuid4().hex[:8]}")
        deadline = time.monotonic() + 20
        while True:
            try:
                assert await spawn(client, again) is True
                break
            except bus.BusError:
                assert time.monotonic() < deadline, "the drone never took spawns again"
                await asyncio.sleep(0.2)
        await sim.wait_state(again.backend_id, R)
    finally:
        if drone is not None:
            await drone.stop()
        if sim is not None:
            await sim.stop()
        if client is not None:
            await client.close()
        await server.stop()
