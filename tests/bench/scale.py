"""Many idle WebSockets through one drone proxy process.

One proxy process routes two backends: `ws` (the `tests.bench.wsecho`
upstream) and `other` (nginx returning a small body). A client process
(`tests.bench.wsclient idle`) opens N WebSockets to `ws` and leaves them
idle. Measured: the proxy's resident memory (VmRSS) before and after, per
connection (user-space memory only: the kernel's socket buffers are not in
it), and wrk's figures for `other` before the connections open and while they
are open. Opening ten thousand takes a while, so the two phases run one after
the other rather than alternated; each is repeated.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from pathlib import Path

from tests.bench import nginx, wrk
from tests.bench.harness import Results
from tests.bench.services import (
    LOAD_CPUS,
    Proc,
    host_of,
    note_placement,
    our_proxy,
    pinned,
    raise_nofile,
    rss_kib,
    ws_upstream,
)

BENCH = "scale"
WARMUP_CONNECTIONS = 50
SPARE_FILES = 256  # listeners, pooled upstream sockets, wrk's connections


class IdleClients(Proc):
    """A `wsclient idle` process holding its connections until told to let go."""

    def __init__(
        self, proc: asyncio.subprocess.Process, opened: int, failed: int, secs: float
    ) -> None:
        super().__init__(proc)
        self.opened = opened
        self.failed = failed
        self.secs = secs

    @classmethod
    async def open(cls, port: int, count: int, log: Path) -> IdleClients:
        argv = [
            sys.executable, "-m", "tests.bench.wsclient", "idle",
            "--port", str(port), "--host", host_of("ws"), "--count", str(count),
        ]  # fmt: skip
        with log.open("ab") as err:
            proc = await asyncio.create_subprocess_exec(
                *pinned(LOAD_CPUS, argv),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
            )
        assert proc.stdout is not None
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), 60 + count / 100)
            if not line.startswith(b"open "):
                raise RuntimeError(f"wsclient idle did not open its connections: {line!r}")
        except BaseException:
            await cls(proc, 0, 0, 0.0).stop()
            raise
        words = line.split()
        return cls(proc, int(words[1]), int(words[3]), float(words[5]))

    async def close(self) -> int:
        """Let go of the connections; how many the proxy had closed meanwhile."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(b"close\n")
        await self.proc.stdin.drain()
        out = await asyncio.wait_for(self.proc.stdout.read(), 60)
        await self.proc.wait()
        return int(json.loads(out.splitlines()[-1])["lost"])


ONE, MANY = "other backend, 1 conn", "other backend, 16 conns"


async def other_traffic(results: Results, subject: str, port: int, seconds: int) -> None:
    """wrk against the `other` backend, at 1 and at 16 connections."""
    url = f"http://127.0.0.1:{port}/"
    host = host_of("other")
    one = await wrk.run(url, connections=1, seconds=seconds, host=host, cpus=LOAD_CPUS)
    many = await wrk.run(url, connections=16, seconds=seconds, host=host, cpus=LOAD_CPUS)
    wrk.record(results, BENCH, ONE, subject, one)
    wrk.record(results, BENCH, MANY, subject, many)
    print(
        f"  {BENCH} {subject:<10} other backend p50 {one.p50_ms:.3f} ms "
        f"p99 {one.p99_ms:.3f} ms; {many.requests_per_sec:6.0f} req/s at 16 conns",
        flush=True,
    )


async def run(results: Results, workdir: Path, *, quick: bool) -> None:
    wanted = 2000 if quick else 10_000
    seconds = 1 if quick else 2
    rounds = 2
    # Inherited by the processes started here. The proxy holds two sockets per
    # tunnel; without the privilege to raise the hard limit, fewer tunnels fit.
    limit = raise_nofile(2 * (wanted + WARMUP_CONNECTIONS) + SPARE_FILES)
    count = min(wanted, (limit - SPARE_FILES) // 2 - WARMUP_CONNECTIONS)
    if count < wanted:
        results.note(
            f"{BENCH}: {count:,} WebSockets instead of {wanted:,}: the open-file limit is "
            f"{limit} and cannot be raised here, and the proxy needs two per connection"
        )
    case = f"{count:,} idle WebSockets"
    while_open = f"{count:,} open"
    note_placement(results)
    workdir.mkdir(parents=True, exist_ok=True)
    clients_log = workdir / "wsclient.log"
    async with contextlib.AsyncExitStack() as stack:
        upstream = await ws_upstream(workdir)
        stack.push_async_callback(upstream.stop)
        other = await nginx.upstream(workdir / "other", cpus=LOAD_CPUS)
        stack.push_async_callback(other.stop)
        ours = await our_proxy(workdir, {"ws": upstream.port, "other": other.port})
        stack.push_async_callback(ours.stop)

        # Warm up the code paths of a handshake and of a tunnel; these stay open, so
        # no memory they freed is reused by the connections counted below.
        warm = await IdleClients.open(ours.port, WARMUP_CONNECTIONS, clients_log)
        stack.push_async_callback(warm.stop)
        await wrk.run(
            f"http://127.0.0.1:{ours.port}/", connections=16, seconds=1,
            host=host_of("other"), cpus=LOAD_CPUS,
        )  # fmt: skip

        for _ in range(rounds):
            await other_traffic(results, "before", ours.port, seconds)
        before = rss_kib(ours.pid)
        clients = await IdleClients.open(ours.port, count, clients_log)
        stack.push_async_callback(clients.stop)
        await asyncio.sleep(0.5)  # let the last tunnels settle
        after = rss_kib(ours.pid)
        if clients.failed:
            results.note(f"{BENCH}: {clients.failed} of {count} WebSockets failed to open")
        per_conn = (after - before) * 1024 / max(clients.opened, 1) / 1000
        results.add(BENCH, case, "ours", "proxy RSS per connection", per_conn, "KB", False)
        rate = clients.opened / clients.secs if clients.secs else 0.0
        results.add(BENCH, case, "ours", "WebSocket opens", rate, "/s")
        results.add(BENCH, case, "before", "proxy RSS", before / 1024, "MiB", False)
        results.add(BENCH, case, while_open, "proxy RSS", after / 1024, "MiB", False)
        print(
            f"  {BENCH} {clients.opened} open: proxy RSS {before / 1024:.1f} -> "
            f"{after / 1024:.1f} MiB, {per_conn:.2f} KB per connection; opened at {rate:.0f}/s",
            flush=True,
        )
        for _ in range(rounds):
            await other_traffic(results, while_open, ours.port, seconds)
        lost = await clients.close() + await warm.close()
        if lost:
            results.note(f"{BENCH}: {lost} idle WebSockets were closed by the other side")
    results.goal(
        BENCH, case, "proxy RSS per connection", "ours", target="< 20 KB", check=lambda v: v < 20
    )
    unaffected = "(unaffected)"
    results.ratio(
        BENCH, ONE, "p50", while_open, "before", target=f"<= 1.2 {unaffected}",
        check=lambda v: v <= 1.2,
    )  # fmt: skip
    results.ratio(BENCH, ONE, "p99", while_open, "before")
    results.ratio(
        BENCH, MANY, "requests/s", while_open, "before", target=f">= 0.8 {unaffected}",
        check=lambda v: v >= 0.8,
    )  # fmt: skip
