"""The clinic's side of a shown code: scanning it takes a queue number (取号).

A code works once and only while the person who showed it may still see the certificate. A file already
in today's queue at this clinic keeps its number (a second code for the same child does not queue it
twice). Numbers are taken only at a clinic the registry lists inside the pilot regions; elsewhere the
desk is refused before the code is read, so the code stays usable. The person who showed the code, and
the holder when a family member showed it, are told the number on every platform they use, and the scan
is audited under the clinic's name, and so is every refusal, with its reason (a forged, malformed or
unknown code, or a refused clinic, without a certificate). Later desk steps (登记, 接种, 留观) build on the
visit this creates.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from datetime import date, datetime, time
from enum import StrEnum

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.booking.bookings import mark_attended
from bot.certificates.rules import Visible, in_pilot_region, open_visible
from bot.core.audit import record_about_certificate, record_access
from bot.core.catalogue import Catalogue
from bot.core.chinatime import CHINA, china_date
from bot.core.db import dialect_insert
from bot.core.pii import Vault
from bot.desk.filing import open_details
from bot.desk.notify import DeskNews, FamilyTeller
from bot.showcode.codes import CodeProblem, CodeRejected, redeem_code
from models import OPEN_VISIT_STATUSES, Clinic, CodeToken, FilingRequest, FilingStatus, Identity, QueueCounter, Visit

REFUSED = "desk_refused"  # the audit action of every refused scan; the reason says why


class ClinicProblem(StrEnum):
    """Why a desk may not take numbers at the clinic it named."""

    UNKNOWN = "unknown"  # no clinic with that code in the registry
    NOT_PILOT = "not_pilot"  # a real clinic, outside the pilot regions


class ClinicRefused(Exception):
    """The desk's clinic cannot take numbers; ``problem`` says why, ``clinic`` is the code it gave."""

    def __init__(self, problem: ClinicProblem, clinic: str) -> None:
        super().__init__(problem.value)
        self.problem = problem
        self.clinic = clinic


async def desk_clinic(session: AsyncSession, code: str, pilot_regions: Collection[str], *, staff: str = "") -> Clinic:
    """The registry's clinic ``code`` if numbers may be taken there; else records the refusal and raises.

    Raises :class:`ClinicRefused`. The refusal is audited (commit after it, as after a refused code).
    """
    clinic = (await session.scalars(select(Clinic).where(Clinic.code == code))).first()
    if clinic is not None and in_pilot_region(clinic.region_code, pilot_regions):
        return clinic
    problem = ClinicProblem.UNKNOWN if clinic is None else ClinicProblem.NOT_PILOT
    await record_refusal(session, clinic_code=code, staff=staff, reason=f"clinic_{problem.value}")
    raise ClinicRefused(problem, code)


@dataclasses.dataclass(frozen=True)
class Ticket:
    """What the desk screen shows after a scan: the number and the masked file."""

    visit_id: int
    queue_number: int
    already_queued: bool
    certificate_id: int | None  # None for a person without a file yet (自动建档)
    masked_name: str
    masked_id: str
    birth_year_month: str  # "2023-05": enough to tell two children apart, not the birth date
    role: str  # how the person who showed it relates to the certificate: holder | grantee | filing


async def _lock_counter(session: AsyncSession, clinic_id: int, day: date) -> None:
    """Create or lock the clinic's counter row for the day; held until the transaction ends.

    Two desks queuing the same child (two codes) then take turns: the second sees the first's visit and
    no number is drawn for nothing.
    """
    insert = dialect_insert(session)
    statement = (
        insert(QueueCounter)
        .values(clinic_id=clinic_id, day=day, last_number=0)
        .on_conflict_do_update(
            index_elements=[QueueCounter.clinic_id, QueueCounter.day],
            set_={"last_number": QueueCounter.last_number},  # no change: the row lock is the point
        )
    )
    await session.execute(statement)


async def _next_number(session: AsyncSession, clinic_id: int, day: date) -> int:
    """Bump the clinic's (locked) counter for the day and return the new number."""
    statement = (
        update(QueueCounter)
        .where(QueueCounter.clinic_id == clinic_id, QueueCounter.day == day)
        .values(last_number=QueueCounter.last_number + 1)
        .returning(QueueCounter.last_number)
    )
    return int((await session.execute(statement)).scalar_one())


