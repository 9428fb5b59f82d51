"""A whole cluster for the backend-life benchmarks, deployed as it runs in production.

nats-server, `plane-controller` and `plane-drone` run as separate processes
(the installed entry points, default settings except those named in
`_drone_config` and `_controller_config`), on the real Docker engine. The
benchmark process is a client: it schedules through `PlaneClient`, hears
every backend state the controller stores (a core subscription on
`backend.*.status`, opened before the first schedule), reads the drone's
phase histogram from its metrics endpoint and asks Docker what runs.

Every container made here, by the drone or by a baseline, carries the label
`dev.plane.bench=<run id>`, and all of them are removed when the cluster stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiodocker
import httpx
from prometheus_client.parser import text_string_to_metric_families

from shared import bus, subjects, wire
from shared.client import PlaneClient, PlaneError
from shared.protocol import BackendState, BackendStateMessage
from tests.support import docker as docker_support
from tests.support.natsserver import NatsServer

BIN = Path(sys.executable).parent
BENCH_LABEL = "dev.plane.bench"
IMAGE = docker_support.TESTBACKEND_IMAGE
PHASE_METRIC = "plane_drone_spawn_phase_seconds"
START_TIMEOUT_SECS = 30.0

_DRONE_READY = re.compile(r"drone \S+ ready: .*proxy on port (\d+), metrics on port (\d+)")
_CONTROLLER_READY = re.compile(r"controller ready")


@dataclass(frozen=True, slots=True)
class Seen:
    """A stored backend state, with the wall-clock and perf-counter time it reached us."""

    message: BackendStateMessage
    wall: float
    perf: float

    @property
    def stamped(self) -> float:
        """The state's own time (the drone's clock: the same machine), as a Unix time."""
        return self.message.time.timestamp()


class StateWatch:
    """Every backend state published on `backend.*.status`, as it arrives."""

    def __init__(self) -> None:
        self._seen: dict[str, list[Seen]] = {}
        self._changed = asyncio.Event()

    async def start(self, nc: bus.NatsClient) -> None:
        await nc.subscribe(subjects.backend_status("*"), cb=self._on_message)
        await bus.settle(nc, 5)

    async def _on_message(self, msg: bus.Msg) -> None:
        wall, perf = time.time(), time.perf_counter()
        try:
            message = wire.decode(BackendStateMessage, msg.data)
        except wire.InvalidMessage:
            return
        self._seen.setdefault(message.backend, []).append(Seen(message, wall, perf))
        self._changed.set()

    def seen(self, backend: str, state: BackendState) -> Seen | None:
        return next((s for s in self._seen.get(backend, []) if s.message.state is state), None)

    async def wait(self, backend: str, state: BackendState, timeout: float = 30.0) -> Seen:
        """The first `state` of `backend`; raises if another terminal state or the timeout
        comes first."""
        async with asyncio.timeout(timeout):
            while True:
                self._changed.clear()
                found = self.seen(backend, state)
                if found is not None:
                    return found
                ended = [s for s in self._seen.get(backend, []) if s.message.state.terminal]
                if ended:
                    raise RuntimeError(
                        f"backend {backend} ended as {ended[0].message.state.value}, "
                        f"not {state.value}"
                    )
                await self._changed.wait()


class Daemon:
    """One of our processes, logging to a file, stopped with SIGTERM."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.name = name
        self.proc = proc
        self.log = log

    @classmethod
    async def start(
        cls, name: str, argv: list[str], log: Path, ready: re.Pattern[str]
    ) -> tuple[Daemon, re.Match[str]]:
        """Start `argv` and wait until its log has a line matching `ready`."""
        with log.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out
            )
        daemon = cls(name, proc, log)
        try:
            async with asyncio.timeout(START_TIMEOUT_SECS):
                while True:
                    match = ready.search(log.read_text(errors="replace"))
                    if match is not None:
                        return daemon, match
                    if proc.returncode is not None:
                        raise RuntimeError(f"{name} exited at start-up: {daemon.tail()}")
                    await asyncio.sleep(0.05)
        except BaseException:
            await daemon.stop()
            raise

    def tail(self, chars: int = 2000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    async def stop(self, grace: float = 30.0) -> None:
        if self.proc.returncode is not None:
            return
        self.proc.terminate()
        try:
            await asyncio.wait_for(self.proc.wait(), grace)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


Setting = str | int | bool | list[str] | dict[str, str]


def _toml(value: Setting) -> str:
    """A TOML value for the few shapes the settings files below need (JSON spells them
    alike, except booleans and tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return (
            "{ " + ", ".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in value.items()) + " }"
        )
    return json.dumps(value)


def _write_settings(path: Path, sections: dict[str, dict[str, Setting]]) -> Path:
    lines: list[str] = []
    for section, values in sections.items():
        if section:
            lines.append(f"\n[{section}]")
        lines.extend(f"{key} = {_toml(value)}" for key, value in values.items())
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class Cluster:
    """A running cluster, as a client sees it, plus the drone's ports and Docker."""

    name: str
    run_id: str
    nc: bus.NatsClient
    plane: PlaneClient
    docker: aiodocker.Docker
    watch: StateWatch
    drone_id: str
    proxy_port: int
    metrics_port: int

    @property
    def label(self) -> str:
        return f"{BENCH_LABEL}={self.run_id}"

    async def phase_seconds(self) -> dict[str, float]:
        """The drone's spawn phase histogram: total seconds so far per phase."""
        async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
            reply = await client.get(f"http://127.0.0.1:{self.metrics_port}/metrics")
        reply.raise_for_status()
        totals: dict[str, float] = {}
        for family in text_string_to_metric_families(reply.text):
            if family.name != PHASE_METRIC:
                continue
            for sample in family.samples:
                if sample.name == f"{PHASE_METRIC}_sum":
                    totals[sample.labels["phase"]] = sample.value
        return totals

    async def containers_of(self, backend: str) -> list[str]:
        found = await self.docker.containers.list(
            all=True, filters={"label": [f"dev.plane.backend={backend}", self.label]}
        )
        return [c.id for c in found]

    async def wait_container_gone(self, backend: str, timeout: float = 30.0) -> float:
        """Poll Docker every 10 ms until the backend's container is gone; returns that
        Unix time."""
        async with asyncio.timeout(timeout):
            while True:
                if not await self.containers_of(backend):
                    return time.time()
                await asyncio.sleep(0.01)


async def _wait_for_drone(plane: PlaneClient, drone_id: str) -> None:
    async with asyncio.timeout(START_TIMEOUT_SECS):
        while True:
            with contextlib.suppress(PlaneError):
                if any(d.drone_id == drone_id and d.ready for d in await plane.drones()):
                    return
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def running(workdir: Path, name: str) -> AsyncIterator[Cluster]:
    """nats-server, a controller and a drone for cluster `name`; all stopped (and every
    labelled container removed) on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(docker_support.build_image, "testbackend")
    run_id = uuid.uuid4().hex[:12]
    drone_id = f"bench-{run_id}"
    async with contextlib.AsyncExitStack() as stack:
        docker = await docker_support.connect()
        stack.push_async_callback(docker.close)
        stack.push_async_callback(docker_support.remove_labelled, docker, BENCH_LABEL, run_id)
        server = await NatsServer.start(workdir / "nats")
        stack.push_async_callback(server.stop)

        async def daemon(
            program: str, settings: dict[str, dict[str, Setting]], ready: re.Pattern[str]
        ) -> re.Match[str]:
            """Start `plane-{program}` with `settings` and the common flags; stopped on exit."""
            config = _write_settings(workdir / f"{program}.toml", settings)
            argv = [
                str(BIN / f"plane-{program}"), "--config", str(config),
                "--nats", server.url, "--cluster", name, "--metrics-listen", "127.0.0.1:0",
            ]  # fmt: skip
            started, match = await Daemon.start(program, argv, workdir / f"{program}.log", ready)
            stack.push_async_callback(started.stop)
            return match

        # No warm-up wait: we ask the controller itself when it knows the drone.
        await daemon("controller", {"": {"warmup_secs": 0}}, _CONTROLLER_READY)
        drone_settings: dict[str, dict[str, Setting]] = {
            "": {"drone_id": drone_id, "ip": "127.0.0.1", "state_dir": str(workdir / "drone")},
            "docker": {"extra_labels": {BENCH_LABEL: run_id}},
            "agent": {"terminate_on_shutdown": True},
            "proxy": {"listen": "127.0.0.1:0"},
        }
        ports = await daemon("drone", drone_settings, _DRONE_READY)

        nc = await bus.connect(bus.NatsSettings(servers=[server.url]), name="bench")
        stack.push_async_callback(nc.close)
        watch = StateWatch()
        await watch.start(nc)
        plane = PlaneClient(nc, name, scheme="http")
        await _wait_for_drone(plane, drone_id)
        yield Cluster(
            name=name,
            run_id=run_id,
            nc=nc,
            plane=plane,
            docker=docker,
            watch=watch,
            drone_id=drone_id,
            proxy_port=int(ports.group(1)),
            metrics_port=int(ports.group(2)),
        )
