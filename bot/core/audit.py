"""The audit-log writer: every access to personal data leaves an append-only row."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from models import AuditEntry, Certificate, utcnow


def record_access(
    session: AsyncSession,
    *,
    actor_kind: str,
    actor_ref: str,
    action: str,
    reason: str = "",
    certificate_id: int | None = None,
    vaccinee_id: int | None = None,
    platform: str | None = None,
    detail: Mapping[str, Any] | None = None,
) -> AuditEntry:
    """Add an audit row to the session (committed with the access it records)."""
    entry = AuditEntry(
        at=utcnow(),
        actor_kind=actor_kind,
        actor_ref=actor_ref,
        action=action,
        reason=reason,
        certificate_id=certificate_id,
        vaccinee_id=vaccinee_id,
        platform=platform,
        detail=dict(detail or {}),
    )
    session.add(entry)
    return entry


async def record_about_certificate(session: AsyncSession, certificate_id: int | None, **fields: Any) -> AuditEntry:
    """:func:`record_access` about a certificate and its file, found by id (none found: about no certificate)."""
    certificate = await session.get(Certificate, certificate_id) if certificate_id is not None else None
    return record_access(
        session,
        certificate_id=certificate.id if certificate is not None else None,
        vaccinee_id=certificate.vaccinee_id if certificate is not None else None,
        **fields,
    )


async def entries_for_certificate(session: AsyncSession, certificate_id: int) -> Sequence[AuditEntry]:
    """Every audit row about one certificate, oldest first."""
    query = select(AuditEntry).where(AuditEntry.certificate_id == certificate_id).order_by(AuditEntry.id)
    return (await session.scalars(query)).all()


async def entries_matching(
    session: AsyncSession,
    *,
    certificate_id: int | None = None,
    action: str | None = None,
    since: datetime | None = None,
) -> Sequence[AuditEntry]:
    """Audit rows matching every filter given, oldest first (a refusal without a certificate is found by action)."""
    query = select(AuditEntry).order_by(AuditEntry.id)
    if certificate_id is not None:
        query = query.where(AuditEntry.certificate_id == certificate_id)
    if action is not None:
        query = query.where(AuditEntry.action == action)
    if since is not None:
        query = query.where(AuditEntry.at >= since)
    return (await session.scalars(query)).all()
