"""Fixtures for end-to-end tests: a cluster of real processes per test.

When a test fails, the last lines of every process's log are added to its
report, so the failure shows what the controller, the drones and nats-server
were saying.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiodocker
import pytest

from shared import authconf
from tests.e2e.cluster import Cluster, MakeCluster, free_port
from tests.support import logtails
from tests.support.natsserver import NatsServer


@pytest.fixture
async def nats_server(tmp_path: Path) -> AsyncIterator[NatsServer]:
    """nats-server with JetStream, its output in nats-server.log."""
    server = await NatsServer.start(tmp_path / "nats", log=tmp_path / "nats-server.log")
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def make_cluster(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    nats_server: NatsServer,
    docker: aiodocker.Docker,
    testbackend_image: str,
    test_id: str,
) -> AsyncIterator[MakeCluster]:
    """Start a controller and `drones` drones on `nats_server`; all stopped after the test,
    and the `docker` fixture removes any container left."""
    started: list[Cluster] = []
    logs = logtails.keep(request)

    async def make(drones: int, **options: Any) -> Cluster:
        cluster = Cluster(tmp_path, nats_server, test_id, **options)
        started.append(cluster)
        logs.append(cluster)
        return await cluster.start(drones)

    yield make
    problems = [problem for cluster in started for problem in await cluster.stop()]
    assert not problems, "; ".join(problems)


AUTH_DRONES = 3


@pytest.fixture
async def make_auth_cluster(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    docker: aiodocker.Docker,
    testbackend_image: str,
    test_id: str,
) -> AsyncIterator[MakeCluster]:
    """As `make_cluster`, on a nats-server that takes `plane auth`'s users only; every
    process and the test's client use their role's credentials (drones `drone1`...)."""
    started: list[Cluster] = []
    logs = logtails.keep(request)
    servers: list[NatsServer] = []

    async def make(drones: int, **options: Any) -> Cluster:
        assert drones <= AUTH_DRONES and not started, "one cluster per test, up to 3 drones"
        port = free_port()
        domain = f"e2e-{uuid.uuid4().hex[:8]}.localhost"
        auth = tmp_path / "auth"
        authconf.init(auth, f"{domain}:{port}")
        for n in range(1, AUTH_DRONES + 1):
            authconf.add_drone(auth, f"drone{n}")
        config = tmp_path / "nats-auth-server.conf"
        config.write_text(f"include auth/{authconf.CONF_FILE}\n")  # relative to this file
        server = await NatsServer.start(
            tmp_path / "nats", config=config, log=tmp_path / "nats-server.log"
        )
        servers.append(server)
        cluster = Cluster(
            tmp_path, server, test_id, auth=auth, domain=domain, first_proxy_port=port, **options
        )
        started.append(cluster)
        logs.append(cluster)
        return await cluster.start(drones)

    yield make
    problems = [problem for cluster in started for problem in await cluster.stop()]
    for server in servers:
        await server.stop()
    assert not problems, "; ".join(problems)


@pytest.fixture
async def cluster(make_cluster: MakeCluster) -> Cluster:
    """A controller and one drone."""
    return await make_cluster(1)
