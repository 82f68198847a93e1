"""Auto-filing (自动建档): people without a file show a code, and the clinic's registrar files them.

Two ways in: a verified person with nothing to claim shows their own code (``relation`` self; who they
are comes from their verified identity), or a parent adds a child who has no file yet (name, ID or
birth-certificate number, sex, birth date as the parent gives them; ``relation`` child). Each is a
:class:`models.FilingRequest`, shown as a code like a certificate's. Scanned at the desk it queues a visit
without a file; the registrar checks the person (:func:`filing_view`) and confirms (:func:`file_visit`):

* no file matches (by ID or birth-certificate number): a file is created from the request, at this clinic,
  with the parent as guardian, so the parent can claim its certificate at once;
* a file exists: it is compared with the request (name, sex, birth date, and for a child whether the
  parent is a guardian); each difference is shown to the staff, who resolve it — keep the file's value,
  take the verified (or declared) one, or note it — never overwritten silently, every resolution audited.

The visit then goes on through 登记 and the other steps like any other.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import secrets
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.core.audit import record_access
from bot.core.chinatime import china_date
from bot.core.pii import Vault, mask_id_number, mask_name
from bot.core.validators import parse_id_number
from bot.desk.notify import DeskNews, FamilyTeller
from bot.desk.steps import (
    DeskActor,
    StepProblem,
    StepRefused,
    VisitSummary,
    describe_visit,
    load_visit,
    read_record,
    seal_record,
    summarise,
)
from bot.showcode.codes import IssuedCode, handle_digest, make_payload
from models import (
    Certificate,
    CertificateKind,
    Clinic,
    CodeToken,
    FileProfile,
    FilingRequest,
    FilingStatus,
    Guardian,
    Identity,
    Relationship,
    ReminderPlan,
    Stage,
    Vaccinee,
    Visit,
    utcnow,
)
from models.clinic import FILING_FIELD


@dataclasses.dataclass(frozen=True)
class FilingDetails:
    """Who is to be filed: as verified (self) or as the parent gave them (child)."""

    name: str
    sex: str  # M | F
    birth_date: date
    id_number: str = ""
    birth_cert_no: str = ""

    def to_json(self) -> str:
        """The JSON text that is sealed."""
        values = {**dataclasses.asdict(self), "birth_date": self.birth_date.isoformat()}
        return json.dumps(values, ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> FilingDetails:
        """The details :meth:`to_json` wrote."""
        data = json.loads(text)
        return cls(**{**data, "birth_date": date.fromisoformat(data["birth_date"])})

    @property
    def masked_name(self) -> str:
        """The name as messages show it."""
        return mask_name(self.name)

    @property
    def masked_id(self) -> str:
        """The ID (or birth-certificate) number as messages show it."""
        if self.id_number:
            return mask_id_number(self.id_number)
        return self.birth_cert_no[:2] + "*" * max(len(self.birth_cert_no) - 4, 0) + self.birth_cert_no[-2:]


def open_details(vault: Vault, request: FilingRequest) -> FilingDetails:
    """A filing request's sealed details, opened."""
    return FilingDetails.from_json(vault.open(FILING_FIELD, request.details_enc))


def own_details(vault: Vault, identity: Identity) -> FilingDetails:
    """A verified person as their own filing request gives them: name, and sex and birth date from the ID."""
    id_number = vault.open("id_number", identity.id_number_enc)
    parsed = parse_id_number(id_number)
    return FilingDetails(
        name=vault.open("name", identity.name_enc),
        sex="M" if parsed.male else "F",
        birth_date=parsed.birth_date,
        id_number=parsed.value,
    )


def _hashes(vault: Vault, details: FilingDetails) -> tuple[str | None, str | None]:
    id_hash = vault.digest("id_number", details.id_number) if details.id_number else None
    cert_hash = vault.digest("birth_cert", details.birth_cert_no) if details.birth_cert_no else None
    return id_hash, cert_hash


