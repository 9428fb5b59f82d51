"""Two drones in one cluster: backends spread over both, each served by its own drone;
a drained drone takes no more but keeps serving its own."""

from __future__ import annotations

import asyncio

import pytest

from tests.e2e.cluster import IMAGE, Cluster, MakeCluster, until

pytestmark = pytest.mark.timeout(60)

BACKENDS = 4


async def test_backends_spread_over_two_drones(make_cluster: MakeCluster) -> None:
    cluster: Cluster = await make_cluster(2)
    scheduled = [
        await cluster.plane.schedule(image=IMAGE, max_idle_secs=60) for _ in range(BACKENDS)
    ]
    await asyncio.gather(*(cluster.plane.wait_for_state(s.backend_id) for s in scheduled))
    drones = {d.drone_id: d for d in cluster.drones}
    placed = {s.backend_id: s.drone for s in scheduled}
    assert set(placed.values()) == set(drones), f"not spread over both drones: {placed}"

    listed = {b.backend_id: (b.drone, b.state.value) for b in await cluster.plane.backends()}
    assert listed == {b: (d, "Ready") for b, d in placed.items()}
    expected = {d: list(placed.values()).count(d) for d in drones}

    async def counted() -> bool | None:
        counts = {d.drone_id: d.running_backends for d in await cluster.plane.drones()}
        return True if counts == expected else None

    # Each drone tells its count in its next heartbeat.
    await until(f"the drone listing to count {expected}", 5, counted)

    for backend, owner in placed.items():
        for drone in cluster.drones:
            page = await cluster.get(drone, backend)
            if drone.drone_id == owner:
                assert (page.status_code, page.text) == (200, "hello from testbackend\n")
                assert await cluster.websocket_echo(drone, backend, backend) == backend
            else:
                assert page.status_code == 404, "a drone served another drone's backend"


async def test_a_drained_drone_takes_no_more_and_keeps_serving(make_cluster: MakeCluster) -> None:
    cluster: Cluster = await make_cluster(2)
    kept, other = cluster.drones
    first = await cluster.plane.schedule(image=IMAGE, max_idle_secs=60)
    assert first.drone in (kept.drone_id, other.drone_id)
    if first.drone != kept.drone_id:
        kept, other = other, kept
    await cluster.plane.wait_for_state(first.backend_id)

    await cluster.plane.drain(kept.drone_id)

    async def listed_draining() -> bool | None:
        states = {d.drone_id: (d.state.value, d.ready) for d in await cluster.plane.drones()}
        return True if states[kept.drone_id] == ("Draining", False) else None

    await until("the drained drone to be listed as Draining", 5, listed_draining)
    later = [await cluster.spawn_ready() for _ in range(2)]
    assert {b.backend_id: b.drone for b in await cluster.plane.backends()} == {
        first.backend_id: kept.drone_id,
        **{backend: other.drone_id for backend in later},
    }
    page = await cluster.get(kept, first.backend_id)
    assert (page.status_code, page.text) == (200, "hello from testbackend\n")

    await cluster.plane.drain(kept.drone_id, drain=False)
    await cluster.wait_drone_ready(kept)
