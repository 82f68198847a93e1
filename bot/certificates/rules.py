"""Certificates as the rules of the seeds define them: what a verified person may claim, claiming,
family grants, and the records a holder or grantee may read. No network here, and every access to a
certificate leaves an audit row in the same transaction.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence
from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.core.audit import record_access
from bot.core.config import Settings
from bot.core.db import dialect_insert
from bot.core.pii import Vault, mask_id_number, mask_name
from models import (
    Certificate,
    CertificateKind,
    Clinic,
    Consent,
    Dose,
    DoseDetail,
    Grant,
    Guardian,
    Identity,
    PlatformAccount,
    Stage,
    Vaccinee,
)


class Standing(StrEnum):
    """Where a registry file stands for the person looking at it."""

    CLAIMABLE = "claimable"
    MINE = "mine"  # they hold its certificate
    GRANTED = "granted"  # someone else holds it and authorised them
    TAKEN = "taken"  # someone else holds it; they may ask for authorisation
    INELIGIBLE = "ineligible"


@dataclasses.dataclass(frozen=True)
class FileView:
    """A registry file opened for one verified person (plain values: mask them when showing)."""

    vaccinee_id: int
    relation: str  # self | child
    name: str
    id_number: str  # "" for a newborn without one
    birth_date: date
    sex: str  # M | F (the schedule differs: HPV for girls)
    clinic_name: str
    region: str  # first four digits of the clinic's (or the file's) region code
    stage: Stage = Stage.CHILD_CLINIC

    @property
    def kind(self) -> str:
        """The kind of certificate this file gives: a child's or an adult's."""
        return "adult" if self.relation == "self" else "child"

    @property
    def masked_name(self) -> str:
        """The name as messages show it."""
        return mask_name(self.name)

    @property
    def masked_id(self) -> str:
        """The ID number as messages show it."""
        return mask_id_number(self.id_number) if self.id_number else "（暂无身份证号）"


@dataclasses.dataclass(frozen=True)
class PendingItem:
    """One line of the pending list: the file, its standing, and why when it cannot be claimed."""

    file: FileView
    standing: Standing
    reason: str = ""  # a catalogue key when INELIGIBLE
    certificate_id: int | None = None


def actor(identity: Identity, account: PlatformAccount | None = None) -> str:
    """How the audit log names a verified person and the chat account they acted from (never their data).

    ``identity:12/account:34`` when a chat account acted, ``identity:12`` when no chat account did (a code
    page opened in a browser). Give the account wherever there is one: one person may use several.
    """
    if account is None:
        return f"identity:{identity.id}"
    return f"identity:{identity.id}/account:{account.id}"


def age_on(birth: date, day: date) -> int:
    """Completed years of age on ``day``."""
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


async def bound_identity(session: AsyncSession, account: PlatformAccount) -> Identity | None:
    """The verified identity a chat account speaks for, if it has been verified."""
    if account.identity_id is None:
        return None
    return await session.get(Identity, account.identity_id)


async def open_file(session: AsyncSession, vault: Vault, vaccinee: Vaccinee, relation: str) -> FileView:
    """A registry file opened for reading (plain values: mask them when showing)."""
    profile = vaccinee.profile(vault)
    clinic = await session.get(Clinic, profile.clinic_id) if profile.clinic_id is not None else None
    region_code = clinic.region_code if clinic is not None else profile.region_code
    return FileView(
        vaccinee_id=vaccinee.id,
        relation=relation,
        name=vault.open("name", vaccinee.name_enc),
        id_number=vault.open("id_number", vaccinee.id_number_enc) if vaccinee.id_number_enc else "",
        birth_date=date.fromisoformat(vault.open("birth_date", vaccinee.birth_date_enc)),
        sex=profile.sex,
        clinic_name=clinic.name if clinic is not None else "",
        region=region_code[:4],
        stage=profile.stage,
    )


def in_pilot_region(region_code: str, pilot_regions: Collection[str]) -> bool:
    """True when a region code (a clinic's or a file's) lies in a pilot city: its first four digits are listed."""
    return region_code[:4] in pilot_regions


async def ineligible_reason(
    session: AsyncSession, vault: Vault, file: FileView, settings: Settings, today: date
) -> str:
    """The catalogue key explaining why ``file`` cannot be claimed, or "" when it can."""
    if not in_pilot_region(file.region, settings.pilot_regions):
        return "claim_not_pilot"
    if file.relation == "child":
        if file.birth_date < settings.child_born_on_or_after:
            return "claim_born_too_early"
        if file.stage == Stage.OBSTETRICS:
            return "claim_newborn_wait"
        return ""
    if age_on(file.birth_date, today) < settings.adult_min_age:
        return "claim_minor_self"
    doses = await doses_of(session, vault, file.vaccinee_id, today)
    recent = any(dose.given_on >= settings.adult_dose_on_or_after for dose in doses)
    return "" if recent else "claim_no_recent_dose"


async def pending_for(
    session: AsyncSession, vault: Vault, identity: Identity, settings: Settings, today: date
) -> list[PendingItem]:
    """Every registry file this person could claim or already relates to: their own, then their children's."""
    own = (await session.scalars(select(Vaccinee).where(Vaccinee.id_number_hash == identity.id_number_hash))).all()
    children = (
        await session.scalars(
            select(Vaccinee)
            .join(Guardian, Guardian.vaccinee_id == Vaccinee.id)
            .where(Guardian.id_number_hash == identity.id_number_hash)
            .order_by(Vaccinee.id)
        )
    ).all()
    opened = [await open_file(session, vault, vaccinee, "self") for vaccinee in own]
    # The youngest child first (by birth year, then file): sorted once the birth dates are opened.
    kids = [await open_file(session, vault, vaccinee, "child") for vaccinee in children]
    opened += sorted(kids, key=lambda view: (-view.birth_date.year, view.vaccinee_id))
    items: list[PendingItem] = []
    for view in opened:
        certificate = (
            await session.scalars(select(Certificate).where(Certificate.vaccinee_id == view.vaccinee_id))
        ).first()
        if certificate is not None:
            if certificate.holder_identity_id == identity.id:
                standing = Standing.MINE
            elif await _active_grant(session, certificate.id, identity.id_number_hash) is not None:
                standing = Standing.GRANTED
            else:
                standing = Standing.TAKEN
            items.append(PendingItem(view, standing, certificate_id=certificate.id))
            continue
        reason = await ineligible_reason(session, vault, view, settings, today)
        items.append(PendingItem(view, Standing.INELIGIBLE if reason else Standing.CLAIMABLE, reason))
    return items


