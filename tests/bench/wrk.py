"""Run `wrk` (Debian's package) and read its figures."""

from __future__ import annotations

import asyncio
import re
import shutil
from dataclasses import dataclass

from tests.bench.harness import Results
from tests.bench.services import pinned

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


@dataclass
class WrkResult:
    requests_per_sec: float
    p50_ms: float
    p99_ms: float
    errors: int


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse(output: str) -> WrkResult:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", output, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", output, re.M).group(1))  # type: ignore[union-attr]
    errors = 0
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if socket_errors:
        errors += sum(int(g) for g in socket_errors.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non2xx:
        errors += int(non2xx.group(1))
    return WrkResult(rps, p50, p99, errors)


async def run(
    url: str,
    *,
    connections: int,
    seconds: float,
    threads: int = 1,
    host: str | None = None,
    cpus: frozenset[int] | None = None,
) -> WrkResult:
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed: run `make bench` (it installs Debian's wrk)")
    argv = [
        "wrk", "--latency", "-t", str(min(threads, connections)), "-c", str(connections),
        "-d", f"{seconds:g}s", url,
    ]  # fmt: skip
    if host:
        argv += ["-H", f"Host: {host}"]
    proc = await asyncio.create_subprocess_exec(
        *pinned(cpus, argv), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), seconds + 30)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed: {err.decode()}")
    return parse(out.decode())


def record(results: Results, benchmark: str, case: str, subject: str, found: WrkResult) -> None:
    """Add one run's requests/s, p50 and p99; note its errors."""
    results.add(benchmark, case, subject, "requests/s", found.requests_per_sec, "req/s")
    results.add(benchmark, case, subject, "p50", found.p50_ms, "ms", False)
    results.add(benchmark, case, subject, "p99", found.p99_ms, "ms", False)
    if found.errors:
        results.note(f"{benchmark} {case} {subject}: {found.errors} errors")
