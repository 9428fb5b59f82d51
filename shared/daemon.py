"""What every daemon's entry point shares: common flags, settings, the event loop.

`run` installs uvloop, turns SIGTERM and SIGINT into a stop event, and hands
that event to the daemon's main coroutine, which shuts down gracefully.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Callable, Coroutine
from typing import Any

import uvloop

from shared import config, logs


def common_parser(
    prog: str, description: str, settings: type[Any] | None = None
) -> argparse.ArgumentParser:
    """The flags every daemon takes; with `settings`, `--help` also lists every
    settings-file key with its default and environment variable."""
    epilog = None
    if settings is not None:
        keys = "\n".join(f"  {line}" for line in config.reference(settings))
        epilog = (
            "settings (TOML keys; environment variables override the file, flags override both):\n"
            + keys
        )
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", metavar="FILE", help="TOML settings file (env PLANE_CONFIG)")
    parser.add_argument(
        "--nats",
        metavar="URL[,URL...]",
        help="NATS server URLs, comma-separated (env PLANE_NATS; default nats://127.0.0.1:4222)",
    )
    parser.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="log level (env PLANE_LOG_LEVEL; default info)",
    )
    parser.add_argument(
        "--log-format",
        choices=["text", "json"],
        help="log line format (env PLANE_LOG_FORMAT; default text)",
    )
    return parser


def nats_flag(value: str | None) -> list[str] | None:
    return [part.strip() for part in value.split(",") if part.strip()] if value else None


def load_settings(
    cls: type[config.T],
    args: argparse.Namespace,
    flags: dict[str, Any],
    aliases: dict[str, tuple[str, ...]] | None = None,
) -> config.T:
    """Settings from `--config`, `PLANE_*` and the given flag values."""
    flags = {
        "nats.servers": nats_flag(args.nats),
        "log_level": args.log_level,
        "log_format": args.log_format,
        **flags,
    }
    return config.load(
        cls,
        path=args.config,
        flags=flags,
        aliases={"nats": ("nats", "servers"), **(aliases or {})},
    )


def setup_logging(level: str, fmt: str) -> None:
    logs.setup(level, fmt)


def run(main: Callable[[asyncio.Event], Coroutine[Any, Any, None]]) -> None:
    """Run `main(stop)` on uvloop; the first SIGTERM/SIGINT sets `stop`."""

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    uvloop.run(runner())
