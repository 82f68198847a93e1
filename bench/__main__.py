"""Every benchmark in one run, and one summary table: ``python -m bench`` from the project root.

Each benchmark listed in :data:`BENCHES` runs as its own process (``python bench/<script> --json`` plus its
quick flags unless ``--full``), one after another so they do not share the cores; its JSON report is read
and a few headline figures go into one Markdown table, printed on stdout and written to ``bench/RESULTS.md``.
Progress (each bench's stderr) goes to stderr. The run exits with status 1 when a benchmark fails (a non-zero
exit, a report that is not JSON, or answers that are not right: ``answers_ok`` false); a script that is not
there is skipped with a note.

    python -m bench                        # quick: smoke runs, a few minutes; the figures only say it works
    python -m bench --full                 # every benchmark's full run (PostgreSQL too when
                                           # VAXBOT_TEST_POSTGRES_URL is set): the figures the README quotes
    python -m bench --only qr_bench crash_bench   # some of them
    python -m bench --output other.md      # write the table elsewhere

To add a benchmark: give it ``--json`` (its report on stdout, ``answers_ok`` in it) and a quick mode, and add
a :class:`Bench` below. A bench that cannot run here (no PostgreSQL) reports ``{"skipped": reason}`` and is
listed as skipped. Its headline figures are its report's ``summary`` object (figure name → value) unless
the entry names a function that picks them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "RESULTS.md"

Report = dict[str, Any]
Headline = Callable[[Report], list[tuple[str, Any]]]


def answers_ok(report: Report) -> bool:
    """The convention: the bench checked every answer it got and says so."""
    return report.get("answers_ok") is True


def signatures_ok(report: Report) -> bool:
    """The signing bench: both signers agree byte for byte and verification works."""
    return report.get("signatures_identical") is True and report.get("verification_ok") is True


def summary_figures(report: Report) -> list[tuple[str, Any]]:
    """The report's own ``summary`` object (figure → value), in its order."""
    summary = report.get("summary")
    return list(summary.items()) if isinstance(summary, dict) else []


def webhook_figures(report: Report) -> list[tuple[str, Any]]:
    """A webhook bench: each full-stack server's throughput against the ceiling and its latency."""
    figures: list[tuple[str, Any]] = []
    servers = report.get("servers") or {}
    ceiling = (servers.get("ceiling") or {}).get("closed_loop", {})
    if ceiling:
        figures.append(("ceiling req/s", ceiling.get("requests_per_second")))
    for label, server in servers.items():
        if label == "ceiling" or not server:
            continue
        figures.append((f"{label} req/s", server.get("closed_loop", {}).get("requests_per_second")))
        figures.append((f"{label} ratio to ceiling", server.get("ratio_to_ceiling")))
        if "answered_ratio_to_ceiling" in server:
            figures.append((f"{label} ratio, answers delivered", server["answered_ratio_to_ceiling"]))
        half = server.get("open_loop_half_own_max") or {}
        figures.append((f"{label} p50/p99 ms at half its max", _pair(half.get("p50_ms"), half.get("p99_ms"))))
        at_target = server.get("open_loop") or {}
        figures.append(
            (f"{label} p50/p99 ms at half the ceiling", _pair(at_target.get("p50_ms"), at_target.get("p99_ms")))
        )
    signing = report.get("signing")
    if isinstance(signing, dict) and "sdk_over_vaxbot" in signing:
        figures.append(("RSA2 sign: SDK / vaxbot", signing["sdk_over_vaxbot"]))
    return figures


def sign_figures(report: Report) -> list[tuple[str, Any]]:
    """The RSA2 signing bench: vaxbot's signer against the SDK's."""
    figures = report.get("figures", {})
    return [
        ("vaxbot sign µs", figures.get("sign_vaxbot", {}).get("us_per_call")),
        ("SDK sign µs", figures.get("sign_sdk", {}).get("us_per_call")),
        ("SDK / vaxbot", report.get("sign_ratio_sdk_over_vaxbot")),
        ("signatures identical", report.get("signatures_identical")),
    ]


