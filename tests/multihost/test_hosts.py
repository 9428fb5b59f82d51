"""Plane over real (simulated) hosts: NATS cluster, controllers, drones, browser, apart.

One bed, one story in phases, each phase asserting what a user would see and
printing what it measured:

1. the streams have three replicas on the three-node cluster;
2. backends spread over the drones; each resolves, through either
   controller's DNS, to its own drone's address, and answers there;
3. the client's NATS node is killed, then the stream leader's: nothing stored
   is lost, running backends keep answering, scheduling comes back;
4. a drone host falls off the network past the lost window and comes back:
   its backends are stored Lost, their IDs held, and once healed the drone
   stops them, the DNS forgets them, and the IDs are free again;
5. a host is drained and removed: it takes no backends, keeps serving its
   own until they end, and leaves the placement;
6. Prometheus, scraping every process with the shipped rules, has every metric
   the rules and the dashboard use, and fires the drone-lost alert when a drone
   host dies;
7. locks: requests racing for one lock through both controllers make one
   backend (checked right after phase 2, with every drone up), and a
   controller killed while new locks are being placed leaves one backend per
   lock, every request answered with it.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter

import pytest

from shared import subjects
from shared.client import InvalidRequest, PlaneClient, PlaneError
from shared.protocol import BackendState, BackendStateMessage
from tests.e2e.cluster import until
from tests.multihost.bed import LOST_AFTER_SECS, Bed, _run
from tests.support.docker import TESTBACKEND_IMAGE
from tests.support.natscluster import Node
from tests.test_deploy import metric_names_used

pytestmark = pytest.mark.timeout(420)

HELLO = "hello from testbackend\n"


async def last_states(plane: PlaneClient, backends: list[str]) -> dict[str, BackendStateMessage]:
    """The stored last states, read again while the stream elects a new leader."""

    async def read() -> dict[str, BackendStateMessage] | None:
        try:
            return {b: await plane.status(b) for b in backends}
        except PlaneError:
            return None

    return await until("the stored states to be readable", 60, read)


async def answers(bed: Bed, backend: str, drone: str) -> bool:
    status, body = await bed.browse(backend, bed.drone(drone).host.ip)
    return (status, body) == (200, HELLO)


class Prober:
    """The browser, asking every Ready backend for its page, all the time, in the background."""

    def __init__(self, bed: Bed, placed: dict[str, str]) -> None:
        self.bed = bed
        self.placed = placed
        self.outcomes: Counter[str] = Counter()
        self.rounds = 0
        self._task: asyncio.Task[None] | None = None

    def __enter__(self) -> Prober:
        self._task = asyncio.create_task(self._probe())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()

    async def another_round(self) -> None:
        """Until every backend has been asked once more."""
        rounds = self.rounds
        await until("another round of pages", 30, self._after(rounds))

    def _after(self, rounds: int):  # type: ignore[no-untyped-def]
        async def done() -> bool | None:
            return True if self.rounds > rounds + 1 else None

        return done

    async def _probe(self) -> None:
        while True:
            for backend, drone in list(self.placed.items()):
                self.outcomes["ok" if await answers(self.bed, backend, drone) else "failed"] += 1
            self.rounds += 1
            await asyncio.sleep(0.25)


async def scheduling_gap(bed: Bed, timeout: float = 60) -> float:
    """From now, how long until a schedule succeeds again (each try waits its own answer)."""
    assert bed.plane is not None
    started = time.monotonic()
    while True:
        try:
            scheduled = await bed.plane.schedule(image=TESTBACKEND_IMAGE, max_idle_secs=600)
            await bed.plane.terminate(scheduled.backend_id)
            return time.monotonic() - started
        except PlaneError:
            if time.monotonic() - started > timeout:
                raise
            await asyncio.sleep(0.1)


async def kill_and_measure(
    bed: Bed, node: Node, placed: dict[str, str]
) -> tuple[float, Counter[str]]:
    assert bed.nats is not None and bed.plane is not None
    before = await last_states(bed.plane, list(placed))
    with Prober(bed, placed) as prober:
        await bed.nats.kill_node(node)
        gap = await scheduling_gap(bed)
        await prober.another_round()  # every page again, the node still down
        after = await last_states(bed.plane, list(placed))
    assert after == before, "a stored state changed or was lost"
    await bed.nats.start_node(node)
    return gap, prober.outcomes


async def test_plane_across_hosts(bed: Bed) -> None:
    assert bed.nats is not None and bed.plane is not None
    plane = bed.plane
    admin_settings = bed.client_settings("admin")

    # 1. Three replicas, as the cluster has three nodes (stream info: an admin's to ask).
    admin = await PlaneClient.connect(admin_settings, bed.cluster)
    js = admin.nc.jetstream()
    for stream in ("backend_status", "dns_record", "backend_log"):
        assert (await js.stream_info(stream)).config.num_replicas == 3, stream

    # 2. Spread, DNS, proxies bound to their hosts.
    placed: dict[str, str] = {}
    ready_secs = []
    for _ in range(6):
        backend, drone, took = await bed.spawn_ready()
        placed[backend] = drone
        ready_secs.append(took)
    assert set(placed.values()) == {d.drone_id for d in bed.drones}, placed
    for backend, drone in placed.items():
        for controller in range(len(bed.controllers)):
            assert await bed.resolve(backend, controller) == bed.drone(drone).host.ip
        assert await answers(bed, backend, drone)
        other = next(d for d in bed.drones if d.drone_id != drone)
        status, _ = await bed.browse(backend, other.host.ip)
        assert status == 404, "a drone answers for its own backends only"
    print(
        f"\nschedule → Ready across hosts: p50 {statistics.median(ready_secs) * 1000:.0f} ms, "
        f"max {max(ready_secs) * 1000:.0f} ms over {len(ready_secs)}"
    )

    # 7a. One lock, raced for through both controllers by 40 requests at once.
    replies = await asyncio.gather(
        *(plane.schedule(image=TESTBACKEND_IMAGE, max_idle_secs=600, lock="room-1")
          for _ in range(40))
    )  # fmt: skip
    assert len({r.backend_id for r in replies}) == 1
    assert sorted(r.spawned for r in replies) == [False] * 39 + [True]
    room = replies[0].backend_id
    await plane.wait_for_state(room, BackendState.READY, 60)
    assert await answers(bed, room, replies[0].drone)
    fetched = await plane.fetch("room-1")
    assert fetched is not None and fetched.backend_id == room
    # Ended, it frees the lock (and leaves its drone as the later phases expect it).
    await plane.terminate(room)
    await plane.wait_for_state(room, BackendState.TERMINATED)

    async def freed() -> bool | None:
        return True if await plane.fetch("room-1") is None else None

    await until("lock room-1 to be free once its backend ended", 20, freed)
    print("lock raced for by 40 requests over two controllers: one backend, 40 answers")

    # 3. The client's NATS node (the third), then the stream leader's.
    client_node = bed.nats.nodes[2]
    gap, probes = await kill_and_measure(bed, client_node, placed)
    print(f"client's NATS node killed: scheduling back after {gap:.2f}s; probes {dict(probes)}")
    assert probes["failed"] == 0 and probes["ok"] > 0
    info = await js.stream_info(subjects.BACKEND_STATUS_STREAM)
    assert info.cluster is not None, "a clustered stream reports its cluster"
    leader = next(n for n in bed.nats.nodes if n.name == info.cluster.leader)
    gap, probes = await kill_and_measure(bed, leader, placed)
    print(f"stream leader {leader.name} killed: scheduling back after {gap:.2f}s; {dict(probes)}")
    assert probes["failed"] == 0 and probes["ok"] > 0

    # 4. A drone host cut off past the lost window, then healed.
    cut = bed.drones[0]
    held = sorted(b for b, d in placed.items() if d == cut.drone_id)
    assert held
    cut.host.cut()

    async def stored_lost() -> bool | None:
        states = await last_states(plane, held)
        return True if all(m.state is BackendState.LOST for m in states.values()) else None

    await until("the cut-off drone's backends to be stored Lost", LOST_AFTER_SECS + 20, stored_lost)
    with pytest.raises(InvalidRequest, match="was lost with drone"):
        await plane.schedule(image=TESTBACKEND_IMAGE, backend_id=held[0])
    running = await cut.docker.containers.list()
    assert len(running) >= len(held), "cut off, its containers still run"
    healed_at = time.monotonic()
    cut.host.heal()

    async def stopped() -> bool | None:
        names = {c["Labels"].get("dev.plane.backend") for c in await cut.docker.containers.list()}
        return None if names & set(held) else True

    await until("the Lost backends to stop on the healed host", 30, stopped)
    heal_secs = time.monotonic() - healed_at
    for backend in held:
        placed.pop(backend)
        assert await bed.resolve(backend) is None, "the DNS forgets a Lost backend"
    states = await last_states(plane, held)
    assert {m.state for m in states.values()} == {BackendState.LOST}, "no other end stored"
    await bed.wait_drone(cut.drone_id, ready=True)

    async def reused() -> str | None:
        try:
            return (await plane.schedule(image=TESTBACKEND_IMAGE, backend_id=held[0])).drone
        except InvalidRequest:
            return None

    await until("the Lost ID to be free again", 15, reused)
    print(f"cut-off drone healed: its Lost backends stopped {heal_secs:.2f}s after the heal")

    # 5. Drain and remove a host.
    leaving = bed.drones[-1]
    staying = [b for b, d in placed.items() if d == leaving.drone_id]
    try:
        await admin.drain(leaving.drone_id)
        await bed.wait_drone(leaving.drone_id, ready=False)
        for _ in range(3):
            _, drone, _ = await bed.spawn_ready()
            assert drone != leaving.drone_id
        for backend in staying:
            assert await answers(bed, backend, leaving.drone_id), "a draining drone serves"
            await plane.terminate(backend)
            await plane.wait_for_state(backend, BackendState.TERMINATED)

        async def drained() -> bool | None:
            found = {d.drone_id: d.state.value for d in await admin.drones()}
            return True if found.get(leaving.drone_id) == "Drained" else None

        await until("the drained host to say Drained", 20, drained)
        await leaving.daemon.stop()

        async def stopped_listed() -> bool | None:
            found = {d.drone_id: d.state.value for d in await admin.drones()}
            return True if found.get(leaving.drone_id) == "Stopped" else None

        await until("the removed host to be listed Stopped", 20, stopped_listed)
    finally:
        await admin.close()

    # 6. Prometheus scraped every metric the shipped rules and dashboard use, and a drone
    #    whose host dies fires the drone-lost alert.
    async def all_names_scraped() -> set[str] | None:
        names = set(await bed.prometheus_get("/api/v1/label/__name__/values"))
        return names if metric_names_used() <= names else None

    await until("Prometheus to have every metric in use", 30, all_names_scraped)
    victim = bed.drones[1]
    await victim.daemon.kill()

    async def drone_lost_firing() -> bool | None:
        alerts = (await bed.prometheus_get("/api/v1/alerts"))["alerts"]
        firing = {a["labels"]["alertname"] for a in alerts if a["state"] == "firing"}
        return True if "PlaneDroneLost" in firing else None

    killed_at = time.monotonic()
    await until("PlaneDroneLost to fire", LOST_AFTER_SECS + 30, drone_lost_firing)
    print(f"drone host dead: PlaneDroneLost firing {time.monotonic() - killed_at:.1f}s after")

    # 7b. A controller killed (kill -9 of its container) while ten new locks are placed.
    before = {b.backend_id for b in await plane.backends()}
    locks = [f"doc-{n}" for n in range(10)]
    answered: dict[str, set[str]] = {lock: set() for lock in locks}

    async def ask(lock: str) -> None:
        async def once() -> str | None:
            try:
                reply = await plane.schedule(image=TESTBACKEND_IMAGE, max_idle_secs=600, lock=lock)
            except PlaneError:
                return None  # its controller died with the request: ask again, as apps do
            return reply.backend_id

        answered[lock].add(await until(f"an answer for lock {lock}", 90, once))

    began = time.monotonic()
    asking = [asyncio.create_task(ask(lock)) for lock in locks for _ in range(3)]
    dying = bed.controllers[0]
    await _run(["docker", "--host", dying.engine.host, "kill", f"plane-{dying.host.name}"])
    await asyncio.gather(*asking)
    assert all(len(backends) == 1 for backends in answered.values()), answered
    made = {b.backend_id for b in await plane.backends()} - before
    assert made == {b for backends in answered.values() for b in backends}, "no orphan backend"
    print(
        f"controller killed while placing 10 locks: {len(made)} backends, one per lock; "
        f"all 30 requests answered {time.monotonic() - began:.1f}s after the first was sent"
    )
