"""A drone that restarts adopts its containers again; other drones' containers are left alone."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiodocker
import httpx
import pytest

from shared.bus import NatsClient
from shared.protocol import BackendState, DroneState
from tests.drone.conftest import (
    CLUSTER,
    ControllerSim,
    MakeDrone,
    containers_of,
    new_drone_id,
    spawn,
    spawn_request,
    wait_no_container,
)
from tests.support.docker import TEST_LABEL, container_ip
from tests.support.natsserver import NatsServer

R = BackendState.READY
ROOT = Path(__file__).resolve().parents[2]


async def test_restarted_drone_adopts_running_backends_and_ends_exited_ones(
    make_drone: MakeDrone,
    sim: ControllerSim,
    nc: NatsClient,
    docker: aiodocker.Docker,
    testbackend_image: str,
    test_id: str,
    tmp_path: Path,
) -> None:
    state_dir = tmp_path / "kept"
    first = await make_drone(state_dir=state_dir, terminate_on_shutdown=False)
    keeps = spawn_request(first, testbackend_image, bearer_token="secret")
    dies = spawn_request(first, testbackend_image)
    for request in (keeps, dies):
        assert await spawn(nc, request)
        await sim.wait_state(request.backend_id, R)
    await first.stop()
    # Both still run with their drone gone; one of them now exits on its own.
    [dying] = await containers_of(docker, dies.backend_id)
    ip = await container_ip(docker, dying)
    async with httpx.AsyncClient(timeout=5, trust_env=False) as client:
        with contextlib.suppress(httpx.HTTPError):
            await client.get(f"http://{ip}:8080/exit/5")
    await (await docker.containers.get(dying)).wait(timeout=20)
    # A container of another drone must never be touched.
    other = await docker.containers.create_or_replace(
        f"plane-other-{test_id[-8:]}",
        {
            "Image": testbackend_image,
            "Labels": {
                TEST_LABEL: test_id,
                "dev.plane.drone": "another-drone",
                "dev.plane.backend": "not-mine",
                "dev.plane.cluster": CLUSTER,
            },
        },
    )
    await other.start()

    second = await make_drone(state_dir=state_dir, drone_id=first.drone_id)
    assert await sim.wait_terminal(dies.backend_id) is BackendState.FAILED
    await sim.changes.until(
        lambda: sim.history(keeps.backend_id).count(R) == 2, 15, "Ready reported again"
    )
    assert BackendState.STARTING not in sim.history(keeps.backend_id)[3:]
    await wait_no_container(docker, dies.backend_id)
    host = f"{keeps.backend_id}.{CLUSTER}:{second.proxy_port}"
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{second.proxy_port}", timeout=5, trust_env=False
    ) as client:
        refused = await client.get("/", headers={"Host": host})
        adopted = await client.get("/", headers={"Host": host, "Authorization": "Bearer secret"})
    assert refused.status_code == 401  # the token came back from the labels
    assert adopted.status_code == 200
    status = await sim.wait_status(second.drone_id, lambda s: s.running_backends == 1)
    assert status.state is DroneState.READY
    # A stray container of this drone, without a backend behind it, is removed by the
    # reconcile loop; by then that loop has seen the other drone's container too.
    stray = await docker.containers.create_or_replace(
        f"plane-stray-{test_id[-8:]}",
        {
            "Image": testbackend_image,
            "Labels": {
                TEST_LABEL: test_id,
                "dev.plane.drone": second.drone_id,
                "dev.plane.backend": "stray",
                "dev.plane.cluster": CLUSTER,
            },
        },
    )
    await stray.start()
    await wait_no_container(docker, "stray")
    info = await docker.containers.get(other.id)
    assert info["State"]["Running"] is True


async def test_a_container_created_but_never_started_is_ended_at_recovery(
    make_drone: MakeDrone,
    sim: ControllerSim,
    docker: aiodocker.Docker,
    testbackend_image: str,
    test_id: str,
) -> None:
    """As a drone killed between create and start leaves it: ErrorStarting, then removed."""
    drone_id = new_drone_id()
    backend = f"b-{test_id[-8:]}"
    await docker.containers.create(
        {
            "Image": testbackend_image,
            "Labels": {
                TEST_LABEL: test_id,
                "dev.plane.drone": drone_id,
                "dev.plane.backend": backend,
                "dev.plane.cluster": CLUSTER,
                "dev.plane.port": "8080",
                "dev.plane.max_idle_secs": "30",
            },
        },
        name=f"plane-{backend}",
    )
    drone = await make_drone(drone_id=drone_id)
    assert await sim.wait_terminal(backend) is BackendState.ERROR_STARTING
    assert sim.history(backend) == [BackendState.ERROR_STARTING]
    assert drone.agent is not None
    assert await drone.agent.wait_gone(backend, timeout=20)
    assert await containers_of(docker, backend) == []


class DroneProcess:
    """`python -m drone` with a TOML config, its log read as it comes."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, config: Path) -> DroneProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "drone",
            "--config",
            str(config),
            cwd=str(ROOT),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self.lines.append(line.decode(errors="replace"))
            self._changed.set()

    async def wait_line(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            self._changed.clear()
            for line in self.lines:
                if found := regex.search(line):
                    return found
            if self.proc.returncode is not None:
                raise AssertionError("drone exited:\n" + "".join(self.lines))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no log line /{pattern}/:\n" + "".join(self.lines))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 1))

    async def proxy_port(self) -> int:
        return int((await self.wait_line(r"proxy on port (\d+)")).group(1))

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        try:
            code = await asyncio.wait_for(self.proc.wait(), timeout)
        finally:
            if self.proc.returncode is None:
                self.proc.kill()
                await self.proc.wait()
            await asyncio.wait({self._reader}, timeout=5)
        return code


@pytest.fixture
async def drone_processes() -> AsyncIterator[list[DroneProcess]]:
    started: list[DroneProcess] = []
    yield started
    for process in started:
        await process.stop(signal.SIGKILL)


def write_config(path: Path, nats: NatsServer, test_id: str, drone_id: str) -> Path:
    path.write_text(
        f"""
cluster = "{CLUSTER}"
drone_id = "{drone_id}"
ip = "127.0.0.1"
state_dir = "{path.parent / "state"}"
metrics_listen = "off"

[nats]
servers = ["{nats.url}"]
reconnect_wait_secs = 0.2

[docker]
extra_labels = {{ "{TEST_LABEL}" = "{test_id}" }}

[agent]
heartbeat_secs = 0.3
reconcile_secs = 1.0
ready_timeout_secs = 10.0

[proxy]
listen = "127.0.0.1:0"
"""
    )
    return path


async def test_drone_killed_with_sigkill_adopts_its_backend_when_started_again(
    nats_server: NatsServer,
    sim: ControllerSim,
    nc: NatsClient,
    docker: aiodocker.Docker,
    testbackend_image: str,
    test_id: str,
    tmp_path: Path,
    drone_processes: list[DroneProcess],
) -> None:
    drone_id = new_drone_id()
    config = write_config(tmp_path / "drone.toml", nats_server, test_id, drone_id)
    first = await DroneProcess.start(config)
    drone_processes.append(first)
    await first.proxy_port()
    request = spawn_request(drone_id, testbackend_image)
    b = request.backend_id
    assert await spawn(nc, request)
    await sim.wait_state(b, R)
    assert await first.stop(signal.SIGKILL) == -signal.SIGKILL

    second = await DroneProcess.start(config)
    drone_processes.append(second)
    port = await second.proxy_port()
    await sim.changes.until(lambda: sim.history(b).count(R) == 2, 20, "Ready reported again")
    async with httpx.AsyncClient(timeout=5, trust_env=False) as client:
        response = await client.get(
            f"http://127.0.0.1:{port}/", headers={"Host": f"{b}.{CLUSTER}:{port}"}
        )
    assert response.status_code == 200
    # SIGTERM: heartbeats stop with a last Stopped; the backend is left for the next start.
    mark = len(sim.statuses)
    assert await second.stop(signal.SIGTERM) == 0
    await sim.wait_status(drone_id, lambda s: s.state is DroneState.STOPPED, after=mark)
    [container] = await containers_of(docker, b)
    assert (await docker.containers.get(container))["State"]["Running"] is True
    assert sim.history(b) == [BackendState.LOADING, BackendState.STARTING, R, R]


async def test_a_restarted_drone_answers_its_first_request_for_a_running_backend(
    make_drone: MakeDrone,
    sim: ControllerSim,
    nc: NatsClient,
    testbackend_image: str,
    tmp_path: Path,
) -> None:
    state_dir = tmp_path / "kept"
    first = await make_drone(state_dir=state_dir, drone_id=None, terminate_on_shutdown=False)
    request = spawn_request(first, testbackend_image)
    assert await spawn(nc, request)
    await sim.wait_state(request.backend_id, R)
    port = first.proxy_port
    host = f"{request.backend_id}.{CLUSTER}"
    await first.stop()

    starting = asyncio.create_task(
        make_drone(state_dir=state_dir, drone_id=None, proxy={"listen": f"127.0.0.1:{port}"})
    )
    # Knock until the port opens: the very first answer must come from the backend.
    first_answer: httpx.Response | None = None
    async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
        deadline = time.monotonic() + 30
        while first_answer is None and time.monotonic() < deadline:
            try:
                first_answer = await client.get(f"http://127.0.0.1:{port}/", headers={"Host": host})
            except httpx.ConnectError:
                await asyncio.sleep(0.002)
    await starting
    assert first_answer is not None, "the proxy never listened"
    assert (first_answer.status_code, first_answer.text) == (200, "hello from testbackend\n")
