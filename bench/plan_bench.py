"""Reminder planning at province scale: the incremental pass against the full pass it replaced.

Builds a seeded population of claimed children with realistic dose histories (``bot.dev.population``) in
a fresh database, then measures, in one process:

* **baseline** (a smaller world, default 10,000 children): the full pass (every child forecast, the hourly
  job before plans) and the incremental pass's first run (every child adopted and forecast), which must
  schedule exactly the same reminders — the run fails (exit status 1) otherwise;
* **scale** (default 100,000 children): the incremental pass's first run, an idle pass an hour later (what
  every hourly run costs when nothing changed), and one pass a day for a week (what the daily sweep costs),
  each with its time, how many plans it looked at and how many children it forecast; projected to 1 M
  children linearly (each part is per child: the adoption scan, the index range, the forecasts).

Memory: every child is then marked changed and planned again with ``tracemalloc`` on (slower): the peak of
Python's allocations, which stays that of one batch of children whatever their number; and the process's
peak resident set.

    python bench/plan_bench.py                         # SQLite in a temporary directory: a few minutes
    python bench/plan_bench.py --database-url postgresql+asyncpg://user@host/postgres   # a dedicated DB
    python bench/plan_bench.py --children 20000 --baseline 2000 --days 3
    python bench/plan_bench.py --quick --json          # a smoke run (the tests use it)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
import time
import tracemalloc
from dataclasses import asdict
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from harness import create_database, drop_database, log, machine
from sqlalchemy import delete, func, select
from sqlalchemy.engine import make_url

from bot.core.chinatime import CHINA
from bot.core.config import load_settings
from bot.core.db import create_engine, migrate, sessionmaker
from bot.core.keys import generate_dev_keys, load_keyring
from bot.core.pii import Vault
from bot.dev.population import add_claimed_children, population
from bot.reminders.planning import plan_every_child, plan_incrementally
from models import Dose, Reminder, ReminderPlan

TODAY = date(2026, 11, 23)
PROJECT_TO = 1_000_000
TARGET_SECONDS = 60.0
BENCH_DB = "vaxbot_plan_bench"


def _rss_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def _at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, datetime.min.time().replace(hour=hour, minute=minute), CHINA)


async def _reminders(sessions: Any, vault: Vault) -> dict[str, tuple[int, Any, datetime]]:
    async with sessions() as session:
        rows = (await session.scalars(select(Reminder))).all()
    return {row.job_key: (row.vaccinee_id, row.detail(vault), row.send_at) for row in rows}


async def measure_world(
    database_url: str, keys_dir: Path, children: int, *, full: bool, days: int, seed: int, trace: bool = False
) -> dict[str, Any]:
    """Build a world of ``children`` and time the planning passes on it."""
    settings = load_settings(
        environ={},
        env_file=Path("/nonexistent/.env"),
        env="test",
        database_url=database_url,
        keys_dir=keys_dir,
        run_outbox_worker=False,
        run_scheduler=False,
        seed_demo_data=False,
    )
    vault = Vault(load_keyring(keys_dir))
    engine = create_engine(settings)
    try:
        await migrate(engine, vault)
        sessions = sessionmaker(engine)
        started = time.perf_counter()
        world = population(children, TODAY, seed=seed)
        await add_claimed_children(sessions, vault, world)
        async with sessions() as session:
            doses = int(await session.scalar(select(func.count()).select_from(Dose)) or 0)
        built = time.perf_counter() - started
        log(f"  {children} children, {doses} doses written in {built:.1f} s")
        figures: dict[str, Any] = {"children": children, "doses": doses, "build_seconds": round(built, 2)}
        now = _at(TODAY, 0, 30)
        rss_before = _rss_peak_mb()
        if full:
            started = time.perf_counter()
            added = await plan_every_child(sessions, vault, settings, now)
            seconds = time.perf_counter() - started
            figures["full_pass"] = {"seconds": round(seconds, 3), "ms_per_child": round(seconds / children * 1e3, 4)}
            figures["full_pass"]["reminders"] = added
            log(f"  full pass: {seconds:.2f} s ({seconds / children * 1e3:.3f} ms a child), {added} reminders")
            reference = await _reminders(sessions, vault)
            async with sessions() as session, session.begin():
                await session.execute(delete(Reminder))
        started = time.perf_counter()
        first = await plan_incrementally(sessions, vault, settings, now)
        seconds = time.perf_counter() - started
        figures["first_pass"] = {"seconds": round(seconds, 3), "ms_per_child": round(seconds / children * 1e3, 4)}
        figures["first_pass"].update(asdict(first))
        log(f"  incremental, first pass (all adopted): {seconds:.2f} s, {first.added} reminders")
        if full:
            figures["same_reminders"] = await _reminders(sessions, vault) == reference
            if figures["full_pass"]["seconds"]:
                figures["first_pass"]["speed_up"] = round(figures["full_pass"]["seconds"] / seconds, 2)
        started = time.perf_counter()
        idle = await plan_incrementally(sessions, vault, settings, now + timedelta(hours=1))
        seconds = time.perf_counter() - started
        figures["idle_pass"] = {"seconds": round(seconds, 4), **asdict(idle)}
        log(f"  an hour later, nothing new: {seconds:.3f} s")
        daily = []
        for offset in range(1, days + 1):
            started = time.perf_counter()
            report = await plan_incrementally(sessions, vault, settings, _at(TODAY + timedelta(days=offset), 0, 30))
            seconds = time.perf_counter() - started
            daily.append({"day": offset, "seconds": round(seconds, 3), **asdict(report)})
            log(f"  day {offset}: {seconds:.2f} s, looked at {report.looked_at}, forecast {report.forecast}")
        if daily:
            mean = sum(day["seconds"] for day in daily) / len(daily)
            forecast = sum(day["forecast"] for day in daily) / len(daily)
            figures["daily"] = daily
            figures["daily_mean"] = {
                "seconds": round(mean, 3),
                "forecast_share": round(forecast / children, 4),
                "ms_per_child_in_world": round(mean / children * 1e3, 5),
            }
        if trace:
            # Every child planned again (as after a registry batch touching them all), with Python's
            # allocations traced: the peak stays that of one batch, whatever the number of children.
            async with sessions() as session, session.begin():
                everyone = list(await session.scalars(select(ReminderPlan.vaccinee_id)))
                for start in range(0, len(everyone), 1000):
                    await session.execute(ReminderPlan.changed(everyone[start : start + 1000], TODAY))
            tracemalloc.start()
            started = time.perf_counter()
            again = await plan_incrementally(sessions, vault, settings, _at(TODAY + timedelta(days=days + 1), 0, 30))
            seconds = time.perf_counter() - started
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            figures["replan_all_traced"] = {
                "seconds_with_tracing": round(seconds, 2),
                "forecast": again.forecast,
                "python_peak_mb": round(peak / 2**20, 1),
            }
            log(f"  every child again, traced: peak {peak / 2**20:.1f} MB of Python allocations")
        figures["rss_peak_mb"] = round(_rss_peak_mb(), 1)
        figures["rss_peak_growth_while_planning_mb"] = round(_rss_peak_mb() - rss_before, 1)
        return figures
    finally:
        await engine.dispose()


def _projection(scale: dict[str, Any]) -> dict[str, Any]:
    factor = PROJECT_TO / scale["children"]
    projected: dict[str, Any] = {"children": PROJECT_TO}
    projected["first_pass_seconds"] = round(scale["first_pass"]["seconds"] * factor, 1)
    projected["idle_pass_seconds"] = round(scale["idle_pass"]["seconds"] * factor, 2)
    if "daily_mean" in scale:
        projected["daily_pass_seconds"] = round(scale["daily_mean"]["seconds"] * factor, 1)
        projected["daily_within_target"] = projected["daily_pass_seconds"] <= TARGET_SECONDS
    projected["first_pass_within_target"] = projected["first_pass_seconds"] <= TARGET_SECONDS
    return projected


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Both worlds on one database kind; a PostgreSQL URL is the server's, a database is made for the run."""
    with tempfile.TemporaryDirectory(prefix="plan-bench-") as scratch:
        keys_dir = Path(scratch) / "keys"
        generate_dev_keys(keys_dir)
        results: dict[str, Any] = {}
        for label, count, full in (("baseline", args.baseline, True), ("scale", args.children, False)):
            if count <= 0:
                continue
            if args.database_url:
                url = await create_database(args.database_url, BENCH_DB)
            else:
                url = f"sqlite+aiosqlite:///{scratch}/{label}.db"
            log(f"{label}: {make_url(url).get_backend_name()}")
            try:
                results[label] = await measure_world(
                    url, keys_dir, count, full=full, days=0 if full else args.days, seed=args.seed, trace=not full
                )
            finally:
                if args.database_url:
                    await drop_database(args.database_url, BENCH_DB)
    backend = make_url(args.database_url).get_backend_name() if args.database_url else "sqlite"
    report: dict[str, Any] = {"machine": machine(), "database": backend, **results}
    if "scale" in results:
        report["projected"] = _projection(results["scale"])
    report["answers_ok"] = bool(results.get("baseline", {}).get("same_reminders", True))
    return report