async def claim(
    session: AsyncSession,
    identity: Identity,
    file: FileView,
    platform: str,
    now: datetime,
    *,
    account: PlatformAccount | None = None,
) -> Certificate | None:
    """Claim the certificate of ``file`` for ``identity``; None when someone else's claim won.

    The unique index on ``certificates.vaccinee_id`` decides a race, on SQLite and PostgreSQL alike.
    """
    insert = dialect_insert(session)
    result = await session.execute(
        insert(Certificate)
        .values(
            vaccinee_id=file.vaccinee_id,
            holder_identity_id=identity.id,
            kind=file.kind,
            claimed_at=now,
            claimed_via=platform,
        )
        .on_conflict_do_nothing(index_elements=["vaccinee_id"])
        .returning(Certificate.id)
    )
    certificate_id = result.scalar()
    if certificate_id is None:
        return None
    record_access(
        session,
        actor_kind="identity",
        actor_ref=actor(identity, account),
        action="claim",
        reason=file.kind,
        certificate_id=certificate_id,
        vaccinee_id=file.vaccinee_id,
        platform=platform,
    )
    return await session.get(Certificate, certificate_id)


# The version of the claim consent's text (申领须知) a person agrees to.
CLAIM_CONSENT_VERSION = "2026-11"


async def claim_with_consent(
    session: AsyncSession,
    identity: Identity,
    file: FileView,
    platform: str,
    now: datetime,
    *,
    account: PlatformAccount | None = None,
) -> Certificate | None:
    """Claim as :func:`claim`, and record the separate consent the person gave to it (chat and pages alike)."""
    certificate = await claim(session, identity, file, platform, now, account=account)
    if certificate is not None:
        session.add(
            Consent(
                identity_id=identity.id,
                purpose=f"certificate_{file.kind}",
                subject_ref=str(file.vaccinee_id),
                text_version=CLAIM_CONSENT_VERSION,
                given_at=now,
            )
        )
    return certificate


