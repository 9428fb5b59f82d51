"""Running the controller: the `plane-controller` process, SIGTERM, NATS going away."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from controller.__main__ import settings_from
from controller.config import enabled
from shared import bus, subjects
from shared.config import ConfigError
from shared.protocol import BackendState, Executable, ScheduleRequest
from tests.controller.conftest import CLUSTER, StartController
from tests.controller.sim import SimDrone, eventually, list_drones, wait_drones_ready
from tests.controller.test_states import list_backends, stored
from tests.support.natsserver import NatsServer
from tests.support.relay import TcpRelay

PLANE_CONTROLLER = str(Path(sys.executable).parent / "plane-controller")
REQUEST = ScheduleRequest(cluster=CLUSTER, executable=Executable(image="i"))


async def schedule(nc: bus.NatsClient) -> object:
    return await bus.request(nc, subjects.schedule(CLUSTER), REQUEST, Any, timeout=10)


async def read_until(stream: asyncio.StreamReader, needle: str, seen: list[str]) -> None:
    while True:
        line = (await stream.readline()).decode()
        if not line:
            raise AssertionError("plane-controller exited:\n" + "".join(seen))
        seen.append(line)
        if needle in line:
            return


async def test_the_process_serves_and_stops_cleanly_on_sigterm(
    nats_server: NatsServer, nc: bus.NatsClient, tmp_path: Path
) -> None:
    config = tmp_path / "controller.toml"
    config.write_text("heartbeat_secs = 0.2\nspawn_timeout_secs = 5.0\n")
    proc = await asyncio.create_subprocess_exec(
        PLANE_CONTROLLER,
        "--config", str(config),
        "--nats", nats_server.url,
        "--cluster", CLUSTER,
        "--metrics-listen", "127.0.0.1:0",
        "--dns-listen", "127.0.0.1:0",
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PLANE_SHUTDOWN_GRACE_SECS": "10"},
    )  # fmt: skip
    assert proc.stderr is not None
    log: list[str] = []
    drone = await SimDrone(nc, "slow-drone", CLUSTER, reply_delay=0.5).start()
    try:
        await asyncio.wait_for(read_until(proc.stderr, "controller ready", log), 30)
        await wait_drones_ready(nc, CLUSTER, drone)
        # A request in flight when SIGTERM arrives is still answered.
        in_flight = asyncio.ensure_future(schedule(nc))
        await asyncio.wait_for(drone.offered.wait(), 10)
        proc.send_signal(signal.SIGTERM)
        reply = await asyncio.wait_for(in_flight, 10)
        assert isinstance(reply, dict) and reply["Scheduled"]["drone"] == drone.drone_id
        code = await asyncio.wait_for(proc.wait(), 20)
        rest = (await proc.stderr.read()).decode()
        assert code == 0, "".join(log) + rest
        assert "stopped" in rest
    finally:
        await drone.stop()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    # Once it has gone, nobody takes schedule requests any more.
    with pytest.raises(bus.NoResponders):
        await schedule(nc)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--metrics-listen", "nowhere"], "metrics_listen: 'nowhere' is not HOST:PORT"),
        (["--dns-listen", "1.2.3.4"], "dns.listen: '1.2.3.4' is not HOST:PORT"),
        (
            ["--cluster", "bad cluster"],
            "clusters: 'bad cluster' is not a domain name (optionally :port)",
        ),
    ],
)
async def test_bad_settings_exit_with_a_clear_message(args: list[str], says: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        PLANE_CONTROLLER, *args, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert err.decode() == f"plane-controller: {says}\n"


def test_settings_come_from_file_then_environment_then_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "controller.toml"
    config.write_text(
        'clusters = ["file.test"]\nheartbeat_secs = 2.0\n[dns]\nttl_secs = 30\n'
        'listen = "127.0.0.1:5353"\n'
    )
    monkeypatch.setenv("PLANE_HEARTBEAT_SECS", "0.5")
    monkeypatch.setenv("PLANE_DNS_LISTEN", "127.0.0.1:5354")
    monkeypatch.setenv("PLANE_CLUSTER", "env.test")
    monkeypatch.setenv("PLANE_IP", "192.0.2.1")  # the drone's: ignored here
    settings = settings_from(
        [
            "--config", str(config),
            "--cluster", "a.test,b.test",
            "--cluster", "c.test",
            "--metrics-listen", "off",
            "--nats", "nats://one:4222,nats://two:4222",
        ]
    )  # fmt: skip
    assert settings.clusters == ["a.test", "b.test", "c.test"]
    assert settings.heartbeat_secs == 0.5
    assert (settings.dns.listen, settings.dns.ttl_secs) == ("127.0.0.1:5354", 30)
    assert enabled(settings.metrics_listen) is None
    assert settings.nats.servers == ["nats://one:4222", "nats://two:4222"]
    monkeypatch.delenv("PLANE_CLUSTER")
    assert settings_from(["--config", str(config)]).clusters == ["file.test"]
    monkeypatch.setenv("PLANE_SPAWN_ATTEMPTS", "0")
    with pytest.raises(ConfigError, match="spawn_attempts: must be more than 0"):
        settings_from([])


async def test_an_unknown_config_key_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "controller.toml"
    config.write_text("heartbeat_seconds = 1\n")
    proc = await asyncio.create_subprocess_exec(
        PLANE_CONTROLLER, "--config", str(config), stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert "unknown key `heartbeat_seconds`" in err.decode()


@pytest.fixture
async def own_server(tmp_path: Path) -> AsyncIterator[list[NatsServer]]:
    """A nats-server this test may stop and start again on the same port and store."""
    servers = [await NatsServer.start(tmp_path / "own-nats")]
    try:
        yield servers
    finally:
        await servers[-1].stop()


async def test_scheduling_resumes_after_nats_comes_back_and_nothing_is_lost(
    own_server: list[NatsServer], start_controller: StartController
) -> None:
    server = own_server[0]
    settings = bus.NatsSettings(servers=[server.url], reconnect_wait_secs=0.1)
    nc = await bus.connect(settings, name="test-drones")
    try:
        controller = await start_controller(
            nats=bus.NatsSettings(servers=[server.url], reconnect_wait_secs=0.1),
            lost_after_secs=2.0,
        )
        drone = await SimDrone(nc, "steady", CLUSTER).start()
        await wait_drones_ready(nc, CLUSTER, drone)
        assert await drone.report("b-before", BackendState.READY) is None

        await server.stop()
        # Down for longer than the Lost grace: the silence is NATS's, not the drone's.
        await asyncio.sleep(2.5)
        own_server.append(await NatsServer.start(server.store, server.port))

        placed: list[str] = []

        async def scheduled() -> bool:
            try:
                reply = await schedule(nc)
            except bus.BusError:
                return False
            if isinstance(reply, dict) and "Scheduled" in reply:
                placed.append(reply["Scheduled"]["backend_id"])
            return bool(placed)

        await eventually(scheduled, timeout=20, what="scheduling to resume")
        reconnects = controller.metrics.registry.get_sample_value(
            "plane_controller_nats_reconnects_total"
        )
        assert reconnects == 1
        listed = {b.backend_id for b in await list_backends(nc)}
        assert listed == {"b-before", *placed}
        assert [m.state for m in await stored(nc, "b-before")] == [BackendState.READY]
        assert {d.state.value for d in await list_drones(nc, CLUSTER)} == {"Ready"}
        await drone.stop()
    finally:
        await nc.close()


async def test_requests_held_through_an_outage_wait_for_drones_to_subscribe_again(
    own_server: list[NatsServer], start_controller: StartController
) -> None:
    """Controllers back before the drones: the held requests find the drones once they are."""
    server = own_server[0]
    quick = bus.NatsSettings(servers=[server.url], reconnect_wait_secs=0.1)
    relay = TcpRelay("127.0.0.1", server.port)  # the drone's own line to NATS
    await relay.start()
    client = await bus.connect(quick, name="test-client")
    drone_nc = await bus.connect(
        bus.NatsSettings(servers=[relay.url], reconnect_wait_secs=0.1), name="test-drone"
    )
    try:
        controller = await start_controller(nats=quick, heartbeat_secs=2.0, spawn_timeout_secs=8)
        drone = await SimDrone(drone_nc, "late", CLUSTER).start()
        await wait_drones_ready(client, CLUSTER, drone)

        await relay.cut()
        await server.stop()
        own_server.append(await NatsServer.start(server.store, server.port))

        def sample(name: str) -> float:
            return controller.metrics.registry.get_sample_value(name) or 0.0

        async def controller_back() -> bool:
            return sample("plane_controller_nats_reconnects_total") == 1 and client.is_connected

        await eventually(controller_back, what="the controller and the client to reconnect")
        request = asyncio.create_task(schedule(client))

        async def retried_or_answered() -> bool:
            return request.done() or sample("plane_controller_spawn_retries_total") > 0

        await eventually(retried_or_answered, what="the controller to offer the spawn")
        assert not request.done(), f"answered while the drone was away: {request.result()}"
        await relay.start()  # the drone reconnects and subscribes again
        reply = await asyncio.wait_for(request, 15)
        assert isinstance(reply, dict) and reply["Scheduled"]["drone"] == "late", reply
        await drone.stop()
    finally:
        await relay.cut()
        await drone_nc.close()
        await client.close()
