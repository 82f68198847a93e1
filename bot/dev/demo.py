"""Demo data for the quick start: a registry file of fictional families, loaded through the registry import.

The story holds as of 2026-11-23 (dose dates follow each child's birth date and the schedule):

- the Lins in Nantong (3206): the mother (an adult with HPV9 doses), the grandmother (an adult with a
  flu dose; she is no guardian, so she sees the children only when authorised), a boy overdue for his
  18-month and 2-year doses, a baby girl up to date (next doses at 6 months, 2026-12-01), and a boy born
  in 2015 (before 2017: not claimable);
- the Chens in Wuxi (3202): the father, a boy complete for his age, a girl due for her 18-month doses,
  an older girl (9, complete for her age, old enough for the self-paid 9-valent HPV the Wuxi clinic
  publishes), and a newborn still in obstetrics with only a birth certificate number;
- the Zhaos in Nanjing (3201, outside the pilot regions): the mother and a boy whose file is not claimable.
"""

from __future__ import annotations

import calendar
import dataclasses
import json
from datetime import date, datetime, time, timedelta
from typing import Any

from alembic import command
from sqlalchemy import Connection, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.booking import lottery as booking_lottery
from bot.booking import slots as booking_slots
from bot.core.chinatime import CHINA, china_today
from bot.core.db import alembic_config, sessionmaker
from bot.core.pii import Vault
from bot.core.validators import id_check_char
from bot.registry.apply import apply_due_batches
from bot.registry.staging import stage_registry
from bot.registry.validate import parse_registry
from bot.staff.auth import add_staff
from bot.staff.passwords import hash_password_async
from models import Clinic, ClinicStaff, Lottery, RegistryBatch, Slot, StaffRole

DEMO_SOURCE = "demo-registry.json"
# The demo clinic's staff, one per role, for the clinic console (development only: the password is public).
DEMO_CLINIC = "NT-CC-01"
DEMO_STAFF_PASSWORD = "demo-clinic-2026"  # noqa: S105 (a published development password, never in production)
DEMO_STAFF: tuple[tuple[str, str, StaffRole], ...] = (
    ("demo-registrar", "登记员小林", StaffRole.REGISTRAR),
    ("demo-vaccinator", "接种员小周", StaffRole.VACCINATOR),
    ("demo-observer", "留观护士小陈", StaffRole.OBSERVER),
    ("demo-admin", "门诊管理员老王", StaffRole.ADMIN),
)


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


@dataclasses.dataclass(frozen=True)
class DemoNewborn:
    """A fictional newborn: no ID number yet, a birth certificate number instead."""

    ref: str
    name: str
    birth_cert_no: str
    sex: str
    birth: date


# Nantong: the Lin family.
PARENT = DemoPerson("DEMO-P1", "林晓雨", demo_id_number("320602", date(1992, 3, 14), 122), "F", date(1992, 3, 14))
GRANDMA = DemoPerson("DEMO-P2", "周桂兰", demo_id_number("320602", date(1963, 8, 2), 226), "F", date(1963, 8, 2))
CHILD = DemoPerson("DEMO-C1", "林小满", demo_id_number("320602", date(2023, 5, 20), 131), "M", date(2023, 5, 20))
INFANT = DemoPerson("DEMO-C2", "林小禾", demo_id_number("320602", date(2026, 6, 1), 142), "F", date(2026, 6, 1))
OLDER = DemoPerson("DEMO-C3", "林大川", demo_id_number("320602", date(2015, 9, 9), 153), "M", date(2015, 9, 9))
# Wuxi: the Chen family.
WX_PARENT = DemoPerson("DEMO-P3", "陈志远", demo_id_number("320213", date(1988, 7, 21), 311), "M", date(1988, 7, 21))
WX_CHILD = DemoPerson("DEMO-C4", "陈思远", demo_id_number("320213", date(2019, 3, 15), 315), "M", date(2019, 3, 15))
WX_TODDLER = DemoPerson("DEMO-C5", "陈思语", demo_id_number("320213", date(2025, 5, 10), 322), "F", date(2025, 5, 10))
WX_GIRL = DemoPerson("DEMO-C8", "陈思琪", demo_id_number("320213", date(2017, 2, 18), 328), "F", date(2017, 2, 18))
NEWBORN = DemoNewborn("DEMO-C6", "陈思安", "Q320261120", "M", date(2026, 11, 20))
# Nanjing (outside the pilot regions): the Zhao family.
NJ_PARENT = DemoPerson("DEMO-P4", "赵雅琴", demo_id_number("320102", date(1990, 12, 5), 424), "F", date(1990, 12, 5))
NJ_CHILD = DemoPerson("DEMO-C7", "赵子墨", demo_id_number("320102", date(2021, 9, 30), 417), "M", date(2021, 9, 30))

