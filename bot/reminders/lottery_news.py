"""Lottery news (摇号结果): the draw, offers passed down, no-shows, and telling every family that entered.

Jobs: lotteries whose registration has closed are drawn (once: ``bot.booking.lottery.draw_lottery`` claims
each); offers past their deadline lapse and pass down the waiting list; the day's bookings not attended
become no-shows after the day ends. Everyone who entered hears the outcome once (a winner with the
confirmation deadline, the others their waiting-list position), and a place passed down is told to its
new holder once: each entry's ``outcome_told_at`` / ``offer_told_at`` is claimed by a conditional UPDATE,
so one process tells it. As with the day-before reminder, the certificate's holder and every authorised
family member hear it on each platform they follow; the person is masked; each telling is audited.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.booking import lottery
from bot.certificates.rules import open_file
from bot.core.audit import record_access
from bot.core.catalogue import Catalogue
from bot.core.chinatime import CHINA
from bot.core.config import Settings
from bot.core.pii import Vault
from bot.core.scheduler import Scheduler
from bot.core.update import TemplateMessage, TemplateValue
from bot.immunization.vaccines import vaccine_name
from bot.reminders.family import short, tell_family
from models import (
    Certificate,
    Clinic,
    EntryStatus,
    Lottery,
    LotteryEntry,
    LotteryStatus,
    Vaccinee,
    utcnow,
)

log = logging.getLogger("vaxbot.lottery")


def _moment(catalogue: Catalogue, moment: datetime) -> str:
    local = moment.astimezone(CHINA)
    return catalogue("lottery_when", month=local.month, day=local.day, hour=local.hour, minute=f"{local.minute:02d}")


async def run_draws(sessions: async_sessionmaker[AsyncSession], vault: Vault, now: datetime) -> int:
    """Draw every lottery whose registration has closed (each once, whatever other processes do); how many."""
    async with sessions() as session:
        due = await lottery.due_for_draw(session, now)
    drawn = 0
    for lottery_id in due:
        async with sessions() as session, session.begin():
            if await lottery.draw_lottery(session, vault, lottery_id, now):
                drawn += 1
                log.info("lottery drawn", extra={"lottery": lottery_id})
    return drawn


async def run_pass_down(sessions: async_sessionmaker[AsyncSession], now: datetime) -> int:
    """Lapse offers past their deadline and offer the places down the waiting lists; how many newly offered."""
    async with sessions() as session:
        open_lotteries = await lottery.drawn_with_offers(session)
    offered = 0
    for lottery_id in open_lotteries:
        async with sessions() as session, session.begin():
            offered += len(await lottery.pass_down(session, lottery_id, now))
    return offered


async def run_no_shows(sessions: async_sessionmaker[AsyncSession], now: datetime) -> int:
    """Mark the bookings of ended days that nobody attended as no-shows; how many."""
    async with sessions() as session, session.begin():
        marked = await lottery.mark_no_shows(session, now)
    if marked:
        log.info("bookings marked no-show", extra={"rows": marked})
    return marked


async def tell_lottery_news(
    sessions: async_sessionmaker[AsyncSession], vault: Vault, catalogue: Catalogue, settings: Settings, now: datetime
) -> int:
    """Tell each entry's family the draw's outcome once, and each place passed down once; messages queued."""
    async with sessions() as session:
        outcomes = (
            await session.scalars(
                select(LotteryEntry.id)
                .join(Lottery, Lottery.id == LotteryEntry.lottery_id)
                .where(Lottery.status == LotteryStatus.DRAWN, LotteryEntry.outcome_told_at.is_(None))
                .order_by(LotteryEntry.id)
            )
        ).all()
        offers = (
            await session.scalars(
                select(LotteryEntry.id)
                .where(
                    LotteryEntry.status == EntryStatus.OFFERED,
                    LotteryEntry.outcome_told_at.is_not(None),
                    LotteryEntry.offer_told_at.is_(None),
                )
                .order_by(LotteryEntry.id)
            )
        ).all()
    sent = 0
    for entry_id in outcomes:
        async with sessions() as session, session.begin():
            sent += await _tell(session, vault, catalogue, settings, entry_id, now, outcome=True)
    for entry_id in offers:
        async with sessions() as session, session.begin():
            sent += await _tell(session, vault, catalogue, settings, entry_id, now, outcome=False)
    return sent


async def _claim(session: AsyncSession, entry_id: int, now: datetime, *, outcome: bool) -> LotteryEntry | None:
    """Claim the telling of an entry's outcome (or of a place passed down to it); None if told already."""
    if outcome:
        statement = update(LotteryEntry).where(LotteryEntry.id == entry_id, LotteryEntry.outcome_told_at.is_(None))
    else:
        statement = update(LotteryEntry).where(
            LotteryEntry.id == entry_id,
            LotteryEntry.status == EntryStatus.OFFERED,
            LotteryEntry.offer_told_at.is_(None),
        )
    entry = await session.get(LotteryEntry, entry_id)
    if entry is None:
        return None
    # A winner's outcome is also the offer: both are told by the one message.
    values = {"outcome_told_at": now} if outcome else {"offer_told_at": now}
    if outcome and entry.status == EntryStatus.OFFERED:
        values["offer_told_at"] = now
    claimed = await session.execute(statement.values(**values).execution_options(synchronize_session=False))
    if not getattr(claimed, "rowcount", 0):
        return None
    await session.refresh(entry)
    return entry


