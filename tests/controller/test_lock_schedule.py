"""Get-or-create by lock over a real nats-server: one backend per lock, whoever asks.

Controllers run in this process on one NATS server; drones are played by
test code (tests/controller/sim.py) that report Loading once they accept, as
drones do. The lock table is the real JetStream KV bucket.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from controller.service import Controller
from shared import bus, subjects, wire
from shared.protocol import BackendState, Executable, FetchRequest, ScheduleRequest
from tests.controller.conftest import CLUSTER, MakeDrone, StartController
from tests.controller.sim import SimDrone, eventually, wait_drones_ready

LOCK = "doc:42/room_1"


async def ask(nc: bus.NatsClient, lock: str = LOCK, timeout: float = 20) -> Any:
    request = ScheduleRequest(cluster=CLUSTER, executable=Executable(image="img:1"), lock=lock)
    reply = await nc.request(subjects.schedule(CLUSTER), wire.encode(request), timeout=timeout)
    return json.loads(reply.data)


async def fetch(nc: bus.NatsClient, lock: str = LOCK) -> Any:
    request = FetchRequest(cluster=CLUSTER, lock=lock)
    reply = await nc.request(subjects.fetch(CLUSTER), wire.encode(request), timeout=10)
    return json.loads(reply.data)


def backend_of(reply: Any) -> str:
    assert isinstance(reply, dict) and "Scheduled" in reply, reply
    return str(reply["Scheduled"]["backend_id"])


def held_answers(controller: Controller) -> float:
    """How many requests this controller answered with a lock's running holder."""
    value = controller.metrics.registry.get_sample_value(
        "plane_controller_schedule_requests_total", {"outcome": "lock_held"}
    )
    return value or 0.0


async def two_controllers(start: StartController, **overrides: Any) -> list[Controller]:
    return list(await asyncio.gather(start(**overrides), start(**overrides)))


async def test_200_concurrent_requests_for_one_lock_over_two_controllers_get_one_backend(
    nc: bus.NatsClient, start_controller: StartController, make_drone: MakeDrone
) -> None:
    controllers = await two_controllers(start_controller)
    drones = [await make_drone(report_loading=True, reply_delay=0.05) for _ in range(3)]
    await wait_drones_ready(nc, CLUSTER, *drones)

    replies = await asyncio.gather(*(ask(nc) for _ in range(200)))

    backends = {backend_of(reply) for reply in replies}
    assert len(backends) == 1, backends
    spawned = [reply["Scheduled"]["spawned"] for reply in replies]
    assert spawned.count(True) == 1 and spawned.count(False) == 199
    assert len({json.dumps(r["Scheduled"]["drone"]) for r in replies}) == 1
    accepted = [spawn for drone in drones for spawn in drone.accepted]
    assert len(accepted) == 1 and accepted[0].backend_id in backends
    assert accepted[0].lock == LOCK  # the drone sets PLANE_LOCK from it
    # Both controllers answered some of them (the queue group spread the requests).
    held = [held_answers(controller) for controller in controllers]
    assert sum(held) == 199 and min(held) > 0, held
    fetched = await fetch(nc)
    assert backend_of(fetched) in backends and "spawned" not in fetched["Scheduled"]


async def test_a_controller_cut_off_while_placing_a_lock_leaves_one_backend(
    nc: bus.NatsClient, start_controller: StartController, make_drone: MakeDrone
) -> None:
    first = await start_controller()
    drone = await make_drone(report_loading=True, reply_delay=0.3)
    await wait_drones_ready(nc, CLUSTER, drone)
    drone.offered.clear()
    cut_off = asyncio.create_task(ask(nc, timeout=5))
    await asyncio.wait_for(drone.offered.wait(), 10)  # the first controller is placing it
    second = await start_controller()
    assert first._nc is not None
    await first._nc.close()  # as a kill -9 looks from NATS: gone mid-request
    with pytest.raises(Exception):  # noqa: B017 (its answer is lost with it, whatever it was)
        await cut_off

    replies = await asyncio.gather(*(ask(nc) for _ in range(100)))

    backends = {backend_of(reply) for reply in replies}
    assert len(backends) == 1, backends
    assert all(reply["Scheduled"]["spawned"] is False for reply in replies)  # adopted
    assert len(drone.accepted) == 1 and drone.accepted[0].backend_id in backends
    assert held_answers(second) == 100


@pytest.mark.parametrize(
    "end",
    [
        BackendState.SWEPT,
        BackendState.TERMINATED,
        BackendState.FAILED,
        BackendState.EXITED,
        BackendState.ERROR_STARTING,
        BackendState.TIMED_OUT_BEFORE_READY,
        BackendState.LOST,
    ],
)
async def test_a_lock_is_freed_when_its_backend_ends_and_taken_by_the_next_request(
    nc: bus.NatsClient, start_controller: StartController, make_drone: MakeDrone, end: BackendState
) -> None:
    lost = end is BackendState.LOST
    await start_controller(lost_after_secs=1.0) if lost else await start_controller()
    drone = await make_drone(report_loading=True)
    await wait_drones_ready(nc, CLUSTER, drone)
    first = await ask(nc)
    assert first["Scheduled"]["spawned"] is True
    assert backend_of(await ask(nc)) == backend_of(first)

    if lost:
        other = await make_drone(report_loading=True)
        drone.stop_heartbeats()  # silent: the controller declares it and its backends Lost
        await wait_drones_ready(nc, CLUSTER, other)
    else:
        await drone.report(backend_of(first), end)

    async def freed() -> bool:
        return bool(await fetch(nc) == "NoBackendForLock")

    await eventually(freed, what=f"the lock to be free after {end.value}")
    again = await ask(nc)
    assert again["Scheduled"]["spawned"] is True
    assert backend_of(again) != backend_of(first)
    assert backend_of(await fetch(nc)) == backend_of(again)


async def test_a_lock_no_drone_took_is_free_for_the_next_request(
    nc: bus.NatsClient, start_controller: StartController, make_drone: MakeDrone
) -> None:
    await start_controller()
    assert await ask(nc) == "NoDroneAvailable"
    assert await fetch(nc) == "NoBackendForLock"
    drone: SimDrone = await make_drone(report_loading=True)
    await wait_drones_ready(nc, CLUSTER, drone)
    reply = await ask(nc)
    assert reply["Scheduled"]["spawned"] is True and len(drone.accepted) == 1


async def test_different_locks_get_different_backends_and_bad_locks_a_clear_error(
    nc: bus.NatsClient, start_controller: StartController, make_drone: MakeDrone
) -> None:
    await start_controller()
    drone = await make_drone(report_loading=True)
    await wait_drones_ready(nc, CLUSTER, drone)
    replies = await asyncio.gather(*(ask(nc, f"room-{i % 10}") for i in range(50)))
    assert len({backend_of(r) for r in replies}) == 10 and len(drone.accepted) == 10
    for bad in ("", "a b", "x" * 129, "ünï"):
        raw = json.dumps({"cluster": CLUSTER, "executable": {"image": "i"}, "lock": bad})
        reply = await nc.request(subjects.schedule(CLUSTER), raw.encode(), timeout=10)
        answer = json.loads(reply.data)
        assert "lock" in answer["InvalidRequest"]["message"], answer
    assert len(drone.accepted) == 10