async def request_filing(
    session: AsyncSession, vault: Vault, identity: Identity, details: FilingDetails, relation: str, now: datetime
) -> FilingRequest:
    """This person's pending request for ``details`` (the same one again when asked twice), audited when new."""
    id_hash, cert_hash = _hashes(vault, details)
    query = select(FilingRequest).where(
        FilingRequest.requested_by_identity_id == identity.id,
        FilingRequest.status == FilingStatus.PENDING,
        FilingRequest.relation == relation,
    )
    query = query.where(
        FilingRequest.id_number_hash == id_hash if id_hash else FilingRequest.birth_cert_hash == cert_hash
    )
    existing = (await session.scalars(query)).first()
    if existing is not None:
        existing.details_enc = vault.seal(FILING_FIELD, details.to_json())  # the newest word of the parent
        return existing
    request = FilingRequest(
        requested_by_identity_id=identity.id,
        relation=relation,
        details_enc=vault.seal(FILING_FIELD, details.to_json()),
        id_number_hash=id_hash,
        birth_cert_hash=cert_hash,
        status=FilingStatus.PENDING,
        created_at=now,
    )
    session.add(request)
    await session.flush()
    record_access(
        session,
        actor_kind="identity",
        actor_ref=f"identity:{identity.id}",
        action="filing_requested",
        reason=relation,
        detail={"request": request.id},
    )
    return request


async def pending_filings(session: AsyncSession, identity_id: int) -> list[FilingRequest]:
    """This person's filing requests still waiting for a clinic, oldest first."""
    query = (
        select(FilingRequest)
        .where(FilingRequest.requested_by_identity_id == identity_id, FilingRequest.status == FilingStatus.PENDING)
        .order_by(FilingRequest.id)
    )
    return list((await session.scalars(query)).all())


def issue_filing_code(
    session: AsyncSession, vault: Vault, request: FilingRequest, *, identity_id: int, now: datetime, ttl: timedelta
) -> IssuedCode:
    """A code for a filing request, shown by ``identity_id``: the same format and life as a certificate's."""
    text = base64.b32encode(secrets.token_bytes(15)).decode("ascii").rstrip("=")
    expires_at = datetime.fromtimestamp(int((now + ttl).timestamp()), UTC)
    session.add(
        CodeToken(
            handle_hash=handle_digest(vault, text),
            certificate_id=None,
            filing_request_id=request.id,
            shown_by_identity_id=identity_id,
            created_at=now,
            expires_at=expires_at,
        )
    )
    return IssuedCode(make_payload(vault, text, expires_at), expires_at)


# --- at the desk -----------------------------------------------------------------------------------------


class Resolution(StrEnum):
    """What the staff decide about one difference between a file and the person in front of them."""

    KEEP = "keep"  # the file stays as it is
    TAKE_VERIFIED = "take_verified"  # the file takes the verified (or declared) value
    NOTE = "note"  # the file stays; the difference is noted for the registry to correct


@dataclasses.dataclass(frozen=True)
class Mismatch:
    """One field where the existing file and the person differ (plain: staff of this clinic may see it)."""

    field: str  # name | sex | birth_date | guardian
    on_file: str
    verified: str


@dataclasses.dataclass(frozen=True)
class FilingView:
    """What the registrar checks before filing: the person, who asked, and an existing file's differences."""

    summary: VisitSummary
    relation: str  # self | child
    details: FilingDetails
    requested_by: str  # the requester's masked name
    existing_vaccinee_id: int | None
    mismatches: list[Mismatch]
    filed: bool


async def _request_of(session: AsyncSession, visit: Visit) -> FilingRequest:
    request = await session.get(FilingRequest, visit.filing_request_id) if visit.filing_request_id else None
    if request is None:
        raise StepRefused(StepProblem.NOT_FOUND)
    return request


async def _existing(session: AsyncSession, request: FilingRequest) -> Vaccinee | None:
    if request.id_number_hash:
        query = select(Vaccinee).where(Vaccinee.id_number_hash == request.id_number_hash)
    elif request.birth_cert_hash:
        query = select(Vaccinee).where(Vaccinee.birth_cert_hash == request.birth_cert_hash)
    else:
        return None
    return (await session.scalars(query.order_by(Vaccinee.id))).first()


