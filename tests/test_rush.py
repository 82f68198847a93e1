"""The booking rush bench: many families confirm one slot at once through two server processes on PostgreSQL."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_URL = os.environ.get("VAXBOT_TEST_POSTGRES_URL", "")


@pytest.mark.slow
@pytest.mark.skipif(not POSTGRES_URL, reason="PostgreSQL not configured (set VAXBOT_TEST_POSTGRES_URL)")
def test_a_quick_rush_books_exactly_the_places_once_each_and_shows_nobody_an_error() -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("VAXBOT_")}
    env["VAXBOT_TEST_POSTGRES_URL"] = POSTGRES_URL
    result = subprocess.run(
        [sys.executable, "bench/rush_bench.py", "--quick", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,  # a bound for a hung run on a loaded machine, not a speed limit
        check=False,
    )
    report = json.loads(result.stdout)
    users, places = report["plan"]["users"], report["plan"]["capacity"]
    assert (users, places) == (500, 20)
    assert report["bookings"] == report["slot_booked"] == places
    assert report["duplicates"] == 0 and report["answered_twice"] == 0
    assert report["replies"] == {"booked": places, "full": users - places, "other": 0, "unanswered": 0}
    assert report["handler_errors"] == report["error_log_lines"] == 0
    assert report["p99_ms"] >= report["p50_ms"] > 0 and report["attempts_per_second"] > 0
    assert result.returncode == 0 and report["answers_ok"] is True, result.stderr[-3000:]


def test_a_bench_that_cannot_run_here_is_listed_as_skipped(tmp_path: Path) -> None:
    runner = importlib.import_module("bench.__main__")
    needs = tmp_path / "needs_bench.py"
    needs.write_text('import json\nprint(json.dumps({"skipped": "no PostgreSQL here", "answers_ok": True}))\n')
    outcome = runner.run_bench(runner.Bench(str(needs), "a bench needing PostgreSQL", quick=()), full=False, timeout=60)
    assert (outcome.status, outcome.note) == ("skipped", "no PostgreSQL here")
    assert "rush_bench" in {bench.name for bench in runner.BENCHES}
