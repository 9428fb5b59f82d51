"""The `plane` CLI as a user runs it, against a real nats-server.

The cluster side is played by test code speaking the protocol; the whole
system is exercised by the end-to-end tests.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from shared import bus, protocol, subjects, wire
from tests.support.natsserver import NatsServer

PLANE = str(Path(sys.executable).parent / "plane")


async def plane(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        PLANE,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_unreachable_nats_is_one_line_and_nonzero() -> None:
    code, _out, err = await plane("--nats", "nats://127.0.0.1:1", "drones")
    assert code == 1
    assert err.startswith("plane: cannot reach NATS") and err.count("\n") == 1


async def test_spawn_sends_every_field_and_prints_the_backend(
    nats_server: NatsServer, nc: bus.NatsClient
) -> None:
    received: list[protocol.ScheduleRequest] = []

    async def controller(request: protocol.ScheduleRequest, subject: str) -> object:
        received.append(request)
        return protocol.scheduled("drone-1", request.backend_id or "gen", "t" * 30)

    await bus.serve(nc, subjects.SCHEDULE_ALL, protocol.ScheduleRequest, controller)
    code, out, err = await plane(
        "--nats", nats_server.url, "--cluster", "plane.test", "--json",
        "spawn", "plane-testbackend:latest",
        "--env", "A=1", "--port", "9000", "--max-idle", "45", "--metadata", "user=alice",
        "--backend-id", "my-backend", "--bearer-token", "--pull-policy", "Never",
        "--username", "u", "--password", "p", "--cpu-period", "1", "--cpu-percent", "50",
        "--cpu-time-limit", "60", "--memory", "1000000",
        "--mount", '{"Type": "tmpfs", "Target": "/data"}',
    )  # fmt: skip
    assert code == 0, err
    printed = json.loads(out)
    assert printed["backend_id"] == "my-backend" and printed["drone"] == "drone-1"
    assert printed["url"] == "https://my-backend.plane.test/"
    request = received[0]
    assert request.cluster == "plane.test"
    assert request.executable.env == {"A": "1"} and request.executable.port == 9000
    assert request.max_idle_secs == 45 and request.metadata == {"user": "alice"}
    assert request.require_bearer_token
    assert request.executable.pull_policy is protocol.PullPolicy.NEVER
    creds = request.executable.credentials
    assert creds is not None and creds.UsernamePassword is not None
    assert creds.UsernamePassword.username == "u"
    limits = request.executable.resource_limits
    assert (limits.cpu_period, limits.cpu_period_percent) == (1, 50)
    assert (limits.cpu_time_limit, limits.memory_limit_bytes) == (60, 1000000)
    assert request.executable.volume_mounts == [{"Type": "tmpfs", "Target": "/data"}]


async def test_failures_exit_nonzero_with_a_reason(
    nats_server: NatsServer, nc: bus.NatsClient
) -> None:
    async def controller(request: protocol.ScheduleRequest, subject: str) -> object:
        if request.executable.image == "none":
            return protocol.NO_DRONE_AVAILABLE
        return protocol.invalid_request("executable.image: no such image")

    await bus.serve(nc, subjects.SCHEDULE_ALL, protocol.ScheduleRequest, controller)
    base = ("--nats", nats_server.url, "--cluster", "plane.test")
    code, _, err = await plane(*base, "spawn", "none")
    assert code == 1 and "no drone available" in err
    code, _, err = await plane(*base, "spawn", "bad")
    assert code == 1 and "executable.image: no such image" in err
    code, _, err = await plane(*base, "spawn", "x", "--backend-id", "Bad_ID")
    assert code == 1 and "backend_id" in err
    code, _, err = await plane(*base, "--timeout", "0.5", "terminate", "nobody")
    assert code == 1 and err.startswith("plane: ")


async def test_spawn_wait_follows_states_until_ready(
    nats_server: NatsServer, nc: bus.NatsClient
) -> None:
    await bus.ensure_stream(nc, subjects.BACKEND_STATUS_STREAM, ["backend.*.status"])
    js = nc.jetstream()

    async def controller(request: protocol.ScheduleRequest, subject: str) -> object:
        for state in ("Loading", "Starting", "Ready"):
            message = protocol.BackendStateMessage(
                cluster=request.cluster,
                state=protocol.BackendState(state),
                backend="b1",
                time=protocol.utc_now(),
            )
            await js.publish(subjects.backend_status("b1"), wire.encode(message))
        return protocol.scheduled("drone-1", "b1")

    await bus.serve(nc, subjects.SCHEDULE_ALL, protocol.ScheduleRequest, controller)
    code, out, err = await plane(
        "--nats", nats_server.url, "--cluster", "plane.test", "--url-scheme", "http",
        "spawn", "img", "--wait",
    )  # fmt: skip
    assert code == 0, err
    assert [line.split()[-1] for line in out.splitlines()[1:4]] == ["Loading", "Starting", "Ready"]
    assert out.strip().endswith("ready: http://b1.plane.test/")
    code, out, err = await plane("--nats", nats_server.url, "--json", "status", "b1")
    assert code == 0 and json.loads(out)["state"] == "Ready"
    code, out, err = await plane("--nats", nats_server.url, "status", "unknown")
    assert code == 1 and "no state known" in err


async def test_environment_provides_nats_and_cluster(
    nats_server: NatsServer, nc: bus.NatsClient
) -> None:
    async def drones(request: None, subject: str) -> list[protocol.DroneInfo]:
        return [
            protocol.DroneInfo(
                drone_id="d1",
                cluster="env.test",
                ip="127.0.0.1",
                state=protocol.DroneState.READY,
                ready=True,
                running_backends=2,
                last_seen=protocol.utc_now(),
            )
        ]

    await bus.serve(nc, subjects.list_drones("env.test"), None, drones)
    env = {"PLANE_NATS": nats_server.url, "PLANE_CLUSTER": "env.test", "PATH": "/usr/bin"}
    code, out, err = await plane("drones", env=env)
    assert code == 0, err
    assert "d1" in out and "backends=2" in out