async def _mismatches(
    session: AsyncSession, vault: Vault, request: FilingRequest, details: FilingDetails, file: Vaccinee
) -> list[Mismatch]:
    found: list[Mismatch] = []
    name = vault.open("name", file.name_enc)
    if name != details.name:
        found.append(Mismatch("name", name, details.name))
    sex = file.profile(vault).sex
    if sex != details.sex:
        found.append(Mismatch("sex", sex, details.sex))
    birth = vault.open("birth_date", file.birth_date_enc)
    if birth != details.birth_date.isoformat():
        found.append(Mismatch("birth_date", birth, details.birth_date.isoformat()))
    if request.relation == "child":
        requester = await session.get(Identity, request.requested_by_identity_id)
        assert requester is not None
        guardians = (
            await session.scalars(select(Guardian.id_number_hash).where(Guardian.vaccinee_id == file.id))
        ).all()
        if requester.id_number_hash not in guardians:
            found.append(Mismatch("guardian", "", mask_name(vault.open("name", requester.name_enc))))
    return found


async def filing_view(
    session: AsyncSession, vault: Vault, actor: DeskActor, visit_id: int, *, now: datetime | None = None
) -> FilingView:
    """The person to be filed, in full (audited), and how an existing file differs from them."""
    moment = now or utcnow()
    visit = await load_visit(session, actor, visit_id)
    request = await _request_of(session, visit)
    details = open_details(vault, request)
    requester = await session.get(Identity, request.requested_by_identity_id)
    assert requester is not None
    existing = await _existing(session, request)
    mismatches = await _mismatches(session, vault, request, details, existing) if existing is not None else []
    record_access(
        session,
        actor_kind="staff" if actor.api_key_id is None else "clinic_api",
        actor_ref=actor.audit_actor(),
        action="filing_viewed",
        vaccinee_id=existing.id if existing is not None else None,
        detail={"visit": visit.id, "request": request.id, "mismatches": [m.field for m in mismatches]},
    )
    return FilingView(
        summary=summarise(visit, details.masked_name, moment),
        relation=request.relation,
        details=details,
        requested_by=mask_name(vault.open("name", requester.name_enc)),
        existing_vaccinee_id=existing.id if existing is not None else None,
        mismatches=mismatches,
        filed=visit.vaccinee_id is not None,
    )


async def _create_file(
    session: AsyncSession, vault: Vault, request: FilingRequest, details: FilingDetails, clinic: Clinic, visit: Visit
) -> Vaccinee:
    today = china_date(utcnow())
    file = Vaccinee(
        registry_ref=f"DESK-{clinic.code}-{visit.id}",
        id_number_hash=request.id_number_hash,
        id_number_enc=vault.seal("id_number", details.id_number) if details.id_number else None,
        birth_cert_hash=request.birth_cert_hash,
        birth_cert_enc=vault.seal("birth_cert", details.birth_cert_no) if details.birth_cert_no else None,
        name_enc=vault.seal("name", details.name),
        birth_date_enc=vault.seal("birth_date", details.birth_date.isoformat()),
        profile_enc=b"",
        effective_from=today,
    )
    stage = Stage.ADULT if request.relation == "self" else Stage.CHILD_CLINIC
    file.set_profile(
        vault, FileProfile(sex=details.sex, region_code=clinic.region_code, clinic_id=clinic.id, stage=stage)
    )
    session.add(file)
    await session.flush()
    if request.relation == "child":
        await _add_guardian(session, vault, file, request)
    return file


async def _add_guardian(session: AsyncSession, vault: Vault, file: Vaccinee, request: FilingRequest) -> None:
    parent = await session.get(Identity, request.requested_by_identity_id)
    assert parent is not None
    await _add_guardian_identity(session, file, parent)


async def _add_guardian_identity(session: AsyncSession, file: Vaccinee, person: Identity) -> None:
    session.add(
        Guardian(
            vaccinee_id=file.id,
            id_number_hash=person.id_number_hash,
            id_number_enc=person.id_number_enc,
            relationship=Relationship.GUARDIAN,
        )
    )
    await session.flush()


async def _take_verified(
    session: AsyncSession, vault: Vault, file: Vaccinee, details: FilingDetails, guardian: Identity | None, field: str
) -> None:
    """The file takes the verified (or declared) value of ``field``."""
    if field == "name":
        file.name_enc = vault.seal("name", details.name)
    elif field == "birth_date":
        file.birth_date_enc = vault.seal("birth_date", details.birth_date.isoformat())
    elif field == "sex":
        file.set_profile(vault, dataclasses.replace(file.profile(vault), sex=details.sex))
    elif field == "guardian" and guardian is not None:
        await _add_guardian_identity(session, file, guardian)
    if field in ("birth_date", "sex"):
        # The forecast follows from both: a claimed child's reminders are planned again from today.
        await session.execute(ReminderPlan.changed([file.id], china_date(utcnow())))


