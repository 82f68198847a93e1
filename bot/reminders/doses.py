"""Journey 10: dose reminders (接种提醒) for every claimed child's certificate.

Two scheduler jobs. Planning forecasts each child's next doses (:mod:`bot.immunization.forecast`) and schedules one
reminder per dose that may be given within a few days, for the next reminder hour (China time); the job
key (a keyed hash of vaccinee, vaccine, dose) is unique, so planning again never schedules a dose twice;
the dose and its due date are sealed in the row. Sending, only
between the reminder hour and the evening, takes one child at a time: it claims the child's due
reminders with a conditional UPDATE, forecasts again (a dose recorded meanwhile is dropped, one that
moved later waits until it is near), and sends one template message to the holder and to every
authorised family member, on each platform they follow the account on. Template messages reach people
outside the platforms' customer-service windows. Every reminder sent is audited with its recipients.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import date, datetime, time, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.certificates.rules import FileView, active_grants, doses_of, open_file
from bot.core.audit import record_access
from bot.core.catalogue import Catalogue
from bot.core.chinatime import CHINA, china_date
from bot.core.config import Settings
from bot.core.pii import Vault
from bot.core.scheduler import Scheduler
from bot.core.update import Platform, TemplateMessage, TemplateValue
from bot.identity.accounts import reachable_accounts
from bot.immunization.forecast import Forecast, GivenDose, forecast_next_doses
from bot.immunization.vaccines import vaccine_name
from bot.outbox import queue as outbox
from bot.platforms.wxmini.consents import queue_subscription
from bot.reminders.appointments import send_appointment_reminders
from bot.reminders.planning import next_reminder_time as next_reminder_time
from bot.reminders.planning import plan_reminders as plan_reminders
from bot.reminders.planning import wanted
from models import (
    Certificate,
    OutboxKind,
    PlatformAccount,
    Reminder,
    ReminderDetail,
    ReminderStatus,
    Vaccinee,
    utcnow,
)

log = logging.getLogger("vaxbot.reminders")
SENDING_HOURS = 12  # from the reminder hour: 09:00–21:00 by default
KEYWORD_LIMIT = 20  # WeChat's template keywords are short; longer lists are summed up


async def _forecast(session: AsyncSession, vault: Vault, file: FileView, today: date) -> list[Forecast]:
    doses = await doses_of(session, vault, file.vaccinee_id, today)
    given = [GivenDose(dose.vaccine_code, dose.dose_number, dose.given_on) for dose in doses]
    return forecast_next_doses(file.birth_date, file.sex, given, today)


def _dose(detail: ReminderDetail) -> tuple[str, int]:
    return detail.vaccine_code, detail.dose_number


async def _recipients(session: AsyncSession, certificate: Certificate) -> list[PlatformAccount]:
    """The holder's and every active grantee's accounts that still follow the service."""
    grantees = [grant.grantee_id_number_hash for grant in await active_grants(session, certificate.id)]
    return await reachable_accounts(session, identity_ids=[certificate.holder_identity_id], id_number_hashes=grantees)


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _message(catalogue: Catalogue, file: FileView, due: list[Forecast], today: date, url: str) -> TemplateMessage:
    """The reminder (no template id yet): the child (masked), the doses (each with its date when not yet), and when.

    The essentials are in the keywords: WeChat's current templates no longer show ``first`` and
    ``remark``, and keep each keyword short.
    """
    names = []
    for item in due:
        name = catalogue("reminder_dose", vaccine=vaccine_name(item.vaccine_code), number=item.dose_number)
        if item.earliest > today:
            name += catalogue("reminder_dose_from", month=item.earliest.month, day=item.earliest.day)
        names.append(name)
    doses = "、".join(names)
    if len(doses) > KEYWORD_LIMIT:
        doses = catalogue("reminder_doses_many", first=_short(names[0], KEYWORD_LIMIT - 6), count=len(names))
    if any(item.status == "overdue" for item in due):
        first, when = "reminder_first_late", catalogue("reminder_when_late")
    elif any(item.earliest <= today for item in due):
        first, when = "reminder_first_now", catalogue("reminder_when_now")
    else:
        soonest = min(item.earliest for item in due)
        first, when = "reminder_first_soon", catalogue("reminder_when_from", month=soonest.month, day=soonest.day)
    return TemplateMessage(
        template_id="",
        first=TemplateValue(catalogue(first, name=file.masked_name)),
        # keyword1 the child, keyword2 the doses, keyword3 when (the template's fields, in its order)
        keywords=(TemplateValue(file.masked_name), TemplateValue(doses), TemplateValue(when)),
        remark=TemplateValue(catalogue("reminder_remark")),
        url=url,
    )


def within_sending_hours(now: datetime, settings: Settings) -> bool:
    """Reminders go out from the reminder hour until the end of the sending window, China time."""
    hour = now.astimezone(CHINA).hour
    return settings.reminder_hour <= hour < settings.reminder_hour + SENDING_HOURS


async def send_due_reminders(
    sessions: async_sessionmaker[AsyncSession], vault: Vault, catalogue: Catalogue, settings: Settings, now: datetime
) -> int:
    """Send the reminders whose time has come, a child at a time; returns how many messages were queued.

    Outside the sending hours nothing goes out (a backlog after an outage waits for the next morning).
    """
    if not within_sending_hours(now, settings):
        return 0
    async with sessions() as session:
        children = (
            await session.scalars(
                select(Reminder.vaccinee_id)
                .where(Reminder.status == ReminderStatus.SCHEDULED, Reminder.send_at <= now)
                .group_by(Reminder.vaccinee_id)
                .order_by(Reminder.vaccinee_id)
            )
        ).all()
    sent = 0
    for vaccinee_id in children:
        try:
            async with sessions() as session, session.begin():
                sent += await _send_for_child(session, vault, catalogue, settings, vaccinee_id, now)
        except Exception:
            # One child's failure (a key retired, a bad file) must not hold up everyone behind it.
            log.exception("reminder failed; retried tomorrow", extra={"vaccinee": vaccinee_id})
            async with sessions() as session, session.begin():
                await session.execute(
                    update(Reminder)
                    .where(
                        Reminder.vaccinee_id == vaccinee_id,
                        Reminder.status == ReminderStatus.SCHEDULED,
                        Reminder.send_at <= now,
                    )
                    .values(send_at=next_reminder_time(now + timedelta(days=1), settings.reminder_hour))
                )
    return sent


async def _send_for_child(
    session: AsyncSession, vault: Vault, catalogue: Catalogue, settings: Settings, vaccinee_id: int, now: datetime
) -> int:
    today = china_date(now)
    due = (
        await session.scalars(
            select(Reminder)
            .where(
                Reminder.vaccinee_id == vaccinee_id,
                Reminder.status == ReminderStatus.SCHEDULED,
                Reminder.send_at <= now,
            )
            .order_by(Reminder.id)
        )
    ).all()
    opened = {reminder.id: reminder.detail(vault) for reminder in due}
    # Only one process sends a reminder: whoever moves it out of "scheduled" (the UPDATE locks the row).
    claimed: list[Reminder] = []
    for reminder in sorted(due, key=lambda row: (opened[row.id].due_on, row.id)):
        moved = await session.execute(
            update(Reminder)
            .where(Reminder.id == reminder.id, Reminder.status == ReminderStatus.SCHEDULED)
            .values(status=ReminderStatus.SENT)
        )
        if moved.rowcount:  # type: ignore[attr-defined]
            claimed.append(reminder)
    certificate = (await session.scalars(select(Certificate).where(Certificate.vaccinee_id == vaccinee_id))).first()
    vaccinee = await session.get(Vaccinee, vaccinee_id)
    if not claimed or certificate is None or vaccinee is None:
        await _set_status(session, claimed, ReminderStatus.CANCELLED)
        return 0
    file = await open_file(session, vault, vaccinee, "child")
    # Forecast again: a dose recorded since planning needs no reminder, and one that moved later (a live
    # vaccine given meanwhile) waits until it is near again.
    current = {(item.vaccine_code, item.dose_number): item for item in await _forecast(session, vault, file, today)}
    near = {
        (item.vaccine_code, item.dose_number)
        for item in wanted(list(current.values()), today, settings.reminder_days_ahead)
    }
    send = [r for r in claimed if _dose(opened[r.id]) in near]
    await _set_status(session, [r for r in claimed if _dose(opened[r.id]) not in current], ReminderStatus.CANCELLED)
    for reminder in claimed:
        key = _dose(opened[reminder.id])
        if key in current and key not in near:
            later = current[key].earliest - timedelta(days=settings.reminder_days_ahead)
            at = datetime.combine(later, time(settings.reminder_hour), CHINA)
            await session.execute(
                update(Reminder).where(Reminder.id == reminder.id).values(status=ReminderStatus.SCHEDULED, send_at=at)
            )
    if not send:
        return 0
    accounts = await _recipients(session, certificate)
    if not accounts:
        await _set_status(session, send, ReminderStatus.NO_RECIPIENT)  # nobody follows the account any more
        return 0
    forecasts = [current[_dose(opened[r.id])] for r in send]
    message = _message(catalogue, file, forecasts, today, url=settings.public_url.rstrip("/") + "/")
    told: list[PlatformAccount] = []
    without_consent: list[PlatformAccount] = []
    for account in accounts:
        idempotency = f"reminder:{min(r.id for r in send)}:{account.id}"
        if account.platform == Platform.WXMINI:
            # No template messages in a mini program: a subscription message, and only with a consent.
            queued = await queue_subscription(
                session,
                account,
                template_id=settings.reminder_template_id(account.platform),
                data=subscription_data(message),
                page=settings.wxmini_reminder_page,
                key=idempotency,
                now=now,
            )
            (told if queued is not None else without_consent).append(account)
            continue
        told.append(account)
        outbox.enqueue(
            session,
            platform=account.platform,
            app_id=account.app_id,
            recipient=account.user_id,
            kind=OutboxKind.TEMPLATE,
            payload=dataclasses.replace(message, template_id=settings.reminder_template_id(account.platform)).payload(),
            idempotency_key=idempotency,
        )
    if not told:
        await _set_status(session, send, ReminderStatus.NO_RECIPIENT)  # only mini-program users, none consented
    record_access(
        session,
        actor_kind="system",
        actor_ref="reminders",
        action="reminder_sent",
        certificate_id=certificate.id,
        vaccinee_id=vaccinee_id,
        detail={
            "reminders": [reminder.id for reminder in send],  # which doses stays sealed in their rows
            "to": sorted({f"{account.platform}:identity:{account.identity_id}" for account in told}),
            # Mini-program users who gave no consent to this template: nothing may be sent to them.
            "no_consent": sorted({f"{account.platform}:identity:{account.identity_id}" for account in without_consent}),
        },
    )
    return len(told)


def subscription_data(message: TemplateMessage) -> dict[str, str]:
    """The reminder as the mini program's subscription template takes it: thing1 child, thing2 doses, thing3 when.

    ``thing`` values hold at most 20 characters; longer ones are shortened.
    """
    values = [value.value for value in message.keywords]
    return {f"thing{number}": _short(value, KEYWORD_LIMIT) for number, value in enumerate(values, 1)}


async def _set_status(session: AsyncSession, reminders: list[Reminder], status: ReminderStatus) -> None:
    if reminders:
        await session.execute(update(Reminder).where(Reminder.id.in_([r.id for r in reminders])).values(status=status))


def register_jobs(
    scheduler: Scheduler,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    catalogue: Catalogue,
    settings: Settings,
) -> None:
    """The reminders' jobs: plan every hour (incrementally), send dose and day-before booking reminders every 5 minutes.

    Sending waits for the morning.
    """
    scheduler.every("reminders-plan", timedelta(hours=1), lambda: plan_reminders(sessions, vault, settings, utcnow()))
    scheduler.every(
        "reminders-send",
        timedelta(minutes=5),
        lambda: send_due_reminders(sessions, vault, catalogue, settings, utcnow()),
    )
    scheduler.every(
        "reminders-appointments",
        timedelta(minutes=5),
        lambda: send_appointment_reminders(sessions, vault, catalogue, settings, utcnow()),
    )
