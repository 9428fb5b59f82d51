"""Drone pools: a request naming a pool goes only to that pool's drones."""

from __future__ import annotations

import asyncio
import json

from controller.service import Controller
from shared import bus, subjects, wire
from shared.protocol import Executable, ScheduleRequest
from tests.controller.conftest import CLUSTER, MakeDrone
from tests.controller.sim import eventually, list_drones, wait_drones_ready


async def ask(nc: bus.NatsClient, pool: str | None) -> object:
    request = ScheduleRequest(cluster=CLUSTER, executable=Executable(image="i"), pool=pool)
    reply = await nc.request(subjects.schedule(CLUSTER), wire.encode(request), timeout=10)
    return json.loads(reply.data)


async def test_requests_land_only_on_their_pools_drones(
    nc: bus.NatsClient, controller: Controller, make_drone: MakeDrone
) -> None:
    gpu = [await make_drone(pool="gpu") for _ in range(2)]
    plain = [await make_drone() for _ in range(2)]
    await wait_drones_ready(nc, CLUSTER, *gpu, *plain)

    replies = await asyncio.gather(*(ask(nc, "gpu") for _ in range(20)))
    replies += await asyncio.gather(*(ask(nc, None) for _ in range(20)))

    placed = [reply["Scheduled"]["drone"] for reply in replies]  # type: ignore[index]
    gpu_ids, plain_ids = {d.drone_id for d in gpu}, {d.drone_id for d in plain}
    assert set(placed[:20]) <= gpu_ids and set(placed[20:]) <= plain_ids
    assert sum(len(d.accepted) for d in gpu) == 20 == sum(len(d.accepted) for d in plain)
    assert all(spawn.pool == "gpu" for d in gpu for spawn in d.accepted)
    assert all(spawn.pool is None for d in plain for spawn in d.accepted)

    listed = {d.drone_id: d.pool for d in await list_drones(nc, CLUSTER)}
    assert listed == {**dict.fromkeys(gpu_ids, "gpu"), **dict.fromkeys(plain_ids, None)}


async def test_an_empty_pool_gets_no_drone_available(
    nc: bus.NatsClient, controller: Controller, make_drone: MakeDrone
) -> None:
    drone = await make_drone(pool="gpu")
    await wait_drones_ready(nc, CLUSTER, drone)
    assert await ask(nc, "arm64") == "NoDroneAvailable"
    assert await ask(nc, None) == "NoDroneAvailable"  # the unnamed pool has no drone either
    assert drone.offers == []


async def test_a_drone_that_moves_to_another_pool_is_chosen_for_that_one(
    nc: bus.NatsClient, controller: Controller, make_drone: MakeDrone
) -> None:
    drone = await make_drone(pool="old")
    await wait_drones_ready(nc, CLUSTER, drone)
    drone.pool = "new"  # restarted with another --pool, same ID
    await drone.beat()

    async def moved() -> bool:
        return [d.pool for d in await list_drones(nc, CLUSTER)] == ["new"]

    await eventually(moved, what="the drone to be listed in pool new")
    assert await ask(nc, "old") == "NoDroneAvailable"
    assert "Scheduled" in await ask(nc, "new")  # type: ignore[operator]
