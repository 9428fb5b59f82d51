"""The proxy's tests, run again against the compiled build the image ships.

The wheel the image installs has the proxy's hot modules compiled by mypyc
(setup.py); a compiled module can behave differently from its source where
Python's dynamism is involved (monkeypatched globals, subclassing, `isinstance`
on Protocols). So every test in tests/proxy runs once more, in a pytest of its
own that imports the project from the installed compiled wheel, worker
processes included.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import pytest

from tests.support import compiled


@pytest.mark.timeout(900)
def test_the_proxy_tests_pass_against_the_compiled_modules() -> None:
    site = compiled.site()
    # Run from elsewhere, so that neither this process's `python -m` children nor
    # the test process itself find the sources in the checkout before the wheel.
    with tempfile.TemporaryDirectory(prefix="plane-compiled-") as cwd:
        env = {**os.environ, compiled.ENV: str(site), "PYTHONPATH": str(site)}
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        command += ["--import-mode=append"]
        command += ["--rootdir", str(compiled.ROOT), "-c", str(compiled.ROOT / "pyproject.toml")]
        command += [str(compiled.ROOT / "tests" / "proxy")]
        done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    out = done.stdout + done.stderr
    assert done.returncode == 0, (
        f"the proxy tests failed against the compiled modules:\n{out[-6000:]}"
    )
    assert " passed" in out, out[-2000:]
