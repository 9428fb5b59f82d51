"""`plane-drone` / `python -m drone`: settings, logging, run until SIGTERM.

Exit status: 0 after a clean stop, 2 for unusable settings, 1 when the drone
could not start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys

from drone.config import ENV_ALIASES, DroneSettings, check
from drone.service import Drone, DroneError
from shared import daemon
from shared.config import ConfigError

log = logging.getLogger("drone")


def build_parser() -> argparse.ArgumentParser:
    parser = daemon.common_parser(
        "plane-drone",
        "Plane drone: runs backends in Docker and proxies to them.",
        DroneSettings,
    )
    parser.add_argument(
        "--cluster", metavar="NAME", help="cluster this drone serves (env PLANE_CLUSTER)"
    )
    parser.add_argument(
        "--ip", metavar="ADDR", help="public IP of this host (env PLANE_IP; default: discovered)"
    )
    parser.add_argument(
        "--pool",
        metavar="NAME",
        help="take only schedule requests naming this pool (env PLANE_POOL; default: the "
        "unnamed pool)",
    )
    parser.add_argument(
        "--proxy-listen",
        metavar="HOST:PORT",
        help="proxy address (env PLANE_PROXY_LISTEN; default 127.0.0.1:8080)",
    )
    parser.add_argument(
        "--proxy-workers",
        metavar="N",
        help="processes serving the proxy port: 1 (default), N, or 0/'auto' for one per CPU "
        "(env PLANE_PROXY_WORKERS)",
    )
    parser.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        help="Prometheus endpoint, or 'off' (env PLANE_METRICS_LISTEN; default 127.0.0.1:9102)",
    )
    parser.add_argument(
        "--state-dir",
        metavar="DIR",
        help="where the drone keeps its ID and drain flag (env PLANE_STATE_DIR)",
    )
    parser.add_argument(
        "--docker-network",
        metavar="NAME",
        help="Docker network for backends (env PLANE_DOCKER_NETWORK; default: bridge)",
    )
    return parser


def settings_from(argv: list[str] | None) -> DroneSettings:
    """Flags over `PLANE_*` over the `--config` file over defaults; raises `ConfigError`."""
    args = build_parser().parse_args(argv)
    settings = daemon.load_settings(
        DroneSettings,
        args,
        {
            "cluster": args.cluster,
            "ip": args.ip,
            "pool": args.pool,
            "proxy.listen": args.proxy_listen,
            "proxy.workers": args.proxy_workers,
            "metrics_listen": args.metrics_listen,
            "state_dir": args.state_dir,
            "docker.network": args.docker_network,
        },
        ENV_ALIASES,
    )
    check(settings)
    return settings


def main(argv: list[str] | None = None) -> int:
    try:
        settings = settings_from(argv)
    except ConfigError as exc:
        print(f"plane-drone: {exc}", file=sys.stderr)
        return 2
    daemon.setup_logging(settings.log_level, settings.log_format)
    failure: list[str] = []

    async def run(stop: asyncio.Event) -> None:
        try:
            drone = Drone(settings)
        except DroneError as exc:
            failure.append(str(exc))
            return
        try:
            started = asyncio.ensure_future(drone.start())
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait({started, stopped}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            if not started.done():  # SIGTERM while still connecting or adopting
                started.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await started
            else:
                started.result()
                await stop.wait()
            log.info("stopping")
        except DroneError as exc:
            failure.append(str(exc))
        finally:
            await drone.stop()

    daemon.run(run)
    if failure:
        print(f"plane-drone: {failure[0]}", file=sys.stderr)
        return 1
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
