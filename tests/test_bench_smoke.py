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
    assert "under a one-core CPU hog" in result.stdout
    assert "asyncio limit" in result.stdout


def test_a_report_section_is_replaced_in_place_and_keeps_the_text_after_it(tmp_path):
    """`--write` splices its section between its markers, idempotently, and leaves a blank line
    before whatever follows (a missing one once glued the next heading onto the marker)."""
    from bench.report import write_section

    doc = tmp_path / "B.md"
    doc.write_text("# B\n\n<!-- s:start -->\nold\n<!-- s:end -->\n## Next\n")
    write_section(
        str(doc), "<!-- s:start -->\nnew\n<!-- s:end -->", "<!-- s:start -->", "<!-- s:end -->"
    )
    once = doc.read_text()
    assert once == "# B\n\n<!-- s:start -->\nnew\n<!-- s:end -->\n\n## Next\n"
    write_section(
        str(doc), "<!-- s:start -->\nnew\n<!-- s:end -->", "<!-- s:start -->", "<!-- s:end -->"
    )
    assert doc.read_text() == once
    write_section(
        str(doc), "<!-- t:start -->\nt\n<!-- t:end -->", "<!-- t:start -->", "<!-- t:end -->"
    )
    assert doc.read_text() == once.rstrip() + "\n\n<!-- t:start -->\nt\n<!-- t:end -->\n"