def _summary(report: dict[str, Any]) -> str:
    lines = [f"reminder planning on {report['database']}"]
    base = report.get("baseline")
    if base:
        lines.append(
            f"  baseline {base['children']:,} children: full pass {base['full_pass']['seconds']} s "
            f"({base['full_pass']['ms_per_child']} ms a child); incremental first pass "
            f"{base['first_pass']['seconds']} s; same reminders: {base['same_reminders']}"
        )
    scale = report.get("scale")
    if scale:
        daily = scale.get("daily_mean", {})
        lines.append(
            f"  {scale['children']:,} children ({scale['doses']:,} doses): "
            f"first pass {scale['first_pass']['seconds']} s, "
            f"idle hourly pass {scale['idle_pass']['seconds']} s, daily pass {daily.get('seconds')} s "
            f"(forecasting {daily.get('forecast_share', 0):.1%} of children); "
            f"planning every child again peaks at {scale['replan_all_traced']['python_peak_mb']} MB of Python memory"
        )
        projected = report["projected"]
        lines.append(
            f"  projected to 1 M: first pass {projected['first_pass_seconds']} s, daily pass "
            f"{projected.get('daily_pass_seconds')} s, idle pass {projected['idle_pass_seconds']} s "
            f"(target {TARGET_SECONDS:g} s)"
        )
    return "\n".join(lines)


def main() -> int:
    """Run the benchmark; exit status 1 when the incremental pass scheduled different reminders."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--children", type=int, default=100_000, help="children in the scale world")
    parser.add_argument("--baseline", type=int, default=10_000, help="children in the baseline world (full pass)")
    parser.add_argument("--days", type=int, default=7, help="daily passes measured after the first")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--database-url", default="", help="a PostgreSQL server URL (default: SQLite, temporary)")
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--json", action="store_true", help="the figures as JSON on stdout")
    args = parser.parse_args()
    if args.quick:
        args.children, args.baseline, args.days = 2_000, 300, 2
    report = asyncio.run(run(args))
    print(json.dumps(report, indent=1, default=str) if args.json else _summary(report))
    return 0 if report["answers_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
