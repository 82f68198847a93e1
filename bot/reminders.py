"""Journey 10: dose reminders (接种提醒) for every claimed child's certificate.

Two scheduler jobs. Planning forecasts each child's next doses (:mod:`bot.forecast`) and schedules one
reminder per dose that is late, due, or due within a few days, for the next reminder hour (China time);
the job key (vaccinee, vaccine, dose) is unique, so planning again never schedules a dose twice. Sending
claims the reminders whose time has come with a conditional UPDATE, drops those whose dose was recorded
meanwhile, and sends one template message per child to the holder and to every authorised family
member, on each platform they follow the account on. Template messages reach people outside the
platforms' customer-service windows. Every reminder sent is audited.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import date, datetime, time, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import outbox
from bot.audit import record_access
from bot.certificates import FileView, active_grants, doses_of, open_file
from bot.chinatime import CHINA, china_date
from bot.config import Settings
from bot.db import dialect_insert
from bot.forecast import Forecast, GivenDose, forecast_next_doses
from bot.identity import accounts_of
from bot.messages import VACCINE_NAMES, Catalogue
from bot.pii import Vault
from models import Certificate, Identity, PlatformAccount, Reminder, Vaccinee

log = logging.getLogger("vaxbot.reminders")
SEND_BATCH = 200
PLAN_BATCH = 100


def next_reminder_time(now: datetime, hour: int) -> datetime:
    """The next ``hour`` o'clock in China at or after ``now`` (people are not woken at night)."""
    local = now.astimezone(CHINA)
    at = datetime.combine(local.date(), time(hour), CHINA)
    return at if at >= local else at + timedelta(days=1)


def wanted(forecasts: list[Forecast], today: date, days_ahead: int) -> list[Forecast]:
    """The forecasts worth a reminder now: late, due, or recommended within ``days_ahead`` days."""
    horizon = today + timedelta(days=days_ahead)
    return [item for item in forecasts if item.status != "upcoming" or item.recommended <= horizon]


async def _forecast(session: AsyncSession, file: FileView, today: date) -> list[Forecast]:
    doses = await doses_of(session, file.vaccinee_id, today)
    given = [GivenDose(dose.vaccine_code, dose.dose_number, dose.given_on) for dose in doses]
    return forecast_next_doses(file.birth_date, file.sex, given, today)


def job_key(vaccinee_id: int, vaccine_code: str, dose_number: int) -> str:
    """The unique key of one dose's reminder."""
    return f"dose:{vaccinee_id}:{vaccine_code}:{dose_number}"


async def plan_reminders(
    sessions: async_sessionmaker[AsyncSession], vault: Vault, settings: Settings, now: datetime
) -> int:
    """Schedule reminders for every claimed child's doses that need one; returns how many were new."""
    today = china_date(now)
    send_at = next_reminder_time(now, settings.reminder_hour)
    async with sessions() as session:
        children = (
            await session.scalars(
                select(Certificate.vaccinee_id).where(Certificate.kind == "child").order_by(Certificate.id)
            )
        ).all()
    added = 0
    # A transaction per batch of children, so the webhooks' writes are not held up (SQLite has one writer).
    for start in range(0, len(children), PLAN_BATCH):
        async with sessions() as session, session.begin():
            insert = dialect_insert(session)
            for vaccinee in (
                await session.scalars(select(Vaccinee).where(Vaccinee.id.in_(children[start : start + PLAN_BATCH])))
            ).all():
                file = await open_file(session, vault, vaccinee, "child")
                for item in wanted(await _forecast(session, file, today), today, settings.reminder_days_ahead):
                    result = await session.execute(
                        insert(Reminder)
                        .values(
                            job_key=job_key(vaccinee.id, item.vaccine_code, item.dose_number),
                            vaccinee_id=vaccinee.id,
                            kind="dose_due",
                            vaccine_code=item.vaccine_code,
                            dose_number=item.dose_number,
                            due_on=item.recommended,
                            send_at=send_at,
                            status="scheduled",
                            created_at=now,
                        )
                        .on_conflict_do_nothing(index_elements=[Reminder.job_key])
                    )
                    added += int(getattr(result, "rowcount", 0) or 0)
    if added:
        log.info("reminders planned", extra={"count": added})
    return added


