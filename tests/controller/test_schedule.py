"""Scheduling over a real nats-server, with drones played by test code."""

from __future__ import annotations

import asyncio
import collections
import json
from pathlib import Path
from typing import Any

from controller.service import Controller
from shared import bus, subjects, wire
from shared.protocol import (
    NO_DRONE_AVAILABLE,
    DroneState,
    Executable,
    ScheduleReply,
    ScheduleRequest,
    ScheduleResponse,
)
from tests.controller.conftest import CLUSTER, MakeDrone, StartController
from tests.controller.sim import Answer, eventually, list_drones, wait_drones_ready

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
SEED_CLUSTER = "plane.dev"


def request(**fields: Any) -> ScheduleRequest:
    return ScheduleRequest(cluster=CLUSTER, executable=Executable(image="img:1"), **fields)


async def schedule(nc: bus.NatsClient, req: ScheduleRequest | bytes, cluster: str = CLUSTER) -> Any:
    """Send a schedule request; returns the raw JSON reply, parsed."""
    payload = req if isinstance(req, bytes) else wire.encode(req)
    reply = await nc.request(subjects.schedule(cluster), payload, timeout=10)
    return json.loads(reply.data)


def scheduled_on(reply: Any) -> str:
    assert isinstance(reply, dict) and "Scheduled" in reply, reply
    return str(reply["Scheduled"]["drone"])


async def test_the_seed_pages_request_is_scheduled(
    nc: bus.NatsClient, controller: Controller, make_drone: MakeDrone
) -> None:
    drone = await make_drone("c6486564-699e-46d6-bd08-4bd72e4eb8c0", cluster=SEED_CLUSTER)
    await wait_drones_ready(nc, SEED_CLUSTER, drone)
    seed = (GOLDEN / "seed_schedule_request.json").read_bytes()

    reply = await schedule(nc, seed, SEED_CLUSTER)

    assert set(reply) == {"Scheduled"}
    # No token unless required; `spawned` always (late 0.3 clients require it).
    assert set(reply["Scheduled"]) == {"drone", "backend_id", "spawned"}
    assert reply["Scheduled"]["spawned"] is True
    assert reply["Scheduled"]["drone"] == drone.drone_id
    backend_id = reply["Scheduled"]["backend_id"]
    assert len(backend_id) == 36 and backend_id == backend_id.lower()
    # The drone got a SpawnRequest carrying the request, resolved for it.
    (spawn,) = drone.accepted
    assert spawn.backend_id == backend_id and spawn.drone_id == drone.drone_id
    assert spawn.cluster == SEED_CLUSTER and spawn.max_idle_secs == 30
    assert spawn.executable.image == "ghcr.io/drifting-in-space/demo-image-drop-four"
    assert spawn.bearer_token is None
    # The reply decodes as the protocol's ScheduleResponse.
    assert isinstance(wire.decode(ScheduleResponse, json.dumps(reply)), ScheduleReply)


async def test_no_drone_gets_no_drone_available(nc: bus.NatsClient, controller: Controller) -> None:
    reply = await nc.request(subjects.schedule(CLUSTER), wire.encode(request()), timeout=10)
    assert reply.data == b'"NoDroneAvailable"'
    assert wire.decode(ScheduleResponse, reply.data) == NO_DRONE_AVAILABLE


async def test_a_drone_that_is_not_ready_is_not_chosen(
    nc: bus.NatsClient, controller: Controller, make_drone: MakeDrone
) -> None:
    busy = await make_drone(ready=False)
    ready = await make_drone()
    await wait_drones_ready(nc, CLUSTER, ready)
    for _ in range(5):
        assert scheduled_on(await schedule(nc, request())) == ready.drone_id
    assert busy.offers == []
    listed = {d.drone_id: d for d in await list_drones(nc, CLUSTER)}
    assert listed[busy.drone_id].ready is False


async def test_a_draining_drone_is_not_chosen_once_its_status_says_so(
    nc: bus.NatsClient, controller: Controller, make_drone: MakeDrone
) -> None:
    draining = await make_drone()
    other = await make_drone()
    await wait_drones_ready(nc, CLUSTER, draining, other)
    draining.state, draining.ready = DroneState.DRAINING, False
    await draining.beat()

    async def listed_draining() -> bool:
        listed = {d.drone_id: d for d in await list_drones(nc, CLUSTER)}
        return listed[draining.drone_id].state == DroneState.DRAINING

    await eventually(listed_draining, what="the drone to be listed as draining")
    for _ in range(6):
        assert scheduled_on(await schedule(nc, request())) == other.drone_id
    assert draining.offers == []


