"""The API page's own example, sent by a client that knows nothing of this project.

The request is the JSON from the seed page (with our test image and a short
idle time), sent with plain nats-py; the states are read as any subscriber
reads them; the backend is used over HTTP and WebSocket through the drone's
proxy and is swept once nobody is connected.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiodocker
import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from shared.client import InvalidRequest
from tests.e2e.cluster import IMAGE, Cluster, connect_websocket

pytestmark = pytest.mark.timeout(60)

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
MAX_IDLE_SECS = 2


async def test_seed_request_runs_a_backend_until_it_is_swept(
    cluster: Cluster, docker: aiodocker.Docker
) -> None:
    nc = await nats.connect(cluster.nats.url)
    try:
        await seed_request_runs_until_swept(cluster, docker, nc)
    finally:
        await nc.close()


async def seed_request_runs_until_swept(
    cluster: Cluster, docker: aiodocker.Docker, nc: Client
) -> None:
    """The seed page's request, by a plain NATS client, through Ready, HTTP and WebSocket to
    Swept (`nc` connects as such a client would)."""
    request = json.loads((GOLDEN / "seed_schedule_request.json").read_text())
    request["cluster"] = cluster.name
    request["max_idle_secs"] = MAX_IDLE_SECS
    request["executable"]["image"] = IMAGE
    states: asyncio.Queue[tuple[float, dict[str, object]]] = asyncio.Queue()

    async def on_state(msg: Msg) -> None:
        await states.put((time.monotonic(), json.loads(msg.data)))

    await nc.subscribe("backend.*.status", cb=on_state)
    await nc.flush()
    subject = "cluster." + cluster.name.replace(".", "_") + ".schedule"
    reply = json.loads((await nc.request(subject, json.dumps(request).encode(), 10)).data)

    assert list(reply) == ["Scheduled"], reply
    scheduled = reply["Scheduled"]
    assert set(scheduled) == {"drone", "backend_id", "spawned"}, "no bearer token unless asked for"
    assert scheduled["spawned"] is True
    backend = scheduled["backend_id"]
    assert scheduled["drone"] == cluster.drones[0].drone_id

    async def next_state() -> tuple[float, str]:
        while True:
            at, message = await asyncio.wait_for(states.get(), 30)
            if message["backend"] == backend:
                assert message["cluster"] == cluster.name
                return at, str(message["state"])

    seen = [(await next_state())[1] for _ in range(3)]
    assert seen == ["Loading", "Starting", "Ready"]

    drone = cluster.drones[0]
    page = await cluster.get(drone, backend)
    assert page.status_code == 200
    assert page.text == "hello from testbackend\n"
    async with connect_websocket(cluster, drone, backend) as ws:
        await ws.send("hello over the proxy")
        assert await asyncio.wait_for(ws.recv(), 10) == "hello over the proxy"
        # An open WebSocket keeps the backend alive past its idle time.
        await asyncio.sleep(MAX_IDLE_SECS + 0.5)
        assert states.empty(), "a state changed while a WebSocket was open"
        await ws.send(b"\x00binary\xff")
        assert await asyncio.wait_for(ws.recv(), 10) == b"\x00binary\xff"
    closed = time.monotonic()

    swept_at, state = await next_state()
    assert state == "Swept"
    idle = swept_at - closed
    assert MAX_IDLE_SECS - 0.25 <= idle <= MAX_IDLE_SECS + 1, f"swept {idle:.2f}s after"
    await cluster.wait_container_gone(docker, backend)
    gone = await cluster.get(drone, backend)
    assert gone.status_code == 404


async def test_a_mount_that_no_drone_allows_is_answered_invalid_not_no_drone(
    cluster: Cluster,
) -> None:
    with pytest.raises(InvalidRequest, match="volume mounts are not allowed on this drone"):
        await cluster.plane.schedule(
            image=IMAGE, volume_mounts=[{"Type": "tmpfs", "Target": "/data"}]
        )
    assert (await cluster.plane.schedule(image=IMAGE)).backend_id  # and it serves the next
