"""The lottery draw (摇号) at scale: drawing, publishing and verifying 100,000 entries.

Figures, in one process:

- ``pure_draw``: ``bot.booking.draw.rank`` over the sorted entry hashes (best of a few runs).
- ``stored_draw``: ``bot.booking.lottery.draw_lottery`` on a database holding the entries (SQLite by default,
  or the PostgreSQL server given): the claim, the ranking, every entry's rank and status written, committed.
- ``export``: the published record (``lottery.published_record`` → ``draw.dumps``): time and size.
- ``verify``: the round trip anyone can do: read the JSON file back and re-draw it (``draw.verify``): time, OK.
- ``one_bit``: one bit flipped in one entry hash: how much of the ranking and of the winners changed.

The run fails (exit status 1) if the stored draw does not verify from its file, if the verify does not
refuse the flipped list and a wrong seed, or if the one-bit change leaves the winners as they were.

    python bench/lottery_bench.py                 # 100,000 entries, SQLite (~1 minute, most of it inserting)
    python bench/lottery_bench.py --entries 1000000
    python bench/lottery_bench.py --database-url postgresql+asyncpg://…   # a server: a database is made for it
    python bench/lottery_bench.py --quick --json  # a smoke run (the tests use it): figures meaningless
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from datetime import date, datetime, timedelta
from datetime import time as clock
from pathlib import Path
from typing import Any

from harness import create_database, drop_database, log, machine
from sqlalchemy import insert, select
from sqlalchemy.engine import make_url

from bot.booking import draw, lottery
from bot.booking.slots import Funding, SlotSpec
from bot.core.chinatime import CHINA
from bot.core.config import load_settings
from bot.core.db import create_engine, migrate, sessionmaker
from bot.core.keys import generate_dev_keys, load_keyring
from bot.core.pii import Vault
from models import Clinic, Identity, LotteryEntry, Vaccinee

BENCH_DB = "vaxbot_lottery_bench"
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=CHINA)
CLOSES = NOW + timedelta(days=3)
PLACES = 200
BATCH = 5_000


def _best(runs: int, call: Any) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(runs):
        started = time.perf_counter()
        result = call()
        best = min(best, time.perf_counter() - started)
    return best, result


def _write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def _verify_file(path: Path) -> list[str]:
    """What anyone can do with the published file alone: read it and re-draw it."""
    return draw.verify(json.loads(path.read_text(encoding="utf-8")))


def one_bit(seed: str, entries: list[str], places: int) -> dict[str, Any]:
    """Flip the lowest bit of the middle entry: how much of the ranking and of the winners moved."""
    ranking = draw.rank(seed, entries)
    flipped = list(entries)
    middle = len(flipped) // 2
    flipped[middle] = f"{int(flipped[middle], 16) ^ 1:064x}"
    flipped.sort()
    changed = draw.rank(seed, flipped)
    same = set(entries) & set(flipped)
    before = [value for value in ranking if value in same]
    after = [value for value in changed if value in same]
    moved = sum(1 for a, b in zip(before, after, strict=True) if a != b)
    winners_before, winners_after = set(ranking[:places]), set(changed[:places])
    return {
        "entries_at_another_rank": moved,
        "share_at_another_rank": round(moved / max(len(before), 1), 4),
        "winners_kept": len(winners_before & winners_after),
        "places": places,
        "ranking_changed": changed != ranking,
    }


async def stored(database_url: str, keys_dir: Path, count: int, out: Path) -> dict[str, Any]:
    """Enter ``count`` people in one lottery, draw it, publish it, verify the file; the figures."""
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
        async with sessions() as session, session.begin():
            clinic = Clinic(code="B-LT-01", name="摇号测试门诊", region_code="320602")
            identity = Identity(
                id_number_hash="b-parent",
                id_number_enc=b"x",
                name_enc=b"x",
                verified_at=NOW,
                verification_method="face",
            )
            session.add_all([clinic, identity])
            await session.flush()
            spec = SlotSpec(
                "HPV9", date(2026, 12, 20), clock(8), clock(17), PLACES, funding=Funding.SELF_PAID, price_fen=131800
            )
            _, made = await lottery.publish_lottery(
                session, vault, clinic.id, spec, opens_at=NOW, closes_at=CLOSES, confirm_hours=24
            )
            lottery_id, identity_id = made.id, identity.id
            public_id = made.public_id
        for first in range(0, count, BATCH):
            numbers = range(first, min(first + BATCH, count))
            async with sessions() as session, session.begin():
                rows = [
                    {
                        "registry_ref": f"B{n}",
                        "id_number_hash": f"{n:064x}",
                        "name_enc": b"x",
                        "birth_date_enc": b"x",
                        "profile_enc": b"x",
                        "effective_from": date(2026, 1, 1),
                    }
                    for n in numbers
                ]
                ids = (await session.scalars(insert(Vaccinee).returning(Vaccinee.id), rows)).all()
                person = f"{public_id}:"
                await session.execute(
                    insert(LotteryEntry),
                    [
                        {
                            "lottery_id": lottery_id,
                            "vaccinee_id": vaccinee_id,
                            "entered_by_identity_id": identity_id,
                            "entry_hash": vault.digest(lottery.ENTRY_FIELD, f"{person}{n:064x}"),
                            "status": "entered",
                            "created_at": NOW,
                        }
                        for vaccinee_id, n in zip(ids, numbers, strict=True)
                    ],
                )
        entered = time.perf_counter() - started
        log(f"  {count:,} entries written in {entered:.1f} s")
        started = time.perf_counter()
        async with sessions() as session, session.begin():
            drawn = await lottery.draw_lottery(session, vault, lottery_id, CLOSES)
        draw_seconds = time.perf_counter() - started
        log(f"  stored draw: {draw_seconds:.2f} s")
        started = time.perf_counter()
        async with sessions() as session:
            record = await lottery.published_record(session, lottery_id)
        assert record is not None
        text = draw.dumps(record)
        _write(out, text)
        export_seconds = time.perf_counter() - started
        started = time.perf_counter()
        problems = _verify_file(out)
        verify_seconds = time.perf_counter() - started
        async with sessions() as session:
            offered = (
                await session.scalars(
                    select(LotteryEntry.entry_hash)
                    .where(LotteryEntry.lottery_id == lottery_id, LotteryEntry.status == "offered")
                    .order_by(LotteryEntry.rank)
                )
            ).all()
        wrong_seed = draw.verify({**record, "seed": draw.new_seed()})
        return {
            "entries": count,
            "database": make_url(database_url).get_backend_name(),
            "entries_written_seconds": round(entered, 2),
            "drawn": drawn,
            "draw_seconds": round(draw_seconds, 3),
            "export_seconds": round(export_seconds, 3),
            "export_bytes": len(text.encode("utf-8")),
            "verify_seconds": round(verify_seconds, 3),
            "verify_ok": problems == [],
            "winners_are_the_ranking_head": list(offered) == record["ranking"][:PLACES],
            "wrong_seed_refused": any("commitment" in problem for problem in wrong_seed),
            "seed": record["seed"],
            "sorted_entries": record["entries"],
        }
    finally:
        await engine.dispose()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """The stored draw on one database, then the pure figures on its published entries."""
    with tempfile.TemporaryDirectory(prefix="lottery-bench-") as scratch:
        keys_dir = Path(scratch) / "keys"
        generate_dev_keys(keys_dir)
        if args.database_url:
            url = await create_database(args.database_url, BENCH_DB)
        else:
            url = f"sqlite+aiosqlite:///{scratch}/lottery.db"
        try:
            figures = await stored(url, keys_dir, args.entries, Path(scratch) / "published.json")
        finally:
            if args.database_url:
                await drop_database(args.database_url, BENCH_DB)
    seed, entries = figures.pop("seed"), figures.pop("sorted_entries")
    pure_seconds, _ = _best(args.runs, lambda: draw.rank(seed, entries))
    flipped = one_bit(seed, entries, PLACES)
    tampered = list(entries)
    tampered[0] = f"{int(tampered[0], 16) ^ 1:064x}"
    record = draw.published(
        lottery="x",
        vaccine="HPV9",
        clinic="x",
        places=PLACES,
        registration_opens_at="",
        registration_closes_at="",
        seed_sha256=draw.commitment(seed),
        entries=sorted(tampered),
        seed=seed,
        ranking=draw.rank(seed, entries),
    )
    tamper_refused = bool(draw.verify(record))
    ok = (
        figures["drawn"]
        and figures["verify_ok"]
        and figures["winners_are_the_ranking_head"]
        and figures["wrong_seed_refused"]
        and tamper_refused
        and flipped["ranking_changed"]
        and flipped["winners_kept"] < PLACES
    )
    summary = {
        "entries": args.entries,
        "pure draw s": round(pure_seconds, 3),
        f"stored draw s ({figures['database']})": figures["draw_seconds"],
        "export MB": round(figures["export_bytes"] / 1e6, 2),
        "verify round trip s": figures["verify_seconds"],
        "verify OK": figures["verify_ok"],
        "one bit: share at another rank": flipped["share_at_another_rank"],
        f"one bit: winners kept of {PLACES}": flipped["winners_kept"],
    }
    return {
        "machine": machine(),
        "stored": figures,
        "pure_draw_seconds": round(pure_seconds, 4),
        "one_bit": flipped,
        "tampered_list_refused": tamper_refused,
        "summary": summary,
        "answers_ok": bool(ok),
    }


def main() -> int:
    """Run the benchmark; exit status 1 when a draw does not verify or a change goes unnoticed."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3, help="pure draws timed (the best is kept)")
    parser.add_argument("--database-url", default="", help="a PostgreSQL server URL (default: SQLite, temporary)")
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--json", action="store_true", help="the figures as JSON on stdout")
    args = parser.parse_args()
    if args.quick:
        args.entries, args.runs = 2_000, 1
    report = asyncio.run(run(args))
    if args.json:
        print(json.dumps(report, indent=1, default=str))
    else:
        print("\n".join(f"{name}: {value}" for name, value in report["summary"].items()))
    return 0 if report["answers_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
