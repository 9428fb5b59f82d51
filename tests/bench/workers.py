"""Proxy worker processes: one against two, at 64 keep-alive connections.

Nothing is pinned here: two proxy processes need both cores, which they share
with wrk and the upstream, so on a two-core machine the ratio understates what
a host with spare cores would show. The target is 0.8*N times one process's rate.
The CPU the proxy processes got and their requests per CPU-second are recorded
beside it: equal rates per CPU-second mean the processes scale with the cores
they are given, and the ratio is then bounded by the machine.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from tests.bench import nginx, wrk
from tests.bench.harness import Results, alternate
from tests.bench.services import cpu_seconds, host_of, our_proxy

BENCH = "proxy workers"
BACKEND = "small"
CONNECTIONS = 64
COUNTS = (1, 2)


async def run(results: Results, workdir: Path, *, quick: bool) -> None:
    seconds = 1 if quick else 3
    rounds = 2 if quick else 4
    case = f"{CONNECTIONS} conns"
    async with contextlib.AsyncExitStack() as stack:
        upstream = await nginx.upstream(workdir / "upstream")
        stack.push_async_callback(upstream.stop)
        runners = []
        for count in COUNTS:
            proxy = await our_proxy(workdir, {BACKEND: upstream.port}, workers=count, pin=False)
            stack.push_async_callback(proxy.stop)
            url = f"http://127.0.0.1:{proxy.port}/"
            await wrk.run(url, connections=CONNECTIONS, seconds=1, host=host_of(BACKEND))

            async def runner(url: str = url, count: int = count, pid: int = proxy.pid) -> None:
                cpu_before = cpu_seconds(pid)
                began = time.perf_counter()
                found = await wrk.run(
                    url, connections=CONNECTIONS, seconds=seconds, host=host_of(BACKEND)
                )
                cpu = (cpu_seconds(pid) - cpu_before) / (time.perf_counter() - began)
                name = f"ours x{count}"
                wrk.record(results, BENCH, case, name, found)
                results.add(BENCH, case, name, "CPU", cpu * 100, "% of a core", False)
                per_cpu = found.requests_per_sec / cpu if cpu > 0 else 0.0
                results.add(BENCH, case, name, "req per CPU-second", per_cpu, "req")
                print(
                    f"  {BENCH} {count} process(es) {found.requests_per_sec:8.0f} req/s"
                    f" cpu {cpu * 100:3.0f}%",
                    flush=True,
                )

            runners.append(runner)
        await alternate(rounds, runners)
    results.ratio(
        BENCH, case, "requests/s", "ours x2", "ours x1",
        target=">= 1.6", check=lambda v: v >= 1.6,
    )  # fmt: skip
    results.ratio(BENCH, case, "req per CPU-second", "ours x2", "ours x1")
    results.ratio(BENCH, case, "CPU", "ours x2", "ours x1")