# (code, name, region code)
CLINICS = [
    ("NT-CC-01", "南通市崇川区和平桥街道社区卫生服务中心预防接种门诊", "320602"),
    ("WX-LX-01", "无锡市梁溪区崇安寺街道社区卫生服务中心预防接种门诊", "320213"),
    ("WX-FY-01", "无锡市妇幼保健院产科预防接种室", "320213"),
    ("NJ-XW-01", "南京市玄武区梅园新村街道社区卫生服务中心预防接种门诊", "320102"),
]


def _at(birth: date, months: int = 0, days: int = 0) -> date:
    """``months`` (then ``days``) after ``birth``, the day clamped to the month's length."""
    month_index = birth.month - 1 + months
    year, month = birth.year + month_index // 12, month_index % 12 + 1
    day = min(birth.day, calendar.monthrange(year, month)[1])
    return date(year, month, day) + timedelta(days=days)


def _series(birth: date, plan: list[tuple[str, int, int, int]]) -> list[tuple[str, int, date]]:
    """Doses from (code, dose number, age in months, extra days) rows."""
    return [(code, number, _at(birth, months, days)) for code, number, months, days in plan]


# (vaccine code, dose number, date given) — the 2021 national schedule (DTaP at 3, 4, 5 months).
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
]  # then nothing: DTaP 4, MMR 2, HepA-L (18 m, past due at 24 m) and JE-L 2 (2 y) are overdue
# Born 2026: DTaP at 2, 4, 6 and 18 months (from 2025). Next: HepB 3, DTaP 3, MPSV-A 1 at 6 months.
INFANT_DOSES = [
    ("HepB", 1, date(2026, 6, 1)),
    ("BCG", 1, date(2026, 6, 2)),
    ("HepB", 2, date(2026, 7, 1)),
    ("IPV", 1, date(2026, 8, 3)),
    ("DTaP", 1, date(2026, 8, 3)),
    ("IPV", 2, date(2026, 9, 1)),
    ("bOPV", 1, date(2026, 10, 9)),
    ("DTaP", 2, date(2026, 10, 9)),
]
OLDER_DOSES = _series(OLDER.birth, [("HepB", 1, 0, 0), ("BCG", 1, 0, 1), ("HepB", 2, 1, 0), ("HepB", 3, 6, 0)])
# Complete for a seven-year-old: every NIP dose up to 6 years (DTaP 5 at 6 years, from 2025), and varicella.
WX_CHILD_DOSES = _series(
    WX_CHILD.birth,
    [
        ("HepB", 1, 0, 0),
        ("BCG", 1, 0, 1),
        ("HepB", 2, 1, 0),
        ("IPV", 1, 2, 0),
        ("IPV", 2, 3, 0),
        ("DTaP", 1, 3, 0),
        ("bOPV", 1, 4, 0),
        ("DTaP", 2, 4, 0),
        ("DTaP", 3, 5, 0),
        ("HepB", 3, 6, 0),
        ("MPSV-A", 1, 6, 0),
        ("MMR", 1, 8, 0),
        ("JE-L", 1, 8, 0),
        ("MPSV-A", 2, 9, 2),
        ("VAR", 1, 12, 3),
        ("DTaP", 4, 18, 0),
        ("MMR", 2, 18, 0),
        ("HepA-L", 1, 18, 0),
        ("JE-L", 2, 24, 4),
        ("MPSV-AC", 1, 36, 5),
        ("bOPV", 2, 48, 2),
        ("VAR", 2, 48, 2),
        ("MPSV-AC", 2, 72, 3),
        ("DTaP", 5, 72, 3),
    ],
)
# Due: DTaP 4, MMR 2 and HepA-L at 18 months (2026-11-10); JE-L 2 follows at 2 years.
WX_TODDLER_DOSES = _series(
    WX_TODDLER.birth,
    [
        ("HepB", 1, 0, 0),
        ("BCG", 1, 0, 1),
        ("HepB", 2, 1, 0),
        ("IPV", 1, 2, 0),
        ("DTaP", 1, 2, 0),
        ("IPV", 2, 3, 0),
        ("bOPV", 1, 4, 0),
        ("DTaP", 2, 4, 0),
        ("HepB", 3, 6, 0),
        ("DTaP", 3, 6, 0),
        ("MPSV-A", 1, 6, 0),
        ("MMR", 1, 8, 0),
        ("JE-L", 1, 8, 0),
        ("MPSV-A", 2, 9, 1),
    ],
)
# Complete for a nine-year-old on the 2021 schedule (DTaP at 3, 4, 5, 18 months; DT at 6 years), with
# varicella: nothing of the programme is due, and 9-valent HPV (self-paid, 9–45) is hers to book.
WX_GIRL_DOSES = _series(
    WX_GIRL.birth,
    [
        ("HepB", 1, 0, 0),
        ("BCG", 1, 0, 1),
        ("HepB", 2, 1, 0),
        ("IPV", 1, 2, 0),
        ("IPV", 2, 3, 0),
        ("DTaP", 1, 3, 0),
        ("bOPV", 1, 4, 0),
        ("DTaP", 2, 4, 0),
        ("DTaP", 3, 5, 0),
        ("HepB", 3, 6, 0),
        ("MPSV-A", 1, 6, 0),
        ("MMR", 1, 8, 0),
        ("JE-L", 1, 8, 0),
        ("MPSV-A", 2, 9, 2),
        ("VAR", 1, 12, 3),
        ("DTaP", 4, 18, 0),
        ("MMR", 2, 18, 0),
        ("HepA-L", 1, 18, 0),
        ("JE-L", 2, 24, 4),
        ("MPSV-AC", 1, 36, 5),
        ("bOPV", 2, 48, 2),
        ("VAR", 2, 48, 2),
        ("MPSV-AC", 2, 72, 3),
        ("DT", 1, 72, 3),
    ],
)
NEWBORN_DOSES = _series(NEWBORN.birth, [("HepB", 1, 0, 0), ("BCG", 1, 0, 1)])
NJ_CHILD_DOSES = _series(
    NJ_CHILD.birth,
    [("HepB", 1, 0, 0), ("BCG", 1, 0, 1), ("HepB", 2, 1, 0), ("IPV", 1, 2, 0), ("IPV", 2, 3, 0), ("HepB", 3, 6, 0)],
)
# Adults: the mother's HPV9 dose 3 (6 months after dose 1) is overdue; the grandmother had a flu jab.
PARENT_DOSES = [("HPV9", 1, date(2024, 4, 8)), ("HPV9", 2, date(2024, 6, 11))]
GRANDMA_DOSES = [("Flu", 1, date(2025, 10, 15))]


