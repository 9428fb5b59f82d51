"""One backend ID, one running copy: Lost, stale spawns, stale reports and resends.

The rule (docs/PROTOCOL.md, "Lost is final"): a backend stored as Lost never
serves again. Its drone, once heard, is told to stop that life without a
report; its ID is held until the drone is heard without it. A drone's report
for a life that ended, or for a backend that runs on another drone, is not
stored. A resent report reaches subscribers once.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import nats.js.errors

from controller.service import Controller
from shared import bus, subjects, wire
from shared.protocol import (
    BackendState,
    BackendStateMessage,
    Executable,
    ScheduleRequest,
    utc_now,
)
from tests.controller.conftest import CLUSTER, MakeDrone, StartController
from tests.controller.sim import Answer, SimDrone, eventually, wait_drones_ready
from tests.controller.test_states import stored

R, LOST = BackendState.READY, BackendState.LOST


async def schedule(nc: bus.NatsClient, backend_id: str | None = None) -> dict[str, Any]:
    request = ScheduleRequest(
        cluster=CLUSTER, backend_id=backend_id, executable=Executable(image="i")
    )
    reply: dict[str, Any] = await bus.request(
        nc, subjects.schedule(CLUSTER), request, Any, timeout=10
    )
    return reply


async def lose(nc: bus.NatsClient, drone: SimDrone, backend: str) -> BackendStateMessage:
    """Silence `drone` until the controllers store `backend` as Lost; that Lost state."""

    async def lost() -> bool:
        return (await stored(nc, backend))[-1].state is LOST

    drone.stop_heartbeats()
    await eventually(lost, what=f"{backend} to be stored as Lost")
    return (await stored(nc, backend))[-1]


async def test_resent_reports_reach_subscribers_once(
    nc: bus.NatsClient, controller: Controller, make_drone: MakeDrone
) -> None:
    drone = await make_drone()
    sub = await nc.subscribe(subjects.backend_status("b-resent"))
    ready_at = utc_now()
    for _ in range(3):  # the acknowledgement was lost twice, say
        assert await drone.report("b-resent", R, time=ready_at) is None
    swept_at = ready_at + timedelta(seconds=1)
    for _ in range(3):
        assert await drone.report("b-resent", BackendState.SWEPT, time=swept_at) is None
    seen = []
    while not seen or seen[-1] is not BackendState.SWEPT:
        seen.append(wire.decode(BackendStateMessage, (await sub.next_msg(timeout=5)).data).state)
    await sub.unsubscribe()
    assert seen == [R, BackendState.SWEPT]
    assert [m.state for m in await stored(nc, "b-resent")] == [R, BackendState.SWEPT]


async def test_reports_of_a_lost_life_are_refused_and_never_stored(
    nc: bus.NatsClient, start_controller: StartController, make_drone: MakeDrone
) -> None:
    await start_controller(lost_after_secs=0.6)
    drone = await make_drone()
    await wait_drones_ready(nc, CLUSTER, drone)
    assert await drone.report("b-frozen", R) is None
    lost = await lose(nc, drone, "b-frozen")

    # The drone wakes up and goes on as if nothing happened: its reports are refused.
    for state in (R, BackendState.SWEPT):
        reply = await drone.report("b-frozen", state, time=lost.time + timedelta(seconds=1))
        assert isinstance(reply, dict), reply
        assert "already ended as Lost" in reply["InvalidRequest"]["message"]
    assert [m.state for m in await stored(nc, "b-frozen")] == [R, LOST]


async def test_a_drone_back_from_silence_stops_its_lost_backends_and_then_frees_their_ids(
    nc: bus.NatsClient, start_controller: StartController, make_drone: MakeDrone
) -> None:
    controllers = [await start_controller(lost_after_secs=0.6) for _ in range(2)]
    drone = await make_drone()
    await wait_drones_ready(nc, CLUSTER, drone)
    await drone.report("b-held", R)
    await drone.report("b-kept", R)
    drone.listed = ["b-held", "b-kept"]
    lost = await lose(nc, drone, "b-held")

    # While the drone may still run it, the ID is not given out again.
    reply = await schedule(nc, "b-held")
    assert "was lost with drone" in reply["InvalidRequest"]["message"], reply

    # It comes back, still running both: told to stop the lives begun before their Lost.
    drone.resume_heartbeats()
    fence = await asyncio.wait_for(drone.fences.get(), 10)
    assert (fence.drone, fence.cluster) == (drone.drone_id, CLUSTER)
    assert {f.backend for f in fence.backends} == {"b-held", "b-kept"}
    assert {f.since for f in fence.backends if f.backend == "b-held"} == {lost.time}
    assert all("declared Lost" in f.reason for f in fence.backends)
    assert [m.state for m in await stored(nc, "b-held")] == [R, LOST]  # nothing new stored

    # Once a heartbeat shows them stopped, every controller frees their IDs.
    drone.listed = []

    async def freed() -> bool:
        return all(not c.index.held_on(drone.drone_id) for c in controllers)

    await eventually(freed, what="the Lost IDs to be freed")
    await wait_drones_ready(nc, CLUSTER, drone)
    reply = await schedule(nc, "b-held")
    assert reply["Scheduled"]["backend_id"] == "b-held", reply


async def test_of_two_lost_times_every_controller_holds_the_stored_one(
    nc: bus.NatsClient, start_controller: StartController, make_drone: MakeDrone
) -> None:
    controllers = [await start_controller() for _ in range(2)]
    drone = await make_drone()
    ready = await drone.report("b-twice", R)
    assert ready is None, ready
    declared = utc_now()

    def lost(at: timedelta) -> bytes:
        message = BackendStateMessage(
            cluster=CLUSTER,
            state=LOST,
            backend="b-twice",
            time=declared + at,
            drone=drone.drone_id,
            reason="lost",
        )
        return wire.encode(message)

    # A second controller's Lost, heard first but not stored (the stream refuses
    # it here as meant for another stream, as it would drop it by its message ID) ...
    js = nc.jetstream()
    subject = subjects.backend_status("b-twice")
    try:
        await js.publish(
            subject, lost(timedelta(seconds=2)), headers={"Nats-Expected-Stream": "elsewhere"}
        )
    except nats.js.errors.APIError as exc:
        assert "expected stream does not match" in str(exc), exc
    else:
        raise AssertionError("the stream stored the Lost it was meant to refuse")
    # ... then the stored one, at an earlier time.
    await js.publish(subject, lost(timedelta(seconds=0)))
    assert [(m.state, m.time) for m in await stored(nc, "b-twice")][-1] == (LOST, declared)

    async def settled() -> bool:
        entries = [c.index.get("b-twice") for c in controllers]
        return all(e is not None and (e.state, e.time) == (LOST, declared) for e in entries)

    await eventually(settled, what="both indexes to hold the stored Lost time")


async def test_a_spawn_run_after_its_deadline_elsewhere_is_refused_and_stopped(
    nc: bus.NatsClient, start_controller: StartController, make_drone: MakeDrone
) -> None:
    await start_controller(spawn_timeout_secs=0.6)
    frozen = await make_drone(answer=Answer.SILENT)
    healthy = await make_drone(load=5)  # the silent drone, emptier, is offered first
    await wait_drones_ready(nc, CLUSTER, frozen, healthy)
    sent = utc_now()

    reply = await schedule(nc)

    backend = reply["Scheduled"]["backend_id"]
    assert reply["Scheduled"]["drone"] == healthy.drone_id
    [offer] = frozen.offers
    # The offer to the silent drone said when to stop caring about it: before the
    # controller gave up on it (0.6 s), with a margin for clocks and transit.
    assert offer.deadline is not None
    assert sent < offer.deadline <= sent + timedelta(seconds=0.6)
    assert healthy.offers[0].deadline is not None
    await healthy.report(backend, BackendState.LOADING)

    # Had the frozen drone run it anyway, its report is refused and it is told to stop.
    late = await frozen.report(backend, BackendState.LOADING)
    assert isinstance(late, dict), late
    assert f"runs on drone {healthy.drone_id}" in late["InvalidRequest"]["message"]
    frozen.listed = [backend]
    fence = await asyncio.wait_for(frozen.fences.get(), 10)
    [stop] = fence.backends
    assert stop.backend == backend
    assert stop.reason == f"placed on drone {healthy.drone_id}"
    assert [m.drone for m in await stored(nc, backend)] == [healthy.drone_id]


async def test_a_request_every_drone_calls_invalid_is_answered_invalid(
    nc: bus.NatsClient, controller: Controller, make_drone: MakeDrone
) -> None:
    picky = [await make_drone(answer=Answer.INVALID) for _ in range(2)]
    await wait_drones_ready(nc, CLUSTER, *picky)
    reply = await schedule(nc)
    assert "not allowed on this drone" in reply["InvalidRequest"]["message"], reply
    # One drone that is merely full makes it a question of capacity, not of the request.
    await make_drone(answer=Answer.REFUSE, load=100)
    full = await make_drone(answer=Answer.REFUSE)
    await wait_drones_ready(nc, CLUSTER, full)
    assert await schedule(nc) == "NoDroneAvailable"
