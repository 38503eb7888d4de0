"""`make bench-quick` as a smoke check: the benchmark runs end to end and every delivery it
expects arrives with its attempt recorded. No speed thresholds here (see docs/BENCHMARKS.md)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import BASE_DIR

pytestmark = pytest.mark.integration


def test_the_quick_benchmark_runs_and_loses_nothing() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    result = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "| pipeline end to end, all healthy" in result.stdout
    assert "hanging past the timeout" in result.stdout
