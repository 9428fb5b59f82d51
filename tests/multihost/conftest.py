"""The multi-host test bed as a fixture, with every process's last lines on failure."""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator
from pathlib import Path

import pytest

from tests.multihost.bed import Bed, tools_missing

BEDS = pytest.StashKey[list[Bed]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        for bed in item.stash.get(BEDS, []):
            for name, tail in bed.tails():
                report.sections.append((f"{name} log, last lines", tail))
    return report


@pytest.fixture
async def bed(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    testbackend_image: str,
    plane_image: str,
    test_id: str,
) -> AsyncIterator[Bed]:
    missing = tools_missing()
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: run `make tools`", pytrace=False)
    made = Bed(tmp_path, test_id)
    request.node.stash[BEDS] = [made]
    try:
        await made.start()
        yield made
    finally:
        await made.close()
