"""Applying staged registry batches on their effective date (China time): the tables users read change here."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.core.audit import record_access
from bot.core.chinatime import china_today
from bot.core.pii import Vault
from bot.core.scheduler import Scheduler
from bot.registry.records import CLINIC_REF_PREFIX, SEALED_FIELD, ClinicRecord, FileRecord, chunks
from models import (
    Clinic,
    Dose,
    DoseDetail,
    DoseSource,
    FileProfile,
    Guardian,
    RegistryBatch,
    RegistryStaged,
    ReminderPlan,
    Stage,
    Vaccinee,
    Visit,
    utcnow,
)

log = logging.getLogger("vaxbot.registry")
APPLY_PAGE = 2000  # staged records decrypted and applied at a time


@dataclasses.dataclass
class AppliedBatch:
    """What applying one batch changed."""

    batch_id: int
    source: str
    effective_from: date
    clinics_created: int = 0
    clinics_updated: int = 0
    files_created: int = 0
    files_updated: int = 0
    files_unchanged: int = 0
    doses_added: int = 0
    doses_changed: int = 0
    doses_removed: int = 0
    doses_kept: int = 0  # recorded at a clinic desk after the import: the desk's record stands

    def counts(self) -> dict[str, int]:
        """The counters alone (for logs and the audit row)."""
        return {
            key: value
            for key, value in dataclasses.asdict(self).items()
            if key.startswith(("files_", "doses_", "clinics_"))
        }

    def describe(self) -> str:
        """One line for the operator."""
        return (
            f"batch {self.batch_id} ({self.source}, effective {self.effective_from.isoformat()}): "
            f"files {self.files_created} created, {self.files_updated} updated, {self.files_unchanged} unchanged; "
            f"doses {self.doses_added} added, {self.doses_changed} changed, {self.doses_removed} removed, "
            f"{self.doses_kept} kept from a desk; "
            f"clinics {self.clinics_created} created, {self.clinics_updated} updated"
        )


async def apply_due_batches(
    sessions: async_sessionmaker[AsyncSession], vault: Vault, today: date | None = None
) -> list[AppliedBatch]:
    """Apply every unapplied batch whose effective date (China time) has come, in date then import order.

    One transaction per batch, with the batch row locked: a second process waits, then finds it applied.
    A batch that fails stops the run (later batches may correct it), and is tried again next time.
    """
    today = today or china_today()
    async with sessions() as session:
        due = (
            await session.scalars(
                select(RegistryBatch.id)
                .where(RegistryBatch.applied_at.is_(None), RegistryBatch.effective_from <= today)
                .order_by(RegistryBatch.effective_from, RegistryBatch.id)
            )
        ).all()
    applied: list[AppliedBatch] = []
    for batch_id in due:
        try:
            report = await _apply_batch(sessions, vault, batch_id)
        except Exception:
            log.error("registry batch could not be applied", extra={"batch": batch_id})
            raise
        if report is not None:
            applied.append(report)
            log.info("registry batch applied", extra={"batch": batch_id, **report.counts()})
    return applied


async def _apply_batch(sessions: async_sessionmaker[AsyncSession], vault: Vault, batch_id: int) -> AppliedBatch | None:
    async with sessions() as session, session.begin():
        batch = (
            await session.scalars(
                select(RegistryBatch)
                .where(RegistryBatch.id == batch_id)
                .with_for_update()
                .execution_options(populate_existing=True)
            )
        ).one_or_none()
        if batch is None or batch.applied_at is not None:
            return None  # another process applied it while we waited for the lock
        # Clinics first (their rows are few and named by a prefix), then the files a page at a time: a
        # province's batch never sits in memory whole, though it is still applied in one transaction.
        staged = select(RegistryStaged).where(RegistryStaged.batch_id == batch.id)
        is_clinic = RegistryStaged.registry_ref.startswith(CLINIC_REF_PREFIX, autoescape=True)
        clinics = [
            ClinicRecord.from_payload(row.line, _payload(vault, row))
            for row in await session.scalars(staged.where(is_clinic).order_by(RegistryStaged.id))
        ]
        report = AppliedBatch(batch.id, batch.source, batch.effective_from)
        clinic_ids = await _apply_clinics(session, clinics, report)
        after = 0
        while True:
            page = (
                await session.scalars(
                    staged.where(~is_clinic, RegistryStaged.id > after).order_by(RegistryStaged.id).limit(APPLY_PAGE)
                )
            ).all()
            if not page:
                break
            after = page[-1].id
            files = [FileRecord.from_payload(row.line, _payload(vault, row)) for row in page]
            await _resolve_clinics(session, files, clinic_ids, report)
            for chunk in chunks(files):
                await _apply_files(session, vault, batch, chunk, clinic_ids, report)
            # What was read and written for this page is flushed: drop it from the session.
            session.expunge_all()
            session.add(batch)
        batch.applied_at = utcnow()
        record_access(
            session,
            actor_kind="system",
            actor_ref="registry-apply",
            action="registry_applied",
            reason="registry batch applied",
            detail={"batch": batch.id, **report.counts()},
        )
        return report


def _payload(vault: Vault, row: RegistryStaged) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(vault.open(SEALED_FIELD, row.payload_enc))
    return data


async def _apply_clinics(
    session: AsyncSession, clinics: Sequence[ClinicRecord], report: AppliedBatch
) -> dict[str, int]:
    """Upsert the batch's clinics; returns the id of each."""
    existing: dict[str, Clinic] = {}
    for chunk in chunks(sorted({clinic.code for clinic in clinics})):
        existing.update((c.code, c) for c in (await session.scalars(select(Clinic).where(Clinic.code.in_(chunk)))))
    for record in clinics:
        clinic = existing.get(record.code)
        values = {
            "name": record.name,
            "region_code": record.region_code,
            "address": record.address,
            "phone": record.phone,
        }
        if clinic is None:
            clinic = Clinic(code=record.code, **values)
            session.add(clinic)
            existing[record.code] = clinic
            report.clinics_created += 1
        elif any(getattr(clinic, key) != value for key, value in values.items()):
            for key, value in values.items():
                setattr(clinic, key, value)
            report.clinics_updated += 1
    await session.flush()
    return {code: clinic.id for code, clinic in existing.items()}


