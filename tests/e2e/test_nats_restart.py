"""nats-server stopped and started again (same port, same store): the proxy keeps serving
throughout, and the controller and the drone reconnect and schedule again."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import httpx
import pytest

from shared.protocol import BackendState
from tests.e2e.cluster import HEARTBEAT_SECS, Cluster, Drone, until

pytestmark = pytest.mark.timeout(60)

PROBES_DURING_OUTAGE = 10
OUTAGE_SECS = 3 * float(HEARTBEAT_SECS)  # the controller's fresh_heartbeats is 3
HELLO = "hello from testbackend\n"


@dataclass
class Prober:
    """GETs a backend through the proxy, one after the other, and remembers each answer."""

    cluster: Cluster
    drone: Drone
    backend: str
    answers: list[tuple[float, str]] = field(default_factory=list)

    async def run(self) -> None:
        while True:
            try:
                page = await self.cluster.get(self.drone, self.backend)
                answer = f"{page.status_code} {page.text!r}"
            except httpx.HTTPError as exc:
                answer = f"{type(exc).__name__}: {exc}"
            self.answers.append((time.monotonic(), answer))
            await asyncio.sleep(0.02)

    def since(self, start: float) -> list[str]:
        return [answer for at, answer in self.answers if at >= start]


async def test_nats_restart_keeps_the_proxy_serving_and_scheduling_resumes(
    cluster: Cluster,
) -> None:
    drone = cluster.drones[0]
    backend = await cluster.spawn_ready()
    prober = Prober(cluster, drone, backend)
    probing = asyncio.create_task(prober.run())
    try:
        await cluster.nats.stop()
        down = time.monotonic()
        await drone.daemon.wait_output("NATS connection lost")
        await cluster.controller.wait_output("NATS connection lost")

        async def probed_enough() -> bool | None:
            # Down for longer than the controller's fresh window: its silence is no
            # reason to pass the drone over once NATS is back.
            probes = prober.since(down + OUTAGE_SECS)
            return True if len(probes) >= PROBES_DURING_OUTAGE else None

        await until("probes while NATS is down", 30, probed_enough, *cluster.daemons())
        during = prober.since(down)
        await cluster.nats.restart()
        up = time.monotonic()
        await drone.daemon.wait_output("NATS connection back")
        await cluster.controller.wait_output("NATS connection back")

        async def probed_since_up() -> bool | None:
            return True if prober.since(up) else None

        # Both may reconnect within milliseconds, before the next probe went out.
        await until("a probe after NATS came back", 10, probed_since_up, *cluster.daemons())
    finally:
        probing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await probing
    ok = f"200 {HELLO!r}"
    assert set(during) == {ok}, "the proxy stopped serving while NATS was down"
    assert set(prober.since(0)) == {ok}, "the proxy failed a request around the restart"

    await cluster.wait_drone_ready(drone)
    assert (await cluster.plane.status(backend)).state is BackendState.READY
    fresh = await cluster.spawn_ready()
    for each in (backend, fresh):
        page = await cluster.get(drone, each)
        assert (page.status_code, page.text) == (200, HELLO)
    listed = {b.backend_id: b.state for b in await cluster.plane.backends()}
    assert listed == {backend: BackendState.READY, fresh: BackendState.READY}
