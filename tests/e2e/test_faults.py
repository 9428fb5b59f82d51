"""Faults under load, on real processes: every part tells one story again after each heal.

Each test keeps a user busy (`Load`: a schedule every second, a page from
every Ready backend every half second), injects one fault, heals it, and
waits until the stream, every controller, every drone and Docker agree
(`disagreements`): nothing stored is lost, no backend ID runs twice, no
container runs that the stream does not hold as live.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

import aiodocker
import pytest

from shared.client import InvalidRequest
from shared.protocol import BackendState
from tests.e2e.cluster import IMAGE, Cluster, MakeCluster, until
from tests.e2e.faults import (
    Load,
    gauge,
    running_containers,
    stored_last_states,
    wait_agreement,
)
from tests.support.dockerd import DockerdError, PrivateDockerd

pytestmark = pytest.mark.timeout(180)

LOST_AFTER_SECS = 5  # the controllers' lost window in these tests (heartbeats every second)
AGREE_WITHIN_SECS = 10.0
HEAL_SECS = 1.0 + 2.0  # one heartbeat, plus the time to stop and remove a container


async def until_counted(what: str, check: Callable[[], bool], timeout: float = 30) -> None:
    async def holds() -> bool | None:
        return True if check() else None

    await until(what, timeout, holds)


async def loaded(cluster: Cluster, per_drone: int) -> Load:
    """A running load with at least `per_drone` Ready backends on every drone."""
    load = Load(cluster).start()

    def enough() -> bool:
        drones = list(load.ready.values())
        return all(drones.count(d.drone_id) >= per_drone for d in cluster.drones)

    await until_counted(f"{per_drone} Ready backend(s) on every drone", enough, 60)
    return load


@pytest.fixture
async def load_stopper() -> AsyncIterator[list[Load]]:
    loads: list[Load] = []
    yield loads
    for load in loads:
        await load.stop()


async def test_a_controller_killed_under_load_is_not_missed_and_comes_back_whole(
    make_cluster: MakeCluster, docker: aiodocker.Docker, load_stopper: list[Load]
) -> None:
    cluster = await make_cluster(1)
    await cluster.add_controller()
    load = await loaded(cluster, 2)
    load_stopper.append(load)

    load.phase = "one controller"
    await cluster.controller.kill()
    await until_counted(
        "5 schedules with one controller",
        lambda: sum(load.scheduled("one controller").values()) >= 5,
    )
    load.phase = "both"
    await cluster.restart_controller()
    took = await wait_agreement(cluster, [docker], AGREE_WITHIN_SECS, load)

    print(f"agreement {took:.2f}s after the restart; load {dict(load.schedules)}")
    assert load.scheduled("one controller") == {"scheduled": 5}
    assert set(load.probed("one controller")) == {"ok"}


async def test_a_drone_killed_under_load_adopts_everything_when_it_returns(
    make_cluster: MakeCluster, docker: aiodocker.Docker, load_stopper: list[Load]
) -> None:
    cluster = await make_cluster(2)
    load = await loaded(cluster, 2)
    load_stopper.append(load)
    victim, survivor = cluster.drones
    before = await stored_last_states(cluster)
    its_backends = {b for b, d in load.ready.items() if d == victim.drone_id}

    load.phase = "drone down"
    await victim.daemon.kill()
    await until_counted(
        "3 schedules while the drone is down",
        lambda: sum(load.scheduled("drone down").values()) >= 3,
    )
    load.phase = "back"
    await cluster.start_drone(victim)
    took = await wait_agreement(cluster, [docker], AGREE_WITHIN_SECS, load)

    after = await stored_last_states(cluster)
    assert {b: after[b].state for b in its_backends} == dict.fromkeys(
        its_backends, BackendState.READY
    )
    assert all(after[b].time >= m.time for b, m in before.items()), "nothing stored is lost"
    for backend in its_backends:
        assert (await cluster.get(victim, backend)).status_code == 200
    print(f"agreement {took:.2f}s after the restart; load {dict(load.schedules)}")
    # Placement went on, on the drone that stayed.
    assert set(load.scheduled("drone down")) == {"scheduled"}
    assert set(load.probed("drone down", survivor.drone_id)) == {"ok"}
    assert survivor.daemon.running


async def test_nats_killed_under_load_running_backends_keep_serving_and_nothing_is_lost(
    make_cluster: MakeCluster, docker: aiodocker.Docker, load_stopper: list[Load]
) -> None:
    cluster = await make_cluster(1)
    await cluster.add_controller()
    load = await loaded(cluster, 3)
    load_stopper.append(load)
    before = await stored_last_states(cluster)

    load.phase = "no NATS"
    await cluster.nats.kill()
    await until_counted("20 probes without NATS", lambda: load.probed("no NATS").get("ok", 0) >= 20)
    load.phase = "NATS back"
    await cluster.nats.start_again()
    took = await wait_agreement(cluster, [docker], 20, load)
    await until_counted(
        "a schedule after NATS is back", lambda: load.schedules[("NATS back", "scheduled")] >= 1
    )

    after = await stored_last_states(cluster)
    lost = [b for b, m in before.items() if b not in after or after[b].time < m.time]
    print(f"agreement {took:.2f}s after NATS came back; probes {dict(load.probes)}")
    assert lost == []
    assert set(load.probed("no NATS")) == {"ok"}


async def test_a_drone_frozen_past_the_lost_window_stops_what_was_declared_lost(
    make_cluster: MakeCluster, docker: aiodocker.Docker, load_stopper: list[Load]
) -> None:
    cluster = await make_cluster(2, controller_env={"PLANE_LOST_AFTER_SECS": str(LOST_AFTER_SECS)})
    await cluster.add_controller()
    load = await loaded(cluster, 2)
    load_stopper.append(load)
    frozen, other = cluster.drones
    held = sorted(b for b, d in load.ready.items() if d == frozen.drone_id)

    load.phase = "frozen"
    frozen.freeze()
    for backend in held:
        load.ready.pop(backend)  # declared Lost: no page is expected from them any more

    async def all_lost() -> bool | None:
        stored = await stored_last_states(cluster)
        return True if all(stored[b].state is BackendState.LOST for b in held) else None

    await until("the frozen drone's backends to be stored Lost", LOST_AFTER_SECS + 15, all_lost)
    # While it may still run them, their IDs are not given out again.
    with pytest.raises(InvalidRequest, match="was lost with drone"):
        await cluster.plane.schedule(image=IMAGE, backend_id=held[0])
    running = await running_containers([docker], cluster.test_id)
    assert all(running.get(b) == [frozen.drone_id] for b in held), "frozen, still running"

    load.phase = "thawed"
    thawed = time.monotonic()
    frozen.thaw()

    async def stopped() -> bool | None:
        running = await running_containers([docker], cluster.test_id)
        return None if set(held) & set(running) else True

    await until("what was declared Lost to stop running", HEAL_SECS + 5, stopped)
    healed = time.monotonic() - thawed
    took = await wait_agreement(cluster, [docker], AGREE_WITHIN_SECS, load)
    stored = await stored_last_states(cluster)
    assert all(stored[b].state is BackendState.LOST for b in held), "and no other end is stored"

    # Heard without them, the drone frees their IDs again.
    async def reused() -> str | None:
        try:
            return (await cluster.plane.schedule(image=IMAGE, backend_id=held[0])).drone
        except InvalidRequest:
            return None

    await until("the Lost ID to be free again", 10, reused)
    await wait_agreement(cluster, [docker], AGREE_WITHIN_SECS, load)
    spawns = await gauge(frozen.metrics_port, "plane_drone_spawn_requests")
    fenced = await gauge(frozen.metrics_port, "plane_drone_backends_fenced")
    print(
        f"Lost backends stopped {healed:.2f}s after the thaw, agreement {took:.2f}s later; "
        f"{len(held)} declared Lost, {fenced} fenced; "
        f"stale spawns refused: {spawns.get('stale')}; load {dict(load.schedules)}"
    )
    assert fenced == {"": len(held)}
    assert set(load.scheduled("frozen")) == {"scheduled"}
    assert set(load.probed("frozen", other.drone_id)) == {"ok"}
    assert other.daemon.running


async def test_the_docker_engine_restarted_ends_its_backends_and_the_drone_recovers(
    make_cluster: MakeCluster, docker: aiodocker.Docker, testbackend_image: str
) -> None:
    cluster = await make_cluster(0)
    try:
        engine = await PrivateDockerd().start()
    except DockerdError as exc:
        pytest.fail(str(exc), pytrace=False)
    own = aiodocker.Docker(url=engine.host)
    try:
        await engine.load_images(testbackend_image)
        drone = await cluster.add_drone(docker_host=engine.host)
        backends = [await cluster.spawn_ready() for _ in range(3)]
        await wait_agreement(cluster, [own], AGREE_WITHIN_SECS)

        await engine.stop()  # its containers are stopped with it

        async def all_ended() -> bool | None:
            stored = await stored_last_states(cluster)
            return True if all(stored[b].state.terminal for b in backends) else None

        await until("every backend to be reported ended", 30, all_ended)
        await cluster.wait_drone_ready(drone, ready=False)
        await engine.start()
        await cluster.wait_drone_ready(drone, timeout=30)
        again = await cluster.spawn_ready()
        assert (await cluster.get(drone, again)).status_code == 200
        took = await wait_agreement(cluster, [own], AGREE_WITHIN_SECS)
        print(f"agreement {took:.2f}s after the engine came back")
        await cluster.plane.terminate(again)
        await cluster.plane.wait_for_state(again, BackendState.TERMINATED)
    finally:
        await own.close()
        for each in cluster.drones:  # before the engine goes: they end what they run
            await each.daemon.stop()
        await engine.close()