async def _resolve_clinics(
    session: AsyncSession, files: Sequence[FileRecord], clinic_ids: dict[str, int], report: AppliedBatch
) -> None:
    """Add to ``clinic_ids`` the clinics these files use that the batch does not define."""
    codes = {record.clinic_code for record in files}
    codes |= {dose.clinic_code for record in files for dose in record.doses if dose.clinic_code is not None}
    unknown = sorted(codes - set(clinic_ids))
    for chunk in chunks(unknown):
        rows = await session.execute(select(Clinic.code, Clinic.id).where(Clinic.code.in_(chunk)))
        clinic_ids.update((code, clinic_id) for code, clinic_id in rows)
    missing = codes - set(clinic_ids)
    if missing:
        # Import checked this; a clinic cannot vanish in between, so this is a bug, not bad data.
        raise RuntimeError(f"batch {report.batch_id} uses {len(missing)} clinic code(s) that do not exist")


async def _apply_files(
    session: AsyncSession,
    vault: Vault,
    batch: RegistryBatch,
    records: Sequence[FileRecord],
    clinic_ids: Mapping[str, int],
    report: AppliedBatch,
) -> None:
    refs = [record.registry_ref for record in records]
    files = {
        vaccinee.registry_ref: vaccinee
        for vaccinee in await session.scalars(select(Vaccinee).where(Vaccinee.registry_ref.in_(refs)).with_for_update())
    }
    ids = [vaccinee.id for vaccinee in files.values()]
    guardians: dict[int, list[Guardian]] = {}
    doses: dict[int, list[Dose]] = {}
    on_visits: set[int] = set()
    if ids:
        for guardian in await session.scalars(select(Guardian).where(Guardian.vaccinee_id.in_(ids))):
            guardians.setdefault(guardian.vaccinee_id, []).append(guardian)
        for dose in await session.scalars(select(Dose).where(Dose.vaccinee_id.in_(ids))):
            doses.setdefault(dose.vaccinee_id, []).append(dose)
        visits = select(Visit.dose_id).where(Visit.vaccinee_id.in_(ids), Visit.dose_id.is_not(None))
        on_visits = {dose_id for dose_id in await session.scalars(visits) if dose_id is not None}
    changed_files: list[int] = []
    for record in records:
        vaccinee = files.get(record.registry_ref)
        created = vaccinee is None
        if vaccinee is None:
            vaccinee = Vaccinee(registry_ref=record.registry_ref, effective_from=batch.effective_from)
            session.add(vaccinee)
        changed = _apply_fields(vaccinee, record, vault, clinic_ids)
        if created:
            await session.flush()  # the new file's id, for its guardians and doses
        changed |= await _apply_guardians(session, vault, vaccinee, record, guardians.get(vaccinee.id, []), batch)
        changed |= await _apply_doses(
            session, vault, vaccinee, record, doses.get(vaccinee.id, []), on_visits, clinic_ids, batch, report
        )
        if created:
            report.files_created += 1
        elif changed:
            report.files_updated += 1
        else:
            report.files_unchanged += 1
            continue
        vaccinee.effective_from = batch.effective_from
        changed_files.append(vaccinee.id)
        record_access(
            session,
            actor_kind="system",
            actor_ref="registry-apply",
            action="registry_file_created" if created else "registry_file_updated",
            vaccinee_id=vaccinee.id,
            reason="registry batch applied",
            detail={"batch": batch.id},
        )
    await session.flush()
    if changed_files:
        # A claimed child's forecast may have changed: the next reminder planning pass forecasts it again.
        await session.execute(ReminderPlan.changed(changed_files, batch.effective_from))


