"""Pure helpers for what a running backend emits: output lines and resource shares."""

from __future__ import annotations

from drone.agent.docker_runtime import StatsSample


class LineBuffer:
    """Turns output chunks into whole lines (newline kept), splitting overlong ones.

    Docker hands output over in arbitrary pieces; a line is published once it
    is complete, or once it reaches `max_chars` so one endless line cannot
    hold memory.
    """

    def __init__(self, max_chars: int) -> None:
        self._max = max(1, max_chars)
        self._partial = ""

    def feed(self, chunk: str) -> list[str]:
        text = self._partial + chunk
        lines = text.splitlines(keepends=True)
        self._partial = ""
        if lines and not lines[-1].endswith(("\n", "\r")):
            self._partial = lines.pop()
        out: list[str] = []
        for line in lines:
            out.extend(self._split(line))
        while len(self._partial) >= self._max:
            out.append(self._partial[: self._max])
            self._partial = self._partial[self._max :]
        return out

    def flush(self) -> list[str]:
        """The unfinished last line, when the stream ends."""
        rest, self._partial = self._partial, ""
        return [rest] if rest else []

    def _split(self, line: str) -> list[str]:
        return [line[i : i + self._max] for i in range(0, len(line), self._max)]


def cpu_percent(sample: StatsSample) -> float:
    """CPU used between the two readings, as a share of the whole machine (0-100).

    `system_cpu_usage` counts the time of all CPUs, so the ratio is already
    relative to the whole machine: 100 means every core busy.
    """
    used = sample.cpu_total_ns - sample.cpu_prev_total_ns
    elapsed = sample.system_ns - sample.system_prev_ns
    if used <= 0 or elapsed <= 0 or sample.cpu_prev_total_ns == 0:
        return 0.0
    return min(100.0, 100.0 * used / elapsed)


def memory_percent(sample: StatsSample, host_memory_bytes: int = 0) -> float:
    """Memory in use as a share of the container's limit (the host's memory without one)."""
    limit = sample.memory_limit_bytes or host_memory_bytes
    if limit <= 0:
        return 0.0
    return min(100.0, 100.0 * sample.memory_used_bytes / limit)
