"""The demo backend image that `make run` spawns, run on the real Docker engine."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import aiodocker
import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.support import docker as docker_support

Message = dict[str, Any]


@pytest.fixture(scope="module")
def demo_image() -> str:
    """plane-demo:latest, built when its sources changed (a failed build says why)."""
    return docker_support.build_image("demo")


async def run_demo(
    docker: aiodocker.Docker, image: str, test_id: str, backend_id: str
) -> tuple[aiodocker.docker.DockerContainer, str]:
    """Start the demo; return it and its address once it says it listens."""
    container = await docker.containers.run(
        {
            "Image": image,
            "Env": [f"PLANE_BACKEND_ID={backend_id}"],
            "Labels": {docker_support.TEST_LABEL: test_id},
        }
    )
    output = ""
    async with asyncio.timeout(20):
        async for chunk in container.log(stdout=True, follow=True):
            output += chunk
            if "listening on port 8080" in output:
                break
    assert f"backend {backend_id} listening" in output, output
    ip = await docker_support.container_ip(docker, container.id)
    return container, f"{ip}:8080"


async def next_message(ws: ClientConnection, wanted: Callable[[Message], bool]) -> Message:
    """The next message from the demo that `wanted` accepts (others are skipped)."""
    async with asyncio.timeout(10):
        while True:
            message: Message = json.loads(await ws.recv())
            if wanted(message):
                return message


def of_type(kind: str, **fields: object) -> Callable[[Message], bool]:
    return lambda m: m["type"] == kind and all(m.get(k) == v for k, v in fields.items())


async def test_serves_the_page_and_health_and_nothing_else(
    docker: aiodocker.Docker, demo_image: str, test_id: str
) -> None:
    _, address = await run_demo(docker, demo_image, test_id, "demo-http")
    async with httpx.AsyncClient(base_url=f"http://{address}", timeout=10) as client:
        page = await client.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert "<title>Plane demo backend</title>" in page.text
        assert '"/ws"' in page.text and "max_idle_secs" in page.text
        assert "http://" not in page.text and "https://" not in page.text  # nothing external
        health = await client.get("/healthz")
        assert (health.status_code, health.text) == (200, "ok\n")
        assert (await client.get("/nothing-here")).status_code == 404
        assert (await client.post("/", content=b"x")).status_code == 405
        assert (await client.get("/ws")).status_code == 426  # without an upgrade


async def test_two_tabs_share_the_counter_and_the_document(
    docker: aiodocker.Docker, demo_image: str, test_id: str
) -> None:
    _, address = await run_demo(docker, demo_image, test_id, "demo-shared")
    url = f"ws://{address}/ws"
    async with connect(url, open_timeout=10) as a, connect(url, open_timeout=10) as b:
        hello_a = await next_message(a, of_type("hello"))
        hello_b = await next_message(b, of_type("hello"))
        assert hello_a["backend"] == hello_b["backend"] == "demo-shared"
        assert hello_a["started"] == hello_b["started"]
        assert hello_a["you"] != hello_b["you"]
        await next_message(a, of_type("clients", clients=2))
        await next_message(b, of_type("clients", clients=2))

        await a.send("+")
        await next_message(b, of_type("counter", counter=1))
        await b.send("-")
        await b.send("-")
        await next_message(a, of_type("counter", counter=-1))

        text = 'first line\n"quoted" \\ tab\t ünïcødé ✓'
        await a.send("doc:" + text)
        edit = await next_message(b, of_type("doc", by=hello_a["you"]))
        assert edit["doc"] == text
        await b.send(["doc:in ", "two ", "frames"])  # one message, fragmented
        await next_message(a, of_type("doc", by=hello_b["you"], doc="in two frames"))

        await b.send("nonsense")
        assert "unknown message" in (await next_message(b, of_type("error")))["message"]
        pong = await a.ping(b"are you there")
        await asyncio.wait_for(pong, 10)

    async with connect(url, open_timeout=10) as c:  # a later tab gets the state as it stands
        await next_message(c, of_type("counter", counter=-1))
        await next_message(c, of_type("doc", doc="in two frames"))
        await next_message(c, of_type("clients", clients=1))


async def test_sigterm_stops_it_within_two_seconds(
    docker: aiodocker.Docker, demo_image: str, test_id: str
) -> None:
    container, address = await run_demo(docker, demo_image, test_id, "demo-stop")
    async with connect(f"ws://{address}/ws", open_timeout=10) as tab:
        await next_message(tab, of_type("clients", clients=1))
        started = time.monotonic()
        await container.kill(signal="SIGTERM")
        result = await container.wait(timeout=10)
        elapsed = time.monotonic() - started
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(tab.recv(), 10)
    assert result["StatusCode"] == 0
    assert elapsed < 2, f"the demo took {elapsed:.2f} s to stop"
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001  # going away
