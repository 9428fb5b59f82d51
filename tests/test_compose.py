"""deploy/compose: the file parses as shipped, and the cluster it describes works.

Brought up for real from the Plane image (`make images`) under a project name and
host ports of its own, asked for a backend through one NATS node, reached through
the drone's proxy and both controllers' DNS, and taken down with every volume and
backend it made.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import dns.asyncquery
import dns.message
import httpx
import pytest

from drone.agent.spec import LABEL_CLUSTER
from shared import subjects
from shared.client import PlaneClient, PlaneError
from shared.protocol import BackendState
from tests.e2e.cluster import until
from tests.support import docker as docker_support
from tests.support.natscluster import free_port

COMPOSE_FILE = Path(__file__).resolve().parents[1] / "deploy" / "compose" / "compose.yaml"
SERVICES = {"nats1", "nats2", "nats3", "controller1", "controller2", "drone"}
HELLO = "hello from testbackend\n"

pytestmark = pytest.mark.timeout(300)


def compose_command() -> list[str]:
    found = shutil.which("docker-compose")
    if found is None:
        pytest.fail("docker-compose not found: run `make tools` (docker-compose)", pytrace=False)
    return [found, "--file", str(COMPOSE_FILE)]


def compose(env: dict[str, str], *args: str, check: bool = True) -> str:
    result = subprocess.run(
        [*compose_command(), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"docker-compose {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout + result.stderr


def test_the_compose_file_parses_and_names_the_docker_group() -> None:
    services = compose({"DOCKER_GID": "999"}, "config", "--services")
    assert set(services.split()) == SERVICES
    config = compose({"DOCKER_GID": "999"}, "config")
    assert "group_add:\n    - '999'" in config, "the drone gets the Docker socket's group"
    env = {key: value for key, value in os.environ.items() if key != "DOCKER_GID"}
    result = subprocess.run(
        [*compose_command(), "config"], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert "export DOCKER_GID=$(stat -c %g /var/run/docker.sock)" in result.stderr


@dataclass
class Composed:
    env: dict[str, str]
    cluster: str

    @property
    def nats_urls(self) -> list[str]:
        return [f"nats://127.0.0.1:{self.env[f'PLANE_NATS_PORT_{i}']}" for i in (1, 2, 3)]

    @property
    def proxy_port(self) -> int:
        return int(self.env["PLANE_PROXY_PORT"])

    def dns_port(self, controller: int) -> int:
        return int(self.env[f"PLANE_DNS_PORT_{controller}"])


@pytest.fixture
async def composed(plane_image: str, testbackend_image: str) -> AsyncIterator[Composed]:
    ports = {
        name: str(free_port())
        for name in (
            "PLANE_NATS_PORT_1",
            "PLANE_NATS_PORT_2",
            "PLANE_NATS_PORT_3",
            "PLANE_DNS_PORT_1",
            "PLANE_DNS_PORT_2",
            "PLANE_CONTROLLER_METRICS_PORT_1",
            "PLANE_CONTROLLER_METRICS_PORT_2",
            "PLANE_PROXY_PORT",
            "PLANE_DRONE_METRICS_PORT",
        )
    }
    env = {
        **ports,
        "PLANE_IMAGE": plane_image,
        "DOCKER_GID": str(os.stat("/var/run/docker.sock").st_gid),
        "COMPOSE_PROJECT_NAME": f"planetest{os.getpid()}",
    }
    cluster = f"plane.localhost:{ports['PLANE_PROXY_PORT']}"
    try:
        compose(env, "up", "--detach", "--no-build")
        yield Composed(env, cluster)
    finally:
        print(compose(env, "logs", "--tail", "30", check=False))
        compose(env, "down", "--volumes", "--timeout", "5", check=False)
        client = await docker_support.connect()
        try:
            left = await docker_support.remove_labelled(client, LABEL_CLUSTER, cluster)
        finally:
            await client.close()
        assert not left, f"backends left running after the test: {left}"


async def test_the_composed_cluster_schedules_resolves_and_serves(composed: Composed) -> None:
    async def connected() -> PlaneClient | None:
        try:
            plane = await PlaneClient.connect(composed.nats_urls[2:], composed.cluster)
        except PlaneError:
            return None
        try:
            if any(d.drone_id for d in await plane.drones()):
                return plane
        except PlaneError:
            pass
        await plane.close()
        return None

    plane = await until("the composed cluster to have a drone", 90, connected)
    try:
        info = await plane.nc.jetstream().stream_info(subjects.BACKEND_STATUS_STREAM)
        assert info.config.num_replicas == 3, "three NATS nodes give the streams three replicas"

        backend = await plane.schedule(image=docker_support.TESTBACKEND_IMAGE)
        await plane.wait_for_state(backend.backend_id, BackendState.READY, timeout=60)
        host = f"{backend.backend_id}.{composed.cluster}"
        async with httpx.AsyncClient() as http:
            page = await http.get(
                f"http://127.0.0.1:{composed.proxy_port}/", headers={"Host": host}
            )
        assert (page.status_code, page.text) == (200, HELLO)

        for controller in (1, 2):
            query = dns.message.make_query(host.split(":")[0], "A")

            async def answered(
                query: dns.message.Message = query, c: int = controller
            ) -> str | None:
                reply = await dns.asyncquery.udp(
                    query, "127.0.0.1", port=composed.dns_port(c), timeout=2
                )
                addresses = [item.address for rrset in reply.answer for item in rrset]
                return addresses[0] if addresses else None

            assert (
                await until(f"controller {controller} to resolve {host}", 10, answered)
                == "127.0.0.1"
            )

        await plane.terminate(backend.backend_id)
        await plane.wait_for_state(backend.backend_id, BackendState.TERMINATED, timeout=60)
        client = await docker_support.connect()
        label = {"label": [f"{LABEL_CLUSTER}={composed.cluster}"]}

        async def gone() -> bool | None:
            return not await client.containers.list(all=True, filters=label) or None

        try:
            await until("the terminated backend's container to be removed", 30, gone)
        finally:
            await client.close()
    finally:
        await plane.close()
