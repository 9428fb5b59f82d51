"""`python -m tests.bench [--quick] [--only NAME ...]`: run the benchmarks, print a
table of medians, spreads and ratios, and write the results as JSON."""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import uvloop

from tests.bench import flood, path, proxy, scale, scheduler, spawn, sweep, websocket, workers
from tests.bench.harness import Results

Runner = Callable[[Results, Path], Awaitable[None]]

SUITES: dict[str, Callable[..., Awaitable[None]]] = {
    "scheduler": scheduler.run,
    "proxy": proxy.run,
    "path": path.run,
    "workers": workers.run,
    "websocket": websocket.run,
    "flood": flood.run,
    "scale": scale.run,
    "spawn": spawn.run,
    "sweep": sweep.run,
}


async def main(args: argparse.Namespace) -> int:
    results = Results()
    chosen = args.only or list(SUITES)
    with tempfile.TemporaryDirectory(prefix="plane-bench-") as tmp:
        for name in chosen:
            print(f"== {name}", flush=True)
            began = time.perf_counter()
            try:
                await SUITES[name](results, Path(tmp) / name, quick=args.quick)
            except Exception as exc:  # one broken suite must not hide the others' figures
                results.note(f"{name} failed: {type(exc).__name__}: {exc}")
            print(f"   ({time.perf_counter() - began:.0f} s)", flush=True)
    print()
    print(results.table())
    results.write(Path(args.out))
    print(f"\nresults written to {args.out}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="make bench")
    parser.add_argument("--quick", action="store_true", help="fewer, shorter runs")
    parser.add_argument("--only", action="append", choices=list(SUITES))
    parser.add_argument("--out", default="bench-results/latest.json")
    raise SystemExit(uvloop.run(main(parser.parse_args())))
