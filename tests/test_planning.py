"""Incremental reminder planning: the same reminders as forecasting every claimed child every hour, from
far fewer forecasts; plans that hide the birth date; changes (a claim, a registry batch) planned again."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, event, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.core.chinatime import CHINA
from bot.core.config import Settings
from bot.core.db import create_engine, sessionmaker
from bot.core.keys import load_keyring
from bot.core.pii import Vault
from bot.dev.demo import CHILD, demo_registry_json, demo_registry_records
from bot.dev.population import ChildHistory, add_claimed_children, history
from bot.immunization.forecast import GivenDose, forecast_next_doses
from bot.registry import apply as registry_apply
from bot.registry.apply import apply_due_batches
from bot.registry.staging import import_registry_file
from bot.reminders.planning import (
    PLAN_JITTER_DAYS,
    ChildRecord,
    given_dose,
    plan_child,
    plan_every_child,
    plan_incrementally,
    plan_soon,
    wanted,
)
from models import Certificate, Dose, DoseDetail, Identity, Reminder, ReminderPlan, Vaccinee
from tests.conftest import _settings

TODAY = date(2026, 11, 23)
Sessions = async_sessionmaker[AsyncSession]
Key = tuple[str, int]


# --- the forecast alone -------------------------------------------------------------------------


def _every_day(child: ChildHistory, start: date, end: date, days_ahead: int) -> dict[Key, tuple[date, date]]:
    """What the full pass schedules, run every day: each dose's first day wanted, with its due date then."""
    first: dict[Key, tuple[date, date]] = {}
    day = start
    while day <= end:
        if day >= child.birth_date:
            shown = [dose for dose, effective in child.doses if effective <= day]
            for item in wanted(forecast_next_doses(child.birth_date, child.sex, shown, day), day, days_ahead):
                first.setdefault((item.vaccine_code, item.dose_number), (day, item.recommended))
        day += timedelta(days=1)
    return first


def _on_plan_days(
    child: ChildHistory, start: date, end: date, days_ahead: int
) -> tuple[dict[Key, tuple[date, date]], int]:
    """The same, forecasting only on the days each plan names; and how many days that was."""
    first: dict[Key, tuple[date, date]] = {}
    record = ChildRecord(1, child.birth_date, child.sex, child.doses)
    day: date | None = start
    visits = 0
    while day is not None and day <= end:
        plan = plan_child(record, day, days_ahead)
        visits += 1
        for item in plan.due:
            first.setdefault((item.vaccine_code, item.dose_number), (day, item.recommended))
        assert plan.next_on is None or plan.next_on > day
        day = plan.next_on
    return first, visits


def test_a_dose_read_for_planning_is_the_dose_recorded() -> None:
    detail = DoseDetail("DTaP", 3, date(2024, 2, 29), clinic_id=7, lot_number="L1")
    assert given_dose(detail.to_json()) == GivenDose("DTaP", 3, date(2024, 2, 29))


def test_planning_on_its_days_schedules_what_planning_every_day_does() -> None:
    rng = random.Random(20261201)
    start, end = TODAY, TODAY + timedelta(days=540)
    visits = days = 0
    for _ in range(40):
        # Born up to six years before the start, or during the run; doses recorded as the run goes on.
        birth = start - timedelta(days=rng.randint(-120, 6 * 365))
        child = history(rng, birth, rng.choice("MF"), end)
        for days_ahead in (3, 0):
            planned, count = _on_plan_days(child, start, end, days_ahead)
            assert planned == _every_day(child, start, end, days_ahead), (child.birth_date, days_ahead)
            visits += count
            days += (end - start).days + 1
    assert 0 < visits < days / 10  # a child is forecast on a few days in a hundred


# --- the database -------------------------------------------------------------------------------


@pytest.fixture
async def world(database_url: str, keys_dir: Path) -> AsyncIterator[tuple[Sessions, Vault, Settings]]:
    settings = _settings(database_url, keys_dir)
    engine = create_engine(settings)
    yield sessionmaker(engine), Vault(load_keyring(keys_dir)), settings
    await engine.dispose()


def _at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), CHINA)


async def _reminders(sessions: Sessions, vault: Vault) -> dict[str, tuple[int, object, datetime]]:
    async with sessions() as session:
        rows = (await session.scalars(select(Reminder))).all()
    return {row.job_key: (row.vaccinee_id, row.detail(vault), row.send_at) for row in rows}


