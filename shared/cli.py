"""The `plane` command-line client: a thin layer over `shared.client`.

Every command takes `--json` (one JSON document per line on stdout) and exits
non-zero with a one-line reason on any failure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import msgspec

from shared import __version__, authconf, config, logs
from shared.bus import NatsSettings
from shared.client import (
    BackendFailed,
    PlaneClient,
    PlaneError,
    Timeout,
    build_request,
)
from shared.protocol import BackendState, PullPolicy, ResourceLimits


class CliSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    nats: NatsSettings = msgspec.field(default_factory=NatsSettings)
    cluster: str = "plane.localhost"
    url_scheme: str = "https"
    timeout_secs: float = 10.0


class Output:
    """Human text or JSON lines, to one stream."""

    def __init__(self, as_json: bool, stream: TextIO = sys.stdout) -> None:
        self.as_json = as_json
        self.stream = stream

    def emit(self, value: Any, text: str) -> None:
        if self.as_json:
            self.stream.write(msgspec.json.encode(value).decode() + "\n")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


def _pairs(values: Sequence[str] | None, flag: str) -> dict[str, str]:
    result = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise PlaneError(f"{flag} expects KEY=VALUE, got {item!r}")
        result[key] = value
    return result


def _mounts(values: Sequence[str] | None) -> list[dict[str, Any]]:
    mounts = []
    for item in values or []:
        try:
            mount = json.loads(item)
        except json.JSONDecodeError:
            raise PlaneError(f"--mount expects a JSON object, got {item!r}") from None
        if not isinstance(mount, dict):
            raise PlaneError(f"--mount expects a JSON object, got {item!r}")
        mounts.append(mount)
    return mounts


async def cmd_spawn(plane: PlaneClient, args: argparse.Namespace, out: Output) -> int:
    limits = ResourceLimits(
        cpu_period=args.cpu_period,
        cpu_period_percent=args.cpu_percent,
        cpu_time_limit=args.cpu_time_limit,
        memory_limit_bytes=args.memory,
    )
    request = build_request(
        plane.cluster,
        image=args.image,
        env=_pairs(args.env, "--env"),
        port=args.port,
        max_idle_secs=args.max_idle,
        metadata=_pairs(args.metadata, "--metadata"),
        backend_id=args.backend_id,
        require_bearer_token=args.bearer_token,
        pull_policy=PullPolicy(args.pull_policy),
        username=args.username,
        password=args.password,
        limits=limits,
        volume_mounts=_mounts(args.mount),
        lock=args.lock,
        lifetime_limit_secs=args.lifetime,
        termination_grace_secs=args.grace,
        pool=args.pool,
    )
    scheduled = await plane.schedule(request)
    url = plane.url(scheduled.backend_id)
    result = {**msgspec.to_builtins(scheduled), "url": url}
    if scheduled.spawned is False:
        text = f"backend {scheduled.backend_id} holds lock {args.lock}, on drone {scheduled.drone}"
    else:
        text = f"backend {scheduled.backend_id} scheduled on drone {scheduled.drone}"
    out.emit({"event": "scheduled", **result} if args.wait else result, text)
    if scheduled.bearer_token and not out.as_json:
        out.emit(None, f"bearer token: {scheduled.bearer_token}")
    if not args.wait:
        if not out.as_json:
            out.emit(None, url)
        return 0
    try:
        async for message in plane.follow_states(scheduled.backend_id, timeout=args.wait_timeout):
            out.emit(
                {"event": "state", **msgspec.to_builtins(message)},
                f"  {message.time:%H:%M:%S.%f}"[:-3] + f"  {message.state.value}",
            )
            if message.state is BackendState.READY:
                out.emit({"event": "ready", "url": url}, f"ready: {url}")
                return 0
            if message.state.terminal:
                raise BackendFailed(message)
    except Timeout:
        raise PlaneError(
            f"backend {scheduled.backend_id} not Ready within {args.wait_timeout:g}s"
        ) from None
    raise PlaneError(f"state stream of backend {scheduled.backend_id} ended")


def _state_line(message: Any) -> str:
    drone = f" on {message.drone}" if getattr(message, "drone", None) else ""
    why = ""
    if getattr(message, "reason", None):
        code = getattr(message, "exit_code", None)
        why = f" ({message.reason}{f', exit code {code}' if code is not None else ''})"
    return f"{message.backend}  {message.state.value}  {message.time:%Y-%m-%d %H:%M:%S}{drone}{why}"


async def cmd_status(plane: PlaneClient, args: argparse.Namespace, out: Output) -> int:
    if args.backend is None:
        return await cmd_backends(plane, args, out)
    if not args.follow:
        message = await plane.status(args.backend)
        out.emit(message, _state_line(message))
        return 0
    async for message in plane.watch_states(args.backend):
        out.emit(message, _state_line(message))
    return 0


async def cmd_logs(plane: PlaneClient, args: argparse.Namespace, out: Output) -> int:
    try:
        async for line in plane.logs(args.backend, follow=args.follow):
            out.emit(line, f"[{line.kind.value.lower()}] {line.text.rstrip()}")
    except PlaneError as exc:
        if "within" not in str(exc):  # the end of stored lines is no failure
            raise
    return 0


async def cmd_stats(plane: PlaneClient, args: argparse.Namespace, out: Output) -> int:
    async with asyncio.timeout(None if args.follow else args.stats_timeout):
        async for sample in plane.stats(args.backend):
            out.emit(
                sample,
                f"cpu {sample.cpu_use_percent:.1f}%  memory {sample.mem_use_percent:.1f}%",
            )
            if not args.follow:
                return 0
    return 0


async def cmd_fetch(plane: PlaneClient, args: argparse.Namespace, out: Output) -> int:
    found = await plane.fetch(args.lock)
    if found is None:
        raise PlaneError(f"no backend holds lock {args.lock}")
    url = plane.url(found.backend_id)
    out.emit(
        {**msgspec.to_builtins(found), "lock": args.lock, "url": url},
        f"backend {found.backend_id} holds lock {args.lock}, on drone {found.drone}: {url}",
    )
    return 0


async def cmd_terminate(plane: PlaneClient, args: argparse.Namespace, out: Output) -> int:
    await plane.terminate(args.backend, hard=args.hard)
    out.emit({"terminated": args.backend}, f"backend {args.backend} terminated")
    return 0


async def cmd_drain(plane: PlaneClient, args: argparse.Namespace, out: Output) -> int:
    drain = not args.cancel
    await plane.drain(args.drone, drain)
    verb = "draining" if drain else "no longer draining"
    out.emit({"drone": args.drone, "drain": drain}, f"drone {args.drone} {verb}")
    return 0


async def cmd_drones(plane: PlaneClient, args: argparse.Namespace, out: Output) -> int:
    drones = await plane.drones()
    if out.as_json:
        out.emit(drones, "")
        return 0
    if not drones:
        out.emit(None, f"no drones in cluster {plane.cluster}")
    for d in drones:
        out.emit(
            None,
            f"{d.drone_id}  {d.state.value:<9} ready={str(d.ready).lower():<5} "
            f"backends={d.running_backends:<4} ip={d.ip or '-'} pool={d.pool or '-'}",
        )
    return 0


async def cmd_backends(plane: PlaneClient, args: argparse.Namespace, out: Output) -> int:
    backends = await plane.backends()
    if out.as_json:
        out.emit(backends, "")
        return 0
    if not backends:
        out.emit(None, f"no backends in cluster {plane.cluster}")
    for b in backends:
        out.emit(None, f"{b.backend_id}  {b.state.value:<10} drone={b.drone or '-'}")
    return 0


Command = Callable[[PlaneClient, argparse.Namespace, Output], Awaitable[int]]
OfflineCommand = Callable[[argparse.Namespace, CliSettings, Output], int]


def cmd_auth_init(args: argparse.Namespace, settings: CliSettings, out: Output) -> int:
    written = authconf.init(Path(args.dir), settings.cluster, account=args.account)
    return _report_written(written, out, args.dir)


def cmd_auth_add_drone(args: argparse.Namespace, settings: CliSettings, out: Output) -> int:
    written = authconf.add_drone(Path(args.dir), args.drone)
    return _report_written(written, out, args.dir)


def cmd_auth_remove_drone(args: argparse.Namespace, settings: CliSettings, out: Output) -> int:
    written = authconf.remove_drone(Path(args.dir), args.drone)
    return _report_written(written, out, args.dir)


def _report_written(written: list[Path], out: Output, directory: str) -> int:
    for path in written:
        out.emit({"written": str(path)}, f"wrote {path}")
    conf = Path(directory) / authconf.CONF_FILE
    out.emit(
        None,
        f"include {conf.resolve()} from the nats-server configuration (nats-server reads the "
        "path as relative to that file's directory), then reload it (nats-server --signal reload)",
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plane", description="Schedule and inspect session backends of a Plane cluster."
    )
    parser.add_argument("--version", action="version", version=f"plane {__version__}")
    parser.add_argument(
        "--nats",
        metavar="URL[,URL...]",
        help="NATS servers, e.g. nats://user:pass@host:4222 (env PLANE_NATS)",
    )
    parser.add_argument(
        "--creds",
        metavar="FILE",
        help="credentials from `plane auth` (or a NATS JWT .creds file); "
        "env PLANE_NATS__CREDENTIALS_FILE",
    )
    parser.add_argument("--cluster", metavar="NAME", help="cluster name (env PLANE_CLUSTER)")
    parser.add_argument("--config", metavar="FILE", help="TOML settings file (env PLANE_CONFIG)")
    parser.add_argument("--json", action="store_true", help="print JSON, one document per line")
    parser.add_argument(
        "--timeout", type=float, help="seconds to wait for each answer (default 10)"
    )
    parser.add_argument(
        "--url-scheme",
        choices=["http", "https"],
        help="scheme of printed URLs (env PLANE_URL_SCHEME)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    spawn = sub.add_parser("spawn", help="schedule a backend")
    spawn.add_argument("image", help="container image")
    spawn.add_argument("--env", "-e", action="append", metavar="KEY=VALUE", help="environment")
    spawn.add_argument("--port", type=int, help="port the container listens on (default 8080)")
    spawn.add_argument(
        "--max-idle", type=int, default=30, metavar="SECS", help="idle seconds before it stops"
    )
    spawn.add_argument("--metadata", "-m", action="append", metavar="KEY=VALUE", help="metadata")
    spawn.add_argument("--backend-id", help="choose the backend ID (DNS label)")
    spawn.add_argument("--bearer-token", action="store_true", help="require a bearer token")
    spawn.add_argument("--pool", metavar="NAME", help="only drones started with --pool NAME")
    spawn.add_argument(
        "--lifetime", type=int, metavar="SECS", help="terminate at this age, even while in use"
    )
    spawn.add_argument(
        "--grace", type=int, metavar="SECS", help="SIGTERM grace before SIGKILL (drone's default)"
    )
    spawn.add_argument(
        "--lock", metavar="KEY", help="get or create: the live backend holding KEY, else a new one"
    )
    spawn.add_argument(
        "--pull-policy",
        choices=[p.value for p in PullPolicy],
        default=PullPolicy.IF_NOT_PRESENT.value,
    )
    spawn.add_argument("--username", help="registry user name")
    spawn.add_argument("--password", help="registry password")
    spawn.add_argument("--cpu-period", type=int, metavar="SECS", help="CPU accounting period")
    spawn.add_argument("--cpu-percent", type=int, metavar="PCT", help="share of the period")
    spawn.add_argument("--cpu-time-limit", type=int, metavar="SECS", help="CPU seconds allowed")
    spawn.add_argument("--memory", type=int, metavar="BYTES", help="memory limit")
    spawn.add_argument("--mount", action="append", metavar="JSON", help="Docker Mount object")
    spawn.add_argument("--wait", action="store_true", help="follow its states until Ready")
    spawn.add_argument("--wait-timeout", type=float, default=120.0, metavar="SECS")
    spawn.set_defaults(run=cmd_spawn)

    status = sub.add_parser("status", help="state of a backend, or of all backends")
    status.add_argument("backend", nargs="?")
    status.add_argument("--follow", "-f", action="store_true", help="follow state changes")
    status.set_defaults(run=cmd_status)

    logs = sub.add_parser("logs", help="a backend's output")
    logs.add_argument("backend")
    logs.add_argument("--follow", "-f", action="store_true")
    logs.set_defaults(run=cmd_logs)

    stats = sub.add_parser("stats", help="a backend's CPU and memory use")
    stats.add_argument("backend")
    stats.add_argument("--follow", "-f", action="store_true")
    stats.add_argument("--stats-timeout", type=float, default=15.0, metavar="SECS")
    stats.set_defaults(run=cmd_stats)

    fetch = sub.add_parser("fetch", help="the backend holding a lock (exits 1 if none does)")
    fetch.add_argument("lock", metavar="KEY")
    fetch.set_defaults(run=cmd_fetch)

    terminate = sub.add_parser("terminate", help="stop a backend")
    terminate.add_argument("backend")
    terminate.add_argument(
        "--hard", action="store_true", help="kill at once (default: SIGTERM, grace, SIGKILL)"
    )
    terminate.set_defaults(run=cmd_terminate)

    drain = sub.add_parser("drain", help="stop a drone from taking new backends")
    drain.add_argument("drone")
    drain.add_argument("--cancel", action="store_true", help="take backends again")
    drain.set_defaults(run=cmd_drain)

    auth = sub.add_parser(
        "auth", help="make NATS users and credentials for each role (no NATS needed)"
    )
    auth_sub = auth.add_subparsers(dest="auth_command", required=True, metavar="ACTION")
    init = auth_sub.add_parser(
        "init", help="a new set-up in DIR for --cluster: controller, client and admin"
    )
    init.add_argument("dir")
    init.add_argument("--account", default=authconf.DEFAULT_ACCOUNT, help="NATS account name")
    init.set_defaults(offline=cmd_auth_init)
    add = auth_sub.add_parser("add-drone", help="a drone identity (again: a new key, rotation)")
    add.add_argument("dir")
    add.add_argument("drone")
    add.set_defaults(offline=cmd_auth_add_drone)
    remove = auth_sub.add_parser("remove-drone", help="retire a drone identity")
    remove.add_argument("dir")
    remove.add_argument("drone")
    remove.set_defaults(offline=cmd_auth_remove_drone)

    sub.add_parser("drones", help="list the drones of the cluster").set_defaults(run=cmd_drones)
    sub.add_parser("backends", help="list the backends of the cluster").set_defaults(
        run=cmd_backends
    )
    return parser


async def _run(args: argparse.Namespace, settings: CliSettings, out: Output) -> int:
    plane = await PlaneClient.connect(
        settings.nats,
        settings.cluster,
        timeout=settings.timeout_secs,
        scheme=settings.url_scheme,
    )
    async with plane:
        command: Command = args.run
        return await command(plane, args, out)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.setup("error")
    out = Output(args.json)
    try:
        settings = config.load(
            CliSettings,
            path=args.config,
            flags={
                "nats.servers": args.nats.split(",") if args.nats else None,
                "nats.credentials_file": args.creds,
                "cluster": args.cluster,
                "url_scheme": args.url_scheme,
                "timeout_secs": args.timeout,
            },
            aliases={"nats": ("nats", "servers")},
        )
        offline: OfflineCommand | None = getattr(args, "offline", None)
        if offline is not None:
            return offline(args, settings, out)
        return asyncio.run(_run(args, settings, out))
    except (PlaneError, config.ConfigError, authconf.AuthError) as exc:
        print(f"plane: {exc}", file=sys.stderr)
        return 1
    except TimeoutError:
        print("plane: timed out", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
