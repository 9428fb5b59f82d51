"""What the fault tests need: steady load, and a check that every part tells one story.

`Load` is a well-behaved user during a fault: it schedules a backend every
second, and every half second asks each of its Ready backends for a page
through the proxy of the drone that runs it. Outcomes are counted by the
phase the test names (`load.phase = "outage"`).

`disagreements` compares what each part says: the `backend_status` stream
(the last state of every backend), every controller's index (its
`plane_controller_backends` gauge), every drone (its `plane_drone_backends`
gauge), and Docker (the running containers, by their labels). After a
fault heals, the list it returns must become empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, defaultdict
from collections.abc import Iterable

import aiodocker
import httpx
from nats.js.api import DeliverPolicy
from prometheus_client.parser import text_string_to_metric_families

from shared import subjects, wire
from shared.client import PlaneError
from shared.protocol import BackendState, BackendStateMessage
from tests.e2e.cluster import IMAGE, Cluster, Drone
from tests.support.docker import TEST_LABEL

LIVE = (BackendState.LOADING, BackendState.STARTING, BackendState.READY)


async def stored_last_states(cluster: Cluster) -> dict[str, BackendStateMessage]:
    """The last stored state of every backend (the stream, read as a restarted controller does)."""
    js = cluster.plane.nc.jetstream()
    info = await js.stream_info(subjects.BACKEND_STATUS_STREAM, subjects_filter=">")
    count = len(info.state.subjects or {})
    if not count:
        return {}
    sub = await js.subscribe(
        subjects.BACKEND_STATUS_STREAM_SUBJECTS,
        stream=subjects.BACKEND_STATUS_STREAM,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
    )
    last: dict[str, BackendStateMessage] = {}
    try:
        while len(last) < count:
            message = wire.decode(BackendStateMessage, (await sub.next_msg(timeout=5)).data)
            last[message.backend] = message
    finally:
        await sub.unsubscribe()
    return last


async def gauge(port: int, name: str) -> dict[str, float]:
    """One labelled metric of a process's /metrics, by its `state` or `outcome` label."""
    async with httpx.AsyncClient(timeout=5, trust_env=False) as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == name:
            for sample in family.samples:
                key = sample.labels.get("state", sample.labels.get("outcome", ""))
                values[key] = sample.value
    return values


async def running_containers(
    dockers: Iterable[aiodocker.Docker], test_id: str
) -> dict[str, list[str]]:
    """Backend ID → the drones whose engine runs a container for it."""
    found: dict[str, list[str]] = defaultdict(list)
    for docker in dockers:
        for summary in await docker.containers.list(
            filters={"label": [f"{TEST_LABEL}={test_id}"], "status": ["running"]}
        ):
            labels = summary["Labels"] or {}
            found[labels.get("dev.plane.backend", "?")].append(labels.get("dev.plane.drone", "?"))
    return dict(found)


async def disagreements(cluster: Cluster, dockers: Iterable[aiodocker.Docker]) -> list[str]:
    """Every way the parts' stories differ now (empty: they agree)."""
    problems: list[str] = []
    stored = await stored_last_states(cluster)
    live = {b: m for b, m in stored.items() if m.state in LIVE}
    running = await running_containers(dockers, cluster.test_id)
    for backend, drones in running.items():
        if len(drones) > 1:
            problems.append(f"{backend} runs twice, on {sorted(drones)}")
        state = stored[backend].state.value if backend in stored else "nothing"
        if backend not in live:
            problems.append(f"{backend} runs on {drones} but is stored as {state}")
        elif live[backend].drone not in drones:
            problems.append(f"{backend} runs on {drones} but is stored on {live[backend].drone}")
    for backend, message in live.items():
        if message.state is BackendState.READY and backend not in running:
            problems.append(f"{backend} is stored Ready on {message.drone} but runs nowhere")
    expected = Counter(m.state.value for m in live.values())
    for daemon in cluster.controllers:
        if not daemon.running:
            continue
        port = cluster.controller_metrics[daemon.name]
        try:
            counts = await gauge(port, "plane_controller_backends")
        except httpx.TransportError:
            problems.append(f"{daemon.name} does not answer on its metrics port yet")
            continue
        said = {state: int(counts.get(state, 0)) for state in (s.value for s in LIVE)}
        if said != {state: expected.get(state, 0) for state in said}:
            problems.append(f"{daemon.name} counts {said}, the stream {dict(expected)}")
    for drone in cluster.drones:
        if not drone.daemon.running:
            continue
        try:
            counts = await gauge(drone.metrics_port, "plane_drone_backends")
        except httpx.TransportError:
            problems.append(f"{drone.daemon.name} does not answer on its metrics port yet")
            continue
        said = {state: int(counts.get(state, 0)) for state in (s.value for s in LIVE)}
        mine = Counter(m.state.value for m in live.values() if m.drone == drone.drone_id)
        if said != {state: mine.get(state, 0) for state in said}:
            problems.append(f"{drone.daemon.name} counts {said}, the stream {dict(mine)}")
    return problems