async def file_visit(
    session: AsyncSession,
    vault: Vault,
    actor: DeskActor,
    visit_id: int,
    *,
    resolutions: Mapping[str, Resolution | str] | None = None,
    note: str = "",
    family: FamilyTeller | None = None,
    now: datetime | None = None,
) -> VisitSummary:
    """The registrar confirms: the visit gets its file — created, or the existing one with every difference resolved.

    ``resolutions`` names a :class:`Resolution` for each field of :attr:`FilingView.mismatches`; one left
    out refuses the step (MISMATCH_UNRESOLVED) and nothing changes. Each resolution is audited (which
    field and what was decided, never the values); a note is kept sealed with the visit. A repeat returns
    the visit as it stands.
    """
    moment = now or utcnow()
    teller = family or FamilyTeller.plain()
    visit = await load_visit(session, actor, visit_id)
    if visit.vaccinee_id is not None:
        return await describe_visit(session, vault, visit, moment)
    request = await _request_of(session, visit)
    details = open_details(vault, request)
    clinic = await session.get(Clinic, visit.clinic_id)
    assert clinic is not None
    existing = await _existing(session, request)
    chosen = {field: Resolution(value) for field, value in (resolutions or {}).items()}
    actor_kind = "staff" if actor.api_key_id is None else "clinic_api"
    if existing is None:
        file = await _create_file(session, vault, request, details, clinic, visit)
        created = True
    else:
        mismatches = await _mismatches(session, vault, request, details, existing)
        missing = [m.field for m in mismatches if m.field not in chosen]
        if missing:
            raise StepRefused(StepProblem.MISMATCH_UNRESOLVED, fields="、".join(_FIELD_NAMES[f] for f in missing))
        for mismatch in mismatches:
            decision = chosen[mismatch.field]
            if decision is Resolution.TAKE_VERIFIED:
                requester = await session.get(Identity, request.requested_by_identity_id)
                await _take_verified(session, vault, existing, details, requester, mismatch.field)
            record_access(
                session,
                actor_kind=actor_kind,
                actor_ref=actor.audit_actor(),
                action="filing_mismatch_resolved",
                reason=decision.value,
                vaccinee_id=existing.id,
                detail={"visit": visit.id, "field": mismatch.field},
            )
        file, created = existing, False
    visit.vaccinee_id = file.id
    clean_note = " ".join(note.split())[:200]
    if clean_note:
        visit.desk_enc = seal_record(vault, dataclasses.replace(read_record(vault, visit), filing_note=clean_note))
    request.status = FilingStatus.FILED
    request.vaccinee_id = file.id
    request.filed_at = moment
    await session.flush()
    record_access(
        session,
        actor_kind=actor_kind,
        actor_ref=actor.audit_actor(),
        action="desk_filed",
        reason="created" if created else "existing",
        vaccinee_id=file.id,
        detail={"visit": visit.id, "request": request.id},
    )
    text = teller.catalogue(
        "filing_done_self" if request.relation == "self" else "filing_done_child", name=details.masked_name
    )
    news = DeskNews(
        text, details.masked_name, teller.catalogue("desk_step_filed"), teller.catalogue("filing_done_short")
    )
    await teller.tell(
        session, news, f"desk:{visit.id}:filed", identity_ids=[request.requested_by_identity_id], now=moment
    )
    return summarise(visit, details.masked_name, moment)


_FIELD_NAMES: dict[str, str] = {"name": "姓名", "sex": "性别", "birth_date": "出生日期", "guardian": "监护人"}


def field_label(field: str) -> str:
    """The Chinese label of a compared field (for the console)."""
    return _FIELD_NAMES.get(field, field)


def jsonable_details(details: FilingDetails) -> dict[str, Any]:
    """The details as plain values (the clinic API's answer)."""
    return {**dataclasses.asdict(details), "birth_date": details.birth_date.isoformat()}


# --- a scanned certificate whose file differs from the verified person --------------------------------