def record_pending_view(
    session: AsyncSession,
    identity: Identity,
    items: Sequence[PendingItem],
    platform: str,
    *,
    account: PlatformAccount | None = None,
) -> None:
    """Audit a look at the pending list: each file shown, its standing, and to whom."""
    for item in items:
        record_access(
            session,
            actor_kind="identity",
            actor_ref=actor(identity, account),
            action="pending_view",
            reason=item.standing.value,
            certificate_id=item.certificate_id,
            vaccinee_id=item.file.vaccinee_id,
            platform=platform,
        )


async def _active_grant(session: AsyncSession, certificate_id: int, id_number_hash: str) -> Grant | None:
    query = select(Grant).where(
        Grant.certificate_id == certificate_id,
        Grant.grantee_id_number_hash == id_number_hash,
        Grant.revoked_at.is_(None),
    )
    return (await session.scalars(query)).first()


@dataclasses.dataclass(frozen=True)
class Visible:
    """A certificate someone may see: as its holder or as an authorised family member."""

    certificate: Certificate
    file: FileView
    role: str  # holder | grantee


async def visible_certificates(session: AsyncSession, vault: Vault, identity: Identity) -> list[Visible]:
    """The certificates this person holds, then those they were authorised to see."""
    held = (
        await session.scalars(
            select(Certificate).where(Certificate.holder_identity_id == identity.id).order_by(Certificate.id)
        )
    ).all()
    granted = (
        await session.scalars(
            select(Certificate)
            .join(Grant, Grant.certificate_id == Certificate.id)
            .where(Grant.grantee_id_number_hash == identity.id_number_hash, Grant.revoked_at.is_(None))
            .order_by(Certificate.id)
        )
    ).all()
    return [
        await _visible(session, vault, certificate, role)
        for role, certificates in (("holder", held), ("grantee", granted))
        for certificate in certificates
    ]


async def _visible(session: AsyncSession, vault: Vault, certificate: Certificate, role: str) -> Visible:
    vaccinee = await session.get(Vaccinee, certificate.vaccinee_id)
    assert vaccinee is not None
    relation = "self" if certificate.kind == CertificateKind.ADULT and role == "holder" else "child"
    return Visible(certificate, await open_file(session, vault, vaccinee, relation), role)


async def role_of(session: AsyncSession, identity: Identity, certificate_id: int) -> str | None:
    """How ``identity`` may see a certificate now: "holder", "grantee", or None (never, or no longer)."""
    certificate = await session.get(Certificate, certificate_id)
    if certificate is None:
        return None
    if certificate.holder_identity_id == identity.id:
        return "holder"
    return "grantee" if await _active_grant(session, certificate_id, identity.id_number_hash) else None


async def open_visible(session: AsyncSession, vault: Vault, identity: Identity, certificate_id: int) -> Visible | None:
    """One certificate as :func:`visible_certificates` shows it, if ``identity`` may still see it."""
    role = await role_of(session, identity, certificate_id)
    certificate = await session.get(Certificate, certificate_id)
    if role is None or certificate is None:
        return None
    return await _visible(session, vault, certificate, role)


async def active_grants(session: AsyncSession, certificate_id: int) -> Sequence[Grant]:
    """A certificate's current grantees, oldest first."""
    query = select(Grant).where(Grant.certificate_id == certificate_id, Grant.revoked_at.is_(None)).order_by(Grant.id)
    return (await session.scalars(query)).all()


@dataclasses.dataclass(frozen=True)
class Grantee:
    """Who a holder wants to authorise (validated)."""

    id_number: str
    name: str
    relationship: str
    phone: str


# The audit action of a refused authorisation step, and each refusal's catalogue key → the reason recorded.
GRANT_REFUSED = "grant_refused"
GRANT_REFUSAL_REASONS = {
    "grant_not_holder": "not_holder",
    "grant_adult_refused": "adult_certificate",
    "grant_self": "self",
    "grant_is_child": "is_child",
    "grant_duplicate": "duplicate",
    "grant_full": "full",
}


