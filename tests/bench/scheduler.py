"""Scheduler throughput and latency with simulated drones.

Subjects, alternated: the floor (a raw nats-py request/reply to a trivial
responder), one controller, two controllers (separate processes, one queue
group), and one controller asked with a lock: a new lock each request (each
claims the lock, places a backend, records its drone), and a few locks asked
again and again (each answered with the running holder). Load: a fixed number
of requests kept in flight for a fixed time.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sys
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

from shared import bus, protocol, subjects, wire
from tests.bench.dronesim import ECHO_SUBJECT
from tests.bench.harness import Results, alternate, percentile
from tests.bench.services import Proc
from tests.support.natsserver import NatsServer

CLUSTER = "bench.test"
BIN = Path(sys.executable).parent


Payload = bytes | Callable[[], bytes]


async def load(
    nc: bus.NatsClient, subject: str, payload: Payload, *, concurrency: int, seconds: float
) -> tuple[float, list[float], int]:
    """Keep `concurrency` requests in flight; returns (req/s, latencies in ms, failures).
    `payload` is the request, or makes each one."""
    latencies: list[float] = []
    failures = 0
    deadline = time.perf_counter() + seconds
    make = payload if callable(payload) else lambda: payload

    async def worker() -> None:
        nonlocal failures
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            try:
                reply = await nc.request(subject, make(), timeout=5)
            except Exception:
                failures += 1
                continue
            latencies.append((time.perf_counter() - start) * 1000)
            if reply.data.startswith(b'"No'):
                failures += 1

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(latencies) / (time.perf_counter() - began), latencies, failures


async def wait_for_drones(nc: bus.NatsClient, count: int, timeout: float = 60) -> None:
    async with asyncio.timeout(timeout):
        while True:
            try:
                drones = await bus.request(
                    nc, subjects.list_drones(CLUSTER), None, list[protocol.DroneInfo], timeout=5
                )
                if sum(d.ready for d in drones) >= count:
                    return
            except bus.BusError:
                pass
            await asyncio.sleep(0.2)


class Case:
    """One drone count: the simulated drones, and 0..2 controllers started on demand."""

    def __init__(self, results: Results, nc: bus.NatsClient, url: str, count: int) -> None:
        self.results = results
        self.nc = nc
        self.url = url
        self.count = count
        self.name = f"{count} drones"
        self.controllers: list[Proc] = []

    async def set_controllers(self, n: int) -> None:
        while len(self.controllers) > n:
            await self.controllers.pop().stop()
        while len(self.controllers) < n:
            argv = [
                str(BIN / "plane-controller"), "--nats", self.url, "--cluster", CLUSTER,
                "--metrics-listen", "127.0.0.1:0", "--log-level", "warning",
            ]  # fmt: skip
            self.controllers.append(await Proc.start(*argv))
        if n:
            await wait_for_drones(self.nc, self.count)

    async def measure(self, name: str, subject: str, payload: Payload, seconds: float) -> None:
        rps, lat, failed = await load(self.nc, subject, payload, concurrency=32, seconds=seconds)
        p50, p99 = percentile(lat, 50), percentile(lat, 99)
        self.results.add("scheduler", self.name, name, "requests/s", rps, "req/s")
        self.results.add("scheduler", self.name, name, "p50", p50, "ms", False)
        self.results.add("scheduler", self.name, name, "p99", p99, "ms", False)
        if failed:
            self.results.note(f"scheduler {self.name} {name}: {failed} failed requests")
        print(
            f"  scheduler {self.name:>11} {name:<18} {rps:8.0f} req/s "
            f"p50 {p50:.2f} ms p99 {p99:.2f} ms",
            flush=True,
        )

    async def stop(self) -> None:
        await self.set_controllers(0)


async def run(results: Results, workdir: Path, *, quick: bool) -> None:
    drone_counts = [100] if quick else [100, 1000]
    seconds = 2.0 if quick else 4.0
    rounds = 2 if quick else 3
    server = await NatsServer.start(workdir / "nats-sched")
    nc = await bus.connect(bus.NatsSettings(servers=[server.url]), name="bench")
    request = protocol.ScheduleRequest(
        cluster=CLUSTER, executable=protocol.Executable(image="plane-testbackend:latest")
    )
    payload = wire.encode(request)
    schedule = subjects.schedule(CLUSTER)
    locks = itertools.count()

    def new_lock() -> bytes:
        return wire.encode(msgspec.structs.replace(request, lock=f"bench-{next(locks)}"))

    def held_lock() -> bytes:
        return wire.encode(msgspec.structs.replace(request, lock=f"held-{next(locks) % 8}"))

    try:
        for count in drone_counts:
            argv = [
                str(BIN / "python"), "-m", "tests.bench.dronesim",
                "--nats", server.url, "--cluster", CLUSTER, "--count", str(count),
            ]  # fmt: skip
            sim = await Proc.start(*argv, ready_line=b"ready")
            case = Case(results, nc, server.url, count)

            async def floor(case: Case = case) -> None:
                await case.measure("raw request/reply", ECHO_SUBJECT, payload, seconds)

            async def one(case: Case = case) -> None:
                await case.set_controllers(1)
                await case.measure("1 controller", schedule, payload, seconds)

            async def two(case: Case = case) -> None:
                await case.set_controllers(2)
                await case.measure("2 controllers", schedule, payload, seconds)

            async def locked(case: Case = case) -> None:
                await case.set_controllers(1)
                await case.measure("1 controller, locked", schedule, new_lock, seconds)

            async def held(case: Case = case) -> None:
                await case.set_controllers(1)
                await case.measure("1 controller, held", schedule, held_lock, seconds)

            try:
                await alternate(rounds, [floor, one, two, locked, held])
            finally:
                await case.stop()
                await sim.stop()
            results.ratio(
                "scheduler", case.name, "requests/s", "2 controllers", "1 controller",
                target="> 1 (two faster than one)", check=lambda v: v > 1,
            )  # fmt: skip
            results.ratio(
                "scheduler", case.name, "p50", "1 controller", "raw request/reply",
                target="< 4", check=lambda v: v < 4,
            )  # fmt: skip
            locked_rate = results.figure(
                "scheduler", case.name, "1 controller, locked", "requests/s"
            )
            if locked_rate is not None:
                results.ratio(
                    "scheduler", case.name, "requests/s", "1 controller, locked", "1 controller",
                )  # fmt: skip
                results.note(
                    f"scheduler {case.name}: locked schedules/s per controller "
                    f"{locked_rate.median:,.0f} (target >= 1,000)"
                )
            results.ratio(
                "scheduler", case.name, "p50", "1 controller, locked", "1 controller",
                target="<= 2", check=lambda v: v <= 2,
            )  # fmt: skip
    finally:
        with contextlib.suppress(Exception):
            await nc.close()
        await server.stop()
