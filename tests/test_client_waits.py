"""Waiting for a state rides out JetStream going away, within the caller's own budget."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from shared import bus, subjects, wire
from shared.client import PlaneClient, Unavailable
from shared.protocol import BackendState, BackendStateMessage, utc_now
from tests.support.natsserver import NatsServer


async def store(nc: bus.NatsClient, state: BackendState) -> None:
    message = BackendStateMessage(
        cluster="plane.test", state=state, backend="b1", time=utc_now(), drone="d1"
    )
    await nc.jetstream().publish(subjects.backend_status("b1"), wire.encode(message))


async def reconnected(nc: bus.NatsClient) -> None:
    async with asyncio.timeout(15):
        while True:
            if nc.stats["reconnects"] >= 1 and nc.is_connected:
                return
            await asyncio.sleep(0.02)


async def test_a_wait_rides_out_jetstream_being_away(tmp_path: Path) -> None:
    server = await NatsServer.start(tmp_path / "nats")
    settings = bus.NatsSettings(servers=[server.url], reconnect_wait_secs=0.1)
    nc = await bus.connect(settings, name="test-store", wait_forever=False)
    plane = await PlaneClient.connect(settings, "plane.test")
    try:
        await bus.ensure_stream(nc, subjects.BACKEND_STATUS_STREAM, ["backend.*.status"])
        await store(nc, BackendState.LOADING)

        # The server comes back without JetStream (as a cluster without the stream's node).
        await server.stop()
        without = await NatsServer.start(server.store, server.port, jetstream=False)
        await reconnected(plane.nc)
        waiter = asyncio.create_task(plane.wait_for_state("b1", BackendState.READY, timeout=60))
        await bus.settle(plane.nc, 5)  # its first try has had its answer
        assert not waiter.done(), waiter.exception() if waiter.done() else None

        await without.stop()
        server = await NatsServer.start(server.store, server.port)
        await bus.settle(nc, 5)
        await store(nc, BackendState.READY)
        ready = await asyncio.wait_for(waiter, 30)
        assert ready.state is BackendState.READY
    finally:
        await plane.close()
        await nc.close()
        await server.stop()


async def test_reads_without_jetstream_fail_as_plane_errors(tmp_path: Path) -> None:
    """A state read that JetStream cannot answer (no JetStream here; in a cluster, "503
    temporarily unavailable" while a stream elects a leader) is a PlaneError that a
    caller can catch and retry, never a NATS library exception."""
    server = await NatsServer.start(tmp_path / "nats", jetstream=False)
    try:
        plane = await PlaneClient.connect(server.url, "plane.test", timeout=2)
        try:
            with pytest.raises(Unavailable, match="JetStream"):
                await plane.status("b1")
            with pytest.raises(Unavailable, match="JetStream"):
                async for _ in plane.logs("b1"):
                    pass
        finally:
            await plane.close()
    finally:
        await server.stop()