async def _tell(
    session: AsyncSession,
    vault: Vault,
    catalogue: Catalogue,
    settings: Settings,
    entry_id: int,
    now: datetime,
    *,
    outcome: bool,
) -> int:
    entry = await _claim(session, entry_id, now, outcome=outcome)
    if entry is None:
        return 0  # another process told it
    drawn = await session.get(Lottery, entry.lottery_id)
    vaccinee = await session.get(Vaccinee, entry.vaccinee_id)
    certificate = (
        await session.scalars(select(Certificate).where(Certificate.vaccinee_id == entry.vaccinee_id))
    ).first()
    if drawn is None or vaccinee is None or certificate is None:
        return 0
    clinic = await session.get(Clinic, drawn.clinic_id)
    clinic_name = clinic.name if clinic is not None else ""
    file = await open_file(session, vault, vaccinee, "child" if certificate.kind == "child" else "self")
    vaccine = vaccine_name(drawn.vaccine_code)
    if entry.status == EntryStatus.OFFERED and entry.deadline is not None:
        deadline = _moment(catalogue, entry.deadline)
        first = "lottery_news_won_first" if outcome else "lottery_news_passed_first"
        result = catalogue("lottery_news_won", deadline=deadline)
        remark = catalogue("lottery_news_won_remark", deadline=deadline, clinic=clinic_name)
        kind = "won" if outcome else "passed_down"
    else:
        position = (entry.rank or 0) - drawn.places
        first = "lottery_news_waiting_first"
        result = catalogue("lottery_news_waiting", position=max(position, 1))
        remark = catalogue("lottery_news_waiting_remark")
        kind = "waiting"
    message = TemplateMessage(
        template_id="",
        first=TemplateValue(catalogue(first, name=file.masked_name, vaccine=vaccine)),
        keywords=(TemplateValue(file.masked_name), TemplateValue(short(vaccine)), TemplateValue(short(result))),
        remark=TemplateValue(remark),
        url=settings.public_url.rstrip("/") + "/",
    )
    told = await tell_family(
        session,
        certificate,
        message,
        key=f"lottery_{kind}:{entry.id}",
        template_id=settings.reminder_template_id,
        page=settings.wxmini_reminder_page,
        now=now,
    )
    record_access(
        session,
        actor_kind="system",
        actor_ref="lottery",
        action="lottery_news_sent",
        certificate_id=certificate.id,
        vaccinee_id=entry.vaccinee_id,
        detail={
            "lottery": drawn.public_id,
            "entry": entry.id,
            "news": kind,
            "to": sorted({f"{account.platform}:identity:{account.identity_id}" for account in told}),
        },
    )
    return len(told)


def register_jobs(
    scheduler: Scheduler,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    catalogue: Catalogue,
    settings: Settings,
) -> None:
    """The lottery's jobs: draw and tell every minute, pass places down every 5 minutes, no-shows every hour."""
    scheduler.every("lottery-draw", timedelta(minutes=1), lambda: run_draws(sessions, vault, utcnow()))
    scheduler.every("lottery-pass-down", timedelta(minutes=5), lambda: run_pass_down(sessions, utcnow()))
    scheduler.every(
        "lottery-news", timedelta(minutes=1), lambda: tell_lottery_news(sessions, vault, catalogue, settings, utcnow())
    )
    scheduler.every("no-shows", timedelta(hours=1), lambda: run_no_shows(sessions, utcnow()), first_in=120)