def qr_figures(report: Report) -> list[tuple[str, Any]]:
    """The show-code bench: drawing against ``qrcode.make``, and how many random codes read back."""
    figures = report.get("figures", {})
    readable = report.get("readability", {})
    harsh = readable.get("harsh_read_rate", {})
    return [
        ("PNG µs", figures.get("png", {}).get("us_per_call")),
        ("SVG µs", figures.get("svg", {}).get("us_per_call")),
        ("qrcode.make µs", figures.get("qrcode_make", {}).get("us_per_call")),
        ("qrcode.make / vaxbot PNG", report.get("png_speedup")),
        ("saved as PNG too", report.get("png_speedup_vs_saved")),
        ("codes read back", readable.get("codes")),
        ("read, usual conditions", readable.get("usual_read_rate", {}).get("vaxbot")),
        ("read at the edge: vaxbot / penalty mask", _pair(harsh.get("vaxbot"), harsh.get("qrcode_penalty"))),
    ]


def flood_figures(report: Report) -> list[tuple[str, Any]]:
    """The code page flood bench: the webhook's latency in each phase."""
    return [
        (f"{phase} p50/p99 ms", _pair(values.get("p50_ms"), values.get("p99_ms")))
        for phase, values in (report.get("phases") or {}).items()
    ]


def plan_figures(report: Report) -> list[tuple[str, Any]]:
    """The planning bench: the old full pass against the incremental one, and the projection to 1 M children."""
    baseline = report.get("baseline") or {}
    scale = report.get("scale") or {}
    projected = report.get("projected") or {}
    return [
        ("children (scale run)", scale.get("children")),
        ("full pass ms/child", (baseline.get("full_pass") or {}).get("ms_per_child")),
        (
            "incremental first pass: speed-up, same reminders",
            _pair((baseline.get("first_pass") or {}).get("speed_up"), baseline.get("same_reminders")),
        ),
        ("daily pass s", (scale.get("daily_mean") or {}).get("seconds")),
        (
            "projected 1 M: daily / first pass s",
            _pair(projected.get("daily_pass_seconds"), projected.get("first_pass_seconds")),
        ),
        ("Python peak MB", (scale.get("replan_all_traced") or {}).get("python_peak_mb")),
    ]


def crash_figures(report: Report) -> list[tuple[str, Any]]:
    """The crash bench, per platform and database: lost and duplicated messages against the sends in flight."""
    figures: list[tuple[str, Any]] = []
    for case, crashes in (report.get("cases") or {}).items():
        lost = sum(crash.get("lost", 0) for crash in crashes)
        duplicated = sum(crash.get("duplicated", 0) for crash in crashes)
        in_flight = sum(crash.get("in_flight_sends", 0) for crash in crashes)
        figures.append(
            (f"{case}, {len(crashes)} crash(es): lost / duplicated (in flight)", f"{lost} / {duplicated} ({in_flight})")
        )
    return figures


def outbox_figures(report: Report) -> list[tuple[str, Any]]:
    """The outbox bench: rows delivered a second, by workers and platform round trip."""
    return [
        (f"{run.get('workers')} worker(s), {run.get('latency_ms'):g} ms platform: rows/s", run.get("rows_per_second"))
        for run in report.get("runs") or []
    ]


@dataclasses.dataclass(frozen=True)
class Bench:
    """One benchmark script in ``bench/``: how to run it quickly or fully, and what to show of its report."""

    script: str
    what: str
    quick: tuple[str, ...] = ("--quick",)
    full: tuple[str, ...] = ()
    headline: Headline = summary_figures
    passed: Callable[[Report], bool] = answers_ok

    @property
    def name(self) -> str:
        """The script's file name without ``.py``."""
        return Path(self.script).stem


BENCHES: tuple[Bench, ...] = (
    Bench("wechat_bench.py", "WeChat safe-mode text message through the whole service", headline=webhook_figures),
    Bench("alipay_bench.py", "Alipay notify, acked and answered through the outbox", headline=webhook_figures),
    Bench(
        "alipay_sign_bench.py",
        "one Alipay RSA2 signature",
        quick=("--duration", "0.3"),
        headline=sign_figures,
        passed=signatures_ok,
    ),
    Bench("qr_bench.py", "a show code: signed, checked, drawn, read back", headline=qr_figures),
    Bench("code_page_flood.py", "webhook latency under a flood of guessed code links", headline=flood_figures),
    Bench("crash_bench.py", "kill -9 under load: messages lost and sent twice", headline=crash_figures),
    Bench("plan_bench.py", "reminder planning over many children", headline=plan_figures),
    Bench("outbox_bench.py", "outbox send rate with one and two workers", headline=outbox_figures),
    Bench("lottery_bench.py", "the lottery draw over 100,000 entries: draw, export, verify"),
    Bench("rush_bench.py", "a booking rush: everyone confirms one slot at once, two servers, PostgreSQL"),
)


