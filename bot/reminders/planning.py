"""Planning dose reminders, incrementally: only the children whose forecast can bring a new reminder today.

A reminder is scheduled for a dose the day it may be given within ``reminder_days_ahead`` days (one per dose,
ever: the job key is unique). Between two changes to a file its forecast only moves on fixed dates: a dose
entering that window, an age at which a dose is given with another vaccine or no longer at all, a recorded
dose becoming visible. So each claimed child has a plan row (:class:`models.ReminderPlan`) holding the next
such date, sealed, and a coarse plain date to select it by. The periodic pass reads the rows whose coarse
date has come (an index range), opens the exact date, and forecasts only the children whose date has come
or whose file changed (a change marks the row in its own transaction: :meth:`ReminderPlan.changed`, or
:func:`plan_soon` for a claim). It schedules exactly what :func:`plan_every_child` — a forecast of every
claimed child, the pass this replaced — would schedule in the same hour: tests run both on the same world.

Work is done a batch of children at a time: one read transaction (plans, certificates, files, doses), the
decrypting and forecasting with no connection held (SQLite has one, shared with the webhooks), then one
short write transaction whose plan updates apply only if no change came in meanwhile (``generation``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Iterable, Sequence
from datetime import date, datetime, time, timedelta
from typing import cast

from sqlalchemy import Table, bindparam, delete, exists, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.certificates.rules import doses_of, open_file
from bot.core.chinatime import CHINA, china_date
from bot.core.config import Settings
from bot.core.db import dialect_insert
from bot.core.pii import Vault
from bot.immunization.forecast import Forecast, GivenDose, date_after, forecast_next_doses
from bot.immunization.schedule import NIP_SCHEDULE, Period
from models import (
    Certificate,
    CertificateKind,
    Dose,
    FileProfile,
    Reminder,
    ReminderDetail,
    ReminderKind,
    ReminderPlan,
    ReminderStatus,
    Vaccinee,
)
from models.registry import DOSE_FIELD, PROFILE_FIELD

log = logging.getLogger("vaxbot.reminders")
PLAN_BATCH = 500  # children per read/forecast/write round
FULL_BATCH = 100  # children per transaction in the full pass
# ``plan_from`` lies up to this many days before the sealed exact date (keyed, so it cannot be undone): a
# plain date next to a file must not give away the birth date. Wider hides more and costs a daily touch of
# each row in its window.
PLAN_JITTER_DAYS = 14


def next_reminder_time(now: datetime, hour: int) -> datetime:
    """The next ``hour`` o'clock in China at or after ``now`` (people are not woken at night)."""
    local = now.astimezone(CHINA)
    at = datetime.combine(local.date(), time(hour), CHINA)
    return at if at >= local else at + timedelta(days=1)


def wanted(forecasts: list[Forecast], today: date, days_ahead: int) -> list[Forecast]:
    """The forecasts worth a reminder now: those that may be given within ``days_ahead`` days."""
    horizon = today + timedelta(days=days_ahead)
    return [item for item in forecasts if item.earliest <= horizon]


def _milestone_ages() -> tuple[Period, ...]:
    """Every age at which a forecast can change with no new dose: a substitute starts, a dose stops."""
    ages: set[Period] = set()
    for series in NIP_SCHEDULE:
        ages.add(series.until_age)
        for rule in (*series.doses, *(rule for change in series.changes for rule in change.doses)):
            if rule.until_age is not None:
                ages.add(rule.until_age)
            if rule.substitute is not None:
                ages.update((rule.substitute.from_age, rule.substitute.until_age))
    return tuple(sorted(ages, key=lambda age: (age.months, age.days)))


MILESTONES = _milestone_ages()


@dataclasses.dataclass(frozen=True)
class ChildRecord:
    """What planning needs of one child: birth date, sex, and each recorded dose with the day it shows."""

    vaccinee_id: int
    birth_date: date
    sex: str
    doses: tuple[tuple[GivenDose, date], ...]  # (dose, effective_from)


@dataclasses.dataclass(frozen=True)
class ChildPlan:
    """A child's forecasts wanted today and the next day its forecast can bring another (None: never)."""

    due: list[Forecast]
    next_on: date | None


