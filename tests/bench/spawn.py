"""Spawn to Ready: schedule → Ready through the whole system, against `docker run`.

Subjects, alternated round by round after one warm-up round that is not counted:

- ours: a ScheduleRequest to the controller (nats-server, `plane-controller`
  and `plane-drone` as separate processes, see `livecluster`) until the Ready
  state the controller stores reaches us on `backend.{b}.status`; the backend
  is then terminated and its container awaited gone before the next subject;
- docker run: `docker run -d` of the same image on the same network as the
  drone's backends (the default bridge), the container's address from the
  Engine API, then polling its port every 5 ms until it answers HTTP;
- docker API: the same through the Engine API alone (create, start, inspect,
  poll), i.e. the drone's Docker steps without the CLI's process start.

Ours is broken down twice. `phase:` figures come from the drone's own
histogram `plane_drone_spawn_phase_seconds` (pull check, create, start,
first answer = from start until the probe's answer), read from its metrics
endpoint before and after each spawn. `state:` figures come from the times
the drone stamps on Loading, Starting and Ready, against when we sent the
request and when Ready reached us. The baselines' `phase:` figures are their
own steps, named alike where they do the same work.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from pathlib import Path
from typing import Any

import aiodocker

from drone.agent.probe import answers_http
from shared.protocol import DEFAULT_PORT, BackendState
from tests.bench.harness import Results, alternate, percentile
from tests.bench.livecluster import BENCH_LABEL, IMAGE, Cluster, running
from tests.support.docker import container_ip

BENCH = "spawn"
CASE = "plane-testbackend"
CLUSTER = "spawn.bench"
OURS, CLI, API = "ours", "docker run", "docker API"
TOTAL = "to Ready"
POLL_SECS = 0.005
MAX_IDLE_SECS = 300  # never swept while measured
DRONE_PHASES = {"pull": "pull check", "create": "create", "start": "start", "ready": "first answer"}
TARGET_MS = 100.0


def ms(seconds: float) -> float:
    return seconds * 1000


async def wait_answering(host: str, port: int = DEFAULT_PORT, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            if await answers_http(host, port, 1.0):
                return
            await asyncio.sleep(POLL_SECS)


class Spawns:
    def __init__(self, results: Results, cluster: Cluster) -> None:
        self.results = results
        self.cluster = cluster
        self.counting = False

    def add(self, subject: str, metric: str, value_ms: float) -> None:
        if self.counting:
            self.results.add(BENCH, CASE, subject, metric, value_ms, "ms", higher_is_better=False)

    def show(self, subject: str, total_ms: float) -> None:
        tag = "" if self.counting else " (warm-up)"
        print(f"  spawn {subject:<11} {total_ms:7.1f} ms{tag}", flush=True)

    async def ours(self) -> None:
        c = self.cluster
        before = await c.phase_seconds()
        sent_wall, sent = time.time(), time.perf_counter()
        backend = (await c.plane.schedule(image=IMAGE, max_idle_secs=MAX_IDLE_SECS)).backend_id
        replied = time.perf_counter()
        try:
            ready = await c.watch.wait(backend, BackendState.READY)
            after = await c.phase_seconds()
        finally:
            with contextlib.suppress(Exception):
                await c.plane.terminate(backend)
            await c.wait_container_gone(backend)
        loading = c.watch.seen(backend, BackendState.LOADING)
        starting = c.watch.seen(backend, BackendState.STARTING)
        total = ms(ready.perf - sent)
        self.add(OURS, TOTAL, total)
        self.add(OURS, "schedule reply", ms(replied - sent))
        for phase, shown in DRONE_PHASES.items():
            if phase in after:
                self.add(OURS, f"phase: {shown}", ms(after[phase] - before.get(phase, 0.0)))
        if loading is not None and starting is not None:
            self.add(OURS, "state: sent → Loading", ms(loading.stamped - sent_wall))
            self.add(OURS, "state: Loading → Starting", ms(starting.stamped - loading.stamped))
            self.add(OURS, "state: Starting → Ready", ms(ready.stamped - starting.stamped))
        self.add(OURS, "state: Ready → seen by client", ms(ready.wall - ready.stamped))
        self.show(OURS, total)

    def _name(self) -> str:
        return f"plane-bench-{uuid.uuid4().hex[:12]}"

    async def _remove(self, container_id: str) -> None:
        with contextlib.suppress(aiodocker.DockerError):
            await self.cluster.docker.containers.container(container_id).delete(force=True)

    async def docker_run(self) -> None:
        c = self.cluster
        sent = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            "docker", "run", "-d", "--name", self._name(), "--label", c.label,
            "-e", f"PORT={DEFAULT_PORT}", IMAGE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"docker run failed: {err.decode(errors='replace').strip()}")
        ran = time.perf_counter()
        container_id = out.decode().strip()
        try:
            ip = await container_ip(c.docker, container_id)
            addressed = time.perf_counter()
            await wait_answering(ip)
            answered = time.perf_counter()
        finally:
            await self._remove(container_id)
        self.add(CLI, TOTAL, ms(answered - sent))
        self.add(CLI, "phase: docker run (create, start)", ms(ran - sent))
        self.add(CLI, "phase: inspect", ms(addressed - ran))
        self.add(CLI, "phase: first answer", ms(answered - addressed))
        self.show(CLI, ms(answered - sent))

    async def docker_api(self) -> None:
        c = self.cluster
        config: dict[str, Any] = {
            "Image": IMAGE,
            "Env": [f"PORT={DEFAULT_PORT}"],
            "Labels": {BENCH_LABEL: c.run_id},
            "ExposedPorts": {f"{DEFAULT_PORT}/tcp": {}},
            "HostConfig": {},
        }
        sent = time.perf_counter()
        container = await c.docker.containers.create(config, name=self._name())
        created = time.perf_counter()
        try:
            await container.start()
            ip = await container_ip(c.docker, container.id)
            started = time.perf_counter()
            await wait_answering(ip)
            answered = time.perf_counter()
        finally:
            await self._remove(container.id)
        self.add(API, TOTAL, ms(answered - sent))
        self.add(API, "phase: create", ms(created - sent))
        self.add(API, "phase: start", ms(started - created))
        self.add(API, "phase: first answer", ms(answered - started))
        self.show(API, ms(answered - sent))


async def run(results: Results, workdir: Path, *, quick: bool) -> None:
    rounds = 5 if quick else 15
    async with running(workdir, CLUSTER) as cluster:
        spawns = Spawns(results, cluster)
        subjects = [spawns.ours, spawns.docker_run, spawns.docker_api]
        await alternate(1, subjects)
        spawns.counting = True
        await alternate(rounds, subjects)
    for subject in (OURS, CLI, API):
        figure = results.figure(BENCH, CASE, subject, TOTAL)
        if figure is not None:
            p99 = percentile(figure.samples, 99)
            results.add(BENCH, CASE, subject, f"{TOTAL} p99", p99, "ms", higher_is_better=False)
    results.difference(
        BENCH, CASE, TOTAL, OURS, CLI,
        target=f"≤ +{TARGET_MS:.0f} ms", check=lambda v: v <= TARGET_MS,
    )  # fmt: skip
    results.difference(BENCH, CASE, TOTAL, OURS, API)
    results.ratio(BENCH, CASE, TOTAL, OURS, CLI)