@dataclasses.dataclass
class Outcome:
    """What one benchmark's run gave."""

    bench: Bench
    status: str  # "ok", "failed", "skipped"
    seconds: float = 0.0
    figures: list[tuple[str, Any]] = dataclasses.field(default_factory=list)
    note: str = ""


def run_bench(bench: Bench, full: bool, timeout: float) -> Outcome:
    """Run one benchmark as a subprocess with ``--json``; its outcome."""
    script = HERE / bench.script
    if not script.exists():
        return Outcome(bench, "skipped", note=f"bench/{script.name} is not in this tree")
    command = [sys.executable, str(script), *(bench.full if full else bench.quick), "--json"]
    print(f"== {bench.name}: bench/{script.name} {' '.join(command[2:])}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    try:
        result = subprocess.run(
            command, cwd=ROOT, stdout=subprocess.PIPE, stderr=None, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return Outcome(bench, "failed", time.perf_counter() - started, note=f"no answer within {timeout:g} s")
    seconds = time.perf_counter() - started
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        return Outcome(bench, "failed", seconds, note=f"exit status {result.returncode}, no JSON report")
    if isinstance(report, dict) and report.get("skipped"):  # it needs what this machine lacks (PostgreSQL)
        return Outcome(bench, "skipped", seconds, note=str(report["skipped"]))
    figures = bench.headline(report) if isinstance(report, dict) else []
    if not isinstance(report, dict) or result.returncode != 0 or not bench.passed(report):
        return Outcome(bench, "failed", seconds, figures, note=f"exit status {result.returncode}, answers not right")
    return Outcome(bench, "ok", seconds, figures)


def table(outcomes: Sequence[Outcome], full: bool, when: datetime) -> str:
    """The summary as Markdown: one row per benchmark."""
    mode = "full runs" if full else "quick runs (smoke runs: the figures only show that each bench works)"
    lines = [
        "# Benchmark summary",
        "",
        f"`python -m bench{' --full' if full else ''}`, {when:%Y-%m-%d %H:%M} UTC, {mode}. "
        f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs. "
        "Details of each bench: bench/README.md.",
        "",
        "| benchmark | what it measures | status | seconds | headline figures |",
        "| --- | --- | --- | --- | --- |",
    ]
    for outcome in outcomes:
        shown = "; ".join(f"{name}: {_value(value)}" for name, value in outcome.figures)
        if outcome.note:
            shown = f"{shown}; {outcome.note}" if shown else outcome.note
        seconds = f"{outcome.seconds:.0f}" if outcome.status != "skipped" else "—"
        cells = [f"`{outcome.bench.name}`", outcome.bench.what, outcome.status, seconds, shown or "—"]
        lines.append("| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--full", action="store_true", help="full runs instead of quick ones")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="only these benchmarks (script names)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where to write the table (bench/RESULTS.md)")
    parser.add_argument("--timeout", type=float, help="seconds a bench may take (default 900 quick, 7200 full)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks, print and write the table; 1 if any failed."""
    args = build_parser().parse_args(argv)
    chosen = list(BENCHES)
    if args.only:
        wanted = {name.removesuffix(".py") for name in args.only}
        unknown = wanted - {bench.name for bench in BENCHES}
        if unknown:
            print(f"unknown benchmarks: {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
        chosen = [bench for bench in BENCHES if bench.name in wanted]
    timeout = args.timeout or (7200.0 if args.full else 900.0)
    outcomes = [run_bench(bench, args.full, timeout) for bench in chosen]
    summary = table(outcomes, args.full, datetime.now(UTC))
    print(summary)
    args.output.write_text(summary, encoding="utf-8")
    return 1 if any(outcome.status == "failed" for outcome in outcomes) else 0


def _pair(first: Any, second: Any) -> str:
    return f"{_value(first)} / {_value(second)}"


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "—" if value is None else str(value)


if __name__ == "__main__":
    raise SystemExit(main())
