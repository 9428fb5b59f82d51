"""Reading from one transport, paused while any reason holds.

Every side of the proxy needs the same: the browser's socket (its body has
nowhere to go yet, the backend's socket is full, too much is pipelined, its
turn is used up), a backend's socket (the browser's is full), and each end of a
tunnel (the other end's is full). The owner names its reasons as bits and says
when the transport is gone; the gate calls pause_reading and resume_reading
only on the edges.
"""

from __future__ import annotations

import asyncio


class ReadGate:
    __slots__ = ("_held", "_transport", "closed")

    def __init__(self, transport: asyncio.Transport | None = None, held: int = 0) -> None:
        self._transport = transport
        self._held = held  # reasons, as bits; the transport is paused while any is set
        self.closed = False  # the transport is gone or no longer this owner's

    def attach(self, transport: asyncio.Transport) -> None:
        """The transport arrived; reasons held before then pause it now."""
        self._transport = transport
        if self._held and not self.closed:
            transport.pause_reading()

    @property
    def held(self) -> int:
        return self._held

    def hold(self, reason: int) -> None:
        if not self._held and not self.closed and self._transport is not None:
            self._transport.pause_reading()
        self._held |= reason

    def release(self, reason: int) -> bool:
        """Drop `reason`; True when that let reading resume."""
        if not self._held & reason:
            return False
        self._held &= ~reason
        return self._resume_if_free()

    def release_all(self) -> bool:
        """Drop every reason; True when reading resumed."""
        if not self._held:
            return False
        self._held = 0
        return self._resume_if_free()

    def _resume_if_free(self) -> bool:
        if self._held or self.closed or self._transport is None:
            return False
        self._transport.resume_reading()
        return True