def _apply_fields(vaccinee: Vaccinee, record: FileRecord, vault: Vault, clinic_ids: Mapping[str, int]) -> bool:
    """Bring the file's own fields to the record's; sealed fields are re-sealed only when their value changes."""
    changed = False
    for hash_attr, enc_attr, field, value in (
        ("id_number_hash", "id_number_enc", "id_number", record.id_number),
        ("birth_cert_hash", "birth_cert_enc", "birth_cert", record.birth_cert_no),
    ):
        digest = vault.digest(field, value) if value is not None else None
        if getattr(vaccinee, hash_attr) != digest or (digest is None) != (getattr(vaccinee, enc_attr) is None):
            setattr(vaccinee, hash_attr, digest)
            setattr(vaccinee, enc_attr, vault.seal(field, value) if value is not None else None)
            changed = True
    for field, value in (("name", record.name), ("birth_date", record.birth_date.isoformat())):
        current = getattr(vaccinee, f"{field}_enc")
        if current is None or vault.open(field, current) != value:
            setattr(vaccinee, f"{field}_enc", vault.seal(field, value))
            changed = True
    profile = FileProfile(
        sex=record.sex,
        region_code=record.region_code,
        clinic_id=clinic_ids[record.clinic_code],
        stage=Stage(record.stage),
    )
    return vaccinee.set_profile(vault, profile) or changed


async def _apply_guardians(
    session: AsyncSession,
    vault: Vault,
    vaccinee: Vaccinee,
    record: FileRecord,
    current: Sequence[Guardian],
    batch: RegistryBatch,
) -> bool:
    """Replace the file's guardians with the record's (nothing is written when they are the same)."""
    wanted = {(vault.digest("id_number", g.id_number), g.relationship): g.id_number for g in record.guardians}
    if {(g.id_number_hash, g.relationship) for g in current} == set(wanted):
        return False
    # Why a statement and not session.delete: the unit of work would insert the new rows first, and a
    # guardian kept with a new relationship would then collide with its old row on the unique key.
    await session.execute(delete(Guardian).where(Guardian.vaccinee_id == vaccinee.id))
    session.add_all(
        Guardian(
            vaccinee_id=vaccinee.id,
            id_number_hash=digest,
            id_number_enc=vault.seal("id_number", id_number),
            relationship=relationship,
        )
        for (digest, relationship), id_number in wanted.items()
    )
    return True


async def _apply_doses(
    session: AsyncSession,
    vault: Vault,
    vaccinee: Vaccinee,
    record: FileRecord,
    current: Iterable[Dose],
    on_visits: set[int],
    clinic_ids: Mapping[str, int],
    batch: RegistryBatch,
    report: AppliedBatch,
) -> bool:
    """Upsert the record's doses; remove registry doses it no longer lists; leave desk doses recorded since."""
    # The details are sealed: open each once, and match the record's doses by vaccine and dose number.
    existing: dict[tuple[str, int], tuple[Dose, DoseDetail]] = {}
    for dose in current:
        opened = dose.detail(vault)
        existing[opened.vaccine_code, opened.dose_number] = (dose, opened)
    changed = False
    for wanted in record.doses:
        detail = DoseDetail(
            vaccine_code=wanted.vaccine_code,
            dose_number=wanted.dose_number,
            given_on=wanted.given_on,
            clinic_id=clinic_ids[wanted.clinic_code] if wanted.clinic_code is not None else None,
            lot_number=wanted.lot_number,
            source=DoseSource.REGISTRY,
        )
        found = existing.pop((wanted.vaccine_code, wanted.dose_number), None)
        if found is None:
            session.add(Dose.sealed(vault, vaccinee.id, detail, batch.effective_from))
            report.doses_added += 1
            changed = True
            continue
        dose, current_detail = found
        if current_detail.source == DoseSource.CLINIC and dose.created_at > batch.imported_at:
            # Recorded at a desk after this file was imported: the registry could not have known it yet.
            report.doses_kept += 1
        elif current_detail != detail:
            dose.set_detail(vault, detail)
            dose.effective_from = batch.effective_from
            report.doses_changed += 1
            changed = True
    for dose, current_detail in existing.values():
        # The record is the whole file: a registry dose it no longer lists was withdrawn or renumbered.
        # Desk doses, and doses a desk visit points at, stay until the registry lists them.
        if current_detail.source == DoseSource.REGISTRY and dose.id not in on_visits:
            report.doses_removed += 1
            changed = True
            await session.delete(dose)  # removed keys never collide with the doses added above
    return changed


def register_jobs(scheduler: Scheduler, sessions: async_sessionmaker[AsyncSession], vault: Vault) -> None:
    """The registry's job: apply staged batches that came due, every 10 minutes.

    Batches become visible shortly after midnight China time (and at start-up, for any that came due).
    """
    scheduler.every("registry", timedelta(minutes=10), lambda: apply_due_batches(sessions, vault))
