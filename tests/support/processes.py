"""Child processes of the tests: stopping them politely, then not."""

from __future__ import annotations

import asyncio


async def terminate(proc: asyncio.subprocess.Process, grace: float = 5.0) -> int:
    """SIGTERM, then SIGKILL if it has not exited after `grace` seconds; the exit status."""
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode
