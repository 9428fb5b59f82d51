"""The proxy's own work per request, with no sockets: pure Python against compiled.

A browser socket and a backend socket of the in-memory test bed
(tests/proxy/memory.py) carry small keep-alive requests and 20-byte responses
through the real client, exchange, upstream and response reader, on uvloop.
What is timed is Python and h11 alone: no system calls, no other process. Each
build runs in a process of its own (the compiled one from the wheel the image
ships), alternated; `python -m tests.bench.path N` is one such process.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import uvloop

from tests.bench.harness import Results, alternate
from tests.support import compiled

BENCH = "path"
CASE = "GET, 20-byte answer"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Tue, 01 Dec 2026 17:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 20\r\nConnection: keep-alive\r\n\r\n"
    b"hello from upstream\n"
)


async def requests_in_memory(count: int) -> float:
    """Seconds per request over `count` requests, after a warm-up."""
    from tests.proxy.memory import Bed  # the checkout's or the wheel's proxy, as imported

    bed = Bed(asyncio.get_running_loop(), upstream_pool_size=64)
    request = b"GET / HTTP/1.1\r\nHost: " + bed.route("small") + b"\r\n\r\n"
    browser = bed.browser()
    browser.send(request)
    backend = await bed.backend()

    async def burst(n: int) -> None:
        for _ in range(n):
            if not backend.transport.written:
                await asyncio.sleep(0)  # the first request connects in a task
            backend.transport.written.clear()
            backend.answer(RESPONSE)
            answered = browser.received()
            assert answered.endswith(b"hello from upstream\n"), answered
            browser.send(request)

    await burst(1000)
    began = time.perf_counter()
    await burst(count)
    return (time.perf_counter() - began) / count


async def measure(results: Results, workdir: Path, subject: str, count: int) -> None:
    env = dict(os.environ)
    cwd = None
    if subject == "compiled":
        # As tests/bench/services.our_proxy runs it: the wheel first, then the checkout.
        env["PYTHONPATH"] = f"{compiled.site()}:{compiled.ROOT}"
        cwd = workdir
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.bench.path", str(count),
        stdout=asyncio.subprocess.PIPE, env=env, cwd=cwd,
    )  # fmt: skip
    out, _ = await proc.communicate()
    build, seconds = out.decode().split()
    if proc.returncode != 0 or build != subject:
        raise RuntimeError(f"the {subject} run said {out!r}")
    micros = float(seconds) * 1e6
    results.add(BENCH, CASE, subject, "per request", micros, "us", False)
    print(f"  {BENCH} {subject:<8} {micros:6.1f} us per request", flush=True)


async def run(results: Results, workdir: Path, *, quick: bool) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    count = 5_000 if quick else 30_000
    runners = [
        lambda subject=subject: measure(results, workdir, subject, count)
        for subject in ("pure", "compiled")
    ]
    await alternate(2 if quick else 3, runners)
    results.ratio(BENCH, CASE, "per request", "compiled", "pure")


def main() -> None:
    import drone.proxy

    seconds = uvloop.run(requests_in_memory(int(sys.argv[1])))
    print("compiled" if drone.proxy.compiled() else "pure", f"{seconds:.9f}")


if __name__ == "__main__":
    main()
