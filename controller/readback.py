"""Backends whose state is read back from the stream into the index.

Two controllers that declare a drone Lost at the same moment both publish a
`Lost` for each of its backends, at two times, with one message ID: the
stream keeps one, every subscriber hears both. An index that hears a second
Lost for the same life (`BackendIndex.contests`) asks for the stored one
here; it is read from the stream's leader and `settle`d into the index, so
that every controller holds the time the stream holds, whatever order the
two publishes reached it in.

One task reads them one at a time: a drone with thousands of backends,
declared Lost by two controllers, makes thousands of reads that must not
hold up the live feed. A read that fails is tried again a second later.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from controller.jetstream import StoreError
from shared import wire
from shared.protocol import BackendStateMessage

log = logging.getLogger(__name__)

RETRY_SECS = 1.0

ReadLast = Callable[[str], Awaitable[bytes | None]]
Settle = Callable[[BackendStateMessage], bool]


class ReadBack:
    def __init__(self, read_last: ReadLast, settle: Settle) -> None:
        self._read_last = read_last
        self._settle = settle
        self._pending: set[str] = set()
        self._wake = asyncio.Event()

    def add(self, backend: str) -> None:
        self._pending.add(backend)
        self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                backend = self._pending.pop()
                try:
                    data = await self._read_last(backend)
                except StoreError as exc:
                    log.warning("stored state not read back: %s", exc, extra={"backend": backend})
                    self._pending.add(backend)
                    await asyncio.sleep(RETRY_SECS)
                    continue
                self._take(backend, data)

    def _take(self, backend: str, data: bytes | None) -> None:
        if data is None:
            return  # aged out of the stream meanwhile
        try:
            stored = wire.decode(BackendStateMessage, data)
        except wire.InvalidMessage as exc:
            log.debug("unreadable stored state: %s", exc, extra={"backend": backend})
            return
        if self._settle(stored):
            log.info(
                "index set to the stored state (%s at %s)",
                stored.state.value,
                stored.time.isoformat(),
                extra={"backend": backend},
            )