async def _open_visit(session: AsyncSession, vaccinee_id: int, clinic_id: int, day: date) -> Visit | None:
    query = select(Visit).where(
        Visit.vaccinee_id == vaccinee_id,
        Visit.clinic_id == clinic_id,
        Visit.visit_date == day,
        Visit.status.in_(OPEN_VISIT_STATUSES),
    )
    return (await session.scalars(query)).first()


async def _queue(
    session: AsyncSession, visible: Visible, clinic: Clinic, shown_by: int, now: datetime
) -> tuple[Visit, bool]:
    """Today's open visit of this file at this clinic, or a new one with the next number.

    The visit keeps who showed the code (``shown_by``, an identity): the desk's later steps tell them.
    """
    day = china_date(now)
    vaccinee_id = visible.certificate.vaccinee_id
    await _lock_counter(session, clinic.id, day)
    existing = await _open_visit(session, vaccinee_id, clinic.id, day)
    if existing is not None:
        return existing, True
    visit = Visit(
        vaccinee_id=vaccinee_id,
        clinic_id=clinic.id,
        certificate_id=visible.certificate.id,
        visit_date=day,
        queue_number=await _next_number(session, clinic.id, day),
        status="queued",
        queued_at=now,
        shown_by_identity_id=shown_by,
    )
    try:
        async with session.begin_nested():
            session.add(visit)
    except IntegrityError:
        # Not expected under the counter's lock; kept as the database's last word on one open visit.
        existing = await _open_visit(session, vaccinee_id, clinic.id, day)
        if existing is None:
            raise
        return existing, True
    return visit, False


def desk_actor(clinic_code: str, staff: str) -> str:
    """How the audit log names a desk: the clinic's code and who scanned."""
    return f"clinic:{clinic_code}:{staff}"[:64]


async def record_refusal(
    session: AsyncSession,
    *,
    clinic_code: str,
    staff: str,
    reason: str,
    certificate_id: int | None = None,
    shown_by_identity_id: int | None = None,
) -> None:
    """Audit a refused scan under the desk's name, with why (never what was scanned: it may be anything)."""
    await record_about_certificate(
        session,
        certificate_id,
        actor_kind="staff",
        actor_ref=desk_actor(clinic_code, staff),
        action=REFUSED,
        reason=reason,
        detail={"shown_by": f"identity:{shown_by_identity_id}"} if shown_by_identity_id is not None else {},
    )


async def _take_filing_number(
    session: AsyncSession,
    vault: Vault,
    catalogue: Catalogue,
    clinic: Clinic,
    token: CodeToken,
    identity: Identity | None,
    staff: str,
    now: datetime,
    family: FamilyTeller | None,
) -> Ticket:
    """取号 for a person without a file (自动建档): the visit waits for the registrar to file them."""
    request = await session.get(FilingRequest, token.filing_request_id) if token.filing_request_id else None
    if (
        identity is None
        or request is None
        or request.status != FilingStatus.PENDING
        or request.requested_by_identity_id != identity.id
    ):
        await record_refusal(
            session,
            clinic_code=clinic.code,
            staff=staff,
            reason=CodeProblem.NO_ACCESS.value,
            shown_by_identity_id=token.shown_by_identity_id,
        )
        raise CodeRejected(CodeProblem.NO_ACCESS, token)
    day = china_date(now)
    await _lock_counter(session, clinic.id, day)
    query = select(Visit).where(
        Visit.filing_request_id == request.id,
        Visit.clinic_id == clinic.id,
        Visit.visit_date == day,
        Visit.status.in_(OPEN_VISIT_STATUSES),
    )
    visit = (await session.scalars(query)).first()
    already = visit is not None
    if visit is None:
        visit = Visit(
            vaccinee_id=None,
            filing_request_id=request.id,
            clinic_id=clinic.id,
            certificate_id=None,
            visit_date=day,
            queue_number=await _next_number(session, clinic.id, day),
            status="queued",
            queued_at=now,
            shown_by_identity_id=identity.id,
        )
        session.add(visit)
        await session.flush()
    details = open_details(vault, request)
    record_access(
        session,
        actor_kind="staff",
        actor_ref=desk_actor(clinic.code, staff),
        action="desk_queue",
        reason="filing",
        detail={"visit": visit.id, "queue_number": visit.queue_number, "repeat": already, "request": request.id},
    )
    if not already:
        teller = family or FamilyTeller(catalogue)
        name = details.masked_name
        text = teller.catalogue("desk_queued_filing", name=name, clinic=clinic.name, number=visit.queue_number)
        news = DeskNews(
            text,
            name,
            teller.catalogue("desk_step_queued"),
            teller.catalogue("desk_queued_short", number=visit.queue_number),
            number=str(visit.queue_number),
        )
        await teller.tell(session, news, f"desk_queue:{visit.id}", identity_ids=[identity.id], now=now)
    birth = details.birth_date
    return Ticket(
        visit_id=visit.id,
        queue_number=visit.queue_number,
        already_queued=already,
        certificate_id=None,
        masked_name=details.masked_name,
        masked_id=details.masked_id,
        birth_year_month=f"{birth.year:04d}-{birth.month:02d}",
        role="filing",
    )


