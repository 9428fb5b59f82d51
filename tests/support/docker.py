"""The real Docker engine for tests: a client, local images, and clean-up by label."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import aiodocker

ROOT = Path(__file__).resolve().parents[2]
TEST_LABEL = "dev.plane.test"
TESTBACKEND_IMAGE = "plane-testbackend:latest"


class DockerUnavailable(RuntimeError):
    pass


async def connect() -> aiodocker.Docker:
    client = aiodocker.Docker()
    try:
        await client.version()
    except Exception as exc:
        await client.close()
        raise DockerUnavailable(
            f"Docker engine not reachable ({exc}); run `make docker` (or "
            "`bash deploy/ensure-docker.sh`) to start one"
        ) from None
    return client


def build_image(name: str) -> str:
    """Build `plane-{name}:latest` from deploy/images/{name} (a no-op when up to date),
    with the image's own build-local.sh where it has one."""
    images = ROOT / "deploy" / "images"
    local = images / name / "build-local.sh"
    command = (
        [str(local)]
        if local.exists()
        else [str(ROOT / "deploy" / "build-image.sh"), name, str(images / name)]
    )
    result = subprocess.run(
        ["bash", *command],
        capture_output=True,
        text=True,
        env=os.environ,
        check=False,
    )
    if result.returncode != 0:
        raise DockerUnavailable(
            f"building image plane-{name} failed:\n{result.stdout}\n{result.stderr}"
        )
    return f"plane-{name}:latest"


async def remove_labelled(client: aiodocker.Docker, label: str, value: str) -> list[str]:
    """Force-remove every container with `label=value`; returns their names."""
    containers = await client.containers.list(all=True, filters={"label": [f"{label}={value}"]})
    names = []
    for container in containers:
        names.append(container["Names"][0] if container["Names"] else container.id)
        try:
            await container.delete(force=True, v=True)
        except aiodocker.DockerError as exc:
            if exc.status != 404:
                raise
    return names


async def container_ip(client: aiodocker.Docker, container_id: str) -> str:
    info = await client.containers.get(container_id)
    networks = info["NetworkSettings"]["Networks"]
    for network in networks.values():
        if network.get("IPAddress"):
            return str(network["IPAddress"])
    raise RuntimeError(f"container {container_id} has no IP address")