async def _certificate_subject(
    session: AsyncSession, vault: Vault, visit: Visit
) -> tuple[Vaccinee, Certificate, Identity, FilingDetails | None]:
    """The visit's file, certificate and holder, and (for an adult's own certificate) the holder as verified."""
    if visit.vaccinee_id is None or visit.certificate_id is None:
        raise StepRefused(StepProblem.NOT_FILED)
    file = await session.get(Vaccinee, visit.vaccinee_id)
    certificate = await session.get(Certificate, visit.certificate_id)
    assert file is not None and certificate is not None
    holder = await session.get(Identity, certificate.holder_identity_id)
    assert holder is not None
    verified = own_details(vault, holder) if certificate.kind == CertificateKind.ADULT else None
    return file, certificate, holder, verified


async def _certificate_mismatches(
    session: AsyncSession, vault: Vault, file: Vaccinee, holder: Identity, verified: FilingDetails | None
) -> list[Mismatch]:
    found: list[Mismatch] = []
    if verified is not None:
        name = vault.open("name", file.name_enc)
        if name != verified.name:
            found.append(Mismatch("name", name, verified.name))
        sex = file.profile(vault).sex
        if sex != verified.sex:
            found.append(Mismatch("sex", sex, verified.sex))
        birth = vault.open("birth_date", file.birth_date_enc)
        if birth != verified.birth_date.isoformat():
            found.append(Mismatch("birth_date", birth, verified.birth_date.isoformat()))
    else:
        guardians = (
            await session.scalars(select(Guardian.id_number_hash).where(Guardian.vaccinee_id == file.id))
        ).all()
        if holder.id_number_hash not in guardians:
            found.append(Mismatch("guardian", "", mask_name(vault.open("name", holder.name_enc))))
    return found


async def compare_with_verified(session: AsyncSession, vault: Vault, actor: DeskActor, visit_id: int) -> list[Mismatch]:
    """How a scanned certificate's file differs from the verified people behind it (shown at 登记; audited).

    An adult's own certificate: the file's name, sex and birth date against the holder's verified identity
    (sex and birth date as the ID number gives them). A child's: whether the holder is still a guardian on
    the file. The file holds no phone number, so phones are not compared.
    """
    visit = await load_visit(session, actor, visit_id)
    file, _certificate, holder, verified = await _certificate_subject(session, vault, visit)
    found = await _certificate_mismatches(session, vault, file, holder, verified)
    record_access(
        session,
        actor_kind="staff" if actor.api_key_id is None else "clinic_api",
        actor_ref=actor.audit_actor(),
        action="desk_compared",
        certificate_id=visit.certificate_id,
        vaccinee_id=file.id,
        detail={"visit": visit.id, "mismatches": [m.field for m in found]},
    )
    return found


async def resolve_mismatches(
    session: AsyncSession,
    vault: Vault,
    actor: DeskActor,
    visit_id: int,
    resolutions: Mapping[str, Resolution | str],
    *,
    note: str = "",
) -> list[Mismatch]:
    """Apply the staff's decision on each difference :func:`compare_with_verified` found; returns those left.

    ``take_verified`` writes the verified value into the file; ``keep`` and ``note`` leave it. Each decision
    is audited (the field and the decision, never the values); a note is kept sealed with the visit.
    """
    visit = await load_visit(session, actor, visit_id)
    file, _certificate, holder, verified = await _certificate_subject(session, vault, visit)
    chosen = {field: Resolution(value) for field, value in resolutions.items()}
    left: list[Mismatch] = []
    for mismatch in await _certificate_mismatches(session, vault, file, holder, verified):
        decision = chosen.get(mismatch.field)
        if decision is None:
            left.append(mismatch)
            continue
        if decision is Resolution.TAKE_VERIFIED:
            if verified is not None:
                await _take_verified(session, vault, file, verified, None, mismatch.field)
            elif mismatch.field == "guardian":
                await _add_guardian_identity(session, file, holder)
        record_access(
            session,
            actor_kind="staff" if actor.api_key_id is None else "clinic_api",
            actor_ref=actor.audit_actor(),
            action="desk_mismatch_resolved",
            reason=decision.value,
            certificate_id=visit.certificate_id,
            vaccinee_id=file.id,
            detail={"visit": visit.id, "field": mismatch.field},
        )
    clean_note = " ".join(note.split())[:200]
    if clean_note:
        visit.desk_enc = seal_record(vault, dataclasses.replace(read_record(vault, visit), filing_note=clean_note))
    return left
