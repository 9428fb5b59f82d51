"""Sweep precision: how long after `max_idle_secs` an idle backend is actually swept.

One backend at a time (quick: 5, full: 12), on the whole system of
`livecluster` with the drone's default sweep interval: schedule it with
`max_idle_secs` = 1, wait for Ready, send one HTTP request through the
drone's proxy (`Connection: close`) and note when that connection closed.
The sweep is due `max_idle_secs` later; for each backend we measure how late
after that

- the Swept state was stamped (the drone's clock: the same machine),
- Swept reached us on `backend.{b}.status` (stored by the controller),
- Docker no longer listed the container (polled every 10 ms).

Target: Swept within 1 s of the due time, for every backend (the max).
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from shared.protocol import BackendState
from tests.bench.harness import Results
from tests.bench.livecluster import IMAGE, Cluster, running

BENCH = "sweep"
CLUSTER = "sweep.bench"
MAX_IDLE_SECS = 1
TARGET_MS = 1000.0
STAMPED, SEEN, GONE = "Swept stamped late by", "Swept seen late by", "container gone late by"


async def one_backend(results: Results, cluster: Cluster, case: str) -> None:
    backend = (await cluster.plane.schedule(image=IMAGE, max_idle_secs=MAX_IDLE_SECS)).backend_id
    await cluster.watch.wait(backend, BackendState.READY)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{cluster.proxy_port}", trust_env=False, timeout=5
    ) as client:
        reply = await client.get(
            "/", headers={"Host": f"{backend}.{cluster.name}", "Connection": "close"}
        )
    closed = time.time()
    if reply.status_code != 200:
        raise RuntimeError(f"request through the proxy answered {reply.status_code}")
    due = closed + MAX_IDLE_SECS
    swept = await cluster.watch.wait(backend, BackendState.SWEPT, timeout=MAX_IDLE_SECS + 30)
    gone = await cluster.wait_container_gone(backend)
    lateness = {
        STAMPED: swept.stamped - due,
        SEEN: swept.wall - due,
        GONE: gone - due,
    }
    for metric, late in lateness.items():
        results.add(BENCH, case, "ours", metric, late * 1000, "ms", higher_is_better=False)
    print(
        "  sweep "
        + ", ".join(f"{metric} {late * 1000:.0f} ms" for metric, late in lateness.items()),
        flush=True,
    )


async def run(results: Results, workdir: Path, *, quick: bool) -> None:
    count = 5 if quick else 12
    case = f"max_idle_secs={MAX_IDLE_SECS}"
    async with running(workdir, CLUSTER) as cluster:
        for _ in range(count):
            await one_backend(results, cluster, case)
    for metric in (STAMPED, SEEN, GONE):
        figure = results.figure(BENCH, case, "ours", metric)
        if figure is not None:
            worst = max(figure.samples)
            results.add(BENCH, case, "ours", f"{metric} (max)", worst, "ms", False)
    results.goal(
        BENCH, case, f"{SEEN} (max)", "ours",
        target=f"≤ {TARGET_MS:.0f} ms", check=lambda v: v <= TARGET_MS,
    )  # fmt: skip
    results.goal(
        BENCH, case, f"{GONE} (max)", "ours",
        target=f"≤ {TARGET_MS:.0f} ms", check=lambda v: v <= TARGET_MS,
    )  # fmt: skip
