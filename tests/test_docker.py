"""The real Docker engine and the local test backend image."""

from __future__ import annotations

import asyncio
import subprocess

import aiodocker
import httpx
import websockets

from tests.support import docker as docker_support


async def run_testbackend(
    docker: aiodocker.Docker, image: str, test_id: str, env: dict[str, str] | None = None
) -> aiodocker.docker.DockerContainer:
    return await docker.containers.run(
        {
            "Image": image,
            "Env": [f"{k}={v}" for k, v in (env or {}).items()],
            "Labels": {docker_support.TEST_LABEL: test_id},
        }
    )


async def wait_http(url: str, timeout: float = 20) -> httpx.Response:
    async with httpx.AsyncClient(timeout=2) as client, asyncio.timeout(timeout):
        while True:
            try:
                return await client.get(url)
            except httpx.TransportError:
                await asyncio.sleep(0.05)


async def test_container_answers_http_and_echoes_websocket(
    docker: aiodocker.Docker, testbackend_image: str, test_id: str
) -> None:
    container = await run_testbackend(docker, testbackend_image, test_id)
    ip = await docker_support.container_ip(docker, container.id)
    response = await wait_http(f"http://{ip}:8080/")
    assert response.status_code == 200 and response.text
    async with httpx.AsyncClient(timeout=10) as client:
        posted = await client.post(f"http://{ip}:8080/upload", content=b"x" * 100_000)
        assert posted.text == "100000"
        streamed = await client.get(f"http://{ip}:8080/bytes/1000000")
        assert len(streamed.content) == 1_000_000
    async with websockets.connect(f"ws://{ip}:8080/ws") as ws:
        for i in range(1, 4):
            await ws.send(f"message {i}")
            assert await asyncio.wait_for(ws.recv(), 5) == f"message {i}"
        await ws.send(b"\x00\x01binary")
        assert await asyncio.wait_for(ws.recv(), 5) == b"\x00\x01binary"


async def test_port_env_and_exit_paths(
    docker: aiodocker.Docker, testbackend_image: str, test_id: str
) -> None:
    container = await run_testbackend(docker, testbackend_image, test_id, {"PORT": "9000"})
    ip = await docker_support.container_ip(docker, container.id)
    assert (await wait_http(f"http://{ip}:9000/")).status_code == 200
    async with httpx.AsyncClient(timeout=5) as client:
        await client.get(f"http://{ip}:9000/exit/3")
    result = await asyncio.wait_for(container.wait(), 20)
    assert result["StatusCode"] == 3
    logs = await container.log(stdout=True, stderr=True)
    assert logs, "the test backend writes a line at start"


async def test_exit_code_before_listening(
    docker: aiodocker.Docker, testbackend_image: str, test_id: str
) -> None:
    container = await run_testbackend(
        docker, testbackend_image, test_id, {"EXIT_CODE": "7", "EXIT_TIMEOUT": "100"}
    )
    result = await asyncio.wait_for(container.wait(), 20)
    assert result["StatusCode"] == 7


async def test_cleanup_removes_labelled_containers(
    docker: aiodocker.Docker, testbackend_image: str, test_id: str
) -> None:
    other = f"{test_id}-other"
    await run_testbackend(docker, testbackend_image, other)
    removed = await docker_support.remove_labelled(docker, docker_support.TEST_LABEL, other)
    assert len(removed) == 1
    left = await docker.containers.list(
        all=True, filters={"label": [f"{docker_support.TEST_LABEL}={other}"]}
    )
    assert left == []


def test_image_build_is_cached(testbackend_image: str) -> None:
    result = subprocess.run(
        [
            "bash",
            str(docker_support.ROOT / "deploy" / "build-image.sh"),
            "testbackend",
            str(docker_support.ROOT / "deploy" / "images" / "testbackend"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert f"{testbackend_image} is up to date" in result.stdout + result.stderr


def test_ensure_docker_is_a_no_op_when_the_engine_runs() -> None:
    result = subprocess.run(
        ["bash", str(docker_support.ROOT / "deploy" / "ensure-docker.sh")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "installing" not in result.stderr
