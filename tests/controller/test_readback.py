"""Reading stored states back: one at a time, again after a failed read, garbage skipped."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from controller.jetstream import StoreError
from controller.readback import ReadBack
from shared import wire
from shared.protocol import BackendState, BackendStateMessage, utc_now

STORED = {
    "b-ok": wire.encode(
        BackendStateMessage(
            cluster="plane.test", state=BackendState.LOST, backend="b-ok", time=utc_now()
        )
    ),
    "b-garbage": b"{not json",
}


class Stream:
    """The stream as the read-back sees it: the last message per backend, or a failure."""

    def __init__(self, reads: int, failures: int = 0) -> None:
        self.failures = failures
        self.reads: list[str] = []
        self.expected = reads
        self.all_read = asyncio.Event()

    async def read_last(self, backend: str) -> bytes | None:
        self.reads.append(backend)
        if len(self.reads) == self.expected:
            self.all_read.set()
        if self.failures:
            self.failures -= 1
            raise StoreError("no responders")
        return STORED.get(backend)


@contextlib.asynccontextmanager
async def running(stream: Stream) -> AsyncIterator[tuple[ReadBack, asyncio.Queue[str]]]:
    settled: asyncio.Queue[str] = asyncio.Queue()

    def settle(msg: BackendStateMessage) -> bool:
        settled.put_nowait(msg.backend)
        return True

    readback = ReadBack(stream.read_last, settle)
    task = asyncio.create_task(readback.run())
    try:
        yield readback, settled
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_only_readable_stored_states_are_settled() -> None:
    stream = Stream(reads=3)
    async with running(stream) as (readback, settled):
        for backend in ("b-gone", "b-garbage", "b-ok"):
            readback.add(backend)
        # The reads do not await, so the last one is taken in before this wakes.
        await asyncio.wait_for(stream.all_read.wait(), 5)
        assert sorted(stream.reads) == ["b-garbage", "b-gone", "b-ok"]
        assert readback.pending == 0
        assert [settled.get_nowait() for _ in range(settled.qsize())] == ["b-ok"]


async def test_a_failed_read_is_tried_again() -> None:
    stream = Stream(reads=2, failures=1)
    async with running(stream) as (readback, settled):
        readback.add("b-ok")
        assert await asyncio.wait_for(settled.get(), 5) == "b-ok"
        assert stream.reads == ["b-ok", "b-ok"]
