"""On a three-node NATS cluster: credentials reach every server, streams get three replicas
and keep what an operator set, and losing a node loses nothing stored."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.js.api import StreamConfig

from controller.config import ControllerSettings
from controller.service import Controller
from shared import bus, subjects, wire
from shared.protocol import BackendState, BackendStateMessage, utc_now
from tests.support.natscluster import NatsCluster

pytestmark = pytest.mark.timeout(120)

USER, PASSWORD = "plane", "s3cret-pass"
AUTH = f'authorization {{ user: "{USER}", password: "{PASSWORD}" }}\n'


@pytest.fixture
async def nats_cluster(tmp_path: Path) -> AsyncIterator[NatsCluster]:
    cluster = NatsCluster.plan(tmp_path / "nats", 3, extra=AUTH)
    await cluster.start()
    try:
        await cluster.wait_jetstream(user=USER, password=PASSWORD)
        yield cluster
    finally:
        await cluster.stop()


def with_credentials(url: str) -> str:
    return url.replace("nats://", f"nats://{USER}:{PASSWORD}@")


async def test_credentials_in_one_url_reach_the_servers_the_cluster_names(
    nats_cluster: NatsCluster,
) -> None:
    first = nats_cluster.nodes[0]
    settings = bus.NatsSettings(servers=[with_credentials(first.url)], reconnect_wait_secs=0.1)
    nc = await bus.connect(settings, name="test", wait_forever=False)
    try:
        assert bus.cluster_size(nc) == 3  # it heard of the other two
        await nats_cluster.kill_node(first)

        async def on_another_server() -> None:
            while True:
                url = nc.connected_url
                if url is not None and url.port != first.port:
                    await nc.flush(timeout=5)  # and it answers there
                    return
                await asyncio.sleep(0.05)

        await asyncio.wait_for(on_another_server(), 20)
        assert "authorization" not in str(nc.last_error or "").lower()
    finally:
        await nc.close()


def controller_settings(cluster: NatsCluster, **overrides: object) -> ControllerSettings:
    return ControllerSettings(
        nats=bus.NatsSettings(
            servers=[with_credentials(cluster.nodes[1].url)], reconnect_wait_secs=0.1
        ),
        metrics_listen="off",
        heartbeat_secs=0.2,
        warmup_secs=0,
        **overrides,  # type: ignore[arg-type]
    )


async def replicas_of(nc: bus.NatsClient, stream: str) -> int:
    return (await nc.jetstream().stream_info(stream)).config.num_replicas or 1


async def test_streams_get_the_clusters_replicas_and_keep_an_operators_more(
    nats_cluster: NatsCluster,
) -> None:
    settings = bus.NatsSettings(servers=[with_credentials(nats_cluster.nodes[0].url)])
    nc = await bus.connect(settings, name="operator", wait_forever=False)
    try:
        controller = Controller(controller_settings(nats_cluster))
        await controller.start()
        await controller.stop()
        for stream in ("backend_status", "dns_record", "backend_log"):
            assert await replicas_of(nc, stream) == 3, stream

        # A controller set to one replica does not undo the operator's three.
        one = Controller(controller_settings(nats_cluster, stream_replicas=1))
        await one.start()
        await one.stop()
        assert await replicas_of(nc, subjects.BACKEND_STATUS_STREAM) == 3
        # And a stream the operator made R1 and a controller asked for R3 becomes R3.
        await nc.jetstream().update_stream(
            StreamConfig(name="backend_log", subjects=["backend.*.log"], num_replicas=1,
                         max_msgs_per_subject=500)
        )  # fmt: skip
        three = Controller(controller_settings(nats_cluster, stream_replicas=3))
        await three.start()
        await three.stop()
        assert await replicas_of(nc, "backend_log") == 3
    finally:
        await nc.close()


async def test_a_node_replaced_with_an_empty_store_loses_no_stored_state(
    nats_cluster: NatsCluster,
) -> None:
    settings = bus.NatsSettings(
        servers=[with_credentials(n.url) for n in nats_cluster.nodes], reconnect_wait_secs=0.1
    )
    nc = await bus.connect(settings, name="test", wait_forever=False)
    controller = Controller(controller_settings(nats_cluster))
    await controller.start()
    try:
        js = nc.jetstream()
        for n in range(20):
            message = BackendStateMessage(
                cluster="plane.test", state=BackendState.READY, backend=f"b{n}",
                time=utc_now(), drone="d1",
            )  # fmt: skip
            await js.publish(subjects.backend_status(f"b{n}"), wire.encode(message))
        info = await js.stream_info(subjects.BACKEND_STATUS_STREAM)
        leader = next(n for n in nats_cluster.nodes if n.name == info.cluster.leader)
        await nats_cluster.replace_node(leader)  # kill -9, store wiped, started again

        async def every_state() -> list[str]:
            """Each backend's last state, read again while the stream recovers (it
            answers 503 "temporarily unavailable" while its replicas catch up)."""
            while True:
                try:
                    found = []
                    for n in range(20):
                        last = await js.get_last_msg(
                            subjects.BACKEND_STATUS_STREAM, subjects.backend_status(f"b{n}")
                        )
                        found.append(wire.decode(BackendStateMessage, last.data or b"").backend)
                    return found
                except (nats.errors.Error, TimeoutError):
                    await asyncio.sleep(0.1)

        assert await asyncio.wait_for(every_state(), 30) == [f"b{n}" for n in range(20)]
    finally:
        await controller.stop()
        await nc.close()
