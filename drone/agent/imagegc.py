"""Image garbage collection: which unused images to remove when the disk fills.

Pure, like kubelet's image GC: nothing happens below the high mark; above
it, images no container uses (running, stopped or just created: a backend's
or a warm container's) are removed, least recently used first, until the
estimate of what is freed brings use down to the low mark. Use is measured
again on the next pass, so an estimate that was off (images share layers)
only means another pass.

`Seen` keeps when each image was last in use, as the passes saw it, so an
image whose backend ended a minute ago goes after one unused for a week.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Image:
    id: str
    size: int  # bytes, as Docker counts them (shared layers included)
    created: float  # unix seconds
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Disk:
    used_bytes: int
    total_bytes: int

    @property
    def percent(self) -> float:
        return 100.0 * self.used_bytes / self.total_bytes if self.total_bytes else 0.0


@dataclass(frozen=True, slots=True)
class Marks:
    high_percent: float
    low_percent: float


def plan(
    images: Iterable[Image],
    in_use: frozenset[str],
    disk: Disk,
    marks: Marks,
    last_used: Mapping[str, float],
) -> list[Image]:
    """The images to remove now, in order (empty below the high mark)."""
    if disk.total_bytes <= 0 or disk.percent < marks.high_percent:
        return []
    to_free = disk.used_bytes - disk.total_bytes * marks.low_percent / 100.0
    unused = [image for image in images if image.id not in in_use]
    unused.sort(key=lambda image: (last_used.get(image.id, image.created), image.id))
    chosen: list[Image] = []
    freed = 0
    for image in unused:
        if freed >= to_free:
            break
        chosen.append(image)
        freed += image.size
    return chosen


@dataclass(slots=True)
class Seen:
    """When each image was last seen in use (unix seconds), by image ID."""

    last_used: dict[str, float] = field(default_factory=dict)

    def note(self, in_use: Iterable[str], now: float, present: Iterable[str]) -> None:
        for image in in_use:
            self.last_used[image] = now
        keep = set(present)
        for image in [i for i in self.last_used if i not in keep]:
            del self.last_used[image]  # removed images are forgotten
