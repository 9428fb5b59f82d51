"""Backend states: relayed into JetStream, indexed, rebuilt after a restart, Lost with drones."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

from nats.js.api import DeliverPolicy

from controller.service import Controller
from shared import bus, subjects, wire
from shared.protocol import (
    BackendInfo,
    BackendState,
    BackendStateMessage,
    DroneState,
    Executable,
    ScheduleRequest,
    utc_now,
)
from tests.controller.conftest import CLUSTER, MakeDrone, StartController
from tests.controller.sim import eventually, list_drones, wait_drones_ready


async def list_backends(nc: bus.NatsClient, cluster: str = CLUSTER) -> list[BackendInfo]:
    result: list[BackendInfo] = await bus.request(
        nc, subjects.list_backends(cluster), {}, list[BackendInfo], timeout=5
    )
    return result


async def stored(nc: bus.NatsClient, backend: str) -> list[BackendStateMessage]:
    """Every state the stream holds for `backend`, oldest first."""
    js = nc.jetstream()
    info = await js.stream_info(
        subjects.BACKEND_STATUS_STREAM, subjects_filter=subjects.backend_status(backend)
    )
    count = (info.state.subjects or {}).get(subjects.backend_status(backend), 0)
    if not count:
        return []
    sub = await js.subscribe(
        subjects.backend_status(backend), ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
    )
    try:
        return [
            wire.decode(BackendStateMessage, (await sub.next_msg(timeout=5)).data)
            for _ in range(count)
        ]
    finally:
        await sub.unsubscribe()


async def test_an_update_is_stored_with_its_drone_before_the_drone_is_acked(
    nc: bus.NatsClient, controller: Controller, make_drone: MakeDrone
) -> None:
    drone = await make_drone()
    sent = utc_now()

    reply = await drone.report("b-one", BackendState.LOADING, time=sent)

    assert reply is None  # the ack is JSON null
    # Stored by the time the ack arrived: read it back at once.
    raw = await nc.jetstream().get_last_msg(
        subjects.BACKEND_STATUS_STREAM, subjects.backend_status("b-one")
    )
    assert raw.data is not None
    message = json.loads(raw.data)
    assert message == {
        "cluster": CLUSTER,
        "state": "Loading",
        "backend": "b-one",
        "time": sent.isoformat().replace("+00:00", "Z"),
        "drone": drone.drone_id,
    }
    (listed,) = await list_backends(nc)
    assert (listed.backend_id, listed.drone, listed.state) == (
        "b-one",
        drone.drone_id,
        BackendState.LOADING,
    )


async def test_a_resent_update_is_stored_once(
    nc: bus.NatsClient, controller: Controller, make_drone: MakeDrone
) -> None:
    drone = await make_drone()
    when = utc_now()
    assert await drone.report("b-twice", BackendState.READY, time=when) is None
    assert await drone.report("b-twice", BackendState.READY, time=when) is None
    assert [m.state for m in await stored(nc, "b-twice")] == [BackendState.READY]


async def test_the_stream_is_bounded_by_age_and_per_backend(
    nc: bus.NatsClient, controller: Controller
) -> None:
    info = await nc.jetstream().stream_info(subjects.BACKEND_STATUS_STREAM)
    assert info.config.subjects == [subjects.BACKEND_STATUS_STREAM_SUBJECTS]
    assert info.config.max_age == controller.settings.status_max_age_secs
    assert info.config.max_msgs_per_subject == controller.settings.status_max_per_subject


async def test_a_deleted_stream_is_set_up_again_and_nothing_is_lost(
    nc: bus.NatsClient, controller: Controller, make_drone: MakeDrone
) -> None:
    drone = await make_drone()
    await nc.jetstream().delete_stream(subjects.BACKEND_STATUS_STREAM)
    assert await drone.report("b-after", BackendState.STARTING) is None
    assert [m.state for m in await stored(nc, "b-after")] == [BackendState.STARTING]


async def test_the_index_follows_the_order_of_life(
    nc: bus.NatsClient, controller: Controller, make_drone: MakeDrone
) -> None:
    drone = await make_drone()
    now = utc_now()
    await drone.report("b-order", BackendState.READY, time=now)
    # A late, older report does not move it back.
    await drone.report("b-order", BackendState.STARTING, time=now - timedelta(seconds=1))
    (listed,) = await list_backends(nc)
    assert listed.state == BackendState.READY
    await drone.report("b-order", BackendState.SWEPT, time=now + timedelta(seconds=1))
    assert await list_backends(nc) == []  # the list holds live backends only


async def test_a_restarted_controller_lists_the_same_live_backends(
    nc: bus.NatsClient, start_controller: StartController, make_drone: MakeDrone
) -> None:
    first = await start_controller()
    drone = await make_drone()
    await drone.report("b-ready", BackendState.LOADING)
    await drone.report("b-ready", BackendState.READY)
    await drone.report("b-starting", BackendState.STARTING)
    await drone.report("b-gone", BackendState.READY)
    await drone.report("b-gone", BackendState.TERMINATED)
    before = await list_backends(nc)
    assert [b.backend_id for b in before] == ["b-ready", "b-starting"]
    await first.stop()

    second = await start_controller()

    assert await list_backends(nc) == before
    assert len(second.index) == 3  # the terminal one too, until pruned
    # It also knows the live IDs are taken.
    request = ScheduleRequest(
        cluster=CLUSTER, backend_id="b-ready", executable=Executable(image="i")
    )
    reply = await bus.request(nc, subjects.schedule(CLUSTER), request, dict[str, Any], timeout=5)
    assert "already live" in reply["InvalidRequest"]["message"]


async def test_a_silent_drone_is_lost_and_so_are_its_backends(
    nc: bus.NatsClient, start_controller: StartController, make_drone: MakeDrone
) -> None:
    await start_controller(lost_after_secs=0.8)
    doomed = await make_drone()
    other = await make_drone()
    await wait_drones_ready(nc, CLUSTER, doomed, other)
    await doomed.report("b-lost-1", BackendState.READY)
    await doomed.report("b-lost-2", BackendState.STARTING)
    await doomed.report("b-ended", BackendState.EXITED)
    await other.report("b-safe", BackendState.READY)
    seen: asyncio.Queue[BackendStateMessage] = asyncio.Queue()

    async def on_state(msg: bus.Msg) -> None:
        await seen.put(wire.decode(BackendStateMessage, msg.data))

    sub = await nc.subscribe(subjects.BACKEND_STATUS_STREAM_SUBJECTS, cb=on_state)
    doomed.stop_heartbeats()

    lost = {(await asyncio.wait_for(seen.get(), 10)).backend for _ in range(2)}
    await sub.unsubscribe()

    assert lost == {"b-lost-1", "b-lost-2"}
    for backend in lost:
        last = (await stored(nc, backend))[-1]
        assert (last.state, last.drone) == (BackendState.LOST, doomed.drone_id)
    assert [m.state for m in await stored(nc, "b-ended")] == [BackendState.EXITED]
    assert [b.backend_id for b in await list_backends(nc)] == ["b-safe"]
    states = {d.drone_id: d.state for d in await list_drones(nc, CLUSTER)}
    assert states == {doomed.drone_id: DroneState.LOST, other.drone_id: DroneState.READY}


async def test_two_controllers_store_each_lost_backend_once(
    nc: bus.NatsClient, start_controller: StartController, make_drone: MakeDrone
) -> None:
    controllers = [await start_controller(lost_after_secs=0.8) for _ in range(2)]
    doomed = await make_drone()
    await wait_drones_ready(nc, CLUSTER, doomed)
    for backend in ("b-x", "b-y", "b-z"):
        await doomed.report(backend, BackendState.READY)
    doomed.stop_heartbeats()

    async def lost_everywhere() -> bool:
        return all(c.index.live_count(doomed.drone_id) == 0 for c in controllers)

    # Each controller either stores Lost itself or hears the other's first.
    await eventually(lost_everywhere, what="both controllers to see the backends Lost")
    for backend in ("b-x", "b-y", "b-z"):
        states = [m.state for m in await stored(nc, backend)]
        assert states == [BackendState.READY, BackendState.LOST]


async def test_lost_states_published_at_once_by_two_controllers_are_stored_once(
    nc: bus.NatsClient, start_controller: StartController, make_drone: MakeDrone
) -> None:
    first, second = [await start_controller() for _ in range(2)]
    drone = await make_drone()
    for backend in ("b-p", "b-q"):
        await drone.report(backend, BackendState.READY)

    async def both_indexed() -> bool:
        return (
            first.index.live_count(drone.drone_id) == second.index.live_count(drone.drone_id) == 2
        )

    await eventually(both_indexed, what="both controllers to index the backends")

    fresh = await asyncio.gather(
        first.relay.publish_lost(drone.drone_id), second.relay.publish_lost(drone.drone_id)
    )

    assert sum(fresh) == 2
    for backend in ("b-p", "b-q"):
        assert [m.state for m in await stored(nc, backend)] == [
            BackendState.READY,
            BackendState.LOST,
        ]


async def test_a_drone_that_comes_back_is_a_candidate_again(
    nc: bus.NatsClient, start_controller: StartController, make_drone: MakeDrone
) -> None:
    await start_controller(lost_after_secs=0.6)
    drone = await make_drone()
    await wait_drones_ready(nc, CLUSTER, drone)
    drone.stop_heartbeats()

    async def is_lost() -> bool:
        return any(d.state == DroneState.LOST for d in await list_drones(nc, CLUSTER))

    await eventually(is_lost, what="the drone to be Lost")
    drone.resume_heartbeats()
    await wait_drones_ready(nc, CLUSTER, drone)
    request = ScheduleRequest(cluster=CLUSTER, executable=Executable(image="i"))
    reply = await bus.request(nc, subjects.schedule(CLUSTER), request, dict[str, Any], timeout=5)
    assert reply["Scheduled"]["drone"] == drone.drone_id


async def test_a_restarted_controller_loses_the_backends_of_a_drone_that_never_returns(
    nc: bus.NatsClient, start_controller: StartController, make_drone: MakeDrone
) -> None:
    first = await start_controller()
    drone = await make_drone()
    await drone.report("b-orphan", BackendState.READY)
    await drone.stop()
    await first.stop()

    await start_controller(lost_after_secs=0.6)

    async def orphan_lost() -> bool:
        return (await stored(nc, "b-orphan"))[-1].state == BackendState.LOST

    await eventually(orphan_lost, what="the orphaned backend to be stored as Lost")
    assert await list_backends(nc) == []