async def add_grant(
    session: AsyncSession,
    vault: Vault,
    holder: Identity,
    certificate: Certificate,
    grantee: Grantee,
    settings: Settings,
    platform: str,
    now: datetime,
    *,
    account: PlatformAccount | None = None,
) -> tuple[Grant | None, str]:
    """Authorise ``grantee``; (grant, "") or (None, the catalogue key of the refusal)."""
    if certificate.holder_identity_id != holder.id:
        return None, "grant_not_holder"
    if certificate.kind != "child":
        return None, "grant_adult_refused"
    digest = vault.digest("id_number", grantee.id_number)
    if digest == holder.id_number_hash:
        return None, "grant_self"
    vaccinee = await session.get(Vaccinee, certificate.vaccinee_id)
    if vaccinee is not None and vaccinee.id_number_hash == digest:
        return None, "grant_is_child"
    # Grant changes to one certificate are serialised on its row: two adds cannot both pass the count.
    await session.execute(select(Certificate.id).where(Certificate.id == certificate.id).with_for_update())
    current = await active_grants(session, certificate.id)
    if any(grant.grantee_id_number_hash == digest for grant in current):
        return None, "grant_duplicate"
    if len(current) >= settings.max_grantees:
        return None, "grant_full"
    grant = Grant(
        certificate_id=certificate.id,
        grantee_id_number_hash=digest,
        grantee_id_number_enc=vault.seal("id_number", grantee.id_number),
        grantee_name_enc=vault.seal("name", grantee.name),
        grantee_phone_enc=vault.seal("phone", grantee.phone),
        relationship=grantee.relationship,
        granted_by_identity_id=holder.id,
        created_at=now,
    )
    session.add(grant)
    await session.flush()
    record_access(
        session,
        actor_kind="identity",
        actor_ref=actor(holder, account),
        action="grant",
        reason=grantee.relationship,
        certificate_id=certificate.id,
        vaccinee_id=certificate.vaccinee_id,
        platform=platform,
        detail={"grant_id": grant.id},
    )
    return grant, ""


async def revoke_grant(
    session: AsyncSession,
    holder: Identity,
    certificate: Certificate,
    grant: Grant,
    platform: str,
    now: datetime,
    *,
    account: PlatformAccount | None = None,
) -> bool:
    """Revoke one grant of the holder's certificate; False when it was not active (a double tap)."""
    if certificate.holder_identity_id != holder.id or grant.certificate_id != certificate.id:
        return False
    result = await session.execute(
        update(Grant).where(Grant.id == grant.id, Grant.revoked_at.is_(None)).values(revoked_at=now)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        return False
    record_access(
        session,
        actor_kind="identity",
        actor_ref=actor(holder, account),
        action="revoke",
        reason=grant.relationship,
        certificate_id=certificate.id,
        vaccinee_id=certificate.vaccinee_id,
        platform=platform,
        detail={"grant_id": grant.id},
    )
    return True


async def accounts_for_id_hash(session: AsyncSession, id_number_hash: str) -> Sequence[PlatformAccount]:
    """The chat accounts of a verified person known only by the hash of their ID number (a grantee)."""
    query = (
        select(PlatformAccount)
        .join(Identity, Identity.id == PlatformAccount.identity_id)
        .where(Identity.id_number_hash == id_number_hash, PlatformAccount.following.is_(True))
        .order_by(PlatformAccount.id)
    )
    return (await session.scalars(query)).all()


async def doses_of(session: AsyncSession, vault: Vault, vaccinee_id: int, today: date) -> list[DoseDetail]:
    """The doses of a file users may see today, opened, in the order they were given."""
    query = select(Dose).where(Dose.vaccinee_id == vaccinee_id, Dose.effective_from <= today)
    doses = [dose.detail(vault) for dose in await session.scalars(query)]
    return sorted(doses, key=lambda dose: (dose.given_on, dose.vaccine_code, dose.dose_number))


def record_view(
    session: AsyncSession,
    identity: Identity,
    visible: Visible,
    action: str,
    platform: str,
    *,
    account: PlatformAccount | None = None,
) -> None:
    """Audit a look at a certificate (records, the code…), from ``account`` when a chat account looked."""
    record_access(
        session,
        actor_kind="identity",
        actor_ref=actor(identity, account),
        action=action,
        reason=visible.role,
        certificate_id=visible.certificate.id,
        vaccinee_id=visible.certificate.vaccinee_id,
        platform=platform,
    )