async def _recipients(session: AsyncSession, certificate: Certificate) -> list[PlatformAccount]:
    """The holder's and every active grantee's accounts that still follow the service."""
    people = [certificate.holder_identity_id]
    for grant in await active_grants(session, certificate.id):
        found = await session.scalars(
            select(Identity.id).where(Identity.id_number_hash == grant.grantee_id_number_hash)
        )
        people += list(found.all())
    accounts = [account for person in dict.fromkeys(people) for account in await accounts_of(session, person)]
    return [account for account in accounts if account.following]


def _message(catalogue: Catalogue, file: FileView, due: list[Forecast], today: date) -> dict[str, str]:
    """The template's values: the masked child, the doses, when, and what to do."""
    doses = "、".join(
        catalogue(
            "reminder_dose", vaccine=VACCINE_NAMES.get(item.vaccine_code, item.vaccine_code), number=item.dose_number
        )
        for item in due
    )
    late = any(item.status == "overdue" for item in due)
    first = min(item.recommended for item in due)
    when = catalogue("reminder_when_now") if first <= today else f"{first.year}年{first.month}月{first.day}日"
    return {
        "first": catalogue("reminder_first_late" if late else "reminder_first", name=file.masked_name),
        "keyword1": file.masked_name,
        "keyword2": doses,
        "keyword3": when,
        "remark": catalogue("reminder_remark"),
    }


async def send_due_reminders(
    sessions: async_sessionmaker[AsyncSession], vault: Vault, catalogue: Catalogue, settings: Settings, now: datetime
) -> int:
    """Send the reminders whose time has come (one message per child and person); returns how many were sent."""
    today = china_date(now)
    async with sessions() as session, session.begin():
        due = (
            await session.scalars(
                select(Reminder)
                .where(Reminder.status == "scheduled", Reminder.send_at <= now)
                .order_by(Reminder.id)
                .limit(SEND_BATCH)
            )
        ).all()
        claimed: dict[int, list[Reminder]] = defaultdict(list)
        for reminder in due:
            # Only one process sends a reminder: whoever moves it out of "scheduled".
            moved = await session.execute(
                update(Reminder).where(Reminder.id == reminder.id, Reminder.status == "scheduled").values(status="sent")
            )
            if moved.rowcount:  # type: ignore[attr-defined]
                claimed[reminder.vaccinee_id].append(reminder)
        sent = 0
        for vaccinee_id, reminders in claimed.items():
            sent += await _send_for_child(session, vault, catalogue, settings, vaccinee_id, reminders, today)
    return sent


async def _send_for_child(
    session: AsyncSession,
    vault: Vault,
    catalogue: Catalogue,
    settings: Settings,
    vaccinee_id: int,
    reminders: list[Reminder],
    today: date,
) -> int:
    certificate = (await session.scalars(select(Certificate).where(Certificate.vaccinee_id == vaccinee_id))).first()
    vaccinee = await session.get(Vaccinee, vaccinee_id)
    if certificate is None or vaccinee is None:
        await _cancel(session, reminders)
        return 0
    file = await open_file(session, vault, vaccinee, "child")
    # Forecast again: a dose recorded since planning needs no reminder.
    current = {(item.vaccine_code, item.dose_number): item for item in await _forecast(session, file, today)}
    still = [current[key] for key in ((r.vaccine_code, r.dose_number) for r in reminders) if key in current]
    stale = [r for r in reminders if (r.vaccine_code, r.dose_number) not in current]
    await _cancel(session, stale)
    if not still:
        return 0
    values = _message(catalogue, file, still, today)
    accounts = await _recipients(session, certificate)
    for account in accounts:
        template_id = settings.reminder_template_id(account.platform)
        outbox.enqueue(
            session,
            platform=account.platform,
            app_id=account.app_id,
            recipient=account.user_id,
            kind="template",
            payload={"template_id": template_id, "data": values, "url": ""},
            idempotency_key=f"reminder:{min(r.id for r in reminders)}:{account.id}",
        )
    record_access(
        session,
        actor_kind="system",
        actor_ref="reminders",
        action="reminder_sent",
        certificate_id=certificate.id,
        vaccinee_id=vaccinee_id,
        detail={"doses": [f"{item.vaccine_code}:{item.dose_number}" for item in still], "accounts": len(accounts)},
    )
    return len(accounts)


async def _cancel(session: AsyncSession, reminders: list[Reminder]) -> None:
    for reminder in reminders:
        await session.execute(update(Reminder).where(Reminder.id == reminder.id).values(status="cancelled"))
