"""Image GC: the pure plan over every case, and one pass on an engine of the test's own
(the machine's engine holds the images the other tests need)."""

from __future__ import annotations

import asyncio
import io
import tarfile

import pytest

from drone.agent import imagegc
from drone.agent.docker_runtime import DockerRuntime
from drone.agent.imagecollector import ImageCollector
from drone.agent.imagegc import Disk, Image, Marks, Seen, plan
from drone.agent.metrics import AgentMetrics
from drone.config import DockerSettings
from tests.support.dockerd import PrivateDockerd

GB = 1_000_000_000
MARKS = Marks(high_percent=85, low_percent=80)
IMAGES = [
    Image("old", 3 * GB, created=100),
    Image("mid", 3 * GB, created=200),
    Image("new", 3 * GB, created=300),
    Image("busy", 3 * GB, created=50),
]


def test_nothing_goes_below_the_high_mark() -> None:
    assert plan(IMAGES, frozenset(), Disk(84 * GB, 100 * GB), MARKS, {}) == []
    assert plan(IMAGES, frozenset(), Disk(0, 0), MARKS, {}) == []  # no disk figures


def test_above_it_unused_images_go_oldest_first_down_to_the_low_mark() -> None:
    chosen = plan(IMAGES, frozenset({"busy"}), Disk(86 * GB, 100 * GB), MARKS, {})
    assert [image.id for image in chosen] == ["old", "mid"]  # 6 GB frees the 6 GB asked
    everything = plan(IMAGES, frozenset({"busy"}), Disk(99 * GB, 100 * GB), MARKS, {})
    assert [image.id for image in everything] == ["old", "mid", "new"]  # never "busy"


def test_an_image_used_lately_goes_after_one_unused_for_long() -> None:
    chosen = plan(IMAGES, frozenset(), Disk(85 * GB, 100 * GB), MARKS, {"old": 1000})
    assert [image.id for image in chosen] == ["busy", "mid"]


def test_seen_remembers_use_and_forgets_removed_images() -> None:
    seen = Seen()
    seen.note({"a"}, 10.0, ["a", "b"])
    seen.note({"b"}, 20.0, ["a", "b"])
    assert seen.last_used == {"a": 10.0, "b": 20.0}
    seen.note(set(), 30.0, ["b"])
    assert seen.last_used == {"b": 20.0}


def tiny_image_tar(name: str) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        data = f"{name}\n".encode()
        info = tarfile.TarInfo(f"{name}.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


async def docker(engine: PrivateDockerd, *argv: str, stdin: bytes | None = None) -> str:
    proc = await asyncio.create_subprocess_exec(
        "docker", "-H", engine.host, *argv,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await proc.communicate(stdin)
    assert proc.returncode == 0, f"docker {' '.join(argv)}: {out.decode()}"
    return out.decode().strip()


@pytest.mark.timeout(180)
async def test_a_pass_removes_unused_images_and_keeps_those_containers_use() -> None:
    engine = await PrivateDockerd().start()
    runtime = DockerRuntime(DockerSettings(socket=str(engine.socket)))
    try:
        for name in ("gc-a", "gc-b", "gc-warm"):
            await docker(engine, "import", "-", f"{name}:1", stdin=tiny_image_tar(name))
        # A warm container: created, never started; its image must stay.
        await docker(engine, "create", "--name", "warm", "gc-warm:1", "/nothing")
        metrics = AgentMetrics()
        settings = DockerSettings(image_gc_high_percent=0.0, image_gc_low_percent=0.0)
        collector = ImageCollector(runtime, settings, metrics)

        removed = await collector.collect()  # 0 % marks: every unused image goes

        assert sorted(tag for image in removed for tag in image.tags) == ["gc-a:1", "gc-b:1"]
        left = await docker(engine, "images", "--format", "{{.Repository}}:{{.Tag}}")
        assert left.split() == ["gc-warm:1"]
        assert metrics.registry.get_sample_value("plane_drone_images_removed_total") == 2
        assert await collector.collect() == []  # nothing more to remove
        disk = await runtime.disk(None)
        assert 0 < disk.used_bytes <= disk.total_bytes
    finally:
        await runtime.close()
        await engine.close()


def test_the_marks_are_checked_when_settings_load() -> None:
    from drone.config import DroneSettings, check
    from shared.config import ConfigError

    bad = DroneSettings(docker=DockerSettings(image_gc_high_percent=70, image_gc_low_percent=80))
    with pytest.raises(ConfigError, match="low <= high"):
        check(bad)
    assert imagegc.Marks(85, 80).low_percent == 80