async def test_a_drone_that_stops_heartbeating_is_not_chosen(
    nc: bus.NatsClient, controller: Controller, make_drone: MakeDrone
) -> None:
    silent = await make_drone()
    alive = await make_drone()
    await wait_drones_ready(nc, CLUSTER, silent, alive)
    silent.stop_heartbeats()

    # Three missed heartbeats (0.6 s) later it is no longer a candidate, and the listing
    # (which says `ready` exactly while a schedule may choose it) tells.
    async def passed_over() -> bool:
        listed = {d.drone_id: d.ready for d in await list_drones(nc, CLUSTER)}
        return listed == {silent.drone_id: False, alive.drone_id: True}

    await eventually(passed_over, what="the silent drone to be passed over")
    offers_before = len(silent.offers)
    for _ in range(6):
        assert scheduled_on(await schedule(nc, request())) == alive.drone_id
    assert len(silent.offers) == offers_before


async def test_a_refusing_drone_is_passed_over_for_the_next(
    nc: bus.NatsClient, controller: Controller, make_drone: MakeDrone
) -> None:
    refusing = await make_drone(answer=Answer.REFUSE)
    accepting = await make_drone()
    await wait_drones_ready(nc, CLUSTER, refusing, accepting)
    for _ in range(4):
        assert scheduled_on(await schedule(nc, request())) == accepting.drone_id
    assert refusing.offers, "the refusing drone was never asked"
    assert refusing.accepted == []
    # Each backend ID was offered to the refusing drone at most once, then placed elsewhere.
    offered_ids = [o.backend_id for o in refusing.offers]
    assert len(offered_ids) == len(set(offered_ids))
    assert {o.backend_id for o in refusing.offers} <= {a.backend_id for a in accepting.accepted}


async def test_a_drone_that_does_not_answer_is_passed_over(
    nc: bus.NatsClient, controller: Controller, make_drone: MakeDrone
) -> None:
    silent = await make_drone(answer=Answer.SILENT)
    accepting = await make_drone()
    await wait_drones_ready(nc, CLUSTER, silent, accepting)
    replies = [await schedule(nc, request()) for _ in range(4)]
    assert all(scheduled_on(r) == accepting.drone_id for r in replies)
    assert silent.offers, "the silent drone was never asked"


async def test_every_drone_refusing_means_no_drone_available(
    nc: bus.NatsClient, controller: Controller, make_drone: MakeDrone
) -> None:
    drones = [await make_drone(answer=Answer.REFUSE) for _ in range(2)]
    await wait_drones_ready(nc, CLUSTER, *drones)
    assert await schedule(nc, request()) == NO_DRONE_AVAILABLE
    assert all(len(d.offers) == 1 for d in drones)


async def test_attempts_are_bounded(
    nc: bus.NatsClient, start_controller: StartController, make_drone: MakeDrone
) -> None:
    await start_controller(spawn_attempts=2)
    drones = [await make_drone(answer=Answer.REFUSE) for _ in range(4)]
    await wait_drones_ready(nc, CLUSTER, *drones)
    assert await schedule(nc, request()) == NO_DRONE_AVAILABLE
    assert sum(len(d.offers) for d in drones) == 2


async def test_fifty_concurrent_requests_spread_evenly_over_three_drones(
    nc: bus.NatsClient, controller: Controller, make_drone: MakeDrone
) -> None:
    drones = [await make_drone() for _ in range(3)]
    await wait_drones_ready(nc, CLUSTER, *drones)
    replies = await asyncio.gather(*(schedule(nc, request()) for _ in range(50)))
    placed = collections.Counter(scheduled_on(r) for r in replies)
    assert sum(placed.values()) == 50
    counts = [d.running for d in drones]
    assert sum(counts) == 50
    assert max(counts) - min(counts) <= 1, counts
    assert placed == {d.drone_id: d.running for d in drones}


