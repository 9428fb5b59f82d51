"""WebSocket through a proxy: echo round trips and one-way bulk throughput.

Subjects, alternated: direct to the upstream, our drone proxy in a process of
its own, nginx as a reverse proxy with Upgrade passed through (one worker).
The upstream is `tests.bench.wsecho` (uvloop: echoes text, drops binary
without unmasking it). The client is `tests.bench.wsclient`, a process pinned
beside the upstream: round trips are N sequential 32-byte text messages on
one connection; throughput is 64 KiB binary messages for a fixed time, the
clock stopped when the echo of a final text message is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.bench.harness import Results, alternate
from tests.bench.proxy import start_proxies
from tests.bench.services import LOAD_CPUS, host_of, note_placement, pinned, ws_upstream

BENCH = "websocket"
BACKEND = "ws"
CASE = "echo and bulk"


@dataclass
class Subject:
    name: str
    port: int
    host: str


async def client(mode: str, subject: Subject, *args: str, timeout: float) -> dict[str, Any]:
    """Run one `tests.bench.wsclient` measurement; its JSON result."""
    argv = [
        sys.executable, "-m", "tests.bench.wsclient", mode,
        "--port", str(subject.port), "--host", subject.host, *args,
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *pinned(LOAD_CPUS, argv), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"wsclient {mode} via {subject.name} failed: {err.decode()[-1000:]}")
    result: dict[str, Any] = json.loads(out.splitlines()[-1])
    return result


async def measure(results: Results, subject: Subject, count: int, seconds: float) -> None:
    echo = await client("rtt", subject, "--count", str(count), timeout=60)
    bulk = await client("bulk", subject, "--seconds", str(seconds), timeout=seconds + 60)
    results.add(BENCH, CASE, subject.name, "RTT p50", echo["p50_ms"], "ms", False)
    results.add(BENCH, CASE, subject.name, "RTT p99", echo["p99_ms"], "ms", False)
    results.add(BENCH, CASE, subject.name, "throughput", bulk["mb_per_s"], "MB/s")
    print(
        f"  {BENCH} {subject.name:<6} RTT p50 {echo['p50_ms']:.3f} ms "
        f"p99 {echo['p99_ms']:.3f} ms, {bulk['mb_per_s']:7.0f} MB/s",
        flush=True,
    )


async def run(results: Results, workdir: Path, *, quick: bool) -> None:
    count = 2000 if quick else 5000
    seconds = 1.0 if quick else 2.0
    rounds = 2 if quick else 3
    note_placement(results)
    async with contextlib.AsyncExitStack() as stack:
        upstream = await ws_upstream(workdir)
        stack.push_async_callback(upstream.stop)
        ours, peer = await start_proxies(stack, workdir, BACKEND, upstream.port)
        subjects = [
            Subject("direct", upstream.port, "127.0.0.1"),
            Subject("ours", ours.port, host_of(BACKEND)),
            Subject("nginx", peer.port, "127.0.0.1"),
        ]
        runners = []
        for subject in subjects:

            async def runner(subject: Subject = subject) -> None:
                await measure(results, subject, count, seconds)

            runners.append(runner)
        await alternate(rounds, runners)
    results.ratio(
        BENCH, CASE, "throughput", "ours", "nginx", target=">= 0.8", check=lambda v: v >= 0.8
    )
    results.difference(
        BENCH, CASE, "RTT p50", "ours", "nginx", target="< +0.1 ms", check=lambda v: v < 0.1
    )
    results.difference(BENCH, CASE, "RTT p99", "ours", "nginx")
