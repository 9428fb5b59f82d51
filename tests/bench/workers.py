"""Proxy worker processes: one against two, at 64 keep-alive connections.

Nothing is pinned here: two proxy processes need both cores, which they share
with wrk and the upstream, so on a two-core machine the ratio understates what
a host with spare cores would show. The target is 0.8*N times one process's rate.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from tests.bench import nginx, wrk
from tests.bench.harness import Results, alternate
from tests.bench.services import host_of, our_proxy

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

            async def runner(url: str = url, count: int = count) -> None:
                found = await wrk.run(
                    url, connections=CONNECTIONS, seconds=seconds, host=host_of(BACKEND)
                )
                wrk.record(results, BENCH, case, f"ours x{count}", found)
                print(
                    f"  {BENCH} {count} process(es) {found.requests_per_sec:8.0f} req/s",
                    flush=True,
                )

            runners.append(runner)
        await alternate(rounds, runners)
    results.ratio(
        BENCH, case, "requests/s", "ours x2", "ours x1",
        target=">= 1.6", check=lambda v: v >= 1.6,
    )  # fmt: skip
