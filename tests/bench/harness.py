"""Repetition, alternation and reporting shared by every benchmark.

Each figure is measured several times, alternating the subjects (ours and the
baselines) so that drift in a noisy machine hits them alike; we report the
median and the spread (min..max) and the ratio of medians.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Figure:
    """One measured quantity of one subject, over repetitions."""

    benchmark: str
    case: str
    subject: str
    metric: str
    unit: str
    samples: list[float] = field(default_factory=list)
    higher_is_better: bool = True

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else float("nan")

    @property
    def spread(self) -> tuple[float, float]:
        return (min(self.samples), max(self.samples)) if self.samples else (0.0, 0.0)


@dataclass
class Ratio:
    """A comparison of medians: `numerator op denominator`, where `op` is "/" (a
    ratio), "-" (a difference, in `unit`) or "" (one figure's own median)."""

    benchmark: str
    case: str
    metric: str
    numerator: str
    denominator: str
    value: float
    target: str = ""
    met: bool | None = None
    op: str = "/"
    unit: str = "x"

    @property
    def shown(self) -> str:
        if self.op == "/":
            return f"{self.value:.2f}x"
        sign = "+" if self.op == "-" and self.value >= 0 else ""
        return f"{sign}{_fmt(self.value)} {self.unit}"


class Results:
    def __init__(self) -> None:
        self.figures: dict[tuple[str, str, str, str], Figure] = {}
        self.ratios: list[Ratio] = []
        self.notes: list[str] = []
        self.started = time.time()

    def add(
        self,
        benchmark: str,
        case: str,
        subject: str,
        metric: str,
        value: float,
        unit: str,
        higher_is_better: bool = True,
    ) -> None:
        key = (benchmark, case, subject, metric)
        figure = self.figures.get(key)
        if figure is None:
            figure = self.figures[key] = Figure(
                benchmark, case, subject, metric, unit, higher_is_better=higher_is_better
            )
        figure.samples.append(value)

    def figure(self, benchmark: str, case: str, subject: str, metric: str) -> Figure | None:
        return self.figures.get((benchmark, case, subject, metric))

    def ratio(
        self,
        benchmark: str,
        case: str,
        metric: str,
        numerator: str,
        denominator: str,
        *,
        target: str = "",
        check: Callable[[float], bool] | None = None,
    ) -> Ratio | None:
        """Record `numerator`'s median divided by `denominator`'s; `check` judges
        that value against `target`."""
        return self._compare(benchmark, case, metric, numerator, denominator, "/", target, check)

    def difference(
        self,
        benchmark: str,
        case: str,
        metric: str,
        numerator: str,
        denominator: str,
        *,
        target: str = "",
        check: Callable[[float], bool] | None = None,
    ) -> Ratio | None:
        """How much `numerator`'s median exceeds `denominator`'s."""
        return self._compare(benchmark, case, metric, numerator, denominator, "-", target, check)

    def goal(
        self,
        benchmark: str,
        case: str,
        metric: str,
        subject: str,
        *,
        target: str,
        check: Callable[[float], bool],
    ) -> Ratio | None:
        """Record one figure's median against an absolute target."""
        return self._compare(benchmark, case, metric, subject, "", "", target, check)

    def _compare(
        self,
        benchmark: str,
        case: str,
        metric: str,
        numerator: str,
        denominator: str,
        op: str,
        target: str,
        check: Callable[[float], bool] | None,
    ) -> Ratio | None:
        top = self.figure(benchmark, case, numerator, metric)
        if top is None:
            return None
        value = top.median
        if op:
            bottom = self.figure(benchmark, case, denominator, metric)
            if bottom is None or (op == "/" and not bottom.median):
                return None
            value = value / bottom.median if op == "/" else value - bottom.median
        met = None if check is None else check(value)
        unit = "x" if op == "/" else top.unit
        ratio = Ratio(benchmark, case, metric, numerator, denominator, value, target, met, op, unit)
        self.ratios.append(ratio)
        return ratio

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  note: {text}", flush=True)

    def table(self) -> str:
        lines = ["| benchmark | case | subject | metric | median | spread (min..max) |"]
        lines.append("|---|---|---|---|---|---|")
        for f in self.figures.values():
            low, high = f.spread
            lines.append(
                f"| {f.benchmark} | {f.case} | {f.subject} | {f.metric} | "
                f"{_fmt(f.median)} {f.unit} | {_fmt(low)}..{_fmt(high)} |"
            )
        lines.append("")
        lines.append("| benchmark | case | metric | comparison | value | target | met |")
        lines.append("|---|---|---|---|---|---|---|")
        for r in self.ratios:
            met = "" if r.met is None else ("yes" if r.met else "**no**")
            compared = f"{r.numerator} {r.op} {r.denominator}" if r.op else r.numerator
            lines.append(
                f"| {r.benchmark} | {r.case} | {r.metric} | {compared} | "
                f"{r.shown} | {r.target} | {met} |"
            )
        return "\n".join(lines)

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        data: dict[str, Any] = {
            "machine": machine(),
            "started": self.started,
            "duration_secs": time.time() - self.started,
            "figures": [
                {**asdict(f), "median": f.median, "spread": f.spread} for f in self.figures.values()
            ],
            "ratios": [asdict(r) for r in self.ratios],
            "notes": self.notes,
        }
        path.write_text(json.dumps(data, indent=2))


def _fmt(value: float) -> str:
    if value != value:  # NaN
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


async def alternate(rounds: int, runners: Sequence[Callable[[], Awaitable[None]]]) -> None:
    """Run each runner once per round, rotating who goes first."""
    for round_no in range(rounds):
        order = list(runners[round_no % len(runners) :]) + list(runners[: round_no % len(runners)])
        for runner in order:
            await runner()


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]