def plan_child(child: ChildRecord, today: date, days_ahead: int) -> ChildPlan:
    """Forecast one child as the full pass does, and find the next day planning it again can matter."""
    if today < child.birth_date:
        return ChildPlan([], child.birth_date)
    visible = [dose for dose, effective in child.doses if effective <= today]
    forecasts = forecast_next_doses(child.birth_date, child.sex, visible, today)
    horizon = today + timedelta(days=days_ahead)
    later = [item.earliest - timedelta(days=days_ahead) for item in forecasts if item.earliest > horizon]
    later += [date_after(child.birth_date, age) for age in MILESTONES]
    later += [dose.given_on for dose in visible]  # a dose dated ahead counts from its date
    later += [effective for _, effective in child.doses]
    return ChildPlan(wanted(forecasts, today, days_ahead), min((day for day in later if day > today), default=None))


def coarse_plan_date(vault: Vault, vaccinee_id: int, exact: date, today: date) -> date:
    """The plain date a plan is selected by: a keyed 0–13 days before ``exact``, never before tomorrow."""
    jitter = int(vault.digest("reminder_plan_jitter", f"{vaccinee_id}:{exact.isoformat()}")[:8], 16)
    return max(today + timedelta(days=1), exact - timedelta(days=jitter % PLAN_JITTER_DAYS))


async def plan_soon(session: AsyncSession, vaccinee_id: int, today: date) -> None:
    """Have the next planning pass plan this child (a claim: its plan row is made, or marked changed)."""
    insert = dialect_insert(session)
    statement = insert(ReminderPlan).values(vaccinee_id=vaccinee_id, plan_from=today, next_enc=None, generation=0)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[ReminderPlan.vaccinee_id],
            set_={"plan_from": today, "next_enc": None, "generation": ReminderPlan.generation + 1},
        )
    )


def _reminder_values(
    vault: Vault, vaccinee_id: int, item: Forecast, send_at: datetime, now: datetime
) -> dict[str, object]:
    return {
        "job_key": Reminder.key_for(vault, vaccinee_id, item.vaccine_code, item.dose_number),
        "vaccinee_id": vaccinee_id,
        "kind": ReminderKind.DOSE_DUE,
        "detail_enc": Reminder.seal_detail(
            vault, ReminderDetail(item.vaccine_code, item.dose_number, item.recommended)
        ),
        "send_at": send_at,
        "status": ReminderStatus.SCHEDULED,
        "created_at": now,
    }


async def _insert_reminders(session: AsyncSession, rows: Sequence[dict[str, object]]) -> int:
    """Insert reminders not scheduled yet (one executemany); returns how many were new."""
    if not rows:
        return 0
    insert = dialect_insert(session)
    table = cast(Table, Reminder.__table__)
    # Sorted by key: concurrent passes take the unique index's locks in one order (no deadlock).
    ordered = sorted(rows, key=lambda row: str(row["job_key"]))
    # RETURNING counts what was new on both databases (a conflict returns no row).
    statement = insert(table).on_conflict_do_nothing(index_elements=[table.c.job_key]).returning(table.c.id)
    return len((await session.execute(statement, ordered)).all())


@dataclasses.dataclass
class PlanReport:
    """What one planning pass did."""

    adopted: int = 0  # claimed children that had no plan yet
    looked_at: int = 0  # plans whose coarse date had come
    forecast: int = 0  # children decrypted and forecast
    added: int = 0  # reminders scheduled
    dropped: int = 0  # plans of files no longer claimed as a child's


async def plan_reminders(
    sessions: async_sessionmaker[AsyncSession], vault: Vault, settings: Settings, now: datetime
) -> int:
    """Schedule the reminders that came due since the last pass or with a change; returns how many were new."""
    return (await plan_incrementally(sessions, vault, settings, now)).added