def _file(
    person: DemoPerson | DemoNewborn,
    clinic: str,
    stage: str,
    doses: list[tuple[str, int, date]],
    guardians: list[tuple[str, DemoPerson]],
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "registry_ref": person.ref,
        "name": person.name,
        "sex": person.sex,
        "birth_date": person.birth.isoformat(),
        "clinic_code": clinic,
        "stage": stage,
        "guardians": [{"relationship": relation, "id_number": who.id_number} for relation, who in guardians],
        "doses": [
            {"vaccine_code": code, "dose_number": number, "given_on": given.isoformat(), "clinic_code": clinic}
            for code, number, given in doses
        ],
    }
    if isinstance(person, DemoPerson):
        record["id_number"] = person.id_number
        record["region_code"] = person.id_number[:6]
    else:
        record["birth_cert_no"] = person.birth_cert_no
        record["region_code"] = next(region for code, _, region in CLINICS if code == clinic)
    return record


def demo_registry_records() -> list[dict[str, Any]]:
    """The demo world as registry records (the JSON format of docs/registry-format.md)."""
    clinics: list[dict[str, Any]] = [
        {"record": "clinic", "clinic_code": code, "name": name, "region_code": region} for code, name, region in CLINICS
    ]
    lin, chen, zhao = [("mother", PARENT)], [("father", WX_PARENT)], [("mother", NJ_PARENT)]
    files = [
        _file(PARENT, "NT-CC-01", "adult", PARENT_DOSES, []),
        _file(GRANDMA, "NT-CC-01", "adult", GRANDMA_DOSES, []),
        _file(CHILD, "NT-CC-01", "child_clinic", CHILD_DOSES, lin),
        _file(INFANT, "NT-CC-01", "child_clinic", INFANT_DOSES, lin),
        _file(OLDER, "NT-CC-01", "child_clinic", OLDER_DOSES, lin),
        _file(WX_CHILD, "WX-LX-01", "child_clinic", WX_CHILD_DOSES, chen),
        _file(WX_TODDLER, "WX-LX-01", "child_clinic", WX_TODDLER_DOSES, chen),
        _file(WX_GIRL, "WX-LX-01", "child_clinic", WX_GIRL_DOSES, chen),
        _file(NEWBORN, "WX-FY-01", "obstetrics", NEWBORN_DOSES, chen),
        _file(NJ_CHILD, "NJ-XW-01", "child_clinic", NJ_CHILD_DOSES, zhao),
    ]
    return clinics + files