async def wait_agreement(
    cluster: Cluster, dockers: Iterable[aiodocker.Docker], within: float, load: Load | None = None
) -> float:
    """Until every part tells the same story; how long that took. Fails after `within`.

    With `load`, its scheduling pauses meanwhile (a backend half-way to Ready is a
    story still being told) and resumes afterwards.
    """
    if load is not None:
        await load.settle()
    try:
        return await _agreement(cluster, dockers, within)
    finally:
        if load is not None:
            load.resume()


async def _agreement(cluster: Cluster, dockers: Iterable[aiodocker.Docker], within: float) -> float:
    started = time.monotonic()
    dockers = list(dockers)
    while True:
        problems = await disagreements(cluster, dockers)
        if not problems:
            return time.monotonic() - started
        if time.monotonic() - started > within:
            raise AssertionError(f"no agreement after {within:g}s: " + "; ".join(problems))
        await asyncio.sleep(0.1)


class Load:
    """A steady user: a schedule every `schedule_secs`, probes every `probe_secs`."""

    def __init__(self, cluster: Cluster, *, schedule_secs: float = 1.0, probe_secs: float = 0.5):
        self.cluster = cluster
        self.schedule_secs = schedule_secs
        self.probe_secs = probe_secs
        self.phase = "before"
        self.schedules: Counter[tuple[str, str]] = Counter()  # (phase, outcome)
        self.probes: Counter[tuple[str, str, str]] = Counter()  # (phase, drone, outcome)
        self.ready: dict[str, str] = {}  # backend → drone, once Ready
        self.placed: dict[str, str] = {}  # every backend scheduled → its drone
        self.scheduling = asyncio.Event()  # cleared: no new schedules (probes go on)
        self.scheduling.set()
        self._tasks: list[asyncio.Task[None]] = []
        self._waits: set[asyncio.Task[None]] = set()

    def start(self) -> Load:
        self._tasks = [
            asyncio.create_task(self._scheduling()),
            asyncio.create_task(self._probing()),
        ]
        return self

    async def stop(self) -> None:
        for task in [*self._tasks, *self._waits]:
            task.cancel()
        for task in [*self._tasks, *self._waits]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def scheduled(self, phase: str) -> dict[str, int]:
        """Schedule outcomes in `phase`: {"scheduled": n, "NoDroneAvailable": m, ...}."""
        return {outcome: n for (p, outcome), n in self.schedules.items() if p == phase}

    def probed(self, phase: str, drone: str | None = None) -> dict[str, int]:
        """Probe outcomes in `phase` (of the backends of `drone` only, if given)."""
        counts: Counter[str] = Counter()
        for (p, d, outcome), n in self.probes.items():
            if p == phase and drone in (None, d):
                counts[outcome] += n
        return dict(counts)

    async def settle(self) -> None:
        """Stop scheduling and let what was scheduled become Ready: a still moment, so
        that the parts' stories can be compared (`resume` goes on)."""
        self.scheduling.clear()
        if self._waits:
            await asyncio.wait(set(self._waits), timeout=30)

    def resume(self) -> None:
        self.scheduling.set()

    async def _scheduling(self) -> None:
        while True:
            await self.scheduling.wait()
            phase = self.phase
            try:
                scheduled = await self.cluster.plane.schedule(image=IMAGE, max_idle_secs=300)
            except PlaneError as exc:
                self.schedules[(phase, type(exc).__name__)] += 1
            else:
                self.schedules[(phase, "scheduled")] += 1
                self.placed[scheduled.backend_id] = scheduled.drone
                wait = asyncio.create_task(self._until_ready(scheduled.backend_id, scheduled.drone))
                self._waits.add(wait)
                wait.add_done_callback(self._waits.discard)
            await asyncio.sleep(self.schedule_secs)

    async def _until_ready(self, backend: str, drone: str) -> None:
        with contextlib.suppress(PlaneError):
            await self.cluster.plane.wait_for_state(backend, BackendState.READY, timeout=30)
            self.ready[backend] = drone

    def drone(self, drone_id: str) -> Drone | None:
        return next((d for d in self.cluster.drones if d.drone_id == drone_id), None)

    async def _probing(self) -> None:
        """One prober per Ready backend, so that a probe hanging on a frozen drone holds
        up no other backend's."""
        probers: dict[str, asyncio.Task[None]] = {}
        try:
            while True:
                for backend, drone_id in list(self.ready.items()):
                    if backend not in probers:
                        probers[backend] = asyncio.create_task(self._probe(backend, drone_id))
                for backend in [b for b in probers if b not in self.ready]:
                    probers.pop(backend).cancel()
                await asyncio.sleep(self.probe_secs / 2)
        finally:
            for task in probers.values():
                task.cancel()

    async def _probe(self, backend: str, drone_id: str) -> None:
        while True:
            phase = self.phase
            drone = self.drone(drone_id)
            if drone is not None and drone.daemon.running and not drone.frozen:
                try:
                    page = await self.cluster.get(drone, backend)
                    outcome = "ok" if page.status_code == 200 else f"http {page.status_code}"
                except httpx.HTTPError as exc:
                    outcome = type(exc).__name__
                self.probes[(phase, drone_id, outcome)] += 1
            await asyncio.sleep(self.probe_secs)
