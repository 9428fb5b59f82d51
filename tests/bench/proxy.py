"""Small HTTP requests through a proxy, with wrk at 1, 16 and 64 keep-alive connections.

Subjects, alternated: direct to the upstream (the floor), our drone proxy in
a process of its own as the image ships it ("ours": the hot modules compiled)
and from the sources ("ours-py": pure Python), and nginx as a reverse proxy
(one worker, keep-alive upstream connections). The upstream is nginx returning a 20-byte body. Both
proxies keep up to 64 idle upstream connections. Besides requests/s and
latency, the proxy's CPU time over the run is read from /proc: when the load
generator's CPU is what saturates, a proxy shows below 100 %, and requests per
CPU-second still compares the two fairly.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

from tests.bench import nginx, wrk
from tests.bench.harness import Results, alternate
from tests.bench.services import (
    LOAD_CPUS,
    SUBJECT_CPUS,
    Server,
    cpu_seconds,
    host_of,
    note_placement,
    our_proxy,
)

BENCH = "proxy"
BACKEND = "small"
CONNECTIONS = (1, 16, 64)


def conns_case(conns: int) -> str:
    return f"{conns} conn" if conns == 1 else f"{conns} conns"


@dataclass
class Subject:
    name: str
    port: int
    host: str | None = None  # the Host header, when the default one does not route
    pid: int | None = None  # whose CPU time is read; None: not a proxy

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"


async def start_proxies(
    stack: contextlib.AsyncExitStack, workdir: Path, backend: str, upstream: int
) -> tuple[Server, nginx.Nginx]:
    """Ours as shipped (compiled, routing `backend`) and nginx, both to the upstream
    port, both on the subject CPUs; stopped when `stack` closes."""
    ours = await our_proxy(workdir, {backend: upstream})
    stack.push_async_callback(ours.stop)
    peer = await nginx.reverse_proxy(workdir / "nginx", f"127.0.0.1:{upstream}", cpus=SUBJECT_CPUS)
    stack.push_async_callback(peer.stop)
    return ours, peer


async def measure(results: Results, subject: Subject, conns: int, seconds: int) -> None:
    case = conns_case(conns)
    cpu_before = cpu_seconds(subject.pid) if subject.pid else 0.0
    began = time.perf_counter()
    found = await wrk.run(
        subject.url, connections=conns, seconds=seconds, host=subject.host, cpus=LOAD_CPUS
    )
    wall = time.perf_counter() - began
    wrk.record(results, BENCH, case, subject.name, found)
    busy = ""
    if subject.pid:
        cpu = (cpu_seconds(subject.pid) - cpu_before) / wall
        results.add(BENCH, case, subject.name, "CPU", cpu * 100, "% of a core", False)
        if conns == CONNECTIONS[-1] and cpu > 0:
            per_cpu = found.requests_per_sec / cpu
            results.add(BENCH, case, subject.name, "req per CPU-second", per_cpu, "req")
        busy = f" cpu {cpu * 100:3.0f}%"
    print(
        f"  {BENCH} {case:>8} {subject.name:<6} {found.requests_per_sec:8.0f} req/s "
        f"p50 {found.p50_ms:.3f} ms p99 {found.p99_ms:.3f} ms{busy}",
        flush=True,
    )


async def run(results: Results, workdir: Path, *, quick: bool) -> None:
    seconds = 1 if quick else 2  # wrk takes whole seconds
    rounds = 2 if quick else 3
    note_placement(results)
    async with contextlib.AsyncExitStack() as stack:
        upstream = await nginx.upstream(workdir / "upstream", cpus=LOAD_CPUS)
        stack.push_async_callback(upstream.stop)
        ours, peer = await start_proxies(stack, workdir, BACKEND, upstream.port)
        pure = await our_proxy(workdir, {BACKEND: upstream.port}, pure=True)  # the sources
        stack.push_async_callback(pure.stop)
        subjects = [
            Subject("direct", upstream.port),
            Subject("ours", ours.port, host_of(BACKEND), ours.pid),
            Subject("ours-py", pure.port, host_of(BACKEND), pure.pid),
            Subject("nginx", peer.port, None, peer.proc.pid),
        ]
        for subject in subjects[1:]:  # warm up the proxies: connections, pools, caches
            await wrk.run(subject.url, connections=CONNECTIONS[-1], seconds=1, host=subject.host)
        for conns in CONNECTIONS:
            runners = []
            for subject in subjects:

                async def runner(subject: Subject = subject, conns: int = conns) -> None:
                    await measure(results, subject, conns, seconds)

                runners.append(runner)
            await alternate(rounds, runners)
    for conns in CONNECTIONS:
        case = conns_case(conns)
        if conns == CONNECTIONS[-1]:
            results.ratio(
                BENCH, case, "requests/s", "ours", "nginx",
                target=">= 0.25", check=lambda v: v >= 0.25,
            )  # fmt: skip
            results.ratio(BENCH, case, "req per CPU-second", "ours", "nginx")
            results.ratio(BENCH, case, "requests/s", "ours-py", "nginx")
            results.ratio(BENCH, case, "requests/s", "ours", "ours-py")
        else:
            results.ratio(BENCH, case, "requests/s", "ours", "nginx")
    results.difference(
        BENCH, conns_case(CONNECTIONS[0]), "p50", "ours", "nginx",
        target="<= +0.3 ms", check=lambda v: v <= 0.3,
    )  # fmt: skip
