"""The multi-host test bed as a fixture; its processes' last lines go in a failed
test's report (tests.support.logtails)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.multihost.bed import Bed, tools_missing
from tests.support import logtails


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
    logtails.keep(request).append(made)
    try:
        await made.start()
        yield made
    finally:
        await made.close()
