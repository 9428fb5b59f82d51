"""A drone or the controller killed with SIGKILL and started again loses nothing."""

from __future__ import annotations

import aiodocker
import httpx
import pytest

from shared.client import NoDroneAvailable
from shared.protocol import BackendInfo, BackendState
from tests.e2e.cluster import HEARTBEAT_SECS, IMAGE, Cluster, until

pytestmark = pytest.mark.timeout(60)

FRESH_SECS = 3 * float(HEARTBEAT_SECS)  # the controller's fresh_heartbeats is 3


def by_id(backends: list[BackendInfo]) -> dict[str, BackendInfo]:
    return {b.backend_id: b for b in backends}


async def test_killed_drone_readopts_its_running_backend(
    cluster: Cluster, docker: aiodocker.Docker
) -> None:
    drone = cluster.drones[0]
    backend = await cluster.spawn_ready()
    containers = await cluster.container_names(docker, backend)
    assert (await cluster.get(drone, backend)).status_code == 200

    await drone.daemon.kill()
    with pytest.raises(httpx.ConnectError):
        await cluster.get(drone, backend)
    assert await cluster.container_names(docker, backend) == containers, "container left alone"

    async def listed_not_ready() -> bool | None:
        [listed] = await cluster.plane.drones()
        return True if not listed.ready else None

    # Silent for a few heartbeats: no longer offered, and no longer listed as ready.
    await until("the killed drone to be listed as not ready", FRESH_SECS + 2, listed_not_ready)
    with pytest.raises(NoDroneAvailable):
        await cluster.plane.schedule(image=IMAGE)

    await cluster.start_drone(drone)  # the same state dir, hence the same drone ID
    assert "recovered 1 container(s)" in drone.daemon.output()
    page = await cluster.get(drone, backend)
    assert (page.status_code, page.text) == (200, "hello from testbackend\n")
    assert await cluster.websocket_echo(drone, backend, "still here") == "still here"
    assert (await cluster.plane.status(backend)).state.value == "Ready"
    [listed] = await cluster.plane.backends()
    assert (listed.backend_id, listed.drone, listed.state.value) == (
        backend,
        drone.drone_id,
        "Ready",
    )
    [known] = await cluster.plane.drones()
    assert (known.drone_id, known.ready) == (drone.drone_id, True)


async def test_killed_controller_comes_back_knowing_every_backend(cluster: Cluster) -> None:
    drone = cluster.drones[0]
    first = await cluster.spawn_ready()
    second = await cluster.spawn_ready()
    ended = await cluster.spawn_ready()
    await cluster.plane.terminate(ended)
    await cluster.plane.wait_for_state(ended, BackendState.TERMINATED)
    before = await cluster.plane.backends()
    assert {b.backend_id: b.state.value for b in before} == {first: "Ready", second: "Ready"}

    await cluster.controller.kill()
    await cluster.restart_controller()
    assert by_id(await cluster.plane.backends()) == by_id(before), "the ended one stays out"
    assert (await cluster.plane.status(ended)).state is BackendState.TERMINATED

    await cluster.wait_drone_ready(drone)
    third = await cluster.spawn_ready()
    for backend in (first, second, third):
        page = await cluster.get(drone, backend)
        assert (page.status_code, page.text) == (200, "hello from testbackend\n")
    assert {b.backend_id: b.state.value for b in await cluster.plane.backends()} == {
        first: "Ready",
        second: "Ready",
        third: "Ready",
    }