def demo_registry_json() -> bytes:
    """The demo registry file, as an operator would import it."""
    return json.dumps(demo_registry_records(), ensure_ascii=False, indent=1).encode("utf-8")


async def seed_demo(sessions: async_sessionmaker[AsyncSession], vault: Vault, *, today: date | None = None) -> bool:
    """Import the demo registry file effective today and apply it; returns False when it was already imported."""
    today = today or china_today()
    async with sessions() as session:
        seeded = (await session.scalars(select(RegistryBatch.id).where(RegistryBatch.source == DEMO_SOURCE))).first()
    if seeded is not None:
        await apply_due_batches(sessions, vault, today)  # in case a crash came between import and apply
        await seed_demo_staff(sessions)
        await seed_demo_slots(sessions, today)
        await seed_demo_lottery(sessions, vault, today)
        return False
    parsed = parse_registry(DEMO_SOURCE, demo_registry_json(), today=today)
    await stage_registry(sessions, vault, parsed, source=DEMO_SOURCE, effective_from=today)
    await apply_due_batches(sessions, vault, today)
    await seed_demo_staff(sessions)
    await seed_demo_slots(sessions, today)
    await seed_demo_lottery(sessions, vault, today)
    return True


async def seed_demo_staff(sessions: async_sessionmaker[AsyncSession]) -> int:
    """The demo clinic's console staff (one per role, :data:`DEMO_STAFF_PASSWORD`); returns how many were added."""
    async with sessions() as session, session.begin():
        clinic = (await session.scalars(select(Clinic).where(Clinic.code == DEMO_CLINIC))).first()
        if clinic is None:
            return 0
        existing = set(
            (await session.scalars(select(ClinicStaff.login).where(ClinicStaff.clinic_id == clinic.id))).all()
        )
        missing = [member for member in DEMO_STAFF if member[0] not in existing]
        if not missing:
            return 0
        # One hash for all four (the same published password): seeding stays fast, and a demo needs no more.
        shared = await hash_password_async(DEMO_STAFF_PASSWORD)
        for login, name, role in missing:
            await add_staff(
                session,
                clinic_code=DEMO_CLINIC,
                login=login,
                display_name=name,
                role=role,
                password=DEMO_STAFF_PASSWORD,
                hashed=shared,
            )
        return len(missing)


