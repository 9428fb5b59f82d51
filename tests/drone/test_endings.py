"""How backends end, on a real drone: soft and hard termination, lifetimes, and the
reason every end is reported with (the test image says when it gets SIGTERM)."""

from __future__ import annotations

import asyncio
import contextlib

import aiodocker
import httpx
import msgspec

from shared import bus, subjects
from shared.bus import NatsClient
from shared.protocol import (
    BackendState,
    DroneLogMessage,
    SpawnRequest,
    TerminationRequest,
    UpdateBackendStateMessage,
)
from tests.drone.conftest import (
    CLUSTER,
    ControllerSim,
    MakeDrone,
    containers_of,
    spawn,
    spawn_request,
    wait_no_container,
)
from tests.support.docker import container_ip

R = BackendState.READY
SIGTERM_LINE = "testbackend got SIGTERM"


def end_of(sim: ControllerSim, backend: str) -> UpdateBackendStateMessage:
    (ended,) = [u for u in sim.updates if u.backend == backend and u.state.terminal]
    return ended


async def terminate(nc: NatsClient, backend: str, *, hard: bool = False) -> None:
    request = TerminationRequest(cluster_id=CLUSTER, backend_id=backend, hard=hard)
    await bus.request(nc, subjects.terminate(CLUSTER, backend), request, None, timeout=30)


class Output:
    """A backend's output lines as the drone publishes them."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.said = asyncio.Event()

    async def follow(self, nc: NatsClient, backend: str) -> bus.Subscription:
        async def take(msg: bus.Msg) -> None:
            self.lines.append(msgspec.json.decode(msg.data, type=DroneLogMessage).text)
            if SIGTERM_LINE in self.lines[-1]:
                self.said.set()

        return await nc.subscribe(subjects.backend_log(backend), cb=take)


async def ready(nc: NatsClient, sim: ControllerSim, request: SpawnRequest) -> str:
    assert await spawn(nc, request) is True
    await sim.wait_state(request.backend_id, R)
    return request.backend_id


async def test_a_soft_termination_sends_sigterm_and_says_terminated(
    make_drone: MakeDrone, sim: ControllerSim, nc: NatsClient, testbackend_image: str
) -> None:
    drone = await make_drone()
    request = spawn_request(drone, testbackend_image)
    output = Output()
    sub = await output.follow(nc, request.backend_id)
    b = await ready(nc, sim, request)
    await terminate(nc, b)
    assert await sim.wait_terminal(b) is BackendState.TERMINATED
    await asyncio.wait_for(output.said.wait(), 30)
    ended = end_of(sim, b)
    assert (ended.reason, ended.exit_code) == ("terminated", None)
    await sub.unsubscribe()


async def test_a_hard_termination_kills_at_once_even_a_backend_that_ignores_sigterm(
    make_drone: MakeDrone,
    sim: ControllerSim,
    nc: NatsClient,
    docker: aiodocker.Docker,
    testbackend_image: str,
) -> None:
    drone = await make_drone()
    # It would take its whole (long) grace period if SIGTERM were sent first.
    request = spawn_request(drone, testbackend_image, env={"IGNORE_SIGTERM": "1"})
    request = msgspec.structs.replace(request, termination_grace_secs=600)
    output = Output()
    sub = await output.follow(nc, request.backend_id)
    b = await ready(nc, sim, request)
    await terminate(nc, b, hard=True)
    assert await sim.wait_terminal(b) is BackendState.TERMINATED
    await wait_no_container(docker, b)  # well within the test's timeout: no grace was given
    assert end_of(sim, b).reason == "terminated"
    assert SIGTERM_LINE not in output.lines  # the process is gone: it cannot say it now
    await sub.unsubscribe()


async def test_a_backend_ignoring_sigterm_is_killed_after_its_own_grace(
    make_drone: MakeDrone,
    sim: ControllerSim,
    nc: NatsClient,
    docker: aiodocker.Docker,
    testbackend_image: str,
) -> None:
    drone = await make_drone(termination_grace_secs=600)  # the drone's default: far too long
    request = spawn_request(drone, testbackend_image, env={"IGNORE_SIGTERM": "1"})
    request = msgspec.structs.replace(request, termination_grace_secs=1)
    output = Output()
    sub = await output.follow(nc, request.backend_id)
    b = await ready(nc, sim, request)
    await terminate(nc, b)
    await asyncio.wait_for(output.said.wait(), 30)  # it got SIGTERM, and stayed
    assert await sim.wait_terminal(b) is BackendState.TERMINATED
    await wait_no_container(docker, b)  # killed after 1 s, not 600
    await sub.unsubscribe()


async def test_a_backend_in_use_is_terminated_at_its_lifetime_limit(
    make_drone: MakeDrone, sim: ControllerSim, nc: NatsClient, docker: aiodocker.Docker,
    testbackend_image: str,
) -> None:  # fmt: skip
    drone = await make_drone()
    request = spawn_request(drone, testbackend_image, max_idle_secs=600)
    request = msgspec.structs.replace(request, lifetime_limit_secs=3)
    b = await ready(nc, sim, request)
    [container] = await containers_of(docker, b)
    ip = await container_ip(docker, container)
    async with httpx.AsyncClient(timeout=30, trust_env=False) as client:
        # A request in flight the whole time: the backend is busy, and ends anyway.
        busy = asyncio.create_task(client.get(f"http://{ip}:8080/sleep/20000"))
        assert await sim.wait_terminal(b, timeout=20) is BackendState.TERMINATED
        busy.cancel()
    assert end_of(sim, b).reason == "lifetime"
    await wait_no_container(docker, b)


async def test_an_exit_is_reported_with_its_reason_and_exit_code(
    make_drone: MakeDrone, sim: ControllerSim, nc: NatsClient, docker: aiodocker.Docker,
    testbackend_image: str,
) -> None:  # fmt: skip
    drone = await make_drone()
    failing = await ready(nc, sim, spawn_request(drone, testbackend_image))
    exiting = await ready(nc, sim, spawn_request(drone, testbackend_image))
    async with httpx.AsyncClient(timeout=5, trust_env=False) as client:
        for backend, path in ((failing, "/exit/3"), (exiting, "/exit/0")):
            [container] = await containers_of(docker, backend)
            ip = await container_ip(docker, container)
            with contextlib.suppress(httpx.HTTPError):  # it may exit before it answers
                await client.get(f"http://{ip}:8080{path}")
    assert await sim.wait_terminal(failing) is BackendState.FAILED
    assert await sim.wait_terminal(exiting) is BackendState.EXITED
    assert (end_of(sim, failing).reason, end_of(sim, failing).exit_code) == ("error", 3)
    assert (end_of(sim, exiting).reason, end_of(sim, exiting).exit_code) == ("exited", 0)