async def plan_incrementally(
    sessions: async_sessionmaker[AsyncSession], vault: Vault, settings: Settings, now: datetime
) -> PlanReport:
    """The incremental pass: adopt claimed children without a plan, then plan those whose day has come."""
    today = china_date(now)
    report = PlanReport(adopted=await _adopt(sessions, today))
    # The plans whose coarse date has come, from the index alone (ids only: a few per cent of the children).
    # Why not one keyset query per batch: ordered by id, SQLite walks the primary key and reads every plan.
    async with sessions() as session:
        pending = sorted(await session.scalars(select(ReminderPlan.vaccinee_id).where(ReminderPlan.plan_from <= today)))
    for start in range(0, len(pending), PLAN_BATCH):
        async with sessions() as session:
            plans = (
                await session.execute(
                    select(ReminderPlan.vaccinee_id, ReminderPlan.next_enc, ReminderPlan.generation).where(
                        ReminderPlan.vaccinee_id.in_(pending[start : start + PLAN_BATCH]),
                        ReminderPlan.plan_from <= today,  # still: a concurrent pass may have planned it
                    )
                )
            ).all()
            report.looked_at += len(plans)
            waiting: list[dict[str, object]] = []
            due: dict[int, int] = {}  # vaccinee id -> generation seen
            for vaccinee_id, next_enc, generation in plans:
                exact = ReminderPlan.open_next(vault, vaccinee_id, next_enc) if next_enc is not None else None
                if exact is not None and exact > today:
                    waiting.append(
                        {
                            "id": vaccinee_id,
                            "seen": generation,
                            "day": coarse_plan_date(vault, vaccinee_id, exact, today),
                        }
                    )
                else:
                    due[vaccinee_id] = generation
            children = await load_children(session, vault, due) if due else {}
        await _plan_batch(sessions, vault, settings, now, today, due, children, waiting, report)
        await asyncio.sleep(0)  # let the webhooks in between batches
    if report.added or report.forecast:
        log.info("reminders planned", extra=dataclasses.asdict(report))
    return report


async def _adopt(sessions: async_sessionmaker[AsyncSession], today: date) -> int:
    """Give a plan to every child's certificate without one (claimed before plans existed, or elsewhere)."""
    async with sessions() as session:
        missing = (
            await session.scalars(
                select(Certificate.vaccinee_id)
                .where(
                    Certificate.kind == CertificateKind.CHILD,
                    ~exists().where(ReminderPlan.vaccinee_id == Certificate.vaccinee_id),
                )
                .order_by(Certificate.vaccinee_id)
            )
        ).all()
    for start in range(0, len(missing), PLAN_BATCH):
        async with sessions() as session, session.begin():
            insert = dialect_insert(session)
            rows = [
                {"vaccinee_id": vaccinee_id, "plan_from": today, "next_enc": None, "generation": 0}
                for vaccinee_id in missing[start : start + PLAN_BATCH]
            ]
            await session.execute(insert(cast(Table, ReminderPlan.__table__)).on_conflict_do_nothing(), rows)
    return len(missing)


def given_dose(detail_json: str) -> GivenDose:
    """The forecast's view of an opened ``DoseDetail`` (its JSON read directly: a third of the cost)."""
    data = json.loads(detail_json)
    return GivenDose(data["vaccine_code"], data["dose_number"], date.fromisoformat(data["given_on"]))


async def load_children(session: AsyncSession, vault: Vault, ids: Iterable[int]) -> dict[int, ChildRecord]:
    """The records of those of ``ids`` that are claimed children's files, opened (three queries)."""
    wanted_ids = sorted(ids)
    claimed = set(
        await session.scalars(
            select(Certificate.vaccinee_id).where(
                Certificate.vaccinee_id.in_(wanted_ids), Certificate.kind == CertificateKind.CHILD
            )
        )
    )
    doses: dict[int, list[tuple[GivenDose, date]]] = {}
    rows = await session.execute(
        select(Dose.vaccinee_id, Dose.detail_enc, Dose.effective_from).where(Dose.vaccinee_id.in_(sorted(claimed)))
    )
    for vaccinee_id, detail_enc, effective_from in rows:
        doses.setdefault(vaccinee_id, []).append((given_dose(vault.open(DOSE_FIELD, detail_enc)), effective_from))
    files = await session.execute(
        select(Vaccinee.id, Vaccinee.birth_date_enc, Vaccinee.profile_enc).where(Vaccinee.id.in_(sorted(claimed)))
    )
    children: dict[int, ChildRecord] = {}
    for vaccinee_id, birth_date_enc, profile_enc in files:
        birth = date.fromisoformat(vault.open("birth_date", birth_date_enc))
        sex = FileProfile.from_json(vault.open(PROFILE_FIELD, profile_enc)).sex
        children[vaccinee_id] = ChildRecord(vaccinee_id, birth, sex, tuple(doses.get(vaccinee_id, ())))
    return children


