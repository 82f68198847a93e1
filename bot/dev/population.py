"""A seeded population of claimed children with realistic dose histories, for benchmarks and tests.

Histories follow the national schedule as families do: a clinic visit when the next doses fall due (mostly
within days, sometimes weeks or months late), every dose due that day given at the visit, now and then one
skipped, and the registry showing each dose from the day it was recorded or the next (its nightly import).
Building a history runs the forecast about twice per visit, so a large population reuses a pool of
distinct histories (one birth date and sex each); every child still gets its own file, ciphertexts and ids.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.core.pii import Vault
from bot.immunization.forecast import GivenDose, forecast_next_doses
from models import (
    Certificate,
    CertificateKind,
    Clinic,
    Dose,
    DoseDetail,
    FileProfile,
    Identity,
    Vaccinee,
)
from models.registry import DOSE_FIELD, PROFILE_FIELD

REGION = "320602"  # a pilot region (南通)
CLINIC_CODE = "POP-CC-01"
INSERT_CHUNK = 2000


@dataclasses.dataclass(frozen=True)
class ChildHistory:
    """One child: birth date, sex, and each dose with the day the registry shows it."""

    birth_date: date
    sex: str
    doses: tuple[tuple[GivenDose, date], ...]


def _delay(rng: random.Random) -> int:
    """Days between a dose falling due and the visit: mostly soon, sometimes much later."""
    roll = rng.random()
    if roll < 0.6:
        return rng.randint(0, 3)
    if roll < 0.85:
        return rng.randint(4, 30)
    if roll < 0.95:
        return rng.randint(31, 180)
    return rng.randint(181, 720)


def history(rng: random.Random, birth: date, sex: str, until: date) -> ChildHistory:
    """A child's doses up to ``until``, visit by visit as the forecast says."""
    record: list[tuple[GivenDose, date]] = []
    day = birth
    while day <= until:
        forecasts = forecast_next_doses(birth, sex, [dose for dose, _ in record], day)
        if not forecasts:
            break
        visit = max(day, min(item.earliest for item in forecasts)) + timedelta(days=_delay(rng))
        if visit > until:
            break
        for item in forecast_next_doses(birth, sex, [dose for dose, _ in record], visit):
            if item.earliest <= visit and rng.random() > 0.03:  # now and then one is skipped
                shown = visit + timedelta(days=rng.choice((0, 1, 1, 1, 2)))
                record.append((GivenDose(item.vaccine_code, item.dose_number, visit), shown))
        day = visit + timedelta(days=1)
    return ChildHistory(birth, sex, tuple(record))


def population(
    count: int, today: date, *, seed: int = 12, pool: int = 4000, max_age_days: int = 7 * 365
) -> list[ChildHistory]:
    """``count`` children born within ``max_age_days`` before ``today``, histories drawn from a seeded pool."""
    rng = random.Random(seed)
    distinct = [
        history(rng, today - timedelta(days=rng.randint(0, max_age_days)), rng.choice("MF"), today)
        for _ in range(min(count, pool))
    ]
    return [distinct[index] if index < len(distinct) else rng.choice(distinct) for index in range(count)]


async def add_claimed_children(
    sessions: async_sessionmaker[AsyncSession], vault: Vault, children: Sequence[ChildHistory], *, tag: str = "P"
) -> list[int]:
    """Write each child as a registry file with its doses, claimed by a parent (two children a parent)."""
    now = datetime.now(UTC)
    async with sessions() as session, session.begin():
        clinic_id = await session.scalar(select(Clinic.id).where(Clinic.code == CLINIC_CODE))
        if clinic_id is None:
            clinic = Clinic(code=CLINIC_CODE, name="人口模拟接种门诊", region_code=REGION)
            session.add(clinic)
            await session.flush()
            clinic_id = clinic.id
    ids: list[int] = []
    for start in range(0, len(children), INSERT_CHUNK):
        chunk = children[start : start + INSERT_CHUNK]
        async with sessions() as session, session.begin():
            await _add_chunk(session, vault, chunk, start, clinic_id, tag, now, ids)
    return ids


async def _add_chunk(
    session: AsyncSession,
    vault: Vault,
    chunk: Sequence[ChildHistory],
    start: int,
    clinic_id: int,
    tag: str,
    now: datetime,
    ids: list[int],
) -> None:
    parents = []
    for number in range(start // 2, (start + len(chunk) + 1) // 2):
        id_number = f"{tag}-parent-{number}"
        parents.append(
            {
                "id_number_hash": vault.digest("id_number", id_number),
                "id_number_enc": vault.seal("id_number", id_number),
                "name_enc": vault.seal("name", f"家长{number}"),
                "verified_at": now,
                "verification_method": "face",
                "created_at": now,
            }
        )
    parent_ids = list(
        await session.scalars(insert(Identity).returning(Identity.id, sort_by_parameter_order=True), parents)
    )
    files = []
    for offset, child in enumerate(chunk):
        number = start + offset
        profile = FileProfile(sex=child.sex, region_code=REGION, clinic_id=clinic_id)
        files.append(
            {
                "registry_ref": f"{tag}{number:08d}",
                "name_enc": vault.seal("name", f"儿童{number}"),
                "birth_date_enc": vault.seal("birth_date", child.birth_date.isoformat()),
                "profile_enc": vault.seal(PROFILE_FIELD, profile.to_json()),
                "effective_from": child.birth_date,
                "updated_at": now,
            }
        )
    file_ids = list(await session.scalars(insert(Vaccinee).returning(Vaccinee.id, sort_by_parameter_order=True), files))
    doses = []
    certificates = []
    for offset, (vaccinee_id, child) in enumerate(zip(file_ids, chunk, strict=True)):
        for given, shown in child.doses:
            detail = DoseDetail(given.vaccine_code, given.dose_number, given.given_on, clinic_id=clinic_id)
            doses.append(
                {
                    "vaccinee_id": vaccinee_id,
                    "dose_key": Dose.key_for(vault, vaccinee_id, given.vaccine_code, given.dose_number),
                    "detail_enc": vault.seal(DOSE_FIELD, detail.to_json()),
                    "effective_from": shown,
                    "created_at": now,
                }
            )
        certificates.append(
            {
                "vaccinee_id": vaccinee_id,
                "holder_identity_id": parent_ids[(start + offset) // 2 - start // 2],
                "kind": CertificateKind.CHILD,
                "claimed_at": now,
                "claimed_via": "wechat",
            }
        )
    if doses:
        await session.execute(insert(Dose), doses)
    await session.execute(insert(Certificate), certificates)
    ids.extend(file_ids)
