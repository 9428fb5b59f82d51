"""Logging set-up: plain text for people, JSON lines for machines.

Code that logs about a backend or a drone passes `extra={"backend": ..., "drone": ...}`;
both formats show those fields, so every line about a backend can be found by its ID.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import msgspec

CONTEXT_FIELDS = ("backend", "drone", "cluster")
_json = msgspec.json.Encoder()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = " ".join(
            f"{key}={getattr(record, key)}" for key in CONTEXT_FIELDS if hasattr(record, key)
        )
        return f"{line} [{context}]" if context else line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in CONTEXT_FIELDS:
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return _json.encode(entry).decode()


def setup(level: str = "info", fmt: str = "text") -> None:
    """Configure the root logger once, for a daemon or the CLI."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # nats-py logs every reconnect attempt at error level; ours say it once.
    logging.getLogger("nats").setLevel(logging.CRITICAL)