async def _plan_batch(
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    settings: Settings,
    now: datetime,
    today: date,
    due: dict[int, int],
    children: dict[int, ChildRecord],
    waiting: list[dict[str, object]],
    report: PlanReport,
) -> None:
    """Forecast the batch's due children (no connection held), then write reminders and plans in one go."""
    send_at = next_reminder_time(now, settings.reminder_hour)
    reminders: list[dict[str, object]] = []
    planned: list[dict[str, object]] = []
    for vaccinee_id, generation in due.items():
        child = children.get(vaccinee_id)
        if child is None:
            continue
        plan = plan_child(child, today, settings.reminder_days_ahead)
        reminders += [_reminder_values(vault, vaccinee_id, item, send_at, now) for item in plan.due]
        next_on = plan.next_on
        planned.append(
            {
                "id": vaccinee_id,
                "seen": generation,
                "day": coarse_plan_date(vault, vaccinee_id, next_on, today) if next_on is not None else None,
                "next": ReminderPlan.seal_next(vault, vaccinee_id, next_on) if next_on is not None else None,
            }
        )
    report.forecast += len(planned)
    gone = sorted(set(due) - set(children))
    async with sessions() as session, session.begin():
        report.added += await _insert_reminders(session, reminders)
        table = cast(Table, ReminderPlan.__table__)
        only_unchanged = (table.c.vaccinee_id == bindparam("id")) & (table.c.generation == bindparam("seen"))
        if planned:
            statement = (
                update(table).where(only_unchanged).values(plan_from=bindparam("day"), next_enc=bindparam("next"))
            )
            await session.execute(statement.execution_options(synchronize_session=False), planned)
        if waiting:
            await session.execute(update(table).where(only_unchanged).values(plan_from=bindparam("day")), waiting)
        if gone:
            # No longer a child's certificate (or never was): nothing to plan until it is claimed again.
            result = await session.execute(delete(ReminderPlan).where(ReminderPlan.vaccinee_id.in_(gone)))
            report.dropped += int(getattr(result, "rowcount", 0) or 0)


async def plan_every_child(
    sessions: async_sessionmaker[AsyncSession], vault: Vault, settings: Settings, now: datetime
) -> int:
    """The full pass: forecast every claimed child and schedule what is due; returns how many were new.

    This was the hourly job before plans; it stays as the reference the incremental pass is checked against
    (tests and ``bench/plan_bench.py``), one query and a forecast per child.
    """
    today = china_date(now)
    send_at = next_reminder_time(now, settings.reminder_hour)
    async with sessions() as session:
        children = (
            await session.scalars(
                select(Certificate.vaccinee_id)
                .where(Certificate.kind == CertificateKind.CHILD)
                .order_by(Certificate.id)
            )
        ).all()
    added = 0
    for start in range(0, len(children), FULL_BATCH):
        async with sessions() as session, session.begin():
            for vaccinee in (
                await session.scalars(
                    select(Vaccinee).where(Vaccinee.id.in_(children[start : start + FULL_BATCH])).order_by(Vaccinee.id)
                )
            ).all():
                file = await open_file(session, vault, vaccinee, "child")
                doses = await doses_of(session, vault, vaccinee.id, today)
                given = [GivenDose(dose.vaccine_code, dose.dose_number, dose.given_on) for dose in doses]
                forecasts = forecast_next_doses(file.birth_date, file.sex, given, today)
                for item in wanted(forecasts, today, settings.reminder_days_ahead):
                    added += await _insert_reminders(
                        session, [_reminder_values(vault, vaccinee.id, item, send_at, now)]
                    )
    return added
