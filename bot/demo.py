"""Demo data for the quick start: clinics in the two pilot cities and a few families (all fictional)."""

from __future__ import annotations

import dataclasses
from datetime import date

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.pii import Vault
from bot.validators import id_check_char
from models import Clinic, Dose, Guardian, Vaccinee


def demo_id_number(region: str, birth: date, sequence: int) -> str:
    """A well-formed, fictional ID number (valid check character) for demo files and tests."""
    first17 = f"{region}{birth:%Y%m%d}{sequence:03d}"
    return first17 + id_check_char(first17)


@dataclasses.dataclass(frozen=True)
class DemoPerson:
    """A fictional person of the demo world."""

    ref: str
    name: str
    id_number: str
    sex: str
    birth: date


PARENT = DemoPerson("DEMO-P1", "林晓雨", demo_id_number("320602", date(1992, 3, 14), 122), "F", date(1992, 3, 14))
GRANDMA = DemoPerson("DEMO-P2", "周桂兰", demo_id_number("320602", date(1963, 8, 2), 226), "F", date(1963, 8, 2))
CHILD = DemoPerson("DEMO-C1", "林小满", demo_id_number("320602", date(2023, 5, 20), 131), "M", date(2023, 5, 20))
INFANT = DemoPerson("DEMO-C2", "林小禾", demo_id_number("320602", date(2026, 6, 1), 142), "F", date(2026, 6, 1))
OLDER = DemoPerson("DEMO-C3", "林大川", demo_id_number("320602", date(2015, 9, 9), 153), "M", date(2015, 9, 9))

CLINICS = [
    ("NT-CC-01", "南通市崇川区和平桥街道社区卫生服务中心预防接种门诊", "320602"),
    ("WX-LX-01", "无锡市梁溪区崇安寺街道社区卫生服务中心预防接种门诊", "320213"),
]
# (vaccine code, dose number, date given) — from the 2021 national schedule.
CHILD_DOSES = [
    ("HepB", 1, date(2023, 5, 20)),
    ("BCG", 1, date(2023, 5, 21)),
    ("HepB", 2, date(2023, 6, 20)),
    ("IPV", 1, date(2023, 7, 20)),
    ("IPV", 2, date(2023, 8, 21)),
    ("DTaP", 1, date(2023, 8, 21)),
    ("bOPV", 1, date(2023, 9, 20)),
    ("DTaP", 2, date(2023, 9, 20)),
    ("DTaP", 3, date(2023, 10, 20)),
    ("HepB", 3, date(2023, 11, 20)),
    ("MPSV-A", 1, date(2023, 11, 20)),
    ("MMR", 1, date(2024, 1, 22)),
    ("JE-L", 1, date(2024, 1, 22)),
    ("MPSV-A", 2, date(2024, 2, 21)),
]
INFANT_DOSES = [("HepB", 1, date(2026, 6, 1)), ("BCG", 1, date(2026, 6, 2)), ("HepB", 2, date(2026, 7, 1))]


async def seed_demo(sessions: async_sessionmaker[AsyncSession], vault: Vault) -> bool:
    """Load the demo world once; returns False when it is already there."""
    async with sessions() as session, session.begin():
        if (await session.scalars(select(Clinic).where(Clinic.code == CLINICS[0][0]))).first() is not None:
            return False
        clinics = [Clinic(code=code, name=name, region_code=region) for code, name, region in CLINICS]
        session.add_all(clinics)
        await session.flush()
        nantong = clinics[0]
        for person, doses in ((CHILD, CHILD_DOSES), (INFANT, INFANT_DOSES), (OLDER, [])):
            file = _vaccinee(vault, person, nantong.id)
            session.add(file)
            await session.flush()
            session.add(
                Guardian(
                    vaccinee_id=file.id,
                    id_number_hash=vault.digest("id_number", PARENT.id_number),
                    id_number_enc=vault.seal("id_number", PARENT.id_number),
                    relationship="mother",
                )
            )
            for code, number, given in doses:
                session.add(
                    Dose(
                        vaccinee_id=file.id,
                        vaccine_code=code,
                        dose_number=number,
                        given_on=given,
                        clinic_id=nantong.id,
                        effective_from=given,
                    )
                )
        adult = _vaccinee(vault, PARENT, nantong.id)
        adult.stage = "adult"
        session.add(adult)
        await session.flush()
        session.add(
            Dose(
                vaccinee_id=adult.id,
                vaccine_code="HPV9",
                dose_number=1,
                given_on=date(2024, 4, 8),
                clinic_id=nantong.id,
                effective_from=date(2024, 4, 8),
            )
        )
    return True


def _vaccinee(vault: Vault, person: DemoPerson, clinic_id: int) -> Vaccinee:
    return Vaccinee(
        registry_ref=person.ref,
        id_number_hash=vault.digest("id_number", person.id_number),
        id_number_enc=vault.seal("id_number", person.id_number),
        name_enc=vault.seal("name", person.name),
        sex=person.sex,
        birth_date_enc=vault.seal("birth_date", person.birth.isoformat()),
        birth_year=person.birth.year,
        region_code=person.id_number[:6],
        clinic_id=clinic_id,
        effective_from=date(2020, 1, 1),
    )
