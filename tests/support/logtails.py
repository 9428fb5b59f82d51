"""Processes' last log lines in a failed test's report.

A fixture that starts processes puts what holds them in `item.stash[LOGS]`; the
report hook in tests/conftest.py adds each one's `tails()` when the test fails.
"""

from __future__ import annotations

from typing import Protocol

import pytest


class HasLogs(Protocol):
    def tails(self) -> list[tuple[str, str]]:
        """(process name, its last log lines) for each process."""


LOGS = pytest.StashKey[list[HasLogs]]()


def keep(request: pytest.FixtureRequest) -> list[HasLogs]:
    """The list this test's process holders go in (made on first use)."""
    stash: pytest.Stash = request.node.stash
    found = stash.get(LOGS, None)
    if found is None:
        found = stash[LOGS] = []
    return found
