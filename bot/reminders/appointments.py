"""The day-before reminder of a booking (预约提醒): the clinic, the time and what to bring.

One job, every few minutes within the sending hours: each active booking whose slot starts tomorrow (China
time) and has not been reminded is claimed by a conditional UPDATE (so one process sends it), and one
template message goes to the certificate's holder and to every authorised family member, on each platform
they follow (a subscription message in the mini program, only with a consent). The person is masked;
which vaccine, where and when are in the message, as the family needs them. Each reminder is audited.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.certificates.rules import open_file
from bot.core.audit import record_access
from bot.core.catalogue import Catalogue
from bot.core.chinatime import CHINA, china_date
from bot.core.config import Settings
from bot.core.pii import Vault
from bot.core.update import TemplateMessage, TemplateValue
from bot.immunization.vaccines import vaccine_name
from bot.reminders.family import short, tell_family
from models import Appointment, AppointmentStatus, Certificate, Clinic, Slot, Vaccinee


def tomorrow_bounds(now: datetime) -> tuple[datetime, datetime]:
    """Tomorrow, China time, as instants [start, end)."""
    start = datetime.combine(china_date(now) + timedelta(days=1), time(0), tzinfo=CHINA)
    return start, start + timedelta(days=1)


async def send_appointment_reminders(
    sessions: async_sessionmaker[AsyncSession], vault: Vault, catalogue: Catalogue, settings: Settings, now: datetime
) -> int:
    """Remind the families booked for tomorrow, once per booking; returns how many messages were queued."""
    hour = now.astimezone(CHINA).hour
    if not settings.reminder_hour <= hour < 21:
        return 0
    start, end = tomorrow_bounds(now)
    async with sessions() as session:
        due = (
            await session.scalars(
                select(Appointment.id)
                .join(Slot, Slot.id == Appointment.slot_id)
                .where(
                    Appointment.status == AppointmentStatus.BOOKED,
                    Appointment.reminded_at.is_(None),
                    Slot.starts_at >= start,
                    Slot.starts_at < end,
                )
                .order_by(Appointment.id)
            )
        ).all()
    sent = 0
    for appointment_id in due:
        async with sessions() as session, session.begin():
            sent += await _remind(session, vault, catalogue, settings, appointment_id, now)
    return sent


async def _remind(
    session: AsyncSession, vault: Vault, catalogue: Catalogue, settings: Settings, appointment_id: int, now: datetime
) -> int:
    claimed = await session.execute(
        update(Appointment)
        .where(
            Appointment.id == appointment_id,
            Appointment.status == AppointmentStatus.BOOKED,
            Appointment.reminded_at.is_(None),
        )
        .values(reminded_at=now)
        .execution_options(synchronize_session=False)
    )
    if not getattr(claimed, "rowcount", 0):
        return 0  # another process sent it, or it was cancelled meanwhile
    appointment = await session.get(Appointment, appointment_id)
    assert appointment is not None
    slot = await session.get(Slot, appointment.slot_id)
    certificate = (
        await session.scalars(select(Certificate).where(Certificate.vaccinee_id == appointment.vaccinee_id))
    ).first()
    vaccinee = await session.get(Vaccinee, appointment.vaccinee_id)
    if slot is None or certificate is None or vaccinee is None:
        return 0
    clinic = await session.get(Clinic, slot.clinic_id)
    file = await open_file(session, vault, vaccinee, "child" if certificate.kind == "child" else "self")
    local_start, local_end = slot.starts_at.astimezone(CHINA), slot.ends_at.astimezone(CHINA)
    when = catalogue(
        "booking_reminder_when",
        month=local_start.month,
        day=local_start.day,
        start=f"{local_start:%H:%M}",
        end=f"{local_end:%H:%M}",
    )
    clinic_name = clinic.name if clinic is not None else ""
    message = TemplateMessage(
        template_id="",
        first=TemplateValue(catalogue("booking_reminder_first", name=file.masked_name)),
        # keyword1 who, keyword2 what, keyword3 when (the reminder template's fields, in its order)
        keywords=(
            TemplateValue(file.masked_name),
            TemplateValue(short(vaccine_name(appointment.vaccine_code))),
            TemplateValue(when),
        ),
        remark=TemplateValue(catalogue("booking_reminder_remark", clinic=clinic_name)),
        url=settings.public_url.rstrip("/") + "/",
    )
    told = await tell_family(
        session,
        certificate,
        message,
        key=f"appointment_reminder:{appointment.id}",
        template_id=settings.booking_template_id,
        page=settings.wxmini_reminder_page,
        now=now,
    )
    record_access(
        session,
        actor_kind="system",
        actor_ref="reminders",
        action="appointment_reminder_sent",
        certificate_id=certificate.id,
        vaccinee_id=appointment.vaccinee_id,
        detail={
            "appointment": appointment.id,
            "to": sorted({f"{account.platform}:identity:{account.identity_id}" for account in told}),
        },
    )
    return len(told)
