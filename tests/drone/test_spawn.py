"""Spawn requests: honest answers, container configuration, pull policies."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import aiodocker
import msgspec

from shared import wire
from shared.bus import NatsClient
from shared.protocol import (
    BackendState,
    DockerCredentials,
    PullPolicy,
    ResourceLimits,
    UsernamePasswordCredentials,
    utc_now,
)
from tests.drone.conftest import (
    ControllerSim,
    MakeDrone,
    backend_host,
    containers_of,
    proxy_client,
    refused_as_invalid,
    spawn,
    spawn_raw,
    spawn_request,
    wait_no_container,
)

R = BackendState.READY


async def test_refusals_are_answered_false_without_touching_docker(
    make_drone: MakeDrone,
    sim: ControllerSim,
    nc: NatsClient,
    docker: aiodocker.Docker,
    testbackend_image: str,
) -> None:
    drone = await make_drone(max_backends=2)
    first = spawn_request(drone, testbackend_image)
    assert await spawn(nc, first) is True
    # The same backend ID again, while it runs.
    assert await spawn(nc, first) is False
    # Volume mounts on a drone that does not allow them: the request is at fault.
    mounts = spawn_request(
        drone, testbackend_image, volume_mounts=[{"Type": "tmpfs", "Target": "/data"}]
    )
    answer = await spawn_raw(nc, drone.drone_id, wire.encode(mounts))
    assert "volume mounts are not allowed" in refused_as_invalid(answer)
    # Specs that cannot run: a bad env name, a CPU period Docker refuses, an image name
    # that is no image reference; and a request for another cluster.
    valid = msgspec.to_builtins(spawn_request(drone, testbackend_image))
    bad_env = {**valid, "executable": {**valid["executable"], "env": {"A=B": "1"}}}
    bad_period = {
        **valid,
        "executable": {**valid["executable"], "resource_limits": {"cpu_period": 5}},
    }
    bad_image = {**valid, "executable": {**valid["executable"], "image": "/etc/passwd"}}
    for bad, says in (
        (bad_env, "executable.env"),
        (bad_period, "executable.resource_limits.cpu_period"),
        (bad_image, "executable.image"),
    ):
        answer = await spawn_raw(nc, drone.drone_id, msgspec.json.encode(bad))
        assert says in refused_as_invalid(answer)
    elsewhere = spawn_request(drone, testbackend_image)
    elsewhere.cluster = "other.test"
    assert await spawn(nc, elsewhere) is False
    # Malformed requests are refused with the reason, and the drone keeps serving.
    assert "invalid JSON" in refused_as_invalid(await spawn_raw(nc, drone.drone_id, b"{not"))
    answer = await spawn_raw(nc, drone.drone_id, b'{"cluster": "drone.test"}')
    assert "missing required field" in refused_as_invalid(answer)
    second = spawn_request(drone, testbackend_image)
    assert await spawn(nc, second) is True
    # At the configured limit.
    third = spawn_request(drone, testbackend_image)
    assert await spawn(nc, third) is False
    await sim.wait_state(first.backend_id, R)
    await sim.wait_state(second.backend_id, R)
    for refused in (mounts.backend_id, valid["backend_id"], elsewhere.backend_id):
        assert refused not in sim.states
        assert await containers_of(docker, refused) == []
    assert third.backend_id not in sim.states
    assert await containers_of(docker, first.backend_id) != []


async def test_tmpfs_mount_and_resource_limits_reach_docker(
    make_drone: MakeDrone,
    sim: ControllerSim,
    nc: NatsClient,
    docker: aiodocker.Docker,
    testbackend_image: str,
) -> None:
    drone = await make_drone(docker={"allow_volume_mounts": True})
    request = spawn_request(
        drone,
        testbackend_image,
        volume_mounts=[{"Type": "tmpfs", "Target": "/data"}],
        resource_limits=ResourceLimits(
            cpu_period=1, cpu_period_percent=50, cpu_time_limit=30, memory_limit_bytes=64 << 20
        ),
    )
    assert await spawn(nc, request) is True
    b = request.backend_id
    await sim.wait_state(b, R)
    [container_id] = await containers_of(docker, b)
    info = await docker.containers.get(container_id)
    host = info["HostConfig"]
    assert host["Memory"] == 64 << 20
    assert host["CpuPeriod"] == 1_000_000
    assert host["CpuQuota"] == 500_000
    assert host["Ulimits"] == [{"Name": "cpu", "Soft": 30, "Hard": 30}]
    assert [(m["Type"], m["Destination"]) for m in info["Mounts"]] == [("tmpfs", "/data")]
    labels = info["Config"]["Labels"]
    assert labels["dev.plane.drone"] == drone.drone_id
    assert labels["dev.plane.cluster"] == "drone.test"
    assert labels["dev.plane.backend"] == b


async def test_bearer_token_is_demanded_by_the_proxy(
    make_drone: MakeDrone,
    sim: ControllerSim,
    nc: NatsClient,
    testbackend_image: str,
) -> None:
    drone = await make_drone()
    request = spawn_request(drone, testbackend_image, bearer_token="t0ken")
    assert await spawn(nc, request)
    b = request.backend_id
    await sim.wait_state(b, R)
    host = backend_host(drone, b)
    async with proxy_client(drone) as client:
        missing = await client.get("/", headers={"Host": host})
        good = await client.get("/", headers={"Host": host, "Authorization": "Bearer t0ken"})
    assert missing.status_code == 401
    assert good.status_code == 200


async def test_pull_policies_without_a_registry(
    make_drone: MakeDrone,
    sim: ControllerSim,
    nc: NatsClient,
    docker: aiodocker.Docker,
    testbackend_image: str,
) -> None:
    """No registry is reachable: only local images can run, and a failed pull is ErrorLoading."""
    drone = await make_drone()
    local = spawn_request(drone, testbackend_image, pull_policy=PullPolicy.NEVER)
    missing = spawn_request(drone, "plane-no-such-image:latest", pull_policy=PullPolicy.NEVER)
    unpullable = spawn_request(drone, "plane-no-such-image:latest")
    with_credentials = spawn_request(
        drone,
        "plane-no-such-image:latest",
        credentials=DockerCredentials(
            UsernamePassword=UsernamePasswordCredentials(username="u", password="p")
        ),
    )
    for request in (local, missing, unpullable, with_credentials):
        assert await spawn(nc, request) is True
    await sim.wait_state(local.backend_id, R)
    assert await sim.wait_terminal(missing.backend_id) is BackendState.ERROR_LOADING
    assert await sim.wait_terminal(unpullable.backend_id, timeout=60) is (
        BackendState.ERROR_LOADING
    )
    assert await sim.wait_terminal(with_credentials.backend_id, timeout=60) is (
        BackendState.ERROR_LOADING
    )
    assert sim.history(missing.backend_id) == [BackendState.LOADING, BackendState.ERROR_LOADING]
    for request in (missing, unpullable, with_credentials):
        await wait_no_container(docker, request.backend_id)


async def test_backends_join_the_configured_network_and_runtime(
    make_drone: MakeDrone,
    sim: ControllerSim,
    nc: NatsClient,
    docker: aiodocker.Docker,
    testbackend_image: str,
    test_id: str,
) -> None:
    network = await docker.networks.create(
        {"Name": f"plane-test-{test_id[-8:]}", "Labels": {"dev.plane.test": test_id}}
    )
    try:
        name = (await network.show())["Name"]
        drone = await make_drone(docker={"network": name, "runtime": "runc"})
        request = spawn_request(drone, testbackend_image)
        assert await spawn(nc, request)
        b = request.backend_id
        await sim.wait_state(b, R)
        [container_id] = await containers_of(docker, b)
        info = await docker.containers.get(container_id)
        assert list(info["NetworkSettings"]["Networks"]) == [name]
        assert info["HostConfig"]["Runtime"] == "runc"
        # Routed at its address on that network: the proxy reaches it.
        async with proxy_client(drone) as client:
            response = await client.get("/", headers={"Host": backend_host(drone, b)})
        assert response.status_code == 200
        await drone.stop()  # its containers must leave the network before it goes
    finally:
        await network.delete()


class SilentRegistry:
    """A registry address that accepts connections and never says a word."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.held: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.held.append(writer)

        self.server = await asyncio.start_server(hold, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        for writer in self.held:
            writer.transport.abort()
        if self.server is not None:
            self.server.close()


async def test_pulls_that_never_end_hold_up_no_backend_whose_image_is_here(
    make_drone: MakeDrone, sim: ControllerSim, nc: NatsClient, testbackend_image: str
) -> None:
    registry = SilentRegistry()
    port = await registry.start()
    try:
        drone = await make_drone()
        # More hanging pulls than a Docker client has connections (aiohttp's 100).
        hanging = [
            spawn_request(drone, f"127.0.0.1:{port}/never/{n}:1", pull_policy=PullPolicy.ALWAYS)
            for n in range(110)
        ]
        answers = await asyncio.gather(*(spawn(nc, request) for request in hanging))
        assert answers == [True] * len(hanging)
        present = spawn_request(drone, testbackend_image)
        assert await spawn(nc, present) is True
        await sim.wait_state(present.backend_id, R, timeout=10)
        assert all(sim.history(r.backend_id) == [BackendState.LOADING] for r in hanging)
    finally:
        await registry.stop()


async def test_a_spawn_read_after_its_deadline_starts_nothing(
    make_drone: MakeDrone,
    sim: ControllerSim,
    nc: NatsClient,
    docker: aiodocker.Docker,
    testbackend_image: str,
) -> None:
    drone = await make_drone()
    late = spawn_request(drone, testbackend_image)
    late.deadline = utc_now() - timedelta(seconds=3)  # the controller gave up on it
    assert await spawn(nc, late) is False
    timely = spawn_request(drone, testbackend_image)
    timely.deadline = utc_now() + timedelta(seconds=10)
    assert await spawn(nc, timely) is True
    await sim.wait_state(timely.backend_id, R)
    assert late.backend_id not in sim.states
    assert await containers_of(docker, late.backend_id) == []
    stale = drone.registry.get_sample_value(
        "plane_drone_spawn_requests_total", {"outcome": "stale"}
    )
    assert stale == 1


async def test_a_request_the_engine_refuses_ends_that_backend_and_no_other(
    make_drone: MakeDrone, sim: ControllerSim, nc: NatsClient, testbackend_image: str
) -> None:
    drone = await make_drone()
    # Docker refuses memory limits under 6 MB when the container is created.
    refused = spawn_request(
        drone, testbackend_image, resource_limits=ResourceLimits(memory_limit_bytes=1)
    )
    assert await spawn(nc, refused) is True
    assert await sim.wait_terminal(refused.backend_id) is BackendState.ERROR_LOADING
    mark = len(sim.statuses)
    status = await sim.wait_status(drone.drone_id, lambda s: True, after=mark)
    assert status.ready, "one request's error is not the engine's"
    assert drone.registry.get_sample_value("plane_drone_docker_available") == 1
    fine = spawn_request(drone, testbackend_image)
    assert await spawn(nc, fine) is True
    await sim.wait_state(fine.backend_id, R)
