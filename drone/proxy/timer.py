"""A per-connection deadline that costs no timer churn when it moves later.

Keep-alive, head and response timeouts move on every request; cancelling and
re-creating a loop timer each time would be the most expensive part of a small
request. Instead one timer stays armed and re-arms itself when it fires early.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

# asyncio runs timers up to its clock resolution early; treat that as on time.
_SLACK = 0.001


class Deadline:
    __slots__ = ("_armed_at", "_callback", "_handle", "_loop", "_when")

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        self._loop = loop
        self._callback = callback
        self._when: float | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._armed_at = 0.0

    @property
    def when(self) -> float | None:
        return self._when

    def set_in(self, seconds: float) -> None:
        self.set(self._loop.time() + seconds)

    def set(self, when: float) -> None:
        self._when = when
        handle = self._handle
        if handle is None or self._armed_at > when:
            if handle is not None:
                handle.cancel()
            self._arm(when)

    def clear(self) -> None:
        """Forget the deadline; the armed timer, if any, fires later and does nothing."""
        self._when = None

    def cancel(self) -> None:
        self._when = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _arm(self, when: float) -> None:
        self._armed_at = when
        self._handle = self._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._handle = None
        when = self._when
        if when is None:
            return
        if self._loop.time() + _SLACK < when:
            self._arm(when)
            return
        self._when = None
        self._callback()
