"""The outbox's send rate: rows delivered a second by one and by two workers, as a reminder morning needs.

A morning's reminders are template messages queued by the sender job, one per family member; the outbox
workers claim them in batches (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite's single writer
serialises claims) and deliver them through the platform senders. Here the sender is a stand-in that
answers after a fixed platform round trip (``--latency-ms``, default 0 for the queue's own cost, and 50
for a realistic API call) and counts each delivery: every row must be delivered exactly once and end
``sent``, or the run fails (exit status 1).

    python bench/outbox_bench.py                   # SQLite, 20,000 rows per run
    python bench/outbox_bench.py --database-url postgresql+asyncpg://user@host/postgres
    python bench/outbox_bench.py --quick --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from harness import create_database, drop_database, log, machine
from sqlalchemy import func, insert, select
from sqlalchemy.engine import make_url

from bot.core.config import load_settings
from bot.core.db import create_engine, migrate, sessionmaker
from bot.core.keys import generate_dev_keys, load_keyring
from bot.core.metrics import Metrics
from bot.core.pii import Vault
from bot.outbox.queue import OutboxWorker
from models import OutboxKind, OutboxMessage, OutboxStatus, utcnow

BENCH_DB = "vaxbot_outbox_bench"
RECIPIENTS = 5000


class CountingSender:
    """Answers after ``latency`` seconds, like a platform API; counts each row it was handed."""

    def __init__(self, latency: float, expected: int) -> None:
        self.latency = latency
        self.expected = expected
        self.delivered: Counter[int] = Counter()
        self.all_delivered = asyncio.Event()

    async def send(self, row: OutboxMessage) -> None:
        """Deliver ``row`` (nowhere)."""
        if self.latency:
            await asyncio.sleep(self.latency)
        self.delivered[row.id] += 1
        if len(self.delivered) >= self.expected:
            self.all_delivered.set()


async def one_run(database_url: str, keys_dir: Path, rows: int, workers: int, latency: float) -> dict[str, Any]:
    """Queue ``rows`` template messages, then time ``workers`` workers delivering them all."""
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
    engine = create_engine(settings)
    try:
        await migrate(engine, Vault(load_keyring(keys_dir)))
        sessions = sessionmaker(engine)
        payload = {"template_id": "bench", "data": {"keyword1": {"value": "林*满"}}, "url": "https://example.test/"}
        queued = utcnow()
        for start in range(0, rows, 2000):
            async with sessions() as session, session.begin():
                values = [
                    {
                        "platform": "wechat",
                        "app_id": "wx-bench",
                        "recipient": f"o-bench-{number % RECIPIENTS}",
                        "kind": OutboxKind.TEMPLATE,
                        "payload": payload,
                        "status": OutboxStatus.PENDING,
                        "attempts": 0,
                        "available_at": queued,
                        "created_at": queued,
                        "idempotency_key": f"reminder:bench:{number}",
                    }
                    for number in range(start, min(rows, start + 2000))
                ]
                await session.execute(insert(OutboxMessage), values)
        sender = CountingSender(latency, rows)
        pool = [OutboxWorker(sessions, {"wechat": sender}, Metrics(), poll_seconds=0.05) for _ in range(workers)]
        started = time.perf_counter()
        tasks = [asyncio.create_task(worker.run()) for worker in pool]
        await sender.all_delivered.wait()
        for worker in pool:
            worker.stop()
        await asyncio.gather(*tasks)  # each records the batch in hand: every row is "sent" from here
        elapsed = time.perf_counter() - started
        async with sessions() as session:
            sent = int(
                await session.scalar(
                    select(func.count()).select_from(OutboxMessage).where(OutboxMessage.status == OutboxStatus.SENT)
                )
                or 0
            )
        twice = sum(1 for count in sender.delivered.values() if count > 1)
        return {
            "rows": rows,
            "workers": workers,
            "latency_ms": latency * 1e3,
            "seconds": round(elapsed, 3),
            "rows_per_second": round(rows / elapsed, 1),
            "sent": sent,
            "delivered_twice": twice,
            "ok": sent == rows and twice == 0 and len(sender.delivered) == rows,
        }
    finally:
        await engine.dispose()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every combination of worker count and latency, each on a fresh database."""
    results = []
    with tempfile.TemporaryDirectory(prefix="outbox-bench-") as scratch:
        keys_dir = Path(scratch) / "keys"
        generate_dev_keys(keys_dir)
        for latency_ms in args.latency_ms:
            for workers in (1, 2):
                if args.database_url:
                    url = await create_database(args.database_url, BENCH_DB)
                else:
                    url = f"sqlite+aiosqlite:///{scratch}/outbox-{workers}-{latency_ms}.db"
                try:
                    figures = await one_run(url, keys_dir, args.rows, workers, latency_ms / 1e3)
                finally:
                    if args.database_url:
                        await drop_database(args.database_url, BENCH_DB)
                log(
                    f"{workers} worker(s), platform round trip {latency_ms} ms: "
                    f"{figures['rows_per_second']} rows/s ({figures['seconds']} s for {args.rows})"
                )
                results.append(figures)
    backend = make_url(args.database_url).get_backend_name() if args.database_url else "sqlite"
    return {
        "machine": machine(),
        "database": backend,
        "runs": results,
        "answers_ok": all(figures["ok"] for figures in results),
    }


def main() -> int:
    """Run the benchmark; exit status 1 when a row was lost or delivered twice."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--latency-ms", type=int, nargs="+", default=[0, 50])
    parser.add_argument("--database-url", default="", help="a PostgreSQL server URL (default: SQLite, temporary)")
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--json", action="store_true", help="the figures as JSON on stdout")
    args = parser.parse_args()
    if args.quick:
        args.rows = 1_000
    report = asyncio.run(run(args))
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        for figures in report["runs"]:
            print(
                f"{report['database']}: {figures['workers']} worker(s), {figures['latency_ms']:g} ms round trip: "
                f"{figures['rows_per_second']} rows/s"
            )
    return 0 if report["answers_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
