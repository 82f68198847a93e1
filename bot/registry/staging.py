"""Staging a validated registry file: checks against the database, then one sealed batch (all or nothing)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.core.audit import record_access
from bot.core.chinatime import china_today
from bot.core.pii import Vault
from bot.registry.records import (
    CLINIC_REF_PREFIX,
    SEALED_FIELD,
    ParsedRegistry,
    RegistryRejected,
    RowError,
    chunks,
)
from bot.registry.validate import parse_registry
from models import (
    Clinic,
    RegistryBatch,
    RegistryStaged,
    Vaccinee,
    utcnow,
)

log = logging.getLogger("vaxbot.registry")


def effective_date(value: str | None, today: date) -> date:
    """``None`` → tomorrow (the nightly rule), ``today``, or a ``YYYY-MM-DD`` not in the past; else ValueError."""
    if value is None:
        return today + timedelta(days=1)
    if value.strip().lower() == "today":
        return today
    try:
        chosen = date.fromisoformat(value.strip())
    except ValueError as exc:
        raise ValueError("--effective must be 'today' or a date written YYYY-MM-DD") from exc
    if chosen < today:
        raise ValueError("--effective is in the past (China time); use 'today' or a later date")
    return chosen


@dataclasses.dataclass(frozen=True)
class ImportSummary:
    """What an import staged (or, on a dry run, would stage)."""

    batch_id: int | None
    source: str
    effective_from: date
    files: int
    clinics: int
    guardians: int
    doses: int
    dry_run: bool = False

    def describe(self) -> str:
        """One line for the operator."""
        what = f"{self.files} file(s) ({self.guardians} guardian(s), {self.doses} dose(s)), {self.clinics} clinic(s)"
        if self.dry_run:
            return f"{self.source}: valid, {what}; dry run, nothing written"
        return (
            f"batch {self.batch_id} staged from {self.source}: {what}; "
            f"effective {self.effective_from.isoformat()} (China time)"
        )


def _name_problems(source: str, parsed: ParsedRegistry) -> list[RowError]:
    """The file's name is stored and logged: it must not carry anyone's name or number."""
    for record in parsed.files:
        values = [record.name, record.id_number, record.birth_cert_no]
        values += [guardian.id_number for guardian in record.guardians]
        if any(value and len(value) >= 2 and value.upper() in source.upper() for value in values):
            return [RowError(0, "file name", "contains personal data from the file; rename the file")]
    return []


async def _database_problems(
    session: AsyncSession, vault: Vault, parsed: ParsedRegistry, effective_from: date
) -> list[RowError]:
    """Checks against the database: clinic codes exist, and no ID number moves onto a second file."""
    errors: list[RowError] = []
    known = set(parsed.clinic_codes)
    for chunk in chunks(sorted({code for _, _, code in parsed.clinic_refs} - known)):
        known.update((await session.scalars(select(Clinic.code).where(Clinic.code.in_(chunk)))).all())
        # A clinic staged in a batch that is applied before this one (same or earlier date) counts too.
        staged = (
            select(RegistryStaged.registry_ref)
            .join(RegistryBatch, RegistryBatch.id == RegistryStaged.batch_id)
            .where(
                RegistryBatch.applied_at.is_(None),
                RegistryBatch.effective_from <= effective_from,
                RegistryStaged.registry_ref.in_([CLINIC_REF_PREFIX + code for code in chunk]),
            )
        )
        known.update(ref.removeprefix(CLINIC_REF_PREFIX) for ref in (await session.scalars(staged)).all())
    for position, where, code in parsed.clinic_refs:
        if code not in known:
            errors.append(RowError(position, where, "clinic_code is neither a known clinic nor defined in this file"))
    refs_in_file = {record.registry_ref for record in parsed.files}
    for column, field, attribute, label in (
        (Vaccinee.id_number_hash, "id_number", "id_number", "ID number"),
        (Vaccinee.birth_cert_hash, "birth_cert", "birth_cert_no", "birth certificate number"),
    ):
        by_hash = {
            vault.digest(field, value): record
            for record in parsed.files
            if (value := getattr(record, attribute)) is not None
        }
        for chunk in chunks(sorted(by_hash)):
            rows = (await session.execute(select(column, Vaccinee.registry_ref).where(column.in_(chunk)))).all()
            for digest, ref in rows:
                record = by_hash[str(digest)]
                if ref != record.registry_ref and ref not in refs_in_file:
                    position, where = parsed.file_where[record.registry_ref]
                    errors.append(
                        RowError(position, where, f"{label} is already on another registry file (ask for a merge)")
                    )
    return errors


async def stage_registry(
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    parsed: ParsedRegistry,
    *,
    source: str,
    effective_from: date,
    dry_run: bool = False,
) -> ImportSummary:
    """Stage a parsed file as one batch (all or nothing), or raise :class:`RegistryRejected` listing every error."""
    source = Path(source).name[:128]
    summary = ImportSummary(
        batch_id=None,
        source=source,
        effective_from=effective_from,
        files=len(parsed.files),
        clinics=len(parsed.clinics),
        guardians=sum(len(record.guardians) for record in parsed.files),
        doses=sum(len(record.doses) for record in parsed.files),
        dry_run=dry_run,
    )
    async with sessions() as session, session.begin():
        # Every error at once, those found against the database included, so one pass fixes the file.
        errors = (
            parsed.errors
            + _name_problems(source, parsed)
            + await _database_problems(session, vault, parsed, effective_from)
        )
        if errors:
            _refused(errors)
        if dry_run:
            return summary
        batch = RegistryBatch(
            source=source,
            records=len(parsed.clinics) + len(parsed.files),
            imported_at=utcnow(),
            effective_from=effective_from,
        )
        session.add(batch)
        await session.flush()
        staged: list[tuple[int, str, dict[str, Any]]] = [
            (clinic.line, CLINIC_REF_PREFIX + clinic.code, clinic.payload()) for clinic in parsed.clinics
        ]
        staged += [(record.line, record.registry_ref, record.payload()) for record in parsed.files]
        session.add_all(
            RegistryStaged(
                batch_id=batch.id,
                line=line,
                registry_ref=ref,
                payload_enc=vault.seal(SEALED_FIELD, json.dumps(payload, ensure_ascii=False, sort_keys=True)),
            )
            for line, ref, payload in staged
        )
        record_access(
            session,
            actor_kind="system",
            actor_ref="registry-import",
            action="registry_staged",
            reason="registry import",
            detail={"batch": batch.id, "records": batch.records},
        )
    log.info(
        "registry batch staged",
        extra={"batch": batch.id, "records": batch.records, "effective_from": effective_from.isoformat()},
    )
    return dataclasses.replace(summary, batch_id=batch.id)


def _refused(errors: Sequence[RowError]) -> None:
    log.warning("registry file refused", extra={"errors": len(errors)})
    raise RegistryRejected(errors)


async def import_registry_file(
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    path: Path,
    *,
    effective_from: date | None = None,
    today: date | None = None,
    dry_run: bool = False,
) -> ImportSummary:
    """Validate ``path`` whole and stage it (effective tomorrow, China time, unless told otherwise)."""
    today = today or china_today()
    content = await asyncio.to_thread(path.read_bytes)
    parsed = parse_registry(path.name, content, today=today)
    return await stage_registry(
        sessions,
        vault,
        parsed,
        source=path.name,
        effective_from=effective_from or today + timedelta(days=1),
        dry_run=dry_run,
    )