async def test_the_incremental_pass_schedules_exactly_what_the_full_pass_did(
    world: tuple[Sessions, Vault, Settings],
) -> None:
    sessions, vault, settings = world
    rng = random.Random(7)
    run_days = 24
    children = [
        history(
            rng, TODAY - timedelta(days=rng.randint(0, 5 * 365)), rng.choice("MF"), TODAY + timedelta(days=run_days)
        )
        for _ in range(40)
    ]
    ids = await add_claimed_children(sessions, vault, children)
    changed_on = TODAY + timedelta(days=9)
    # Passes at night and in the morning (the reminder's send time depends on which side of 09:00).
    moments = [
        _at(TODAY + timedelta(days=n), 0, 30) if n % 2 else _at(TODAY + timedelta(days=n), 10) for n in range(run_days)
    ]

    async def desk_dose(mark: bool) -> int:
        """A dose recorded at a desk on ``changed_on`` for the first child: visible the same day."""
        async with sessions() as session, session.begin():
            dose = Dose.sealed(vault, ids[0], DoseDetail("MenA", 1, changed_on), changed_on)
            session.add(dose)
            if mark:
                await session.execute(ReminderPlan.changed([ids[0]], changed_on))
            await session.flush()
            return dose.id

    dose_id = 0
    for moment in moments:
        if moment.date() == changed_on:
            dose_id = await desk_dose(mark=False)
        await plan_every_child(sessions, vault, settings, moment)
    full = await _reminders(sessions, vault)
    async with sessions() as session, session.begin():
        await session.execute(delete(Reminder))
        await session.execute(delete(Dose).where(Dose.id == dose_id))

    forecasts = 0
    for moment in moments:
        if moment.date() == changed_on:
            await desk_dose(mark=True)
        report = await plan_incrementally(sessions, vault, settings, moment)
        forecasts += report.forecast
    assert await _reminders(sessions, vault) == full
    assert len(full) > 40
    assert forecasts < len(ids) * len(moments) / 3  # the full pass forecast every child every time


async def test_plans_keep_the_birth_date_sealed(world: tuple[Sessions, Vault, Settings]) -> None:
    sessions, vault, settings = world
    # Sixty children born the same day with the same doses: their plans are due the same day.
    same = history(random.Random(3), TODAY - timedelta(days=200), "F", TODAY)
    ids = await add_claimed_children(sessions, vault, [same] * 60)
    report = await plan_incrementally(sessions, vault, settings, _at(TODAY, 1))
    assert (report.adopted, report.forecast) == (60, 60)
    async with sessions() as session:
        plans = (await session.scalars(select(ReminderPlan).order_by(ReminderPlan.vaccinee_id))).all()
    assert [plan.vaccinee_id for plan in plans] == ids
    exact = {ReminderPlan.open_next(vault, plan.vaccinee_id, plan.next_enc) for plan in plans if plan.next_enc}
    assert len(exact) == 1  # one date, sealed for each file
    [day] = exact
    gaps = [(day - plan.plan_from).days for plan in plans if plan.plan_from is not None]
    assert len(gaps) == 60 and all(0 <= gap < PLAN_JITTER_DAYS for gap in gaps)
    assert len(set(gaps)) >= 8  # the plain date does not name the day
    with pytest.raises(ValueError):
        ReminderPlan.open_next(vault, plans[1].vaccinee_id, plans[0].next_enc or b"")  # bound to its file

    # Until the coarse date, nothing is read; from it, only the sealed date is opened until that day.
    quiet = await plan_incrementally(
        sessions, vault, settings, _at(min(plan.plan_from for plan in plans if plan.plan_from) - timedelta(days=1), 1)
    )
    assert (quiet.looked_at, quiet.forecast) == (0, 0)
    before = await plan_incrementally(sessions, vault, settings, _at(day - timedelta(days=1), 1))
    assert before.forecast == 0 and 0 < before.looked_at <= 60
    due = await plan_incrementally(sessions, vault, settings, _at(day, 1))
    assert due.forecast == 60


async def test_a_change_while_a_child_is_being_planned_is_planned_again(
    world: tuple[Sessions, Vault, Settings],
) -> None:
    sessions, vault, settings = world
    child = history(random.Random(9), TODAY - timedelta(days=400), "M", TODAY)
    [vaccinee_id] = await add_claimed_children(sessions, vault, [child])
    engine = sessions.kw["bind"]
    fired: list[str] = []

    def meanwhile(_conn: Any, cursor: Any, statement: str, _params: Any, _context: Any, _many: bool) -> None:
        # Between the planner's read and its write, a dose lands and marks the plan (as another
        # transaction would have committed it: the planner's write must not overwrite the mark).
        if statement.startswith("UPDATE reminder_plans SET plan_from") and "next_enc" in statement and not fired:
            fired.append(statement)
            cursor.execute("UPDATE reminder_plans SET generation = generation + 1")

    event.listen(engine.sync_engine, "before_cursor_execute", meanwhile)
    try:
        first = await plan_incrementally(sessions, vault, settings, _at(TODAY, 10))
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", meanwhile)
    assert fired and first.forecast == 1
    async with sessions() as session:
        plan = await session.get(ReminderPlan, vaccinee_id)
        assert plan is not None and plan.next_enc is None and plan.plan_from == TODAY  # still to plan
    again = await plan_incrementally(sessions, vault, settings, _at(TODAY, 11))
    assert again.forecast == 1
    async with sessions() as session:
        plan = await session.get(ReminderPlan, vaccinee_id)
        assert plan is not None and plan.next_enc is not None


