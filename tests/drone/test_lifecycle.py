"""Backends through their whole life on a real drone: real NATS, real Docker, the test image."""

from __future__ import annotations

import asyncio
import contextlib
import time

import aiodocker
import httpx
import msgspec

from shared import bus, subjects
from shared.bus import NatsClient
from shared.protocol import BackendState, TerminationRequest
from tests.drone.conftest import (
    CLUSTER,
    ControllerSim,
    MakeDrone,
    backend_host,
    containers_of,
    proxy_client,
    spawn,
    spawn_request,
    wait_no_container,
)
from tests.support.docker import container_ip

L, S, R = BackendState.LOADING, BackendState.STARTING, BackendState.READY


async def test_spawned_backend_becomes_ready_answers_and_is_swept_when_idle(
    make_drone: MakeDrone,
    sim: ControllerSim,
    nc: NatsClient,
    docker: aiodocker.Docker,
    testbackend_image: str,
) -> None:
    drone = await make_drone()
    request = spawn_request(drone, testbackend_image, max_idle_secs=1)
    assert await spawn(nc, request) is True
    b = request.backend_id
    assert await sim.wait_state(b, R) == [L, S, R]
    async with proxy_client(drone) as client:
        response = await client.get("/hello", headers={"Host": backend_host(drone, b)})
    assert response.status_code == 200
    idle_from = time.monotonic()
    assert await sim.wait_terminal(b, timeout=10) is BackendState.SWEPT
    assert time.monotonic() - idle_from >= 0.9
    assert sim.history(b) == [L, S, R, BackendState.SWEPT]
    await wait_no_container(docker, b)
    async with proxy_client(drone) as client:
        gone = await client.get("/", headers={"Host": backend_host(drone, b)})
    assert gone.status_code == 404


async def test_traffic_keeps_a_backend_from_being_swept(
    make_drone: MakeDrone,
    sim: ControllerSim,
    nc: NatsClient,
    docker: aiodocker.Docker,
    testbackend_image: str,
) -> None:
    drone = await make_drone()
    request = spawn_request(drone, testbackend_image, max_idle_secs=1)
    assert await spawn(nc, request)
    b = request.backend_id
    await sim.wait_state(b, R)
    # A response streamed for 2 s (20 chunks, 100 ms apart) is one request in flight.
    async with proxy_client(drone) as client:
        response = await client.get("/stream/20", headers={"Host": backend_host(drone, b)})
    assert response.status_code == 200
    assert sim.history(b) == [L, S, R]
    assert await sim.wait_terminal(b, timeout=10) is BackendState.SWEPT


async def test_exit_codes_decide_failed_exited_and_error_starting(
    make_drone: MakeDrone,
    sim: ControllerSim,
    nc: NatsClient,
    docker: aiodocker.Docker,
    testbackend_image: str,
) -> None:
    # No periodic reconcile within the test: exits are seen through Docker's events.
    drone = await make_drone(reconcile_secs=60.0)
    failing = spawn_request(drone, testbackend_image)
    exiting = spawn_request(drone, testbackend_image)
    early = spawn_request(drone, testbackend_image, env={"EXIT_CODE": "3", "EXIT_TIMEOUT": "100"})
    for request in (failing, exiting, early):
        assert await spawn(nc, request)
    await sim.wait_state(failing.backend_id, R)
    await sim.wait_state(exiting.backend_id, R)
    async with proxy_client(drone) as client:
        for request, path in ((failing, "/exit/1"), (exiting, "/exit/0")):
            host = backend_host(drone, request.backend_id)
            with contextlib.suppress(httpx.HTTPError):  # it may die before it answers
                await client.get(path, headers={"Host": host})
    assert await sim.wait_terminal(failing.backend_id) is BackendState.FAILED
    assert await sim.wait_terminal(exiting.backend_id) is BackendState.EXITED
    assert await sim.wait_terminal(early.backend_id) is BackendState.ERROR_STARTING
    assert sim.history(failing.backend_id) == [L, S, R, BackendState.FAILED]
    assert sim.history(exiting.backend_id) == [L, S, R, BackendState.EXITED]
    assert R not in sim.history(early.backend_id)
    for request in (failing, exiting, early):
        await wait_no_container(docker, request.backend_id)


async def test_a_backend_that_never_answers_times_out(
    make_drone: MakeDrone,
    sim: ControllerSim,
    nc: NatsClient,
    docker: aiodocker.Docker,
    testbackend_image: str,
) -> None:
    drone = await make_drone(ready_timeout_secs=1.5)
    request = spawn_request(drone, testbackend_image, env={"READY_DELAY": "60000"})
    assert await spawn(nc, request)
    b = request.backend_id
    assert await sim.wait_terminal(b, timeout=15) is BackendState.TIMED_OUT_BEFORE_READY
    assert sim.history(b) == [L, S, BackendState.TIMED_OUT_BEFORE_READY]
    await wait_no_container(docker, b)


