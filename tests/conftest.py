"""Fixtures that start the real components: nats-server and the Docker engine.

Nothing here skips: a test that needs NATS or Docker fails with a message that
says how to provide it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Generator
from pathlib import Path

import aiodocker
import pytest
from hypothesis import settings

from shared import bus
from tests.support import compiled
from tests.support import docker as docker_support
from tests.support.logtails import LOGS
from tests.support.natsserver import NatsServer

# No per-example deadline (a loaded CI machine is slow, not wrong); in CI the
# examples are derived from each test's name, so a run there can be repeated.
settings.register_profile("plane", deadline=None, derandomize=bool(os.environ.get("CI")))
settings.load_profile("plane")


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get(compiled.ENV):
        import drone.proxy

        if not drone.proxy.compiled():
            raise pytest.UsageError(
                f"{compiled.ENV} is set but drone.proxy runs from {drone.proxy.__file__}"
            )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test's report shows what its processes were saying (tests.support.logtails)."""
    report = yield
    if report.failed:
        for holder in item.stash.get(LOGS, []):
            for name, tail in holder.tails():
                report.sections.append((f"{name} log, last lines", tail))
    return report


@pytest.fixture
async def nats_server(tmp_path: Path) -> AsyncIterator[NatsServer]:
    server = await NatsServer.start(tmp_path / "nats")
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[bus.NatsClient]:
    client = await bus.connect(
        bus.NatsSettings(servers=[nats_server.url]), name="test", wait_forever=False
    )
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def test_id(request: pytest.FixtureRequest) -> str:
    """A value unique to this test, used to label what it creates."""
    return f"{request.node.name[:40]}-{uuid.uuid4().hex[:8]}".replace("[", "-").replace("]", "")


def _image(name: str) -> str:
    try:
        return docker_support.build_image(name)
    except docker_support.DockerUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def testbackend_image() -> str:
    return _image("testbackend")


@pytest.fixture(scope="session")
def plane_image() -> str:
    """Plane itself as an image (deploy/images/plane), rebuilt when its sources changed."""
    return _image("plane")


@pytest.fixture
async def docker(test_id: str) -> AsyncIterator[aiodocker.Docker]:
    """A Docker client; every container labelled with this test's ID is removed after it."""
    try:
        client = await docker_support.connect()
    except docker_support.DockerUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield client
    finally:
        await docker_support.remove_labelled(client, docker_support.TEST_LABEL, test_id)
        await client.close()
