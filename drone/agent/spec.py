"""From a SpawnRequest to a Docker container configuration, and back from labels.

Docker is the drone's only record of its backends: everything a restarted
drone needs to adopt a container again (owner, cluster, port, idle limit,
bearer token, creation time) is written into `dev.plane.*` labels here and
read back by `adoption_from_labels`. Validation that decides a spawn's answer
lives here too, so the reply is honest before any Docker call is made.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from drone.config import DockerSettings
from shared.protocol import DEFAULT_PORT, SpawnRequest

CONTAINER_PREFIX = "plane-"
BACKEND_ID_ENV = "PLANE_BACKEND_ID"  # the backend's own ID, for the program inside
LOCK_ENV = "PLANE_LOCK"  # the lock the backend holds, when it was asked for by one
PORT_ENV = "PORT"

LABEL_BACKEND = "dev.plane.backend"
LABEL_DRONE = "dev.plane.drone"
LABEL_CLUSTER = "dev.plane.cluster"
LABEL_PORT = "dev.plane.port"
LABEL_MAX_IDLE = "dev.plane.max_idle_secs"
LABEL_TOKEN = "dev.plane.bearer_token"
LABEL_CREATED = "dev.plane.created"
LABEL_LIFETIME = "dev.plane.lifetime_limit_secs"
LABEL_GRACE = "dev.plane.termination_grace_secs"

DEFAULT_CPU_PERIOD_US = 100_000  # the kernel's default, for a percentage without a period


def container_name(backend_id: str) -> str:
    return f"{CONTAINER_PREFIX}{backend_id}"


def backend_port(spawn: SpawnRequest) -> int:
    return spawn.executable.port or DEFAULT_PORT


def refusal(spawn: SpawnRequest, *, allow_volume_mounts: bool) -> str | None:
    """Why this drone will not run this spec, or None when it will.

    The spec's own shape (image reference, env, mounts, limits) was checked
    while it was decoded (`shared.checks`); what is left is this drone's policy.
    """
    if spawn.executable.volume_mounts and not allow_volume_mounts:
        return "executable.volume_mounts: volume mounts are not allowed on this drone"
    return None


def labels(
    spawn: SpawnRequest, drone_id: str, created: datetime, extra: Mapping[str, str]
) -> dict[str, str]:
    result = dict(extra)
    result.update(
        {
            LABEL_BACKEND: spawn.backend_id,
            LABEL_DRONE: drone_id,
            LABEL_CLUSTER: spawn.cluster,
            LABEL_PORT: str(backend_port(spawn)),
            LABEL_MAX_IDLE: str(spawn.max_idle_secs),
            LABEL_CREATED: created.isoformat(),
        }
    )
    if spawn.bearer_token is not None:
        result[LABEL_TOKEN] = spawn.bearer_token
    if spawn.lifetime_limit_secs is not None:
        result[LABEL_LIFETIME] = str(spawn.lifetime_limit_secs)
    if spawn.termination_grace_secs is not None:
        result[LABEL_GRACE] = str(spawn.termination_grace_secs)
    return result


def host_config(spawn: SpawnRequest, settings: DockerSettings) -> dict[str, Any]:
    """Limits, network, runtime and mounts: Docker's `HostConfig`."""
    limits = spawn.executable.resource_limits
    config: dict[str, Any] = {}
    if limits.memory_limit_bytes is not None:
        config["Memory"] = limits.memory_limit_bytes
    if limits.cpu_period or limits.cpu_period_percent is not None:
        period_us = (limits.cpu_period or 0) * 1_000_000 or DEFAULT_CPU_PERIOD_US
        config["CpuPeriod"] = period_us
        if limits.cpu_period_percent is not None:
            # Docker refuses quotas under 1 ms.
            config["CpuQuota"] = max(1000, period_us * limits.cpu_period_percent // 100)
    if limits.cpu_time_limit is not None:
        seconds = limits.cpu_time_limit
        config["Ulimits"] = [{"Name": "cpu", "Soft": seconds, "Hard": seconds}]
    if settings.network is not None:
        config["NetworkMode"] = settings.network
    if settings.runtime is not None:
        config["Runtime"] = settings.runtime
    if settings.allow_volume_mounts and spawn.executable.volume_mounts:
        config["Mounts"] = [dict(mount) for mount in spawn.executable.volume_mounts]
    return config


def container_config(
    spawn: SpawnRequest, drone_id: str, created: datetime, settings: DockerSettings
) -> dict[str, Any]:
    """The body of Docker's container-create call for this spawn."""
    env = dict(spawn.executable.env)
    # Ours win: the probe and the proxy rely on the port, the program on its ID.
    env[PORT_ENV] = str(backend_port(spawn))
    env[BACKEND_ID_ENV] = spawn.backend_id
    if spawn.lock is not None:
        env[LOCK_ENV] = spawn.lock
    return {
        "Image": spawn.executable.image,
        "Env": [f"{name}={value}" for name, value in env.items()],
        "Labels": labels(spawn, drone_id, created, settings.extra_labels),
        "ExposedPorts": {f"{backend_port(spawn)}/tcp": {}},
        "HostConfig": host_config(spawn, settings),
    }


@dataclass(frozen=True, slots=True)
class Adoption:
    """What a container's labels say about the backend it runs."""

    backend_id: str
    cluster: str
    port: int
    max_idle_secs: int
    bearer_token: str | None
    created: datetime | None
    lifetime_limit_secs: int | None = None
    termination_grace_secs: int | None = None


def _optional_int(found: Mapping[str, str], label: str) -> int | None:
    try:
        return int(found[label])
    except (KeyError, ValueError):
        return None


def adoption_from_labels(found: Mapping[str, str], drone_id: str) -> Adoption | None:
    """The backend behind a container of `drone_id`, or None when it is not one of ours."""
    if found.get(LABEL_DRONE) != drone_id:
        return None
    backend_id = found.get(LABEL_BACKEND)
    cluster = found.get(LABEL_CLUSTER)
    if not backend_id or not cluster:
        return None
    try:
        port = int(found.get(LABEL_PORT, str(DEFAULT_PORT)))
        max_idle = int(found.get(LABEL_MAX_IDLE, "0"))
    except ValueError:
        return None
    created: datetime | None
    try:
        created = datetime.fromisoformat(found[LABEL_CREATED])
    except (KeyError, ValueError):
        created = None
    return Adoption(
        backend_id=backend_id,
        cluster=cluster,
        port=port,
        max_idle_secs=max_idle,
        bearer_token=found.get(LABEL_TOKEN),
        created=created,
        lifetime_limit_secs=_optional_int(found, LABEL_LIFETIME),
        termination_grace_secs=_optional_int(found, LABEL_GRACE),
    )