async def test_termination_request_ends_the_backend_and_only_its_owner_answers(
    make_drone: MakeDrone,
    sim: ControllerSim,
    nc: NatsClient,
    docker: aiodocker.Docker,
    testbackend_image: str,
) -> None:
    drone = await make_drone()
    await make_drone()  # a second drone in the same cluster must stay silent
    request = spawn_request(drone, testbackend_image)
    assert await spawn(nc, request)
    b = request.backend_id
    await sim.wait_state(b, R)
    subject = subjects.terminate(CLUSTER, b)
    reply = await bus.request(
        nc, subject, TerminationRequest(cluster_id=CLUSTER, backend_id=b), None, timeout=10
    )
    assert reply is None
    # The reply comes once the state is decided.
    assert sim.history(b)[-1] is BackendState.TERMINATED or (
        await sim.wait_terminal(b, timeout=5) is BackendState.TERMINATED
    )
    assert await sim.wait_terminal(b) is BackendState.TERMINATED
    await wait_no_container(docker, b)

    # Once the backend is gone nobody answers for it.
    async def no_responders() -> bool:
        try:
            await bus.request(
                nc, subject, TerminationRequest(cluster_id=CLUSTER, backend_id=b), None, timeout=2
            )
        except bus.NoResponders:
            return True
        return False

    deadline = time.monotonic() + 5
    while not await no_responders():
        assert time.monotonic() < deadline, "the terminate subject is still served"
        await asyncio.sleep(0.1)


async def test_terminating_during_loading_leaves_no_container(
    make_drone: MakeDrone,
    sim: ControllerSim,
    nc: NatsClient,
    docker: aiodocker.Docker,
    testbackend_image: str,
) -> None:
    drone = await make_drone()
    requests = [spawn_request(drone, testbackend_image) for _ in range(3)]
    for request in requests:
        assert await spawn(nc, request)
    # Terminate at once, while each is somewhere in Loading or Starting.
    await asyncio.gather(
        *(
            bus.request(
                nc,
                subjects.terminate(CLUSTER, r.backend_id),
                TerminationRequest(cluster_id=CLUSTER, backend_id=r.backend_id),
                None,
                timeout=10,
            )
            for r in requests
        )
    )
    assert drone.agent is not None
    for request in requests:
        assert await sim.wait_terminal(request.backend_id) is BackendState.TERMINATED
        assert R not in sim.history(request.backend_id)
        # A create still in flight at the request is let finish, then removed.
        assert await drone.agent.wait_gone(request.backend_id, timeout=20)
        assert await containers_of(docker, request.backend_id) == []


async def test_backend_is_reachable_at_its_container_address(
    make_drone: MakeDrone,
    sim: ControllerSim,
    nc: NatsClient,
    docker: aiodocker.Docker,
    testbackend_image: str,
) -> None:
    drone = await make_drone()
    request = spawn_request(drone, testbackend_image, port=9000)
    request = msgspec.structs.replace(request, lock="doc:42/room_1")
    assert await spawn(nc, request)
    b = request.backend_id
    await sim.wait_state(b, R)
    [container_id] = await containers_of(docker, b)
    ip = await container_ip(docker, container_id)
    async with httpx.AsyncClient(timeout=5, trust_env=False) as client:
        direct = await client.get(f"http://{ip}:9000/headers")
    assert direct.status_code == 200
    info = await docker.containers.get(container_id)
    env = dict(item.split("=", 1) for item in info["Config"]["Env"])
    assert env["PORT"] == "9000"
    assert env["PLANE_BACKEND_ID"] == b
    assert env["PLANE_LOCK"] == "doc:42/room_1"
    assert info["Name"] == f"/plane-{b}"


async def test_a_drone_told_to_terminate_on_shutdown_ends_its_backends(
    make_drone: MakeDrone,
    sim: ControllerSim,
    nc: NatsClient,
    docker: aiodocker.Docker,
    testbackend_image: str,
) -> None:
    drone = await make_drone(terminate_on_shutdown=True)
    requests = [spawn_request(drone, testbackend_image) for _ in range(2)]
    for request in requests:
        assert await spawn(nc, request)
    for request in requests:
        await sim.wait_state(request.backend_id, R)
    await drone.stop()
    for request in requests:
        # Delivered before stop() returned.
        assert sim.history(request.backend_id)[-1] is BackendState.TERMINATED
        assert await containers_of(docker, request.backend_id) == []


async def test_a_burst_of_spawns_all_become_ready_and_are_all_swept(
    make_drone: MakeDrone,
    sim: ControllerSim,
    nc: NatsClient,
    docker: aiodocker.Docker,
    testbackend_image: str,
) -> None:
    drone = await make_drone()
    requests = [spawn_request(drone, testbackend_image, max_idle_secs=2) for _ in range(10)]
    answers = await asyncio.gather(*(spawn(nc, r) for r in requests))
    assert answers == [True] * len(requests)

    async def visit_once_ready(client: httpx.AsyncClient, backend: str) -> int:
        await sim.wait_state(backend, R, timeout=60)
        response = await client.get("/", headers={"Host": backend_host(drone, backend)})
        return response.status_code

    async with proxy_client(drone) as client:
        codes = await asyncio.gather(*(visit_once_ready(client, r.backend_id) for r in requests))
    assert codes == [200] * len(requests)
    for request in requests:
        assert await sim.wait_terminal(request.backend_id, timeout=30) is BackendState.SWEPT
        assert sim.history(request.backend_id) == [L, S, R, BackendState.SWEPT]
    assert drone.agent is not None
    for request in requests:
        assert await drone.agent.wait_gone(request.backend_id, timeout=20)
        assert await containers_of(docker, request.backend_id) == []
