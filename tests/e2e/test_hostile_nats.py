"""A hostile neighbour on NATS: ten thousand bad messages, and good clients still served.

A live controller and drone (real processes) take the whole corpus of
`tests.hostile.corpus` while a well-behaved client schedules backends, waits
for Ready and talks to them through the proxy. Every hostile request is
answered (none hangs), every good one succeeds, no container gets a mount,
privileges or the host's network, and the processes' memory stays bounded.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from pathlib import Path

import aiodocker
import nats.errors
import pytest

from shared.client import PlaneError
from shared.protocol import BackendState
from tests.e2e.cluster import IMAGE, Cluster, MakeCluster
from tests.hostile.corpus import Corpus, Hostile
from tests.support.docker import TEST_LABEL

pytestmark = pytest.mark.timeout(300)

IN_FLIGHT = 64  # hostile requests awaiting answers at once
GOOD_CLIENT_ROUNDS = 30
DOOMED = 200  # well-formed requests for images that are not there
RSS_GROWTH_LIMIT = 96 * 2**20


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


async def flood(cluster: Cluster, messages: list[Hostile], outcomes: Counter[str]) -> None:
    nc = cluster.plane.nc
    slots = asyncio.Semaphore(IN_FLIGHT)

    async def ask(hostile: Hostile) -> None:
        try:
            await nc.request(hostile.subject, hostile.payload, timeout=10)
            outcomes["answered"] += 1
        except nats.errors.NoRespondersError:
            outcomes[f"no responder: {hostile.family}"] += 1
        except nats.errors.TimeoutError:
            outcomes[f"unanswered: {hostile.family}"] += 1
        finally:
            slots.release()

    tasks = []
    for hostile in messages:
        if hostile.request:
            await slots.acquire()
            tasks.append(asyncio.create_task(ask(hostile)))
        else:
            await nc.publish(hostile.subject, hostile.payload)
            outcomes["published"] += 1
    await asyncio.gather(*tasks)
    await nc.flush(timeout=10)


async def good_client(cluster: Cluster) -> list[str]:
    """Schedule, wait for Ready, talk, terminate: the failures seen (none expected)."""
    failures: list[str] = []
    ready_secs: list[float] = []
    drone = cluster.drones[0]
    for rounds in range(1, GOOD_CLIENT_ROUNDS + 1):
        started = time.monotonic()
        try:
            backend = (await cluster.plane.schedule(image=IMAGE, max_idle_secs=60)).backend_id
            await cluster.plane.wait_for_state(backend, BackendState.READY, timeout=30)
            ready_secs.append(time.monotonic() - started)
            page = await cluster.get(drone, backend)
            if page.status_code != 200:
                failures.append(f"round {rounds}: HTTP {page.status_code}")
            await cluster.plane.terminate(backend)
        except PlaneError as exc:
            failures.append(f"round {rounds}: {type(exc).__name__}: {exc}")
    print(
        f"good client: {rounds} rounds, {len(failures)} failures, schedule to Ready "
        f"p50 {statistics.median(ready_secs):.3f}s max {max(ready_secs):.3f}s"
    )
    return failures


async def test_a_hostile_neighbour_denies_no_one_and_breaks_nothing(
    make_cluster: MakeCluster, docker: aiodocker.Docker, test_id: str
) -> None:
    cluster = await make_cluster(1)
    drone = cluster.drones[0]
    assert cluster.controller.proc is not None and drone.daemon.proc is not None
    pids = {"controller": cluster.controller.proc.pid, "drone": drone.daemon.proc.pid}
    rss_before = {name: rss_bytes(pid) for name, pid in pids.items()}
    corpus = Corpus(cluster.name, drone.drone_id, seed=10)
    messages = list(corpus.messages([f"plane-missing-{n}:1" for n in range(DOOMED)]))
    outcomes: Counter[str] = Counter()
    good = asyncio.create_task(good_client(cluster))
    started = time.monotonic()
    passes = 0
    while passes == 0 or not good.done():  # the whole corpus, again and again, meanwhile
        await flood(cluster, messages, outcomes)
        passes += 1
    took = time.monotonic() - started
    failures = await good
    families = Counter(m.family for m in messages)
    print(f"{passes} x {len(messages)} hostile messages in {took:.1f}s: {dict(families)}")
    print(f"outcomes: {dict(outcomes)}")

    for daemon in cluster.daemons():
        daemon.check_alive()
    assert failures == [], failures
    assert not [k for k in outcomes if k.startswith("unanswered")], outcomes
    # Every request went to a subject someone serves, and was answered there.
    assert not [k for k in outcomes if k.startswith("no responder")], outcomes
    growth = {name: rss_bytes(pid) - rss_before[name] for name, pid in pids.items()}
    print(f"RSS growth: { {k: f'{v / 2**20:.1f} MiB' for k, v in growth.items()} }")
    assert all(v < RSS_GROWTH_LIMIT for v in growth.values()), growth
    # Nothing the corpus asked for reached Docker with a mount, privileges or the host net.
    for summary in await docker.containers.list(
        all=True, filters={"label": [f"{TEST_LABEL}={test_id}"]}
    ):
        try:
            info = await (await docker.containers.get(summary["Id"])).show()
        except aiodocker.DockerError as exc:
            if exc.status == 404:
                continue  # ended and removed since the listing (swept, say): nothing left
            raise
        host = info["HostConfig"]
        assert (host.get("Privileged"), host.get("NetworkMode")) != (True, "host"), info["Name"]
        assert not host.get("Privileged") and host.get("NetworkMode") != "host", info["Name"]
        assert not info.get("Mounts"), info["Name"]
    # And the drone still takes backends.
    [listed] = [d for d in await cluster.plane.drones() if d.drone_id == drone.drone_id]
    assert listed.ready
