"""The clinic desk as a state machine: 叫号, 登记 (三查七对), 一验证, 接种, 留观 — for the console and the clinic API.

A visit (queued by :func:`bot.desk.queue.take_number`) moves queued → registered → verified →
vaccinated → observing → done. Each step is one conditional UPDATE from the state before it, so a
double click or two desks record a step once; a repeat returns the visit as it stands, and a step out of
order is refused with a reason (:class:`StepRefused`). 接种 records the dose and starts the 30-minute
observation in one step (the nurse sends the person to the observation area), so a visit passes through
``vaccinated`` to ``observing`` at once; ``vaccinated_at`` keeps the moment.

Every function checks that the visit belongs to the actor's clinic (another clinic's visit is NOT_FOUND,
exactly like a missing one), audits under :meth:`DeskActor.audit_actor`, and leaves the transaction to
the caller (``async with session.begin()``; a refused step raises, so the block rolls back). The family —
the person who showed the code and the certificate's holder — is told at each step that matters
(:mod:`bot.desk.notify`): pass ``family=FamilyTeller.from_settings(settings, catalogue)`` so people outside
the chat windows get the configured template; without it they are sent texts. Every step also takes
``now=`` (an injected clock). A person without a file (自动建档) is filed first (:mod:`bot.desk.filing`).

What the desk learns about the person (health answers, the dose plan, the dose given, reasons) is health
data: it is kept sealed in ``visits.desk_enc``; the audit rows name the visit and the step, never the data.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.certificates.rules import FileView, doses_of, open_file
from bot.core.audit import record_access
from bot.core.catalogue import MESSAGES
from bot.core.chinatime import china_date
from bot.core.pii import Vault, mask_name
from bot.desk.notify import DeskNews, FamilyTeller
from bot.immunization.forecast import Forecast, forecast_next_doses
from bot.immunization.forecast import GivenDose as ScheduleDose
from bot.immunization.vaccines import find_vaccine, vaccine_name
from models import (
    Certificate,
    Dose,
    DoseDetail,
    DoseSource,
    FilingRequest,
    Reminder,
    ReminderStatus,
    Vaccinee,
    Visit,
    VisitStatus,
    utcnow,
)
from models.clinic import FILING_FIELD, VISIT_FIELD

OBSERVATION = timedelta(minutes=30)
REASON_LIMIT = 200  # a reason typed at the desk (an override, an in-person confirmation)
FIELD_LIMIT = 64  # a lot number, a manufacturer, a vaccinator's name

# The order of the steps; a step's repeat is recognised by the visit being at or past its target.
ORDER: tuple[VisitStatus, ...] = (
    VisitStatus.QUEUED,
    VisitStatus.REGISTERED,
    VisitStatus.VERIFIED,
    VisitStatus.VACCINATED,
    VisitStatus.OBSERVING,
    VisitStatus.DONE,
)


class StepProblem(StrEnum):
    """Why a desk step was refused (each has a Chinese message ``desk_problem_<value>`` in the catalogue)."""

    NOT_FOUND = "not_found"  # no such visit at this clinic (another clinic's visit looks the same)
    OUT_OF_ORDER = "out_of_order"  # an earlier step is missing
    NOT_REQUESTED = "not_requested"  # 一验证 confirmed before it was asked for (no dose plan yet)
    UNKNOWN_VACCINE = "unknown_vaccine"
    BAD_DOSE_NUMBER = "bad_dose_number"
    NOT_DUE = "not_due"  # the dose is not on the due list and no override reason was given
    ALREADY_GIVEN = "already_given"  # the file already has this dose
    EXPIRED_LOT = "expired_lot"  # the lot's expiry date is before today (China time)
    MISSING_FIELD = "missing_field"  # a lot number, site, route or vaccinator left empty
    BAD_ROUTE = "bad_route"
    BAD_SITE = "bad_site"
    REASON_NEEDED = "reason_needed"  # an in-person confirmation, an override or an early finish needs why
    OBSERVATION_NOT_OVER = "observation_not_over"
    HEALTH_FLAGGED = "health_flagged"  # 登记 recorded a fever or a contraindication: a reason is needed
    NOT_FILED = "not_filed"  # a person without a file: the registrar files them first (bot.desk.filing)
    MISMATCH_UNRESOLVED = "mismatch_unresolved"  # filing onto an existing file: a difference left open


class StepRefused(Exception):
    """A desk step was refused: ``problem`` says why, ``message`` says it in Chinese for the desk."""

    def __init__(self, problem: StepProblem, **values: Any) -> None:
        super().__init__(problem.value)
        self.problem = problem
        self.message = MESSAGES[f"desk_problem_{problem.value}"].format(**values)


class Route(StrEnum):
    """How a vaccine is given (接种途径)."""

    INTRAMUSCULAR = "intramuscular"  # 肌内
    SUBCUTANEOUS = "subcutaneous"  # 皮下
    INTRADERMAL = "intradermal"  # 皮内
    ORAL = "oral"  # 口服


class Site(StrEnum):
    """Where a vaccine is given (接种部位)."""

    LEFT_DELTOID = "left_deltoid"  # 左上臂三角肌
    RIGHT_DELTOID = "right_deltoid"  # 右上臂三角肌
    LEFT_THIGH = "left_thigh"  # 左大腿前外侧
    RIGHT_THIGH = "right_thigh"  # 右大腿前外侧
    LEFT_UPPER_ARM = "left_upper_arm"  # 左上臂外侧（皮下）
    RIGHT_UPPER_ARM = "right_upper_arm"  # 右上臂外侧（皮下）
    MOUTH = "mouth"  # 口服


@dataclasses.dataclass(frozen=True)
class DeskActor:
    """Who acts at the desk: a signed-in staff member or a clinic API key, always of one clinic."""

    clinic_id: int
    staff_id: int | None = None
    api_key_id: int | None = None

    def audit_actor(self) -> str:
        """How the audit log names the actor: ``staff:N@clinic:M`` or ``clinic-api:K@clinic:M``."""
        if self.api_key_id is not None:
            return f"clinic-api:{self.api_key_id}@clinic:{self.clinic_id}"
        return f"staff:{self.staff_id if self.staff_id is not None else '?'}@clinic:{self.clinic_id}"


@dataclasses.dataclass(frozen=True)
class HealthAnswers:
    """The 登记 health questions: fever, allergies, vaccines in the last weeks, contraindications."""

    fever: bool
    allergies: bool
    recent_vaccines: bool
    contraindications: bool
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain values (sealed with the visit)."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class DosePlan:
    """What 一验证 asks the family to confirm: the vaccine, dose number and lot about to be given."""

    vaccine_code: str
    dose_number: int
    lot_number: str
    manufacturer: str
    expires_on: date
    override_reason: str | None = None  # needed when the dose is not on the due list

    def to_dict(self) -> dict[str, Any]:
        """Plain values (sealed with the visit)."""
        return {**dataclasses.asdict(self), "expires_on": self.expires_on.isoformat()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DosePlan:
        """The plan :meth:`to_dict` wrote."""
        return cls(**{**data, "expires_on": date.fromisoformat(data["expires_on"])})


@dataclasses.dataclass(frozen=True)
class GivenDose:
    """How the dose was given: site, route and the vaccinator's name."""

    site: str  # a :class:`Site` value
    route: str  # a :class:`Route` value
    vaccinator: str

    def to_dict(self) -> dict[str, Any]:
        """Plain values (sealed with the visit)."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class DeskRecord:
    """What a visit's ``desk_enc`` holds: everything the desk learnt, sealed."""

    health: HealthAnswers | None = None
    plan: DosePlan | None = None
    given: GivenDose | None = None
    in_person_reason: str = ""
    early_finish_reason: str = ""
    filing_note: str = ""  # what the registrar noted when filing (自动建档)

    def to_json(self) -> str:
        """The JSON text that is sealed."""
        return json.dumps(
            {
                "health": self.health.to_dict() if self.health else None,
                "plan": self.plan.to_dict() if self.plan else None,
                "given": self.given.to_dict() if self.given else None,
                "in_person_reason": self.in_person_reason,
                "early_finish_reason": self.early_finish_reason,
                "filing_note": self.filing_note,
            },
            ensure_ascii=False,
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> DeskRecord:
        """The record :meth:`to_json` wrote."""
        data = json.loads(text)
        return cls(
            health=HealthAnswers(**data["health"]) if data.get("health") else None,
            plan=DosePlan.from_dict(data["plan"]) if data.get("plan") else None,
            given=GivenDose(**data["given"]) if data.get("given") else None,
            in_person_reason=data.get("in_person_reason", ""),
            early_finish_reason=data.get("early_finish_reason", ""),
            filing_note=data.get("filing_note", ""),
        )


@dataclasses.dataclass(frozen=True)
class VisitSummary:
    """One line of the queue: the visit, the person masked, its step and how long they have waited."""

    visit_id: int
    clinic_id: int
    visit_date: date
    queue_number: int
    masked_name: str
    status: VisitStatus
    queued_at: datetime
    waited: timedelta  # since 取号 (until now, or until the visit was done)
    called_at: datetime | None
    desk: str
    confirmation_requested: bool
    verified_by: str  # "" until 一验证: identity:N (in chat) or the staff actor (in person)
    observation_ends_at: datetime | None
    needs_filing: bool = False  # 自动建档: no file yet; the registrar files them first (bot.desk.filing)


@dataclasses.dataclass(frozen=True)
class DueDose:
    """A dose due now (or late, or coming) from the forecaster, with its number."""

    vaccine_code: str
    vaccine_name: str
    dose_number: int
    status: str  # overdue | due | upcoming
    earliest: date


@dataclasses.dataclass(frozen=True)
class PastDose:
    """A dose already in the file."""

    vaccine_code: str
    vaccine_name: str
    dose_number: int
    given_on: date
    source: DoseSource


@dataclasses.dataclass(frozen=True)
class VisitDetail:
    """三查七对: the full name (staff of this clinic may see it; audited), sex, age, due doses, answers, history."""

    summary: VisitSummary
    name: str
    sex: str  # M | F
    birth_date: date
    age_years: int
    age_months: int  # months past the completed years
    masked_id: str
    due: list[DueDose]
    history: list[PastDose]
    health: HealthAnswers | None
    plan: DosePlan | None
    given: GivenDose | None


@dataclasses.dataclass(frozen=True)
class DaySummary:
    """A clinic's day: visits per step and doses given per vaccine."""

    day: date
    by_status: dict[str, int]
    doses_given: int
    by_vaccine: dict[str, int]


# --- loading and checking ---------------------------------------------------------------------------


async def load_visit(session: AsyncSession, actor: DeskActor, visit_id: int, *, lock: bool = False) -> Visit:
    """The visit if it is this clinic's; NOT_FOUND otherwise (no word on whether another clinic has it)."""
    query = select(Visit).where(Visit.id == visit_id, Visit.clinic_id == actor.clinic_id)
    if lock:
        query = query.with_for_update()
    visit = (await session.scalars(query.execution_options(populate_existing=True))).first()
    if visit is None:
        raise StepRefused(StepProblem.NOT_FOUND)
    return visit


def read_record(vault: Vault, visit: Visit) -> DeskRecord:
    """The visit's sealed desk record, opened (empty before 登记)."""
    return DeskRecord.from_json(vault.open(VISIT_FIELD, visit.desk_enc)) if visit.desk_enc else DeskRecord()


def seal_record(vault: Vault, record: DeskRecord) -> bytes:
    """``record`` sealed for ``visits.desk_enc``."""
    return vault.seal(VISIT_FIELD, record.to_json())


def _at_or_past(visit: Visit, step: VisitStatus) -> bool:
    return ORDER.index(visit.status) >= ORDER.index(step)


async def _advance(
    session: AsyncSession, visit: Visit, before: VisitStatus | Sequence[VisitStatus], values: dict[str, Any]
) -> bool:
    """Move the visit on if it is still in ``before``: True for the one caller that moved it."""
    states = [before] if isinstance(before, VisitStatus) else list(before)
    result = await session.execute(
        update(Visit)
        .where(Visit.id == visit.id, Visit.status.in_(states))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    await session.refresh(visit)
    return bool(result.rowcount)  # type: ignore[attr-defined]


def _audit(session: AsyncSession, actor: DeskActor, visit: Visit, action: str, **detail: Any) -> None:
    record_access(
        session,
        actor_kind="staff" if actor.api_key_id is None else "clinic_api",
        actor_ref=actor.audit_actor(),
        action=action,
        certificate_id=visit.certificate_id,
        vaccinee_id=visit.vaccinee_id,
        detail={"visit": visit.id, **detail},
    )


async def _file(session: AsyncSession, vault: Vault, visit: Visit) -> FileView:
    """The visit's file, opened; a person not yet filed (自动建档) is refused NOT_FILED."""
    if visit.vaccinee_id is None:
        raise StepRefused(StepProblem.NOT_FILED)
    vaccinee = await session.get(Vaccinee, visit.vaccinee_id)
    assert vaccinee is not None  # a visit's file is never deleted while the visit exists
    return await open_file(session, vault, vaccinee, "child")


async def _family(session: AsyncSession, visit: Visit) -> list[int | None]:
    """Who is told: the person who showed the code and the certificate's holder."""
    holder = None
    if visit.certificate_id is not None:
        certificate = await session.get(Certificate, visit.certificate_id)
        holder = certificate.holder_identity_id if certificate is not None else None
    return [visit.shown_by_identity_id, holder]


async def _tell(
    session: AsyncSession, teller: FamilyTeller, visit: Visit, key: str, news: DeskNews, now: datetime
) -> None:
    await teller.tell(session, news, f"desk:{visit.id}:{key}", identity_ids=await _family(session, visit), now=now)


def summarise(visit: Visit, masked_name: str, now: datetime) -> VisitSummary:
    """A visit as a queue line (``masked_name`` already masked)."""
    end = visit.finished_at or now
    return VisitSummary(
        visit_id=visit.id,
        clinic_id=visit.clinic_id,
        visit_date=visit.visit_date,
        queue_number=visit.queue_number,
        masked_name=masked_name,
        status=VisitStatus(visit.status),
        queued_at=visit.queued_at,
        waited=max(end - visit.queued_at, timedelta(0)),
        called_at=visit.called_at,
        desk=visit.desk,
        confirmation_requested=visit.confirmation_requested_at is not None,
        verified_by=visit.verified_by,
        observation_ends_at=visit.observation_ends_at,
        needs_filing=visit.vaccinee_id is None,
    )


async def describe_visit(session: AsyncSession, vault: Vault, visit: Visit, now: datetime) -> VisitSummary:
    """A visit as a queue line: the file's name masked, or (not yet filed) the filing request's."""
    name = ""
    if visit.vaccinee_id is not None:
        vaccinee = await session.get(Vaccinee, visit.vaccinee_id)
        name = vault.open("name", vaccinee.name_enc) if vaccinee is not None else ""
    elif visit.filing_request_id is not None:
        request = await session.get(FilingRequest, visit.filing_request_id)
        if request is not None:
            name = json.loads(vault.open(FILING_FIELD, request.details_enc))["name"]
    return summarise(visit, mask_name(name), now)


_summary = describe_visit


async def _forecast(session: AsyncSession, vault: Vault, file: FileView, today: date) -> list[Forecast]:
    given = [
        ScheduleDose(d.vaccine_code, d.dose_number, d.given_on)
        for d in await doses_of(session, vault, file.vaccinee_id, today)
    ]
    return forecast_next_doses(file.birth_date, file.sex, given, today)


def _clean(text: str, limit: int = FIELD_LIMIT) -> str:
    return " ".join(text.split())[:limit]


# --- the queue -----------------------------------------------------------------------------------------


async def today_queue(
    session: AsyncSession, vault: Vault, actor: DeskActor, day: date, *, now: datetime | None = None
) -> list[VisitSummary]:
    """The clinic's visits of ``day`` in queue order (every step, done ones included), names masked."""
    moment = now or utcnow()
    visits = (
        await session.scalars(
            select(Visit)
            .where(Visit.clinic_id == actor.clinic_id, Visit.visit_date == day)
            .order_by(Visit.queue_number)
        )
    ).all()
    return [await _summary(session, vault, visit, moment) for visit in visits]


async def call_next(
    session: AsyncSession, vault: Vault, actor: DeskActor, day: date, *, now: datetime | None = None
) -> VisitSummary | None:
    """叫号: the lowest queued number not yet called is marked called and returned (None: nobody waits).

    Two desks calling at once call two different people: each claims its visit with a conditional UPDATE.
    """
    moment = now or utcnow()
    while True:
        candidate = (
            await session.scalars(
                select(Visit)
                .where(
                    Visit.clinic_id == actor.clinic_id,
                    Visit.visit_date == day,
                    Visit.status == VisitStatus.QUEUED,
                    Visit.called_at.is_(None),
                )
                .order_by(Visit.queue_number)
                .limit(1)
            )
        ).first()
        if candidate is None:
            return None
        claimed = await session.execute(
            update(Visit)
            .where(Visit.id == candidate.id, Visit.called_at.is_(None))
            .values(called_at=moment)
            .execution_options(synchronize_session=False)
        )
        await session.refresh(candidate)
        if claimed.rowcount:  # type: ignore[attr-defined]
            _audit(session, actor, candidate, "desk_call", queue_number=candidate.queue_number)
            return await _summary(session, vault, candidate, moment)


async def visit_detail(
    session: AsyncSession, vault: Vault, actor: DeskActor, visit_id: int, *, now: datetime | None = None
) -> VisitDetail:
    """三查七对 for one visit of this clinic: the full file as the desk must check it; the look is audited."""
    moment = now or utcnow()
    visit = await load_visit(session, actor, visit_id)
    file = await _file(session, vault, visit)
    today = china_date(moment)
    months = (today.year - file.birth_date.year) * 12 + today.month - file.birth_date.month
    if today.day < file.birth_date.day:
        months -= 1
    record = read_record(vault, visit)
    due = [
        DueDose(item.vaccine_code, vaccine_name(item.vaccine_code), item.dose_number, item.status, item.earliest)
        for item in await _forecast(session, vault, file, today)
    ]
    history = [
        PastDose(d.vaccine_code, vaccine_name(d.vaccine_code), d.dose_number, d.given_on, d.source)
        for d in await doses_of(session, vault, file.vaccinee_id, today)
    ]
    _audit(session, actor, visit, "desk_detail_viewed")
    return VisitDetail(
        summary=summarise(visit, file.masked_name, moment),
        name=file.name,
        sex=file.sex,
        birth_date=file.birth_date,
        age_years=max(months, 0) // 12,
        age_months=max(months, 0) % 12,
        masked_id=file.masked_id,
        due=due,
        history=history,
        health=record.health,
        plan=record.plan,
        given=record.given,
    )


# --- the steps -----------------------------------------------------------------------------------------


async def register(
    session: AsyncSession,
    vault: Vault,
    actor: DeskActor,
    visit_id: int,
    answers: HealthAnswers,
    *,
    desk: str = "",
    family: FamilyTeller | None = None,
    now: datetime | None = None,
) -> VisitSummary:
    """登记: record the health answers (sealed) and send the person on to ``desk`` (「2号接种台」, optional).

    queued → registered; a repeat returns the visit as it stands (the first answers are kept).
    """
    moment = now or utcnow()
    teller = family or FamilyTeller.plain()
    visit = await load_visit(session, actor, visit_id)
    if visit.status != VisitStatus.QUEUED:
        return await _summary(session, vault, visit, moment)
    if visit.vaccinee_id is None:
        raise StepRefused(StepProblem.NOT_FILED)
    clean = dataclasses.replace(answers, note=_clean(answers.note, REASON_LIMIT))
    record = dataclasses.replace(read_record(vault, visit), health=clean)
    moved = await _advance(
        session,
        visit,
        VisitStatus.QUEUED,
        {
            "status": VisitStatus.REGISTERED,
            "registered_at": moment,
            "desk": _clean(desk, 32),
            "desk_enc": seal_record(vault, record),
            "called_at": visit.called_at or moment,
        },
    )
    if moved:
        _audit(session, actor, visit, "desk_register")
        file = await _file(session, vault, visit)
        where = teller.catalogue("desk_go_to_desk", desk=visit.desk) if visit.desk else teller.catalogue("desk_go_wait")
        text = teller.catalogue("desk_registered", name=file.masked_name, where=where)
        step = teller.catalogue("desk_step_registered")
        await _tell(session, teller, visit, "registered", DeskNews(text, file.masked_name, step, where), moment)
    return await _summary(session, vault, visit, moment)


async def _check_plan(session: AsyncSession, vault: Vault, visit: Visit, plan: DosePlan, today: date) -> DosePlan:
    """The plan cleaned, or refused: an unknown vaccine, a bad number, an expired lot, a dose not due."""
    vaccine = find_vaccine(plan.vaccine_code)
    if vaccine is None:
        raise StepRefused(StepProblem.UNKNOWN_VACCINE)
    if not 1 <= plan.dose_number <= 10:
        raise StepRefused(StepProblem.BAD_DOSE_NUMBER)
    lot, maker = _clean(plan.lot_number), _clean(plan.manufacturer)
    if not lot or not maker:
        raise StepRefused(StepProblem.MISSING_FIELD)
    if plan.expires_on < today:
        raise StepRefused(StepProblem.EXPIRED_LOT, expires=_chinese_date(plan.expires_on))
    reason = _clean(plan.override_reason or "", REASON_LIMIT) or None
    file = await _file(session, vault, visit)
    given = await doses_of(session, vault, file.vaccinee_id, today)
    if any(d.vaccine_code == vaccine.code and d.dose_number == plan.dose_number for d in given):
        raise StepRefused(StepProblem.ALREADY_GIVEN)
    due = {
        (item.vaccine_code, item.dose_number)
        for item in await _forecast(session, vault, file, today)
        if item.status in ("overdue", "due")
    }
    if (vaccine.code, plan.dose_number) not in due and reason is None:
        raise StepRefused(StepProblem.NOT_DUE)
    return DosePlan(vaccine.code, plan.dose_number, lot, maker, plan.expires_on, reason)


def _chinese_date(value: date) -> str:
    return f"{value.year}年{value.month}月{value.day}日"


async def request_confirmation(
    session: AsyncSession,
    vault: Vault,
    actor: DeskActor,
    visit_id: int,
    plan: DosePlan,
    *,
    family: FamilyTeller | None = None,
    now: datetime | None = None,
) -> VisitSummary:
    """一验证, asked: the family is sent the dose plan to check and answer 「确认」 in chat.

    Needs 登记. The plan must name a known vaccine, a lot not expired (China time) and a dose that is due
    (else ``override_reason``); after a fever or a contraindication at 登记 it needs ``override_reason`` too
    (the doctor's assessment). The same plan again is a repeat; a different plan (a corrected lot, even
    after the family confirmed the old one) replaces it and asks again: only the newest plan can be confirmed.
    """
    moment = now or utcnow()
    teller = family or FamilyTeller.plain()
    visit = await load_visit(session, actor, visit_id)
    if visit.status == VisitStatus.QUEUED:
        raise StepRefused(StepProblem.OUT_OF_ORDER, step=teller.catalogue("desk_step_registered"))
    record = read_record(vault, visit)
    if visit.status not in (VisitStatus.REGISTERED, VisitStatus.VERIFIED):
        return await _summary(session, vault, visit, moment)
    checked = await _check_plan(session, vault, visit, plan, china_date(moment))
    health = record.health
    if health is not None and (health.fever or health.contraindications) and checked.override_reason is None:
        # 登记 found a fever or a contraindication: vaccinating is the doctor's call, on record with why.
        raise StepRefused(StepProblem.HEALTH_FLAGGED)
    if record.plan == checked and visit.confirmation_requested_at is not None:
        return await _summary(session, vault, visit, moment)
    round_before = visit.confirmation_round
    moved = await _advance(
        session,
        visit,
        (VisitStatus.REGISTERED, VisitStatus.VERIFIED),
        {
            "status": VisitStatus.REGISTERED,
            "desk_enc": seal_record(vault, dataclasses.replace(record, plan=checked, in_person_reason="")),
            "confirmation_round": round_before + 1,
            "confirmation_requested_at": moment,
            "verified_at": None,
            "verified_by": "",
        },
    )
    if moved:
        _audit(
            session,
            actor,
            visit,
            "desk_confirmation_requested",
            round=visit.confirmation_round,
            override=checked.override_reason is not None,
        )
        file = await _file(session, vault, visit)
        text = teller.catalogue(
            "desk_confirm_request",
            name=file.masked_name,
            vaccine=vaccine_name(checked.vaccine_code),
            number=checked.dose_number,
            lot=checked.lot_number,
            expires=_chinese_date(checked.expires_on),
        )
        detail = teller.catalogue(
            "desk_confirm_template", vaccine=vaccine_name(checked.vaccine_code), number=checked.dose_number
        )
        news = DeskNews(text, file.masked_name, teller.catalogue("desk_step_confirm"), detail)
        await _tell(session, teller, visit, f"confirm:{visit.confirmation_round}", news, moment)
    return await _summary(session, vault, visit, moment)


async def confirm_in_person(
    session: AsyncSession,
    vault: Vault,
    actor: DeskActor,
    visit_id: int,
    reason: str,
    *,
    now: datetime | None = None,
) -> VisitSummary:
    """一验证 in person: staff record that the guardian confirmed the plan at the desk, and why not in chat."""
    moment = now or utcnow()
    visit = await load_visit(session, actor, visit_id)
    if _at_or_past(visit, VisitStatus.VERIFIED):
        return await _summary(session, vault, visit, moment)
    if visit.status == VisitStatus.QUEUED:
        raise StepRefused(StepProblem.OUT_OF_ORDER, step=MESSAGES["desk_step_registered"])
    record = read_record(vault, visit)
    if record.plan is None or visit.confirmation_requested_at is None:
        raise StepRefused(StepProblem.NOT_REQUESTED)
    why = _clean(reason, REASON_LIMIT)
    if not why:
        raise StepRefused(StepProblem.REASON_NEEDED)
    moved = await _advance(
        session,
        visit,
        VisitStatus.REGISTERED,
        {
            "status": VisitStatus.VERIFIED,
            "verified_at": moment,
            "verified_by": actor.audit_actor()[:64],
            "desk_enc": seal_record(vault, dataclasses.replace(record, in_person_reason=why)),
        },
    )
    if moved:
        _audit(session, actor, visit, "desk_verified", via="in_person", round=visit.confirmation_round)
    return await _summary(session, vault, visit, moment)


@dataclasses.dataclass(frozen=True)
class Pending:
    """A 一验证 request waiting for one person's 「确认」 in chat."""

    visit_id: int
    queue_number: int
    round: int
    masked_name: str
    plan: DosePlan


async def pending_confirmations(session: AsyncSession, vault: Vault, identity_id: int, day: date) -> list[Pending]:
    """The 一验证 requests of ``day`` sent to this person (they showed the code, or hold the certificate)."""
    held = select(Certificate.id).where(Certificate.holder_identity_id == identity_id)
    visits = (
        await session.scalars(
            select(Visit)
            .where(
                Visit.visit_date == day,
                Visit.status == VisitStatus.REGISTERED,
                Visit.confirmation_requested_at.is_not(None),
                (Visit.shown_by_identity_id == identity_id) | Visit.certificate_id.in_(held),
            )
            .order_by(Visit.confirmation_requested_at, Visit.id)
        )
    ).all()
    found = []
    for visit in visits:
        record = read_record(vault, visit)
        if record.plan is None:
            continue
        file = await _file(session, vault, visit)
        found.append(Pending(visit.id, visit.queue_number, visit.confirmation_round, file.masked_name, record.plan))
    return found


async def confirmed_today(session: AsyncSession, vault: Vault, identity_id: int, day: date) -> list[str]:
    """The masked names of ``day``'s visits this person already confirmed in chat (a second 「确认」 is told so)."""
    visits = (
        await session.scalars(
            select(Visit)
            .where(Visit.visit_date == day, Visit.verified_by == f"identity:{identity_id}")
            .order_by(Visit.verified_at, Visit.id)
        )
    ).all()
    return [(await _file(session, vault, visit)).masked_name for visit in visits]


async def confirm_in_chat(
    session: AsyncSession, identity_id: int, pending: Pending, *, platform: str, now: datetime | None = None
) -> bool:
    """一验证 by the family: the plan of ``pending`` (this round only) is confirmed; False when it moved on.

    A plan changed at the desk after the message was sent bumps the round, so an old 「确认」 confirms nothing.
    """
    moment = now or utcnow()
    result = await session.execute(
        update(Visit)
        .where(
            Visit.id == pending.visit_id,
            Visit.status == VisitStatus.REGISTERED,
            Visit.confirmation_round == pending.round,
        )
        .values(status=VisitStatus.VERIFIED, verified_at=moment, verified_by=f"identity:{identity_id}")
        .execution_options(synchronize_session=False)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        return False
    visit = await session.get(Visit, pending.visit_id, populate_existing=True)
    assert visit is not None
    record_access(
        session,
        actor_kind="identity",
        actor_ref=f"identity:{identity_id}",
        action="desk_verified",
        reason="chat",
        certificate_id=visit.certificate_id,
        vaccinee_id=visit.vaccinee_id,
        platform=platform,
        detail={"visit": visit.id, "via": "chat", "round": pending.round},
    )
    return True


def _check_given(given: GivenDose) -> GivenDose:
    vaccinator = _clean(given.vaccinator)
    if not vaccinator or not given.site or not given.route:
        raise StepRefused(StepProblem.MISSING_FIELD)
    if given.route not in Route.__members__.values():
        raise StepRefused(StepProblem.BAD_ROUTE)
    if given.site not in Site.__members__.values():
        raise StepRefused(StepProblem.BAD_SITE)
    return GivenDose(Site(given.site).value, Route(given.route).value, vaccinator)


async def vaccinate(
    session: AsyncSession,
    vault: Vault,
    actor: DeskActor,
    visit_id: int,
    given: GivenDose,
    *,
    family: FamilyTeller | None = None,
    now: datetime | None = None,
) -> VisitSummary:
    """接种: record the confirmed dose in the file (source: this clinic) and start the 30-minute observation.

    Needs 登记 and 一验证. The dose is in the family's records and forecast at once and cancels that dose's
    pending reminder. Two desks recording at once record one dose: only the one that moves the visit on
    writes it. The lot's expiry is checked again (the day may have turned since 一验证).
    """
    moment = now or utcnow()
    teller = family or FamilyTeller.plain()
    visit = await load_visit(session, actor, visit_id)
    if _at_or_past(visit, VisitStatus.VACCINATED):
        return await _summary(session, vault, visit, moment)
    if visit.status != VisitStatus.VERIFIED:
        step = "desk_step_registered" if visit.status == VisitStatus.QUEUED else "desk_step_confirm"
        raise StepRefused(StepProblem.OUT_OF_ORDER, step=MESSAGES[step])
    clean = _check_given(given)
    record = read_record(vault, visit)
    plan = record.plan
    assert plan is not None  # verified visits have a plan
    today = china_date(moment)
    if plan.expires_on < today:
        raise StepRefused(StepProblem.EXPIRED_LOT, expires=_chinese_date(plan.expires_on))
    moved = await _advance(
        session,
        visit,
        VisitStatus.VERIFIED,
        {
            "status": VisitStatus.OBSERVING,
            "vaccinated_at": moment,
            "observation_ends_at": moment + OBSERVATION,
            "desk_enc": seal_record(vault, dataclasses.replace(record, given=clean)),
        },
    )
    if not moved:
        return await _summary(session, vault, visit, moment)
    detail = DoseDetail(
        vaccine_code=plan.vaccine_code,
        dose_number=plan.dose_number,
        given_on=today,
        clinic_id=visit.clinic_id,
        lot_number=plan.lot_number,
        source=DoseSource.CLINIC,
    )
    vaccinee_id = visit.vaccinee_id
    assert vaccinee_id is not None  # a verified visit was registered, and 登记 needs a file
    dose = Dose.sealed(vault, vaccinee_id, detail, effective_from=today)
    try:
        async with session.begin_nested():
            session.add(dose)
    except IntegrityError:
        # The file got this dose meanwhile (another clinic, a registry batch): nothing is recorded twice.
        raise StepRefused(StepProblem.ALREADY_GIVEN) from None
    await session.execute(
        update(Visit).where(Visit.id == visit.id).values(dose_id=dose.id).execution_options(synchronize_session=False)
    )
    visit.dose_id = dose.id
    await session.execute(
        update(Reminder)
        .where(
            Reminder.job_key == Reminder.key_for(vault, vaccinee_id, plan.vaccine_code, plan.dose_number),
            Reminder.status == ReminderStatus.SCHEDULED,
        )
        .values(status=ReminderStatus.CANCELLED)
    )
    _audit(session, actor, visit, "desk_vaccinate", dose=dose.id)
    file = await _file(session, vault, visit)
    vaccine = vaccine_name(plan.vaccine_code)
    text = teller.catalogue(
        "desk_vaccinated", name=file.masked_name, vaccine=vaccine, number=plan.dose_number, lot=plan.lot_number
    )
    # A template keeps only a short line: the observation first, so a cut vaccine name never hides it.
    short = teller.catalogue("desk_vaccinated_short", vaccine=vaccine, number=plan.dose_number)
    news = DeskNews(text, file.masked_name, teller.catalogue("desk_step_vaccinated"), short)
    await _tell(session, teller, visit, "vaccinated", news, moment)
    return await _summary(session, vault, visit, moment)


async def finish_observation(
    session: AsyncSession,
    vault: Vault,
    actor: DeskActor,
    visit_id: int,
    *,
    early_reason: str | None = None,
    family: FamilyTeller | None = None,
    now: datetime | None = None,
) -> VisitSummary:
    """留观结束: observing → done, and the family is told they may leave, with the next dose.

    Before the 30 minutes are up it needs ``early_reason`` (the observer's call, kept sealed and audited).
    """
    moment = now or utcnow()
    teller = family or FamilyTeller.plain()
    visit = await load_visit(session, actor, visit_id)
    if visit.status == VisitStatus.DONE:
        return await _summary(session, vault, visit, moment)
    if visit.status != VisitStatus.OBSERVING:
        raise StepRefused(StepProblem.OUT_OF_ORDER, step=MESSAGES["desk_step_vaccinated"])
    record = read_record(vault, visit)
    why = _clean(early_reason or "", REASON_LIMIT)
    early = visit.observation_ends_at is not None and moment < visit.observation_ends_at
    if early and not why:
        raise StepRefused(StepProblem.OBSERVATION_NOT_OVER)
    values: dict[str, Any] = {"status": VisitStatus.DONE, "finished_at": moment}
    if early:
        values["desk_enc"] = seal_record(vault, dataclasses.replace(record, early_finish_reason=why))
    moved = await _advance(session, visit, VisitStatus.OBSERVING, values)
    if moved:
        _audit(session, actor, visit, "desk_observation_done", early=early)
        file = await _file(session, vault, visit)
        upcoming = sorted(await _forecast(session, vault, file, china_date(moment)), key=lambda item: item.earliest)
        if upcoming:
            first = upcoming[0]
            nxt = teller.catalogue(
                "desk_next_dose",
                vaccine=vaccine_name(first.vaccine_code),
                number=first.dose_number,
                date=_chinese_date(max(first.earliest, china_date(moment))),
            )
        else:
            nxt = teller.catalogue("desk_next_none")
        text = teller.catalogue("desk_observation_over", name=file.masked_name, next=nxt)
        news = DeskNews(text, file.masked_name, teller.catalogue("desk_step_done"), nxt)
        await _tell(session, teller, visit, "done", news, moment)
    return await _summary(session, vault, visit, moment)


async def observing(
    session: AsyncSession, vault: Vault, actor: DeskActor, day: date, *, now: datetime | None = None
) -> list[VisitSummary]:
    """The people observing now (留观), the soonest to finish first, each with ``observation_ends_at``."""
    moment = now or utcnow()
    visits = (
        await session.scalars(
            select(Visit)
            .where(Visit.clinic_id == actor.clinic_id, Visit.visit_date == day, Visit.status == VisitStatus.OBSERVING)
            .order_by(Visit.observation_ends_at, Visit.id)
        )
    ).all()
    return [await _summary(session, vault, visit, moment) for visit in visits]


async def day_summary(session: AsyncSession, actor: DeskActor, day: date, *, vault: Vault | None = None) -> DaySummary:
    """The clinic's day: how many visits stand at each step and, with ``vault``, the doses given per vaccine."""
    visits = (
        await session.scalars(select(Visit).where(Visit.clinic_id == actor.clinic_id, Visit.visit_date == day))
    ).all()
    by_status = {status.value: 0 for status in ORDER}
    for visit in visits:
        by_status[VisitStatus(visit.status).value] += 1
    given = [visit for visit in visits if visit.dose_id is not None]
    by_vaccine: dict[str, int] = {}
    if vault is not None:
        for visit in given:
            plan = read_record(vault, visit).plan
            if plan is not None:
                by_vaccine[plan.vaccine_code] = by_vaccine.get(plan.vaccine_code, 0) + 1
    return DaySummary(day=day, by_status=by_status, doses_given=len(given), by_vaccine=by_vaccine)
