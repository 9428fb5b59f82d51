"""Fixtures for end-to-end tests: a cluster of real processes per test.

When a test fails, the last lines of every process's log are added to its
report, so the failure shows what the controller, the drones and nats-server
were saying.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator
from pathlib import Path
from typing import Any

import aiodocker
import pytest

from tests.e2e.cluster import Cluster, MakeCluster
from tests.support.natsserver import NatsServer

CLUSTERS = pytest.StashKey[list[Cluster]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        for cluster in item.stash.get(CLUSTERS, []):
            for name, tail in cluster.tails():
                report.sections.append((f"{name} log, last lines", tail))
    return report


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
    request.node.stash[CLUSTERS] = started

    async def make(drones: int, **options: Any) -> Cluster:
        cluster = Cluster(tmp_path, nats_server, test_id, **options)
        started.append(cluster)
        return await cluster.start(drones)

    yield make
    problems = [problem for cluster in started for problem in await cluster.stop()]
    assert not problems, "; ".join(problems)


@pytest.fixture
async def cluster(make_cluster: MakeCluster) -> Cluster:
    """A controller and one drone."""
    return await make_cluster(1)
