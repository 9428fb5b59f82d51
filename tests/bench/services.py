"""Processes the proxy benchmarks start, and what is read from them.

CPUs are split in two: the proxy under test (ours or nginx) gets the first,
the load (wrk, the WebSocket clients) and the upstream get the rest, so both
proxies run with one core of their own and the same neighbours. Every server
process announces its bound port on stdout as `listening PORT`; its stderr
goes to a log file that is quoted when it fails to start.
"""

from __future__ import annotations

import asyncio
import os
import resource
import shutil
import sys
from pathlib import Path

from tests.bench.harness import Results
from tests.support import compiled


def _cpu_split() -> tuple[frozenset[int], frozenset[int]]:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return frozenset(cpus), frozenset(cpus)
    return frozenset(cpus[:1]), frozenset(cpus[1:])


SUBJECT_CPUS, LOAD_CPUS = _cpu_split()
PLACEMENT = (
    f"CPU placement: proxy under test on {sorted(SUBJECT_CPUS)}, "
    f"load generator and upstream on {sorted(LOAD_CPUS)}"
)


def pinned(cpus: frozenset[int] | None, argv: list[str]) -> list[str]:
    """`argv` run on `cpus` only (children inherit the mask); as is without taskset."""
    if not cpus or shutil.which("taskset") is None:
        return argv
    return ["taskset", "-c", ",".join(map(str, sorted(cpus))), *argv]


def raise_nofile(want: int) -> int:
    """Raise this process's open-file limit towards `want`; returns the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    except (ValueError, OSError):  # raising the hard limit needs privilege
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_kib(pid: int) -> int:
    """Resident memory of a process (VmRSS), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process and its direct children (nginx's workers)."""
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        pids += [int(child) for child in (task / "children").read_text().split()]
    total = 0
    for each in pids:
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited meanwhile
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICK


class Proc:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, *argv: str, ready_line: bytes | None = None) -> Proc:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdout=asyncio.subprocess.PIPE if ready_line else asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        if ready_line:
            assert proc.stdout is not None
            async with asyncio.timeout(60):
                while ready_line not in await proc.stdout.readline():
                    if proc.returncode is not None:
                        raise RuntimeError(f"{argv[0]} exited")
        return cls(proc)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


class Server(Proc):
    """A process that prints `listening PORT` once it accepts connections."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        super().__init__(proc)
        self.port = port
        self.said: list[str] = []  # what followed the port on its `listening` line

    @property
    def pid(self) -> int:
        return self.proc.pid

    @classmethod
    async def launch(
        cls,
        argv: list[str],
        log: Path,
        *,
        cpus: frozenset[int] | None = None,
        timeout: float = 30,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Server:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as err:
            proc = await asyncio.create_subprocess_exec(
                *pinned(cpus, argv), stdout=asyncio.subprocess.PIPE, stderr=err, env=env, cwd=cwd
            )
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(timeout):
                while True:
                    line = await proc.stdout.readline()
                    if line.startswith(b"listening "):
                        server = cls(proc, int(line.split()[1]))
                        server.said = line.decode().split()[2:]
                        return server
                    if not line:
                        await proc.wait()
                        break
        except BaseException:
            await cls(proc, 0).stop()
            raise
        tail = log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{argv[0]} {argv[1:3]} exited at start-up: {tail}")


CLUSTER = "bench.test"


def host_of(backend: str) -> str:
    """The Host header that routes to `backend` on our proxy."""
    return f"{backend}.{CLUSTER}"


async def our_proxy(
    workdir: Path,
    routes: dict[str, int],
    *,
    workers: int = 1,
    pin: bool = True,
    pure: bool = False,
) -> Server:
    """Our drone proxy in its own process(es), on the subject CPUs unless `pin` is
    false; routes: backend → port. It runs the build the image ships (the hot
    modules compiled, tests/support/compiled.py) unless `pure` asks for the
    checkout's sources."""
    argv = [sys.executable, "-m", "tests.bench.proxyproc", "--cluster", CLUSTER]
    argv += ["--workers", str(workers)]
    for backend, port in routes.items():
        argv += ["--route", f"{backend}=127.0.0.1:{port}"]
    build = "pure" if pure else "compiled"
    log = workdir / f"ours-{workers}w-{build}.log"
    cpus = SUBJECT_CPUS if pin else None
    if pure:
        server = await Server.launch(argv, log, cpus=cpus)
    else:
        # From the workdir, so that `python -m` does not put the checkout's sources
        # before the installed wheel; the checkout after it, for tests.bench.
        env = {**os.environ, "PYTHONPATH": f"{compiled.site()}:{compiled.ROOT}"}
        server = await Server.launch(argv, log, cpus=cpus, env=env, cwd=workdir)
    if server.said != [build]:
        await server.stop()
        raise RuntimeError(f"the proxy was to run {build}, and runs {server.said}")
    return server


async def ws_upstream(workdir: Path) -> Server:
    """The WebSocket echo-and-sink upstream on the load CPUs."""
    argv = [sys.executable, "-m", "tests.bench.wsecho"]
    return await Server.launch(argv, workdir / "wsecho.log", cpus=LOAD_CPUS)


def note_placement(results: Results) -> None:
    if PLACEMENT not in results.notes:
        results.note(PLACEMENT)
