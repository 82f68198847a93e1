"""Booking slots and appointments, desk visits (亮码 flow), clinic notices and reminders."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, Date, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, BigId, StrEnumType, UTCDateTime, utcnow


class AppointmentStatus(StrEnum):
    """A booking: booked, then cancelled, attended or a no-show."""

    BOOKED = "booked"
    CANCELLED = "cancelled"
    ATTENDED = "attended"
    NO_SHOW = "no_show"


class VisitStatus(StrEnum):
    """One pass through the clinic desk: queued → registered → vaccinated → observing → done."""

    QUEUED = "queued"
    REGISTERED = "registered"
    VACCINATED = "vaccinated"
    OBSERVING = "observing"
    DONE = "done"


# A visit in one of these is still open: the file cannot be queued again at that clinic that day.
OPEN_VISIT_STATUSES: tuple[VisitStatus, ...] = (
    VisitStatus.QUEUED,
    VisitStatus.REGISTERED,
    VisitStatus.VACCINATED,
    VisitStatus.OBSERVING,
)


class NoticeKind(StrEnum):
    """Why a clinic writes to its families."""

    CLOSURE = "closure"
    RESCHEDULE = "reschedule"
    STOCK = "stock"


class ReminderKind(StrEnum):
    """What a reminder is about."""

    DOSE_DUE = "dose_due"
    APPOINTMENT = "appointment"


class ReminderStatus(StrEnum):
    """scheduled → sent | cancelled | no_recipient (nobody follows the account any more)."""

    SCHEDULED = "scheduled"
    SENT = "sent"
    CANCELLED = "cancelled"
    NO_RECIPIENT = "no_recipient"


class Slot(Base):
    """A bookable time slot for one vaccine at one clinic."""

    __tablename__ = "slots"
    __table_args__ = (CheckConstraint("booked >= 0 AND booked <= capacity", name="within_capacity"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    clinic_id: Mapped[int] = mapped_column(ForeignKey("clinics.id"), index=True)
    vaccine_code: Mapped[str] = mapped_column(String(32))
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime)
    capacity: Mapped[int] = mapped_column(Integer)
    booked: Mapped[int] = mapped_column(Integer, default=0)
    mode: Mapped[str] = mapped_column(String(16), default="first_come")  # first_come | lottery


class Appointment(Base):
    """A booking of one vaccinee into one slot."""

    __tablename__ = "appointments"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    slot_id: Mapped[int] = mapped_column(ForeignKey("slots.id"), index=True)
    vaccinee_id: Mapped[int] = mapped_column(ForeignKey("vaccinees.id"), index=True)
    vaccine_code: Mapped[str] = mapped_column(String(32))
    booked_by_identity_id: Mapped[int] = mapped_column(ForeignKey("identities.id"))
    status: Mapped[AppointmentStatus] = mapped_column(StrEnumType(AppointmentStatus), default=AppointmentStatus.BOOKED)
    idempotency_key: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


# One live booking per person per vaccine, enforced by the database.
Index(
    "uq_appointments_active",
    Appointment.vaccinee_id,
    Appointment.vaccine_code,
    unique=True,
    sqlite_where=text("status = 'booked'"),
    postgresql_where=text("status = 'booked'"),
)


class Visit(Base):
    """One pass through the clinic desk: queued → registered → vaccinated → observing → done."""

    __tablename__ = "visits"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    vaccinee_id: Mapped[int] = mapped_column(ForeignKey("vaccinees.id"), index=True)
    clinic_id: Mapped[int] = mapped_column(ForeignKey("clinics.id"), index=True)
    certificate_id: Mapped[int | None] = mapped_column(ForeignKey("certificates.id"))
    visit_date: Mapped[date] = mapped_column(Date)
    queue_number: Mapped[int] = mapped_column(Integer)
    status: Mapped[VisitStatus] = mapped_column(StrEnumType(VisitStatus), default=VisitStatus.QUEUED)
    dose_id: Mapped[int | None] = mapped_column(ForeignKey("doses.id"))
    queued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    registered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    vaccinated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    observation_ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


Index("uq_visits_queue", Visit.clinic_id, Visit.visit_date, Visit.queue_number, unique=True)
# A file is in a clinic's queue once a day at most while its visit is open (two desks, one child).
_OPEN_VISIT = text(f"status IN ({', '.join(repr(status.value) for status in OPEN_VISIT_STATUSES)})")
Index(
    "uq_visits_open",
    Visit.vaccinee_id,
    Visit.clinic_id,
    Visit.visit_date,
    unique=True,
    sqlite_where=_OPEN_VISIT,
    postgresql_where=_OPEN_VISIT,
)


class QueueCounter(Base):
    """The last queue number a clinic gave out on one day; bumped atomically by each 取号."""

    __tablename__ = "queue_counters"

    clinic_id: Mapped[int] = mapped_column(ForeignKey("clinics.id"), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    last_number: Mapped[int] = mapped_column(Integer)


class Notice(Base):
    """A clinic's notice to the families booked or registered with it."""

    __tablename__ = "notices"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    clinic_id: Mapped[int] = mapped_column(ForeignKey("clinics.id"), index=True)
    kind: Mapped[NoticeKind] = mapped_column(StrEnumType(NoticeKind))
    title: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)
    audience: Mapped[str] = mapped_column(String(16), default="booked")  # booked | registered
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Reminder(Base):
    """A scheduled reminder; ``job_key`` is unique so a new plan replaces the old one."""

    __tablename__ = "reminders"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    job_key: Mapped[str] = mapped_column(String(128), unique=True)
    vaccinee_id: Mapped[int] = mapped_column(ForeignKey("vaccinees.id"), index=True)
    kind: Mapped[ReminderKind] = mapped_column(StrEnumType(ReminderKind))
    vaccine_code: Mapped[str] = mapped_column(String(32))
    dose_number: Mapped[int] = mapped_column(Integer)
    due_on: Mapped[date] = mapped_column(Date)
    send_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    status: Mapped[ReminderStatus] = mapped_column(StrEnumType(ReminderStatus), default=ReminderStatus.SCHEDULED)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# The sender's query: scheduled reminders whose time has come (the table keeps every reminder ever sent).
Index("ix_reminders_status_send_at", Reminder.status, Reminder.send_at)
