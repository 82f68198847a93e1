"""Booking slots and appointments, desk visits (亮码 flow) and reminders (clinic notices: models.notice)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Collection
from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import (
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
    Update,
    case,
    event,
    text,
    update,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from models.base import Base, BigId, StrEnumType, UTCDateTime, utcnow
from models.booking_numbers import new_booking_number
from models.registry import Dose, Sealer

# The field names bound into a reminder's sealed detail and keyed into its job key.
REMINDER_FIELD = "reminder_detail"
REMINDER_KEY_FIELD = "reminder_key"
# The field name bound into a visit's sealed desk record (health answers, dose plan, dose given).
VISIT_FIELD = "visit_desk_record"
# The field name bound into a filing request's sealed details (the person as declared or verified).
FILING_FIELD = "filing_details"
# The field name bound into a clinic API key's sealed secret.
API_SECRET_FIELD = "clinic_api_secret"  # noqa: S105 (a field name, not a secret)


class AppointmentStatus(StrEnum):
    """A booking: booked, then cancelled, attended or a no-show."""

    BOOKED = "booked"
    CANCELLED = "cancelled"
    ATTENDED = "attended"
    NO_SHOW = "no_show"


class VisitStatus(StrEnum):
    """One pass through the clinic desk: queued → registered → verified → vaccinated → observing → done."""

    QUEUED = "queued"
    REGISTERED = "registered"  # 登记 done (health answers recorded); 一验证 may be asked for
    VERIFIED = "verified"  # 一验证 done: the family (or staff in person) confirmed the dose plan
    VACCINATED = "vaccinated"
    OBSERVING = "observing"
    DONE = "done"


# A visit in one of these is still open: the file cannot be queued again at that clinic that day.
OPEN_VISIT_STATUSES: tuple[VisitStatus, ...] = (
    VisitStatus.QUEUED,
    VisitStatus.REGISTERED,
    VisitStatus.VERIFIED,
    VisitStatus.VACCINATED,
    VisitStatus.OBSERVING,
)


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
    # When booking opens (None: as soon as published); the chat says when if asked too early.
    opens_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    funding: Mapped[str] = mapped_column(String(16), default="programme")  # programme | self_paid
    price_fen: Mapped[int | None] = mapped_column(Integer)  # self-paid vaccines: the price shown, in fen
    # A closed slot takes no new bookings (a day or a window the clinic closed).
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


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
    # When the day-before reminder went out (claimed by a conditional UPDATE: one process sends it).
    reminded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The number the family quotes (random, so it tells nobody how many bookings there are).
    number: Mapped[str] = mapped_column(String(16), unique=True, default=new_booking_number)


# The chat's query: one vaccine's slots at a clinic, by time.
Index("ix_slots_clinic_vaccine_starts", Slot.clinic_id, Slot.vaccine_code, Slot.starts_at)

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
    """One pass through the clinic desk: queued → registered → verified → vaccinated → observing → done.

    What the desk learns about the person (health answers, the dose plan confirmed in 一验证, the dose
    given, an in-person confirmation's reason) is health data: it lives sealed in ``desk_enc`` (a JSON
    object read by ``bot.desk.steps``); the plain columns say only where the visit stands and when.
    """

    __tablename__ = "visits"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    # None while a person without a file (自动建档) waits for the registrar to file them.
    vaccinee_id: Mapped[int | None] = mapped_column(ForeignKey("vaccinees.id"), index=True)
    clinic_id: Mapped[int] = mapped_column(ForeignKey("clinics.id"), index=True)
    certificate_id: Mapped[int | None] = mapped_column(ForeignKey("certificates.id"))
    filing_request_id: Mapped[int | None] = mapped_column(ForeignKey("filing_requests.id"))
    visit_date: Mapped[date] = mapped_column(Date)
    queue_number: Mapped[int] = mapped_column(Integer)
    status: Mapped[VisitStatus] = mapped_column(StrEnumType(VisitStatus), default=VisitStatus.QUEUED)
    dose_id: Mapped[int | None] = mapped_column(ForeignKey("doses.id"))
    queued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    registered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    vaccinated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    observation_ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Who showed the code that queued the visit (told at each step, with the certificate's holder).
    shown_by_identity_id: Mapped[int | None] = mapped_column(ForeignKey("identities.id"))
    called_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # 叫号
    desk: Mapped[str] = mapped_column(String(32), default="")  # where 登记 sent them (「2号接种台」)
    desk_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    # 一验证: each request (a new plan) bumps the round, so a 「确认」 confirms the plan it was sent.
    confirmation_round: Mapped[int] = mapped_column(Integer, default=0)
    confirmation_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    verified_by: Mapped[str] = mapped_column(String(64), default="")  # identity:N | staff:N@clinic:M | …


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


@dataclasses.dataclass(frozen=True)
class ReminderDetail:
    """Which dose a reminder is about and when it is due: kept sealed in ``reminders.detail_enc``."""

    vaccine_code: str
    dose_number: int
    due_on: date

    def to_json(self) -> str:
        """The detail as the JSON text that is sealed."""
        values = {"vaccine_code": self.vaccine_code, "dose_number": self.dose_number, "due_on": self.due_on.isoformat()}
        return json.dumps(values, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ReminderDetail:
        """The detail :meth:`to_json` wrote."""
        data = json.loads(text)
        return cls(data["vaccine_code"], data["dose_number"], date.fromisoformat(data["due_on"]))


class Reminder(Base):
    """A scheduled reminder; ``job_key`` is unique so a new plan replaces the old one.

    The dose it is about (a child's next dose follows from the doses given and the birth date) is sealed.
    """

    __tablename__ = "reminders"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    # A keyed hash of (file, vaccine, dose number): planning again finds the same key without naming the dose.
    job_key: Mapped[str] = mapped_column(String(128), unique=True)
    vaccinee_id: Mapped[int] = mapped_column(ForeignKey("vaccinees.id"), index=True)
    kind: Mapped[ReminderKind] = mapped_column(StrEnumType(ReminderKind))
    detail_enc: Mapped[bytes] = mapped_column(LargeBinary)
    # Plain: the sender selects by it. It is when the family is told (the next reminder hour, or a few days
    # before a dose that moved later), not a date of the child's.
    send_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    status: Mapped[ReminderStatus] = mapped_column(StrEnumType(ReminderStatus), default=ReminderStatus.SCHEDULED)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    @staticmethod
    def key_for(vault: Sealer, vaccinee_id: int, vaccine_code: str, dose_number: int) -> str:
        """The ``job_key`` of one dose's reminder for one file."""
        return vault.digest(REMINDER_KEY_FIELD, f"{vaccinee_id}:{vaccine_code}:{dose_number}")

    @staticmethod
    def seal_detail(vault: Sealer, detail: ReminderDetail) -> bytes:
        """``detail`` sealed for ``detail_enc``."""
        return vault.seal(REMINDER_FIELD, detail.to_json())

    def detail(self, vault: Sealer) -> ReminderDetail:
        """The reminder's sealed detail, opened."""
        return ReminderDetail.from_json(vault.open(REMINDER_FIELD, self.detail_enc))


# The sender's query: scheduled reminders whose time has come (the table keeps every reminder ever sent).
Index("ix_reminders_status_send_at", Reminder.status, Reminder.send_at)


class FilingStatus(StrEnum):
    """A request to file a person who has no file yet: pending → filed (or cancelled)."""

    PENDING = "pending"
    FILED = "filed"
    CANCELLED = "cancelled"


class FilingRequest(Base):
    """自动建档: a verified person without a file (``relation`` self), or a child a parent added (child).

    Shown at a clinic as a code; the registrar checks the person and a file is created (or an existing one
    found and compared). Who they are (name, ID or birth-certificate number, sex, birth date) is sealed in
    ``details_enc``; the keyed hashes find an existing file.
    """

    __tablename__ = "filing_requests"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    requested_by_identity_id: Mapped[int] = mapped_column(ForeignKey("identities.id"), index=True)
    relation: Mapped[str] = mapped_column(String(8))  # self | child
    details_enc: Mapped[bytes] = mapped_column(LargeBinary)
    id_number_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    birth_cert_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    status: Mapped[FilingStatus] = mapped_column(StrEnumType(FilingStatus), default=FilingStatus.PENDING)
    vaccinee_id: Mapped[int | None] = mapped_column(ForeignKey("vaccinees.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    filed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ClinicApiKey(Base):
    """A clinic information system's key for ``/clinic/api/v1``: requests are HMAC-signed with its secret.

    The secret is needed in the clear to check a signature, so it is sealed with the vault (never hashed
    only); ``key_id`` is public and names the key in requests and in the audit log.
    """

    __tablename__ = "clinic_api_keys"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    key_id: Mapped[str] = mapped_column(String(32), unique=True)
    clinic_id: Mapped[int] = mapped_column(ForeignKey("clinics.id"), index=True)
    secret_enc: Mapped[bytes] = mapped_column(LargeBinary)
    label: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ClinicApiNonce(Base):
    """A nonce a clinic API key has used: a second request with it is a replay (kept past the clock skew)."""

    __tablename__ = "clinic_api_nonces"
    __table_args__ = (UniqueConstraint("api_key_id", "nonce"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    api_key_id: Mapped[int] = mapped_column(ForeignKey("clinic_api_keys.id", ondelete="CASCADE"))
    nonce: Mapped[str] = mapped_column(String(64))
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


# The field name bound into a plan's sealed next date.
PLAN_FIELD = "reminder_plan"


class ReminderPlan(Base):
    """When a claimed child's file must next be planned (incremental reminder planning).

    One row per claimed child. A change to the file, its doses or its claim marks the row (``plan_from`` the
    day of the change, ``next_enc`` cleared, ``generation`` bumped); the planner forecasts it, schedules its
    reminders and seals the next date on which its forecast can bring a new reminder. That exact date follows
    from the birth date, so only a coarse one is plain: ``plan_from`` lies a keyed pseudo-random 0–13 days
    before it (or is the day of a change). ``plan_from`` NULL: nothing more to plan unless the file changes.
    """

    __tablename__ = "reminder_plans"

    vaccinee_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("vaccinees.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    plan_from: Mapped[date | None] = mapped_column(Date, index=True)
    next_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    # Bumped by every change: the planner writes its result only if no change came in meanwhile.
    generation: Mapped[int] = mapped_column(Integer, default=0)

    @staticmethod
    def changed(vaccinee_ids: Collection[int], day: date) -> Update:
        """The statement marking these files' plans for planning again from ``day`` (or earlier if due earlier).

        Files with no plan are not claimed children's: nothing to mark.
        """
        sooner = case(
            (ReminderPlan.plan_from.is_(None) | (ReminderPlan.plan_from > day), day), else_=ReminderPlan.plan_from
        )
        return (
            update(ReminderPlan)
            .where(ReminderPlan.vaccinee_id.in_(sorted(vaccinee_ids)))
            .values(plan_from=sooner, next_enc=None, generation=ReminderPlan.generation + 1)
        )

    @staticmethod
    def seal_next(vault: Sealer, vaccinee_id: int, day: date) -> bytes:
        """The exact next planning date of one file, sealed (the file's id bound in)."""
        return vault.seal(PLAN_FIELD, f"{vaccinee_id}:{day.isoformat()}")

    @staticmethod
    def open_next(vault: Sealer, vaccinee_id: int, blob: bytes) -> date:
        """The date :meth:`seal_next` sealed; refuses one sealed for another file."""
        owner, _, day = vault.open(PLAN_FIELD, blob).partition(":")
        if owner != str(vaccinee_id):
            raise ValueError("a reminder plan sealed for another file")
        return date.fromisoformat(day)


@event.listens_for(Session, "before_flush")
def _plan_again_when_doses_change(session: Session, _context: object, _instances: object) -> None:
    """A dose added, changed or removed through the ORM marks its file's reminder plan, whoever wrote it.

    Why here: doses are written by the registry import, clinic desks and tools; a writer that forgot to mark
    the plan would leave a child's next reminder waiting for a date computed from the old record. The mark
    takes the dose's effective date (a dose shown tomorrow is planned tomorrow). Bulk Core writes bypass
    this and mark the plans themselves (``ReminderPlan.changed``).
    """
    days: dict[int, date] = {}
    for item in (*session.new, *session.dirty, *session.deleted):
        if isinstance(item, Dose) and item.vaccinee_id is not None and item.effective_from is not None:
            days[item.vaccinee_id] = min(days.get(item.vaccinee_id, item.effective_from), item.effective_from)
    by_day: dict[date, list[int]] = {}
    for vaccinee_id, day in days.items():
        by_day.setdefault(day, []).append(vaccinee_id)
    for day, ids in sorted(by_day.items()):
        # On the flush's connection, outside the unit of work (an ORM statement here would flush again).
        session.connection().execute(ReminderPlan.changed(ids, day).execution_options(synchronize_session=False))
