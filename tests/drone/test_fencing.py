"""A drone told that a backend's life is over stops it at once, and says nothing more."""

from __future__ import annotations

from datetime import timedelta

import aiodocker

from shared import bus, subjects
from shared.bus import NatsClient
from shared.protocol import BackendState, Fence, FenceBackends, utc_now
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

R = BackendState.READY


async def test_heartbeats_name_the_backends_and_a_fence_stops_only_older_lives(
    make_drone: MakeDrone,
    sim: ControllerSim,
    nc: NatsClient,
    docker: aiodocker.Docker,
    testbackend_image: str,
) -> None:
    drone = await make_drone()
    before = utc_now()
    doomed = spawn_request(drone, testbackend_image)
    spared = spawn_request(drone, testbackend_image)
    for request in (doomed, spared):
        assert await spawn(nc, request) is True
        await sim.wait_state(request.backend_id, R)
    both = {doomed.backend_id, spared.backend_id}
    mark = len(sim.statuses)
    await sim.wait_status(drone.drone_id, lambda s: set(s.backends or ()) == both, after=mark)

    fence = FenceBackends(
        cluster=CLUSTER,
        drone=drone.drone_id,
        backends=[
            Fence(backend=doomed.backend_id, since=utc_now(), reason="declared Lost at noon"),
            # Stored before this life began: a later life of a reused ID is left alone.
            Fence(backend=spared.backend_id, since=before - timedelta(seconds=1)),
            Fence(backend="not-here"),
        ],
    )
    mark = len(sim.statuses)
    await bus.publish(nc, subjects.drone_fence(drone.drone_id), fence)

    status = await sim.wait_status(
        drone.drone_id, lambda s: s.backends == [spared.backend_id], after=mark
    )
    assert status.running_backends == 1
    await wait_no_container(docker, doomed.backend_id, timeout=5)
    async with proxy_client(drone) as client:
        gone = await client.get("/", headers={"Host": backend_host(drone, doomed.backend_id)})
        kept = await client.get("/", headers={"Host": backend_host(drone, spared.backend_id)})
    assert (gone.status_code, kept.status_code) == (404, 200)
    # Its end was stored by the controllers already: nothing more is reported.
    assert sim.history(doomed.backend_id) == [BackendState.LOADING, BackendState.STARTING, R]
    assert await containers_of(docker, spared.backend_id) != []
    assert drone.registry.get_sample_value("plane_drone_backends_fenced_total") == 1


async def test_a_fence_for_another_drone_or_cluster_is_ignored(
    make_drone: MakeDrone, sim: ControllerSim, nc: NatsClient, testbackend_image: str
) -> None:
    drone = await make_drone()
    request = spawn_request(drone, testbackend_image)
    assert await spawn(nc, request) is True
    await sim.wait_state(request.backend_id, R)
    stop_it = [Fence(backend=request.backend_id)]
    for cluster, named in (("other.test", drone.drone_id), (CLUSTER, "another-drone")):
        forged = FenceBackends(cluster=cluster, drone=named, backends=stop_it)
        await bus.publish(nc, subjects.drone_fence(drone.drone_id), forged)
    mark = len(sim.statuses)
    # Two heartbeats later it still runs.
    for _ in range(2):
        status = await sim.wait_status(drone.drone_id, lambda s: True, after=mark)
        mark = sim.statuses.index(status) + 1
    assert status.backends == [request.backend_id]
    assert drone.registry.get_sample_value("plane_drone_backends_fenced_total") == 0
