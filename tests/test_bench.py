"""The benchmarks keep working: short runs whose every answer is checked (speed is not asserted here)."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_quick(script: str) -> dict[str, Any]:
    """Run ``bench/<script> --quick --json`` in a clean environment; its report."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("VAXBOT_")}
    result = subprocess.run(  # noqa: S603 (our own bench scripts)
        [sys.executable, f"bench/{script}", "--quick", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,  # a bound for a hung run on a loaded machine, not a speed limit
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report: dict[str, Any] = json.loads(result.stdout)
    assert report["answers_ok"] is True
    return report


@pytest.mark.slow
def test_quick_bench_runs_and_every_answer_is_right() -> None:
    report = run_quick("wechat_bench.py")
    servers = json.dumps(report)
    assert "requests_per_second" in servers and "ratio_to_ceiling" in servers


@pytest.mark.slow
def test_quick_alipay_bench_runs_and_every_answer_is_right() -> None:
    report = run_quick("alipay_bench.py")
    assert report["servers"]["postgres"] is None  # --quick: ceiling and SQLite only

    for label in ("ceiling", "sqlite"):
        figures = report["servers"][label]
        answers = figures["answers"]
        assert answers["ack"] > 0
        assert answers["wrong"] == answers["error"] == 0, figures["problems"]
        assert figures["closed_loop"]["requests_per_second"] > 0
        for phase in ("open_loop", "open_loop_half_own_max") if label == "sqlite" else ("open_loop",):
            assert figures[phase]["p50_ms"] > 0
            assert figures[phase]["p99_ms"] >= figures[phase]["p50_ms"]

    sqlite = report["servers"]["sqlite"]
    assert sqlite["ratio_to_ceiling"] > 0
    assert sqlite["cpu_ratio_to_ceiling"] > 0
    # The throughput with every answer delivered (the outbox catching up after the closed loop).
    assert sqlite["closed_loop_drained"]["requests_per_second"] > 0
    assert sqlite["answered_ratio_to_ceiling"] > 0
    for phase in ("closed_loop", "open_loop_half_own_max", "open_loop"):
        assert sqlite[f"{phase}_drained"]["answers_still_queued"] == 0
    # Every answer goes out through the outbox: what the worker delivered carried the FAQ's text.
    assert sqlite["deliveries"]["wrong"] == 0
    assert sqlite["deliveries"]["delivered"] == sqlite["deliveries"]["right_text"]

    signing = report["signing"]
    assert signing["signatures_identical"] is True
    assert signing["vaxbot_sign_us"] > 0 and signing["sdk_sign_us"] > 0
    assert signing["sdk_over_vaxbot"] > 0
    assert report["protocol"]["open_us"] > 0 and report["protocol"]["ack_us"] > 0


@pytest.mark.slow
def test_quick_qr_bench_draws_codes_that_read_back() -> None:
    report = run_quick("qr_bench.py")
    code = report["qr"]
    assert (code["version"], code["error"], code["mode"]) == (4, "Q", "alphanumeric") and code["png_bytes"] < 2048
    assert set(report["figures"]) == {"sign", "check", "png", "svg", "qrcode_make", "qrcode_make_png"}
    assert report["png_speedup"] > 0 and report["png_speedup_vs_saved"] > 0
    readable = report["readability"]
    assert readable["codes"] == 30 and readable["usual_read_rate"]["vaxbot"] == 1.0
    assert set(readable["read"]) == {*(f"mask{mask}" for mask in range(8)), "qrcode_penalty", "vaxbot"}


@pytest.mark.slow
def test_quick_code_page_flood_bench_answers_every_message_and_limits_the_flood() -> None:
    report = run_quick("code_page_flood.py")
    phases = report["phases"]
    assert set(phases) == {"quiet", "flood", "flood_unlimited"}
    for values in phases.values():
        assert values["verdicts"] == {"reply": values["sent"]}
        assert values["p99_ms"] >= values["p50_ms"] > 0
    # Limited: a few guesses are looked up (404), the rest refused in memory (429); unlimited: all looked up.
    limited, unlimited = phases["flood"]["flood"]["statuses"], phases["flood_unlimited"]["flood"]["statuses"]
    assert 0 < limited.get("404", 0) <= 12 and limited.get("429", 0) > 0  # a burst of 10, 6 a minute after
    assert set(unlimited) == {"404"}


@pytest.mark.slow
def test_python_m_bench_runs_the_listed_benches_and_writes_one_table(tmp_path: Path) -> None:
    output = tmp_path / "RESULTS.md"
    env = {key: value for key, value in os.environ.items() if not key.startswith("VAXBOT_")}
    only = ["qr_bench", "alipay_sign_bench", "crash_bench"]
    result = subprocess.run(  # noqa: S603 (our own bench runner)
        [sys.executable, "-m", "bench", "--only", *only, "--output", str(output)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    written = output.read_text(encoding="utf-8")
    assert result.stdout.strip() == written.strip() and "quick runs" in written
    rows = {line.split(" | ")[0].strip("| `"): line for line in written.splitlines() if line.startswith("| `")}
    assert set(rows) == set(only)
    assert " | ok | " in rows["qr_bench"] and "qrcode.make / vaxbot PNG: " in rows["qr_bench"]
    assert " | ok | " in rows["alipay_sign_bench"] and "signatures identical: yes" in rows["alipay_sign_bench"]
    if not (ROOT / "bench" / "crash_bench.py").exists():
        assert " | skipped | " in rows["crash_bench"] and "not in this tree" in rows["crash_bench"]


def test_the_bench_runner_fails_on_wrong_answers_and_skips_missing_scripts(tmp_path: Path) -> None:
    runner = importlib.import_module("bench.__main__")
    wrong = tmp_path / "wrong_bench.py"
    wrong.write_text('import json\nprint(json.dumps({"answers_ok": False, "summary": {"lost": 3}}))\n')
    broken = tmp_path / "broken_bench.py"
    broken.write_text("raise SystemExit(2)\n")
    right = tmp_path / "right_bench.py"
    right.write_text('import json\nprint(json.dumps({"answers_ok": True, "summary": {"lost": 0, "p99_ms": 12.5}}))\n')
    outcomes = [
        runner.run_bench(runner.Bench(str(path), "a test bench", quick=()), full=False, timeout=60)
        for path in (wrong, broken, right, tmp_path / "absent_bench.py")
    ]
    assert [outcome.status for outcome in outcomes] == ["failed", "failed", "ok", "skipped"]
    assert outcomes[0].figures == [("lost", 3)] and outcomes[2].figures == [("lost", 0), ("p99_ms", 12.5)]
    table = runner.table(outcomes, full=False, when=datetime(2026, 12, 1, 12, 0, tzinfo=UTC))
    assert "| `right_bench` | a test bench | ok |" in table and "lost: 0; p99_ms: 12.5" in table
    assert "exit status 2, no JSON report" in table and "bench/absent_bench.py is not in this tree" in table
    assert {bench.name for bench in runner.BENCHES} >= {"wechat_bench", "qr_bench", "crash_bench", "plan_bench"}


@pytest.mark.slow
def test_quick_lottery_bench_draws_verifies_and_notices_one_bit() -> None:
    report = run_quick("lottery_bench.py")
    assert report["stored"]["verify_ok"] and report["stored"]["wrong_seed_refused"]
    assert report["tampered_list_refused"] and report["one_bit"]["ranking_changed"]
