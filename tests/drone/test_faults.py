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

R = BackendState.READY


def docker_socket() -> str:
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    assert host.startswith("unix://"), f"these tests relay a unix socket, not {host}"
    return host.removeprefix("unix://")


class SocketRelay:
    """A unix socket in front of the real Docker engine that a test can cut and restore."""

    def __init__(self, path: Path, target: str) -> None:
        self.path = path
        self.target = target
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def serving(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._serve, str(self.path))

    async def cut(self) -> None:
        """Refuse new connections and break every open one, as a stopped engine would."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        pipes = [
            asyncio.create_task(self._pipe(reader, up_writer)),
            asyncio.create_task(self._pipe(up_reader, writer)),
        ]
        self._tasks.update(pipes)
        await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        for task in pipes:
            task.cancel()
            self._tasks.discard(task)
        for end in (writer, up_writer):
            end.transport.abort()
            self._writers.discard(end)

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()


async def test_docker_unavailable_makes_the_drone_unready_but_keeps_serving(
    make_drone: MakeDrone,
    sim: ControllerSim,
    nc: NatsClient,
    docker: aiodocker.Docker,
    testbackend_image: str,
    tmp_path: Path,
) -> None:
    relay = SocketRelay(tmp_path / "docker.sock", docker_socket())
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