async def test_a_claim_and_a_registry_batch_mark_the_plan(
    world: tuple[Sessions, Vault, Settings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sessions, vault, settings = world
    monkeypatch.setattr(registry_apply, "APPLY_PAGE", 2)  # the demo's ten files in five pages
    path = tmp_path / "demo.json"
    path.write_bytes(demo_registry_json())
    await import_registry_file(sessions, vault, path, effective_from=TODAY, today=TODAY)
    [applied] = await apply_due_batches(sessions, vault, TODAY)
    assert (applied.files_created, applied.files_updated) == (10, 0)

    async with sessions() as session, session.begin():
        child = (await session.scalars(select(Vaccinee).where(Vaccinee.registry_ref == CHILD.ref))).one()
        parent = Identity(
            id_number_hash="h", id_number_enc=b"x", name_enc=b"x", verified_at=_at(TODAY, 8), verification_method="face"
        )
        session.add(parent)
        await session.flush()
        session.add(Certificate(vaccinee_id=child.id, holder_identity_id=parent.id, kind="child", claimed_via="wechat"))
        await plan_soon(session, child.id, TODAY)
    report = await plan_incrementally(sessions, vault, settings, _at(TODAY, 10))
    assert (report.adopted, report.forecast) == (0, 1) and report.added > 0
    async with sessions() as session, session.begin():
        await plan_soon(session, child.id, TODAY)  # claimed again after a release: planned again
    async with sessions() as session:
        plan = await session.get(ReminderPlan, child.id)
        assert plan is not None and (plan.plan_from, plan.next_enc, plan.generation) == (TODAY, None, 1)
    await plan_incrementally(sessions, vault, settings, _at(TODAY, 11))

    # The next registry batch withdraws one of the child's doses: the plan is marked on the batch's day.
    records = [r for r in demo_registry_records() if r.get("record") == "clinic" or r.get("registry_ref") == CHILD.ref]
    later = TODAY + timedelta(days=2)
    for record in records:
        if record.get("registry_ref") == CHILD.ref:
            record["doses"].pop()
    path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    await import_registry_file(sessions, vault, path, effective_from=later, today=later)
    [applied] = await apply_due_batches(sessions, vault, later)
    assert applied.files_updated == 1
    async with sessions() as session:
        plan = await session.get(ReminderPlan, child.id)
        # Marked twice: by the withdrawn dose (its own date) and by the batch (its date); due at the next pass.
        assert plan is not None and plan.plan_from is not None and plan.plan_from <= later
        assert (plan.next_enc, plan.generation) == (None, 3)
        assert await session.get(ReminderPlan, child.id + 1000) is None  # unclaimed files get no plan

    # A dose written anywhere through the ORM (here as a desk would) marks the plan from the day it shows.
    await plan_incrementally(sessions, vault, settings, _at(later, 10))
    async with sessions() as session, session.begin():
        plan = await session.get(ReminderPlan, child.id)
        assert plan is not None and plan.next_enc is not None and plan.plan_from is not None
        shown = later + timedelta(days=1)
        session.add(Dose.sealed(vault, child.id, DoseDetail("MMR", 2, later), effective_from=shown))
    async with sessions() as session:
        marked = await session.get(ReminderPlan, child.id)
        assert marked is not None and marked.next_enc is None and marked.generation == 4
        assert marked.plan_from == min(plan.plan_from, shown)


# --- the benchmarks keep working ------------------------------------------------------------------


@pytest.mark.slow
def test_quick_plan_bench_finds_the_same_reminders_and_projects_a_million() -> None:
    from tests.test_bench import run_quick

    report = run_quick("plan_bench.py")
    assert report["baseline"]["same_reminders"] is True
    assert report["scale"]["first_pass"]["forecast"] == report["scale"]["children"]
    assert report["scale"]["idle_pass"]["forecast"] == 0  # an hour later nothing is due
    assert 0 < report["scale"]["daily_mean"]["forecast_share"] < 0.2
    assert report["projected"]["children"] == 1_000_000 and report["projected"]["daily_pass_seconds"] > 0


@pytest.mark.slow
def test_quick_outbox_bench_delivers_every_row_once_with_two_workers() -> None:
    from tests.test_bench import run_quick

    report = run_quick("outbox_bench.py")
    assert {run["workers"] for run in report["runs"]} == {1, 2}
    assert all(run["ok"] and run["rows_per_second"] > 0 for run in report["runs"])
