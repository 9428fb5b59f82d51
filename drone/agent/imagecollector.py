"""Image GC's edge: reads the engine and the disk, applies `imagegc.plan`, removes.

A pass that fails (the engine away, the disk unreadable) is logged and tried
again next interval; removing one image that a container has meanwhile begun
to use fails alone (removal is never forced) and the others go on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from drone.agent import imagegc
from drone.agent.docker_runtime import DockerRuntime, DockerRuntimeError, NotFound
from drone.agent.metrics import AgentMetrics
from drone.config import DockerSettings

log = logging.getLogger(__name__)


class ImageCollector:
    def __init__(
        self,
        runtime: DockerRuntime,
        settings: DockerSettings,
        metrics: AgentMetrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._runtime = runtime
        self._settings = settings
        self._metrics = metrics
        self._clock = clock
        self._seen = imagegc.Seen()
        self._marks = imagegc.Marks(settings.image_gc_high_percent, settings.image_gc_low_percent)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._settings.image_gc_interval_secs)
            try:
                await self.collect()
            except DockerRuntimeError as exc:
                log.warning("image GC pass skipped: %s", exc)

    async def collect(self) -> list[imagegc.Image]:
        """One pass; returns the images removed."""
        images = await self._runtime.images()
        in_use = await self._runtime.images_in_use()
        self._seen.note(in_use, self._clock(), (image.id for image in images))
        disk = await self._runtime.disk(self._settings.image_gc_path)
        chosen = imagegc.plan(images, in_use, disk, self._marks, self._seen.last_used)
        if not chosen:
            return []
        log.info(
            "disk %.0f%% used (high mark %g%%): removing up to %d unused image(s)",
            disk.percent,
            self._marks.high_percent,
            len(chosen),
        )
        removed = []
        for image in chosen:
            try:
                await self._runtime.remove_image(image.id)
            except NotFound:
                continue
            except DockerRuntimeError as exc:
                log.info("image %s kept: %s", image.tags[:1] or image.id[:19], exc)
                continue
            removed.append(image)
            self._metrics.images_removed.inc()
            self._metrics.image_bytes_removed.inc(image.size)
            log.info(
                "removed image %s (%d MB)",
                ", ".join(image.tags) or image.id[:19],
                image.size // 1_000_000,
            )
        return removed
