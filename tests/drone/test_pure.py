"""Pure pieces of the agent: container configuration, labels, telemetry maths, presence."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiodocker
import aiohttp
import msgspec
import pytest

from drone.agent import admission, probe, spec, statedir
from drone.agent.agent import next_sweep_delay
from drone.agent.docker_runtime import (
    Conflict,
    DockerFailure,
    DockerUnavailable,
    NotFound,
    StatsSample,
    docker_url,
    registry_qualified,
    translate_error,
)
from drone.agent.metrics import SpawnOutcome
from drone.agent.presence import Presence
from drone.agent.telemetry import LineBuffer, cpu_percent, memory_percent
from drone.config import AgentSettings, DockerSettings, DroneSettings, check
from shared.config import ConfigError
from shared.protocol import DroneState, Executable, ResourceLimits, SpawnRequest

CREATED = datetime(2026, 11, 28, 13, 0, tzinfo=UTC)


def request(**executable: object) -> SpawnRequest:
    return SpawnRequest(
        cluster="plane.test",
        drone_id="d1",
        backend_id="b1",
        max_idle_secs=42,
        executable=Executable(image="img:1", **executable),  # type: ignore[arg-type]
        bearer_token="tok",
    )


def test_container_config_carries_env_labels_and_limits() -> None:
    spawn = request(
        env={"A": "1", "PORT": "1"},
        port=9000,
        resource_limits=ResourceLimits(
            cpu_period=1, cpu_period_percent=25, cpu_time_limit=60, memory_limit_bytes=1 << 30
        ),
    )
    settings = DockerSettings(network="backends", runtime="runsc", extra_labels={"x": "y"})
    config = spec.container_config(spawn, "d1", CREATED, settings)
    assert config["Image"] == "img:1"
    assert sorted(config["Env"]) == ["A=1", "PLANE_BACKEND_ID=b1", "PORT=9000"]
    locked = msgspec.structs.replace(spawn, lock="doc:42/room_1")
    env = spec.container_config(locked, "d1", CREATED, settings)["Env"]
    assert sorted(env) == ["A=1", "PLANE_BACKEND_ID=b1", "PLANE_LOCK=doc:42/room_1", "PORT=9000"]
    assert config["Labels"] == {
        "x": "y",
        "dev.plane.backend": "b1",
        "dev.plane.drone": "d1",
        "dev.plane.cluster": "plane.test",
        "dev.plane.port": "9000",
        "dev.plane.max_idle_secs": "42",
        "dev.plane.created": CREATED.isoformat(),
        "dev.plane.bearer_token": "tok",
    }
    assert config["HostConfig"] == {
        "Memory": 1 << 30,
        "CpuPeriod": 1_000_000,
        "CpuQuota": 250_000,
        "Ulimits": [{"Name": "cpu", "Soft": 60, "Hard": 60}],
        "NetworkMode": "backends",
        "Runtime": "runsc",
    }


def test_a_cpu_share_without_a_period_uses_the_kernel_default() -> None:
    host = spec.host_config(
        request(resource_limits=ResourceLimits(cpu_period_percent=50)), DockerSettings()
    )
    assert host == {"CpuPeriod": 100_000, "CpuQuota": 50_000}


def test_mounts_only_when_allowed() -> None:
    mounts = [{"Type": "tmpfs", "Target": "/data"}]
    spawn = request(volume_mounts=mounts)
    assert spec.refusal(spawn, allow_volume_mounts=False) == (
        "executable.volume_mounts: volume mounts are not allowed on this drone"
    )
    assert spec.refusal(spawn, allow_volume_mounts=True) is None
    assert "Mounts" not in spec.host_config(spawn, DockerSettings())
    allowed = spec.host_config(spawn, DockerSettings(allow_volume_mounts=True))
    assert allowed["Mounts"] == mounts


FACTS = admission.Facts(
    drone_id="d1",
    cluster="plane.test",
    recovered=True,
    draining=False,
    docker_available=True,
    live_backends=0,
    max_backends=2,
    allow_volume_mounts=False,
)
NOW = datetime(2026, 11, 28, 13, 0, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("change", "running", "outcome", "says"),
    [
        ({}, (), SpawnOutcome.ACCEPTED, ""),
        ({"deadline": NOW - timedelta(seconds=2)}, (), SpawnOutcome.STALE, "2.0s after"),
        ({"deadline": NOW + timedelta(seconds=1)}, (), SpawnOutcome.ACCEPTED, ""),
        ({"drone_id": "d2"}, (), SpawnOutcome.MISADDRESSED, "drone d2"),
        ({"cluster": "other.test"}, (), SpawnOutcome.MISADDRESSED, "other.test"),
        ({"spawn_pool": "gpu"}, (), SpawnOutcome.MISADDRESSED, "for pool gpu"),
        ({"pool": "gpu"}, (), SpawnOutcome.MISADDRESSED, "for the unnamed pool"),
        ({"pool": "gpu", "spawn_pool": "gpu"}, (), SpawnOutcome.ACCEPTED, ""),
        ({"recovered": False}, (), SpawnOutcome.UNAVAILABLE, "adopting"),
        ({"draining": True}, (), SpawnOutcome.DRAINING, "draining"),
        ({"docker_available": False}, (), SpawnOutcome.UNAVAILABLE, "Docker"),
        ({}, ("b1",), SpawnOutcome.DUPLICATE, "already runs"),
        ({"live_backends": 2}, (), SpawnOutcome.FULL, "limit of 2"),
        ({"mounts": True}, (), SpawnOutcome.INVALID, "volume mounts are not allowed"),
    ],
)
def test_admission_decides_every_refusal_before_docker(
    change: dict[str, Any], running: tuple[str, ...], outcome: SpawnOutcome, says: str
) -> None:
    spawn = request(
        volume_mounts=[{"Type": "tmpfs", "Target": "/d"}] if change.pop("mounts", 0) else []
    )
    for key in ("deadline", "drone_id", "cluster"):
        if key in change:
            setattr(spawn, key, change.pop(key))
    spawn.pool = change.pop("spawn_pool", None)
    decision = admission.decide(spawn, dataclasses.replace(FACTS, **change), running, NOW)
    assert decision.outcome is outcome
    assert says in decision.reason
    assert decision.request_at_fault is (outcome is SpawnOutcome.INVALID)


def test_labels_round_trip_into_an_adoption() -> None:
    config = spec.container_config(request(port=9000), "d1", CREATED, DockerSettings())
    adoption = spec.adoption_from_labels(config["Labels"], "d1")
    assert adoption == spec.Adoption(
        backend_id="b1",
        cluster="plane.test",
        port=9000,
        max_idle_secs=42,
        bearer_token="tok",
        created=CREATED,
    )
    assert spec.adoption_from_labels(config["Labels"], "another-drone") is None
    assert spec.adoption_from_labels({**config["Labels"], "dev.plane.port": "x"}, "d1") is None
    timed = request(port=9000)
    timed.lifetime_limit_secs, timed.termination_grace_secs = 3600, 5
    labels = spec.container_config(timed, "d1", CREATED, DockerSettings())["Labels"]
    again = spec.adoption_from_labels(labels, "d1")
    assert again is not None
    assert (again.lifetime_limit_secs, again.termination_grace_secs) == (3600, 5)


def test_line_buffer_joins_chunks_and_splits_long_lines() -> None:
    lines = LineBuffer(max_chars=8)
    assert lines.feed("hel") == []
    assert lines.feed("lo\nwor") == ["hello\n"]
    assert lines.feed("ld\r\nx") == ["world\r\n"]
    assert lines.feed("0123456789abcdefg") == ["x0123456", "789abcde"]
    assert lines.flush() == ["fg"]
    assert lines.flush() == []


def sample(**fields: int) -> StatsSample:
    base = {
        "cpu_total_ns": 0,
        "cpu_prev_total_ns": 0,
        "system_ns": 0,
        "system_prev_ns": 0,
        "memory_used_bytes": 0,
        "memory_limit_bytes": 0,
    }
    return StatsSample(**{**base, **fields})


def test_cpu_is_a_share_of_the_whole_machine_and_memory_of_the_limit() -> None:
    busy = sample(
        cpu_prev_total_ns=1_000, cpu_total_ns=501_000, system_prev_ns=0, system_ns=2_000_000
    )
    assert cpu_percent(busy) == pytest.approx(25.0)
    assert cpu_percent(sample()) == 0.0  # the first reading has nothing to compare with
    assert memory_percent(sample(memory_used_bytes=16, memory_limit_bytes=64)) == 25.0
    assert memory_percent(sample(memory_used_bytes=16), host_memory_bytes=160) == 10.0
    assert memory_percent(sample(memory_used_bytes=16)) == 0.0


@pytest.mark.parametrize(
    ("presence", "state", "ready"),
    [
        (Presence(False, False, True, 0, 10), DroneState.STARTING, False),
        (Presence(True, False, True, 3, 10), DroneState.READY, True),
        (Presence(True, False, False, 3, 10), DroneState.READY, False),
        (Presence(True, False, True, 10, 10), DroneState.READY, False),
        (Presence(True, True, True, 3, 10), DroneState.DRAINING, False),
        (Presence(True, True, True, 0, 10), DroneState.DRAINED, False),
    ],
)
def test_presence(presence: Presence, state: DroneState, ready: bool) -> None:
    assert (presence.state, presence.ready) == (state, ready)


def test_drone_id_and_drain_flag_are_kept_in_the_state_dir(tmp_path: Path) -> None:
    where = tmp_path / "state"
    made = statedir.drone_id(where, None)
    assert statedir.drone_id(where, None) == made
    assert statedir.drone_id(where, "configured") == "configured"
    assert statedir.load_draining(where) is False
    statedir.save_draining(where, True)
    assert statedir.load_draining(where) is True
    (where / "drain.json").write_text("{broken")
    with pytest.raises(statedir.StateDirError, match=r"drain\.json"):
        statedir.load_draining(where)
    (where / "drone_id").write_text("has.dots\n")
    with pytest.raises(statedir.StateDirError, match="a drone ID must be 1-128 characters"):
        statedir.drone_id(where, None)


def test_probe_intervals_start_short_and_level_off() -> None:
    assert probe.intervals(0.05) == [0.005, 0.01, 0.02, 0.04, 0.05]
    assert probe.intervals(0.001) == [0.001]


def test_docker_addresses() -> None:
    assert docker_url(None) is None
    assert docker_url("/run/docker.sock") == "unix:///run/docker.sock"
    assert docker_url("tcp://10.0.0.1:2375") == "tcp://10.0.0.1:2375"
    assert registry_qualified("ubuntu") == "docker.io/library/ubuntu"
    assert registry_qualified("me/app:1") == "docker.io/me/app:1"
    assert registry_qualified("ghcr.io/me/app") == "ghcr.io/me/app"
    assert registry_qualified("localhost:5000/app") == "localhost:5000/app"


def test_settings_check_names_the_bad_key() -> None:
    check(DroneSettings())
    assert AgentSettings().heartbeat_secs == 4.0  # the protocol's rhythm by default
    with pytest.raises(ConfigError, match=r"^ip:"):
        check(DroneSettings(ip="not-an-ip"))
    with pytest.raises(ConfigError, match=r"^cluster:"):
        check(DroneSettings(cluster="bad cluster"))
    with pytest.raises(ConfigError, match=r"^agent\.heartbeat_secs:"):
        check(DroneSettings(agent=AgentSettings(heartbeat_secs=0)))
    with pytest.raises(ConfigError, match=r"^metrics_listen:"):
        check(DroneSettings(metrics_listen="nowhere"))
    check(DroneSettings(metrics_listen="off"))


@pytest.mark.parametrize(
    ("raised", "kind"),
    [
        (aiodocker.DockerError(404, "no such container"), NotFound),
        (aiodocker.DockerError(409, "name in use"), Conflict),
        (aiodocker.DockerError(900, "cannot connect"), DockerUnavailable),
        (aiodocker.DockerError(500, "bad mount"), DockerFailure),
        (aiohttp.ClientConnectionError("reset"), DockerUnavailable),
        (TimeoutError(), DockerUnavailable),
        (ValueError("no registry"), DockerFailure),
        # A URL built from one request's values says nothing about the engine.
        (aiohttp.InvalidURL("/images//etc/passwd/json"), DockerFailure),
        (aiohttp.ClientPayloadError("cut short"), DockerFailure),
        (aiohttp.ClientOSError(104, "reset by peer"), DockerUnavailable),
    ],
)
def test_docker_errors_become_the_runtimes_own(raised: BaseException, kind: type) -> None:
    error = translate_error("create", raised)
    assert type(error) is kind
    assert str(error).startswith("create: ")


def test_the_sweeper_sleeps_until_the_earliest_due_backend_at_most_one_interval() -> None:
    assert next_sweep_delay(10.0, [], 0.25) == 0.25
    assert next_sweep_delay(10.0, [10.1, 12.0], 0.25) == pytest.approx(0.1)
    assert next_sweep_delay(10.0, [30.0], 0.25) == 0.25
    assert next_sweep_delay(10.0, [9.0], 0.25) == 0.001  # overdue: look again at once