async def take_number(
    session: AsyncSession,
    vault: Vault,
    catalogue: Catalogue,
    *,
    clinic_code: str,
    pilot_regions: Collection[str],
    payload: str,
    staff: str,
    now: datetime,
    family: FamilyTeller | None = None,
) -> Ticket:
    """Redeem a scanned code at the clinic ``clinic_code`` and queue its file.

    The family is told its number through ``family`` (texts from ``catalogue`` when none is given; pass
    :meth:`FamilyTeller.from_settings` so people outside the chat windows get a template message).

    Raises :class:`ClinicRefused` (before the code is read: it stays unspent) or :class:`CodeRejected`.
    Commit after a refusal too: a code shown by someone who lost access stays spent, and every refusal is
    in the audit log with its reason.
    """
    clinic = await desk_clinic(session, clinic_code, pilot_regions, staff=staff)
    try:
        token = await redeem_code(session, vault, payload, now)
    except CodeRejected as exc:
        spent = exc.token
        await record_refusal(
            session,
            clinic_code=clinic.code,
            staff=staff,
            reason=exc.problem.value,
            certificate_id=spent.certificate_id if spent is not None else None,
            shown_by_identity_id=spent.shown_by_identity_id if spent is not None else None,
        )
        raise
    identity = await session.get(Identity, token.shown_by_identity_id)
    if token.certificate_id is None:
        return await _take_filing_number(session, vault, catalogue, clinic, token, identity, staff, now, family)
    visible = await open_visible(session, vault, identity, token.certificate_id) if identity else None
    if identity is None or visible is None:
        # The code is spent either way; who tried to use a certificate they lost is recorded.
        await record_refusal(
            session,
            clinic_code=clinic.code,
            staff=staff,
            reason=CodeProblem.NO_ACCESS.value,
            certificate_id=token.certificate_id,
            shown_by_identity_id=token.shown_by_identity_id,
        )
        raise CodeRejected(CodeProblem.NO_ACCESS, token)
    visit, already = await _queue(session, visible, clinic, identity.id, now)
    # A booking for today at this clinic is kept: the person came (no-show marking leaves it alone).
    today = datetime.combine(china_date(now), time(0), tzinfo=CHINA)
    attended = await mark_attended(session, visible.certificate.vaccinee_id, clinic.id, today)
    record_access(
        session,
        actor_kind="staff",
        actor_ref=desk_actor(clinic.code, staff),
        action="desk_queue",
        reason=visible.role,
        certificate_id=visible.certificate.id,
        vaccinee_id=visible.certificate.vaccinee_id,
        detail={
            "visit": visit.id,
            "queue_number": visit.queue_number,
            "repeat": already,
            "bookings_attended": attended,
        },
    )
    if not already:
        teller = family or FamilyTeller(catalogue)
        name = visible.file.masked_name
        text = teller.catalogue("desk_queued", name=name, clinic=clinic.name, number=visit.queue_number)
        step = teller.catalogue("desk_step_queued")
        short = teller.catalogue("desk_queued_short", number=visit.queue_number)
        news = DeskNews(text, name, step, short, number=str(visit.queue_number))
        # The person who showed the code and, when that was a family member, the holder too.
        people = [identity.id, visible.certificate.holder_identity_id]
        await teller.tell(session, news, f"desk_queue:{visit.id}", identity_ids=people, now=now)
    birth = visible.file.birth_date
    return Ticket(
        visit_id=visit.id,
        queue_number=visit.queue_number,
        already_queued=already,
        certificate_id=visible.certificate.id,
        masked_name=visible.file.masked_name,
        masked_id=visible.file.masked_id,
        birth_year_month=f"{birth.year:04d}-{birth.month:02d}",
        role=visible.role,
    )
