"""`plane-controller` / `python -m controller`: settings, logging, run until SIGTERM.

Exit status: 0 after a clean stop, 2 for unusable settings, 1 when the
controller could not start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys

from controller.config import ENV_ALIASES, ControllerSettings, check
from controller.service import Controller, ControllerError
from shared import daemon
from shared.config import ConfigError

log = logging.getLogger("controller")


def _clusters(values: list[str] | None) -> list[str] | None:
    """`--cluster a --cluster b,c` → ["a", "b", "c"]; None when not given."""
    if not values:
        return None
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = daemon.common_parser(
        "plane-controller",
        "Plane controller: schedules backends onto drones.",
        ControllerSettings,
    )
    parser.add_argument(
        "--cluster",
        action="append",
        metavar="NAME",
        help="cluster to serve; repeat or comma-separate (env PLANE_CLUSTER; default: all)",
    )
    parser.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        help="Prometheus endpoint, or 'off' (env PLANE_METRICS_LISTEN; default 127.0.0.1:9101)",
    )
    parser.add_argument(
        "--dns-listen",
        metavar="HOST:PORT",
        help="authoritative DNS server, UDP and TCP (env PLANE_DNS_LISTEN; default off)",
    )
    return parser


def settings_from(argv: list[str] | None) -> ControllerSettings:
    """Flags over `PLANE_*` over the `--config` file over defaults; raises `ConfigError`."""
    args = build_parser().parse_args(argv)
    settings = daemon.load_settings(
        ControllerSettings,
        args,
        {
            "clusters": _clusters(args.cluster),
            "metrics_listen": args.metrics_listen,
            "dns.listen": args.dns_listen,
        },
        ENV_ALIASES,
    )
    check(settings)
    return settings


def main(argv: list[str] | None = None) -> int:
    try:
        settings = settings_from(argv)
    except ConfigError as exc:
        print(f"plane-controller: {exc}", file=sys.stderr)
        return 2
    daemon.setup_logging(settings.log_level, settings.log_format)
    failure: list[str] = []

    async def run(stop: asyncio.Event) -> None:
        try:
            controller = Controller(settings)
        except ControllerError as exc:
            failure.append(str(exc))
            return
        try:
            started = asyncio.ensure_future(controller.start())
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait({started, stopped}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            if not started.done():  # SIGTERM while still connecting or warming up
                started.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await started
            else:
                started.result()
                await stop.wait()
            log.info("stopping")
        except (ControllerError, OSError) as exc:
            failure.append(str(exc))
        finally:
            await controller.stop()

    daemon.run(run)
    if failure:
        print(f"plane-controller: {failure[0]}", file=sys.stderr)
        return 1
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