async def test_two_controllers_schedule_each_request_exactly_once(
    nc: bus.NatsClient, start_controller: StartController, make_drone: MakeDrone
) -> None:
    first = await start_controller()
    second = await start_controller()
    drones = [await make_drone() for _ in range(3)]
    await wait_drones_ready(nc, CLUSTER, *drones)
    replies = await asyncio.gather(*(schedule(nc, request()) for _ in range(40)))
    backend_ids = [r["Scheduled"]["backend_id"] for r in replies]
    assert len(set(backend_ids)) == 40
    spawned = [s.backend_id for d in drones for s in d.offers]
    assert sorted(spawned) == sorted(backend_ids)  # each offered once, by one controller
    handled = [
        c.metrics.registry.get_sample_value(
            "plane_controller_schedule_requests_total", {"outcome": "scheduled"}
        )
        for c in (first, second)
    ]
    assert sum(n or 0 for n in handled) == 40


async def test_a_client_chosen_id_that_is_live_is_refused(
    nc: bus.NatsClient, controller: Controller, make_drone: MakeDrone
) -> None:
    drone = await make_drone()
    await wait_drones_ready(nc, CLUSTER, drone)
    assert scheduled_on(await schedule(nc, request(backend_id="my-session")))

    again = await schedule(nc, request(backend_id="my-session"))

    assert "already live" in again["InvalidRequest"]["message"]
    assert again["InvalidRequest"]["message"].startswith("backend_id:")
    assert [s.backend_id for s in drone.offers] == ["my-session"]


async def test_concurrent_requests_for_one_id_start_it_once(
    nc: bus.NatsClient, controller: Controller, make_drone: MakeDrone
) -> None:
    drones = [await make_drone() for _ in range(2)]
    await wait_drones_ready(nc, CLUSTER, *drones)
    replies = await asyncio.gather(*(schedule(nc, request(backend_id="dup")) for _ in range(5)))
    assert sum("Scheduled" in r for r in replies) == 1
    assert sum("InvalidRequest" in r for r in replies) == 4
    assert sum(len(d.offers) for d in drones) == 1


async def test_a_refused_id_can_be_asked_for_again(
    nc: bus.NatsClient, controller: Controller, make_drone: MakeDrone
) -> None:
    drone = await make_drone(answer=Answer.REFUSE)
    await wait_drones_ready(nc, CLUSTER, drone)
    assert await schedule(nc, request(backend_id="retry-me")) == NO_DRONE_AVAILABLE
    drone.answer = Answer.ACCEPT
    assert scheduled_on(await schedule(nc, request(backend_id="retry-me"))) == drone.drone_id


async def test_a_bearer_token_is_made_and_passed_to_the_drone(
    nc: bus.NatsClient, controller: Controller, make_drone: MakeDrone
) -> None:
    drone = await make_drone()
    await wait_drones_ready(nc, CLUSTER, drone)
    first = await schedule(nc, request(require_bearer_token=True))
    second = await schedule(nc, request(require_bearer_token=True))
    tokens = [first["Scheduled"]["bearer_token"], second["Scheduled"]["bearer_token"]]
    for token in tokens:
        assert len(token) == 30 and token.isascii() and token.isalnum()
    assert tokens[0] != tokens[1]
    assert [s.bearer_token for s in drone.accepted] == tokens


async def test_scheduling_is_not_held_up_by_a_slow_drone(
    nc: bus.NatsClient, start_controller: StartController, make_drone: MakeDrone
) -> None:
    """While one request waits out a silent drone's timeout, others are answered."""
    await start_controller(spawn_timeout_secs=1.5)
    silent = await make_drone(answer=Answer.SILENT)
    await wait_drones_ready(nc, CLUSTER, silent)
    stuck = asyncio.ensure_future(schedule(nc, request()))
    await asyncio.wait_for(silent.offered.wait(), 5)
    accepting = await make_drone()
    await wait_drones_ready(nc, CLUSTER, accepting)
    # The silent drone is suspended after its timeout only; until then the new,
    # emptier drone is chosen anyway, while the first request still waits.
    reply = await schedule(nc, request())
    assert scheduled_on(reply) == accepting.drone_id
    assert not stuck.done()
    assert scheduled_on(await stuck) == accepting.drone_id
