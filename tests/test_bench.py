"""The benchmark keeps working: a short run whose every answer is checked (speed is not asserted here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quick_bench_runs_and_every_answer_is_right() -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("VAXBOT_")}
    result = subprocess.run(
        [sys.executable, "bench/wechat_bench.py", "--quick", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["answers_ok"] is True
    servers = json.dumps(report)
    assert "requests_per_second" in servers and "ratio_to_ceiling" in servers
