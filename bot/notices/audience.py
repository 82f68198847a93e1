"""Who hears a notice: for each certificate, its holder and every grantee active now, on the platforms they follow.

The same people as :func:`bot.identity.accounts.reachable_accounts` finds for one certificate (a revoked grant
is not active; a person who follows an Official Account or a life account is not told again in a mini program),
found for thousands of certificates in a few queries instead of a few per certificate.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.core.pii import Vault, mask_name
from bot.identity.accounts import one_channel_each
from models import Certificate, Grant, Identity, PlatformAccount, Vaccinee

CHUNK = 500  # ids in one IN list
T = TypeVar("T")


def _chunks(values: Sequence[T]) -> Iterator[Sequence[T]]:
    for start in range(0, len(values), CHUNK):
        yield values[start : start + CHUNK]


@dataclasses.dataclass(frozen=True)
class Family:
    """One certificate's people as a notice reaches them: the accounts, and the file's name masked ("" unread)."""

    certificate: Certificate
    accounts: tuple[PlatformAccount, ...]
    masked_name: str = ""


async def families(
    session: AsyncSession, vault: Vault, certificates: Sequence[Certificate], *, names: bool = False
) -> list[Family]:
    """Each certificate's reachable accounts (and, with ``names``, its file's masked name), in the given order."""
    ids = sorted({certificate.id for certificate in certificates})
    grantees: dict[int, list[str]] = {}
    for chunk in _chunks(ids):
        rows = await session.execute(
            select(Grant.certificate_id, Grant.grantee_id_number_hash)
            .where(Grant.certificate_id.in_(chunk), Grant.revoked_at.is_(None))
            .order_by(Grant.id)
        )
        for certificate_id, digest in rows.all():
            grantees.setdefault(certificate_id, []).append(digest)
    digests = sorted({digest for each in grantees.values() for digest in each})
    people: dict[str, int] = {}
    for some in _chunks(digests):
        known = await session.execute(
            select(Identity.id_number_hash, Identity.id).where(Identity.id_number_hash.in_(some))
        )
        people.update({digest: identity_id for digest, identity_id in known.all()})
    identity_ids = sorted({certificate.holder_identity_id for certificate in certificates} | set(people.values()))
    accounts: dict[int, list[PlatformAccount]] = {}
    for chunk in _chunks(identity_ids):
        query = (
            select(PlatformAccount)
            .where(PlatformAccount.identity_id.in_(chunk), PlatformAccount.following.is_(True))
            .order_by(PlatformAccount.id)
        )
        for account in (await session.scalars(query)).all():
            if account.identity_id is not None:
                accounts.setdefault(account.identity_id, []).append(account)
    sealed: dict[int, bytes] = {}
    if names:
        vaccinee_ids = sorted({certificate.vaccinee_id for certificate in certificates})
        for chunk in _chunks(vaccinee_ids):
            found_names = await session.execute(select(Vaccinee.id, Vaccinee.name_enc).where(Vaccinee.id.in_(chunk)))
            sealed.update({vaccinee_id: name for vaccinee_id, name in found_names.all()})
    found: list[Family] = []
    for certificate in certificates:
        persons = [
            certificate.holder_identity_id,
            *(people[d] for d in grantees.get(certificate.id, []) if d in people),
        ]
        reached: dict[int, PlatformAccount] = {}
        for account in one_channel_each(
            [each for person in dict.fromkeys(persons) for each in accounts.get(person, [])]
        ):
            reached.setdefault(account.id, account)
        name = sealed.get(certificate.vaccinee_id)
        masked = mask_name(vault.open("name", name)) if name is not None else ""
        found.append(Family(certificate, tuple(reached.values()), masked))
    return found