# Bookable slots of the demo world: the programme doses the demo children are due for, on the coming
# weekdays' mornings at the Nantong and Wuxi clinics; and 9-valent HPV (self-paid) in Wuxi, whose booking opens
# tomorrow morning, to show what a family is told before a release.
DEMO_SLOT_CLINICS = ("NT-CC-01", "WX-LX-01")
DEMO_SLOT_VACCINES = ("HepB", "IPV", "DTaP", "MMR", "JE-L", "HepA-L", "MPSV-AC", "MPSV-A", "bOPV", "DT", "HPV2")
DEMO_SLOT_DAYS = 7
DEMO_WINDOWS = ((time(8, 30), time(10)), (time(10), time(11, 30)))


async def seed_demo_slots(sessions: async_sessionmaker[AsyncSession], today: date) -> int:
    """Slots for the demo clinics' coming weekdays, once (none are added when any exist); how many were added."""
    async with sessions() as session, session.begin():
        if (await session.scalars(select(Slot.id).limit(1))).first() is not None:
            return 0
        clinics = (await session.scalars(select(Clinic).where(Clinic.code.in_(DEMO_SLOT_CLINICS)))).all()
        added = 0
        days = [today + timedelta(days=n) for n in range(1, DEMO_SLOT_DAYS + 1)]
        for clinic in clinics:
            for day in (day for day in days if day.weekday() < 5):
                for code in DEMO_SLOT_VACCINES:
                    for start, end in DEMO_WINDOWS:
                        spec = booking_slots.SlotSpec(code, day, start, end, 20)
                        await booking_slots.publish(session, clinic.id, spec)
                        added += 1
                if clinic.code == "WX-LX-01":
                    opens = datetime.combine(today + timedelta(days=1), time(8), tzinfo=CHINA)
                    hpv = booking_slots.SlotSpec(
                        "HPV9",
                        day,
                        time(14),
                        time(16),
                        30,
                        opens_at=opens,
                        funding=booking_slots.Funding.SELF_PAID,
                        price_fen=131800,
                    )
                    await booking_slots.publish(session, clinic.id, hpv)
                    added += 1
        return added


DEMO_LOTTERY_CLINIC = "NT-CC-01"


async def seed_demo_lottery(sessions: async_sessionmaker[AsyncSession], vault: Vault, today: date) -> int:
    """An HPV9 lottery (摇号) at a demo clinic: registration open a week, the slot a fortnight away; once."""
    async with sessions() as session, session.begin():
        if (await session.scalars(select(Lottery.id).limit(1))).first() is not None:
            return 0
        clinic = (await session.scalars(select(Clinic).where(Clinic.code == DEMO_LOTTERY_CLINIC))).first()
        if clinic is None:
            return 0
        spec = booking_slots.SlotSpec(
            "HPV9",
            today + timedelta(days=14),
            time(9),
            time(11, 30),
            30,
            funding=booking_slots.Funding.SELF_PAID,
            price_fen=131800,
        )
        await booking_lottery.publish_lottery(
            session,
            vault,
            clinic.id,
            spec,
            opens_at=datetime.combine(today, time(0), tzinfo=CHINA),
            closes_at=datetime.combine(today + timedelta(days=7), time(20), tzinfo=CHINA),
            confirm_hours=24,
        )
        return 1


async def reset_demo(engine: AsyncEngine, vault: Vault, *, today: date | None = None) -> None:
    """Development only: empty the database by rebuilding its schema, then load the demo world again.

    Why through the migrations rather than row deletes: the audit log is append-only at the database
    level and other tables refer to it, so no DELETE may clear it; the migrations' downgrade drops its
    guard with the tables, and the upgrade builds everything as on a fresh install.
    """

    def rebuild(sync: Connection) -> None:
        # The vault: migrations that seal (or, going down, open) stored health records need it.
        command.downgrade(alembic_config(sync, vault), "base")
        command.upgrade(alembic_config(sync, vault), "head")

    # One connection for both halves: on SQLite, whose pool holds one connection, no request and no
    # outbox pass runs between them and finds the tables gone.
    async with engine.connect() as connection:
        await connection.run_sync(rebuild)
        await connection.commit()
    if engine.dialect.name != "sqlite":
        # asyncpg keeps prepared statements per connection, bound to the dropped tables. SQLite needs
        # nothing: its statements recompile after a schema change.
        await engine.dispose()
    await seed_demo(sessionmaker(engine), vault, today=today)
