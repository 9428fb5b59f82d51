"""What a drone says on NATS: heartbeats, drain, logs, stats, DNS, and its metrics."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import nats.js.api

from shared import bus, subjects, wire
from shared.bus import NatsClient
from shared.protocol import (
    BackendState,
    BackendStatsMessage,
    DnsRecordKind,
    DrainDrone,
    DroneLogMessage,
    DroneState,
    LogKind,
    ResourceLimits,
    SetDnsRecord,
    TerminationRequest,
)
from tests.drone.conftest import (
    CLUSTER,
    ControllerSim,
    MakeDrone,
    backend_host,
    proxy_client,
    settle,
    spawn,
    spawn_request,
)

R = BackendState.READY


async def test_drone_registers_and_sends_heartbeats(
    make_drone: MakeDrone, sim: ControllerSim
) -> None:
    drone = await make_drone()
    await sim.changes.until(
        lambda: any(r.drone_id == drone.drone_id for r in sim.registrations), 5, "registration"
    )
    [registration] = [r for r in sim.registrations if r.drone_id == drone.drone_id]
    assert registration.cluster == CLUSTER and registration.ip == "127.0.0.1"
    await sim.changes.until(
        lambda: len([s for s in sim.statuses if s.drone_id == drone.drone_id]) >= 4,
        10,
        "four heartbeats",
    )
    latest = [s for s in sim.statuses if s.drone_id == drone.drone_id][-1]
    assert latest.ready is True
    assert latest.state is DroneState.READY
    assert latest.running_backends == 0
    assert latest.cluster == CLUSTER
    assert latest.drone_version
    assert latest.ip == "127.0.0.1"


async def test_drain_refuses_spawns_keeps_serving_and_survives_a_restart(
    make_drone: MakeDrone,
    sim: ControllerSim,
    nc: NatsClient,
    testbackend_image: str,
    tmp_path: Path,
) -> None:
    state_dir = tmp_path / "kept"
    drone = await make_drone(state_dir=state_dir, drone_id=None)
    assert (state_dir / "drone_id").read_text().strip() == drone.drone_id
    request = spawn_request(drone, testbackend_image)
    assert await spawn(nc, request)
    b = request.backend_id
    await sim.wait_state(b, R)
    drain = subjects.drain(CLUSTER, drone.drone_id)
    mark = len(sim.statuses)
    body = DrainDrone(drone=drone.drone_id, cluster=CLUSTER, drain=True)
    assert await bus.request(nc, drain, body, None, timeout=5) is None
    status = await sim.wait_status(drone.drone_id, lambda s: not s.ready, after=mark)
    assert status.state is DroneState.DRAINING
    assert status.running_backends == 1
    assert await spawn(nc, spawn_request(drone, testbackend_image)) is False
    async with proxy_client(drone) as client:
        still = await client.get("/", headers={"Host": backend_host(drone, b)})
    assert still.status_code == 200
    # Once its last backend is gone a draining drone is Drained.
    terminate = TerminationRequest(cluster_id=CLUSTER, backend_id=b)
    await bus.request(nc, subjects.terminate(CLUSTER, b), terminate, None, timeout=10)
    await sim.wait_status(drone.drone_id, lambda s: s.state is DroneState.DRAINED, after=mark)
    # The drain flag is kept in the state directory.
    drone_id = drone.drone_id
    await drone.stop()
    again = await make_drone(state_dir=state_dir, drone_id=None)
    assert again.drone_id == drone_id
    mark = len(sim.statuses)
    restarted = await sim.wait_status(drone_id, lambda s: True, after=mark)
    assert restarted.ready is False and restarted.state is DroneState.DRAINED
    assert await spawn(nc, spawn_request(again, testbackend_image)) is False
    body = DrainDrone(drone=drone_id, cluster=CLUSTER, drain=False)
    assert await bus.request(nc, drain, body, None, timeout=5) is None
    await sim.wait_status(drone_id, lambda s: s.ready and s.state is DroneState.READY, after=mark)
    accepted = spawn_request(again, testbackend_image)
    assert await spawn(nc, accepted) is True
    await sim.wait_state(accepted.backend_id, R)


async def test_logs_stats_dns_and_metrics_of_a_running_backend(
    make_drone: MakeDrone,
    sim: ControllerSim,
    nc: NatsClient,
    testbackend_image: str,
) -> None:
    drone = await make_drone()
    request = spawn_request(
        drone, testbackend_image, resource_limits=ResourceLimits(memory_limit_bytes=64 << 20)
    )
    b = request.backend_id
    stats: asyncio.Queue[BackendStatsMessage] = asyncio.Queue()
    dns: asyncio.Queue[SetDnsRecord] = asyncio.Queue()

    async def on_stats(msg: BackendStatsMessage, subject: str) -> None:
        stats.put_nowait(msg)

    async def on_dns(msg: SetDnsRecord, subject: str) -> None:
        if msg.name == b:
            dns.put_nowait(msg)

    endpoints: list[bus.Endpoint[Any]] = [
        await bus.serve(
            nc, subjects.backend_stats(b), BackendStatsMessage, on_stats, replies=False
        ),
        await bus.serve(
            nc, subjects.drone_dns_record(CLUSTER, "*", "A"), SetDnsRecord, on_dns, replies=False
        ),
    ]
    await settle(nc)
    try:
        assert await spawn(nc, request)
        await sim.wait_state(b, R)
        # DNS: at Ready, then refreshed.
        for _ in range(2):
            record = await asyncio.wait_for(dns.get(), 10)
            assert record.kind is DnsRecordKind.A
            assert (record.cluster, record.value) == (CLUSTER, "127.0.0.1")
        # Stats: shares of the machine and of the memory limit.
        sample = await asyncio.wait_for(stats.get(), 15)
        assert sample.backend_id == b
        assert 0.0 <= sample.cpu_use_percent <= 100.0
        assert 0.0 < sample.mem_use_percent < 100.0
    finally:
        for endpoint in endpoints:
            await endpoint.stop()
    # Logs: both streams' start-up lines, stored in JetStream.
    js = nc.jetstream()
    info = await js.stream_info(subjects.BACKEND_LOG_STREAM)
    assert info.config.max_msgs_per_subject == 500
    seen: list[DroneLogMessage] = []
    subscription = await js.subscribe(
        subjects.backend_log(b), ordered_consumer=True, deliver_policy=nats.js.api.DeliverPolicy.ALL
    )
    expected = {
        (LogKind.STDOUT, "testbackend starting"),
        (LogKind.STDERR, "testbackend stderr hello"),
        (LogKind.STDOUT, "listening on 8080"),
    }

    def lines() -> set[tuple[LogKind, str]]:
        return {(m.kind, m.text.split(" pid=")[0].rstrip("\n")) for m in seen}

    try:
        async with asyncio.timeout(10):
            while not expected <= lines():
                msg = await subscription.next_msg(timeout=10)
                seen.append(wire.decode(DroneLogMessage, msg.data))
    finally:
        await subscription.unsubscribe()
    # In order within each stream (the two streams are followed separately).
    stdout = [m.text for m in seen if m.kind is LogKind.STDOUT]
    assert stdout[0].startswith("testbackend starting")
    assert all(m.text.endswith("\n") for m in seen)
    assert all(m.backend_id == b for m in seen)
    # Metrics on the drone's own endpoint.
    async with httpx.AsyncClient(timeout=5, trust_env=False) as client:
        page = (await client.get(f"http://127.0.0.1:{drone.metrics_port}/metrics")).text
    assert 'plane_drone_backends{state="Ready"} 1.0' in page
    assert 'plane_drone_spawn_phase_seconds_count{phase="ready"} 1.0' in page
    assert 'plane_drone_spawn_phase_seconds_count{phase="create"} 1.0' in page
    assert 'plane_drone_spawn_requests_total{outcome="accepted"} 1.0' in page
    assert "plane_drone_status_delivery_retries_total 0.0" in page
    assert "plane_drone_docker_available 1.0" in page
    assert "plane_proxy_" in page  # the proxy shares the registry
