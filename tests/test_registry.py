"""The registry import on both databases: whole-file validation, staging, next-day application, the demo."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import io
import json
import logging
import re
from collections.abc import AsyncIterator, Iterable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.core.db import create_engine, sessionmaker
from bot.core.keys import load_keyring
from bot.core.pii import Vault
from bot.dev.demo import (
    CHILD,
    CLINICS,
    GRANDMA,
    INFANT,
    NEWBORN,
    NJ_CHILD,
    OLDER,
    PARENT,
    WX_CHILD,
    WX_PARENT,
    WX_TODDLER,
    DemoPerson,
    demo_id_number,
    demo_registry_json,
    demo_registry_records,
    seed_demo,
)
from bot.registry.apply import apply_due_batches
from bot.registry.formats import CSV_COLUMNS
from bot.registry.records import RegistryRejected
from bot.registry.staging import effective_date, import_registry_file
from bot.registry.validate import parse_registry
from models import (
    AuditEntry,
    Clinic,
    Dose,
    DoseDetail,
    DoseSource,
    Guardian,
    RegistryBatch,
    RegistryStaged,
    Vaccinee,
    utcnow,
)
from tests.conftest import _settings

TODAY = date(2026, 11, 23)
TOMORROW = TODAY + timedelta(days=1)
NANTONG = ("NT-CC-01", "南通市崇川区和平桥街道社区卫生服务中心预防接种门诊", "320602")
TABLES = (Clinic, Vaccinee, Guardian, Dose, RegistryBatch, RegistryStaged)

Sessions = async_sessionmaker[AsyncSession]


# --- building files ------------------------------------------------------------------------------


def clinic(code: str = NANTONG[0], name: str = NANTONG[1], region: str = NANTONG[2]) -> dict[str, Any]:
    return {"record": "clinic", "clinic_code": code, "name": name, "region_code": region}


def vaccinee(
    person: DemoPerson,
    *,
    stage: str = "child_clinic",
    guardians: Iterable[tuple[str, str]] = (("mother", PARENT.id_number),),
    doses: Iterable[tuple[str, int, date]] = (),
    **overrides: Any,
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "registry_ref": person.ref,
        "id_number": person.id_number,
        "name": person.name,
        "sex": person.sex,
        "birth_date": person.birth.isoformat(),
        "region_code": person.id_number[:6],
        "clinic_code": NANTONG[0],
        "stage": stage,
        "guardians": [{"relationship": relation, "id_number": number} for relation, number in guardians],
        "doses": [
            {"vaccine_code": code, "dose_number": number, "given_on": given.isoformat(), "clinic_code": NANTONG[0]}
            for code, number, given in doses
        ],
    }
    record.update(overrides)
    return record


def newborn(**overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "registry_ref": NEWBORN.ref,
        "birth_cert_no": NEWBORN.birth_cert_no,
        "name": NEWBORN.name,
        "sex": NEWBORN.sex,
        "birth_date": NEWBORN.birth.isoformat(),
        "region_code": "320602",
        "clinic_code": NANTONG[0],
        "stage": "obstetrics",
        "guardians": [{"relationship": "father", "id_number": WX_PARENT.id_number}],
        "doses": [{"vaccine_code": "HepB", "dose_number": 1, "given_on": NEWBORN.birth.isoformat()}],
    }
    record.update(overrides)
    return record


def to_csv(records: list[dict[str, Any]]) -> str:
    """The same records as the CSV format: one row per clinic and vaccinee, then one per dose."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    doses: list[dict[str, Any]] = []
    for record in records:
        row = {key: value for key, value in record.items() if key not in ("guardians", "doses")}
        row.setdefault("record", "vaccinee")
        if row["record"] == "vaccinee":
            row["guardians"] = ";".join(f"{g['relationship']}:{g['id_number']}" for g in record.get("guardians", []))
            doses += [{"record": "dose", "registry_ref": record["registry_ref"], **d} for d in record.get("doses", [])]
        writer.writerow(row)
    writer.writerows(doses)
    return out.getvalue()


def write(tmp_path: Path, name: str, records: list[dict[str, Any]] | str) -> Path:
    path = tmp_path / name
    if isinstance(records, str):
        path.write_text(records, encoding="utf-8")
    elif name.endswith(".csv"):
        path.write_text(to_csv(records), encoding="utf-8")
    else:
        path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    return path


CHILD_DOSES = [("HepB", 1, date(2023, 5, 20)), ("BCG", 1, date(2023, 5, 21)), ("HepB", 2, date(2023, 6, 20))]


def family() -> list[dict[str, Any]]:
    return [
        clinic(),
        vaccinee(PARENT, stage="adult", guardians=(), doses=[("HPV9", 1, date(2024, 4, 8))]),
        vaccinee(CHILD, doses=CHILD_DOSES),
        newborn(),
    ]


# --- the database ------------------------------------------------------------------------------


@pytest.fixture
async def db(database_url: str, keys_dir: Path) -> AsyncIterator[tuple[Sessions, Vault]]:
    engine = create_engine(_settings(database_url, keys_dir))
    yield sessionmaker(engine), Vault(load_keyring(keys_dir))
    await engine.dispose()


async def counts(sessions: Sessions) -> dict[str, int]:
    async with sessions() as session:
        return {
            model.__tablename__: int(await session.scalar(select(func.count()).select_from(model)) or 0)
            for model in TABLES
        }


@dataclasses.dataclass
class Seen:
    """A file as users would see it (the tables readers read, opened)."""

    id: int
    name: str
    birth_date: str
    id_number: str | None
    birth_cert: str | None
    stage: str
    effective_from: date
    guardians: set[tuple[str, str]]
    doses: dict[tuple[str, int], tuple[date, str]]


async def seen(sessions: Sessions, vault: Vault, ref: str) -> Seen | None:
    async with sessions() as session:
        file = (await session.scalars(select(Vaccinee).where(Vaccinee.registry_ref == ref))).first()
        if file is None:
            return None
        guardians = (await session.scalars(select(Guardian).where(Guardian.vaccinee_id == file.id))).all()
        doses = (await session.scalars(select(Dose).where(Dose.vaccinee_id == file.id))).all()
        return Seen(
            id=file.id,
            name=vault.open("name", file.name_enc),
            birth_date=vault.open("birth_date", file.birth_date_enc),
            id_number=vault.open("id_number", file.id_number_enc) if file.id_number_enc else None,
            birth_cert=vault.open("birth_cert", file.birth_cert_enc) if file.birth_cert_enc else None,
            stage=file.profile(vault).stage,
            effective_from=file.effective_from,
            guardians={(g.relationship, vault.open("id_number", g.id_number_enc)) for g in guardians},
            doses={
                (d.vaccine_code, d.dose_number): (d.given_on, d.source)
                for d in map(lambda row: row.detail(vault), doses)
            },
        )


async def must_see(sessions: Sessions, vault: Vault, ref: str) -> Seen:
    file = await seen(sessions, vault, ref)
    assert file is not None, ref
    return file


async def stage(
    db: tuple[Sessions, Vault],
    path: Path,
    *,
    effective_from: date | None = None,
    today: date = TODAY,
    dry_run: bool = False,
) -> int | None:
    summary = await import_registry_file(
        db[0], db[1], path, effective_from=effective_from, today=today, dry_run=dry_run
    )
    return summary.batch_id


# --- import, then apply on the effective date --------------------------------------------------


@pytest.mark.parametrize("suffix", ["csv", "json"])
async def test_a_good_file_is_staged_then_applied_on_its_effective_date(
    db: tuple[Sessions, Vault], tmp_path: Path, suffix: str
) -> None:
    sessions, vault = db
    path = write(tmp_path, f"registry-2026-11-23.{suffix}", family())
    assert await stage(db, path, dry_run=True) is None
    assert set((await counts(sessions)).values()) == {0}  # a dry run writes nothing

    batch_id = await stage(db, path)
    assert (await counts(sessions))["registry_staged"] == 4  # one clinic, three files
    async with sessions() as session:
        batch = await session.get(RegistryBatch, batch_id)
        assert batch is not None
        assert (batch.source, batch.records, batch.effective_from, batch.applied_at) == (path.name, 4, TOMORROW, None)

    # Today (China time) nothing is visible: staged data is never read by users.
    assert await apply_due_batches(sessions, vault, TODAY) == []
    assert {name: n for name, n in (await counts(sessions)).items() if n} == {
        "registry_batches": 1,
        "registry_staged": 4,
    }

    [applied] = await apply_due_batches(sessions, vault, TOMORROW)
    assert (applied.batch_id, applied.files_created, applied.doses_added, applied.clinics_created) == (
        batch_id,
        3,
        5,
        1,
    )
    child = await must_see(sessions, vault, CHILD.ref)
    assert (child.name, child.birth_date, child.id_number, child.stage) == (
        CHILD.name,
        "2023-05-20",
        CHILD.id_number,
        "child_clinic",
    )
    assert child.guardians == {("mother", PARENT.id_number)}
    assert child.doses == {(code, number): (given, "registry") for code, number, given in CHILD_DOSES}
    assert child.effective_from == TOMORROW
    baby = await must_see(sessions, vault, NEWBORN.ref)
    assert (baby.id_number, baby.birth_cert, baby.stage) == (None, NEWBORN.birth_cert_no, "obstetrics")
    async with sessions() as session:
        file = (await session.scalars(select(Vaccinee).where(Vaccinee.registry_ref == NEWBORN.ref))).one()
        assert file.birth_cert_hash == vault.digest("birth_cert", NEWBORN.birth_cert_no)
        assert file.id_number_hash is None and vault.open("birth_date", file.birth_date_enc).startswith("2026-")
        parent = (await session.scalars(select(Vaccinee).where(Vaccinee.registry_ref == PARENT.ref))).one()
        assert parent.id_number_hash == vault.digest("id_number", PARENT.id_number)
        batch = await session.get(RegistryBatch, batch_id)
        assert batch is not None and batch.applied_at is not None
        actions = (await session.scalars(select(AuditEntry.action).order_by(AuditEntry.id))).all()
        assert actions == ["registry_staged"] + ["registry_file_created"] * 3 + ["registry_applied"]


async def test_demo_file_imports_as_json_effective_today(db: tuple[Sessions, Vault], tmp_path: Path) -> None:
    sessions, vault = db
    path = tmp_path / "demo.json"
    path.write_bytes(demo_registry_json())
    await stage(db, path, effective_from=TODAY)
    [applied] = await apply_due_batches(sessions, vault, TODAY)
    assert (applied.files_created, applied.clinics_created) == (10, len(CLINICS))
    assert (await counts(sessions))["vaccinees"] == 10


def test_effective_dates() -> None:
    assert effective_date(None, TODAY) == TOMORROW  # the nightly rule
    assert effective_date("today", TODAY) == TODAY
    assert effective_date("2026-12-01", TODAY) == date(2026, 12, 1)
    for wrong in ("2026-11-22", "tomorrow", "2026-02-30"):
        with pytest.raises(ValueError):
            effective_date(wrong, TODAY)


# --- refusals ------------------------------------------------------------------------------------

OTHER_MOTHER = demo_id_number("320602", date(1990, 1, 1), 2)
BAD_ID = CHILD.id_number[:17] + ("0" if CHILD.id_number[17] != "0" else "1")


def bad_records() -> list[dict[str, Any]]:
    """A file with one good record and a bad one on almost every line (CSV lines in comments)."""
    return [
        clinic(),  # line 2: fine
        vaccinee(PARENT, stage="adult", guardians=()),  # line 3: fine
        vaccinee(CHILD, id_number=BAD_ID),  # line 4: check character
        vaccinee(INFANT, birth_date="2026-06-02"),  # line 5: birth date differs from the ID's
        vaccinee(OLDER, sex="F"),  # line 6: sex differs from the ID's parity
        vaccinee(WX_CHILD, guardians=[("mother", OTHER_MOTHER), ("father", BAD_ID)]),  # line 7: guardian 2
        vaccinee(WX_TODDLER, region_code="3202", stage="kindergarten"),  # line 8: two problems
        vaccinee(GRANDMA, registry_ref=PARENT.ref, stage="adult", guardians=()),  # line 9: duplicate ref
        newborn(guardians=[], birth_date="2026-02-30"),  # line 10: no guardian, no real date
        vaccinee(NJ_CHILD, clinic_code="NJ-NOWHERE"),  # line 11: unknown clinic
        {  # line 12: no key at all
            "registry_ref": "DEMO-X1",
            "name": "无名",
            "sex": "M",
            "birth_date": "2020-01-01",
            "region_code": "320602",
            "clinic_code": NANTONG[0],
            "stage": "child_clinic",
        },
        vaccinee(  # line 13; the dose rows come last: the newborn's on line 14, these on lines 15-20
            DemoPerson("DEMO-C9", "林小溪", demo_id_number("320602", date(2024, 1, 1), 182), "F", date(2024, 1, 1)),
            doses=[
                ("HepB", 1, date(2024, 1, 1)),
                ("HepB", 1, date(2024, 2, 1)),  # duplicate (vaccine, dose number)
                ("Rabies", 1, date(2024, 3, 1)),  # not a known code
                ("HepB", 0, date(2024, 3, 1)),  # dose number 0
                ("BCG", 1, date(2023, 12, 1)),  # before birth
                ("IPV", 1, date(2027, 1, 1)),  # in the future
            ],
        ),
    ]


EXPECTED_CSV_ERRORS = [
    "line 4: ID number check character is wrong",
    "line 5: birth_date does not match the birth date in the ID number",
    "line 6: sex does not match the ID number (odd sequence = M, even = F)",
    "line 7: guardian 2: ID number check character is wrong",
    "line 8: region_code must be 6 digits",
    "line 8: stage must be obstetrics, child_clinic or adult",
    "line 9: registry_ref is already used (line 3)",
    "line 10: a file without an ID number needs a guardian (birth certificate number plus a guardian's ID number)",
    "line 10: birth_date must be a real date written YYYY-MM-DD",
    "line 11: clinic_code is neither a known clinic nor defined in this file",
    "line 12: id_number or birth_cert_no is required (a newborn without an ID number needs birth_cert_no)",
    "line 16: HepB dose 1 is listed twice on this file (line 15)",
    "line 17: vaccine_code is not a known vaccine code (see docs/registry-format.md)",
    "line 18: dose_number must be a whole number from 1 to 20",
    "line 19: given_on is before the birth date",
    "line 20: given_on is in the future",
]


def secrets_of(records: list[dict[str, Any]]) -> list[str]:
    values: list[str] = []
    for record in records:
        if record.get("record") == "clinic":
            continue  # clinics are not personal data
        values += [str(record.get(key)) for key in ("id_number", "birth_cert_no", "name") if record.get(key)]
        values += [g["id_number"] for g in record.get("guardians", [])]
    return [value for value in values if len(value) > 1]


async def test_every_bad_row_is_reported_and_nothing_is_written(db: tuple[Sessions, Vault], tmp_path: Path) -> None:
    sessions, _ = db
    records = bad_records()
    with pytest.raises(RegistryRejected) as caught:
        await stage(db, write(tmp_path, "bad.csv", records))
    assert [str(error) for error in caught.value.errors] == EXPECTED_CSV_ERRORS
    assert set((await counts(sessions)).values()) == {0}
    text = "\n".join(str(error) for error in caught.value.errors) + str(caught.value)
    for secret in secrets_of(records):
        assert secret not in text, "an error message carries a value"

    with pytest.raises(RegistryRejected) as caught:
        await stage(db, write(tmp_path, "bad.json", records), dry_run=True)
    json_errors = [str(error) for error in caught.value.errors]
    assert "[2]: ID number check character is wrong" in json_errors
    assert "[5].guardians[1]: ID number check character is wrong" in json_errors
    assert "[11].doses[1]: HepB dose 1 is listed twice on this file ([11].doses[0])" in json_errors
    assert "[9]: clinic_code is neither a known clinic nor defined in this file" in json_errors
    assert len(json_errors) == len(EXPECTED_CSV_ERRORS)
    assert set((await counts(sessions)).values()) == {0}


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("x.txt", "[]", ["file: name must end in .csv or .json"]),
        ("x.json", "{}", ["file: must be a JSON list of records"]),
        ("x.json", "[", ["file: is not valid JSON (line 1, column 2)"]),
        ("x.json", "[]", ["file: has no records"]),
        ("x.csv", "", ["file: has no records"]),
        ("x.csv", "registry_ref,nom,320602\n", ["line 1: column 3: unknown name", "line 1: unknown column nom"]),
        (
            "x.csv",
            f"{CHILD.ref},{CHILD.id_number},{CHILD.name}\n",
            ["line 1: is not a header: " + "the first line must name the columns (see docs/registry-format.md)"],
        ),
        ("x.csv", "record,name\nclinic,a,b\n", ["line 2: has 3 cells, the header has 2"]),
        (
            "x.csv",
            "record,registry_ref,given_on\ndose,R1,2020-01-01\n",
            ["line 2: registry_ref has no vaccinee row in this file"],
        ),
        ("x.csv", "record,registry_ref\nvisit,R1\n", ["line 2: record must be vaccinee, dose or clinic"]),
        (
            "x.csv",
            "record,vaccine_code,clinic_code,name,region_code\nclinic,HepB,C1,诊所,320602\n",
            ["line 2: vaccine_code is not used on a clinic row"],
        ),
        (
            "x.json",
            '[{"record": "clinic", "clinic_code": 7, "name": "n", "region_code": "320602", "colour": "red"}]',
            ["[0]: clinic_code must be a string", "[0]: unknown field colour"],
        ),
    ],
)
def test_file_level_refusals(name: str, content: str, expected: list[str]) -> None:
    parsed = parse_registry(name, content.encode(), today=TODAY)
    assert [str(error) for error in parsed.errors] == expected


def test_more_record_rules() -> None:
    def errors(*records: dict[str, Any]) -> list[str]:
        parsed = parse_registry("x.json", json.dumps([clinic(), *records]).encode(), today=TODAY)
        return [str(error) for error in parsed.errors]

    younger = demo_id_number("320602", date(2024, 1, 1), 2)
    assert errors(vaccinee(CHILD, guardians=[("mother", younger)])) == [
        "[1].guardians[0]: ID number says the guardian was born after the child"
    ]
    assert errors(vaccinee(CHILD, guardians=[("aunt", PARENT.id_number), ("guardian", CHILD.id_number)])) == [
        "[1].guardians[0]: relationship must be one of mother, father, grandmother, grandfather, guardian",
        "[1].guardians[1]: ID number is the file's own ID number",
    ]
    assert errors(vaccinee(CHILD, registry_ref=CHILD.id_number)) == [
        "[1]: registry_ref must be the registry's file number, not an ID number"
    ]
    assert errors(vaccinee(CHILD), vaccinee(CHILD, registry_ref="DEMO-C1B")) == [
        "[2]: ID number is already on another file ([1])"
    ]
    assert errors(vaccinee(CHILD, guardians=[("father", PARENT.id_number)])) == [
        "[1].guardians[0]: relationship does not match the sex in the guardian's ID number"
    ]
    assert errors(newborn(birth_cert_no="12345")) == ["[1]: birth_cert_no must be one letter and 9 digits"]
    # Lower-case x, a lower-case vaccine code and a lower-case birth certificate letter are normalised.
    lower = vaccinee(CHILD, id_number=CHILD.id_number.lower(), doses=[("hepb", 1, CHILD.birth)])
    parsed = parse_registry(
        "x.json", json.dumps([clinic(), lower, newborn(birth_cert_no="q320261120")]).encode(), today=TODAY
    )
    assert parsed.errors == []
    assert parsed.files[0].id_number == CHILD.id_number and parsed.files[0].doses[0].vaccine_code == "HepB"
    assert parsed.files[1].birth_cert_no == NEWBORN.birth_cert_no


async def test_a_file_name_carrying_personal_data_is_refused(db: tuple[Sessions, Vault], tmp_path: Path) -> None:
    sessions, _ = db
    with pytest.raises(RegistryRejected) as caught:
        await stage(db, write(tmp_path, f"{CHILD.name}-更正.json", family()))
    assert [str(error) for error in caught.value.errors] == [
        "file name: contains personal data from the file; rename the file"
    ]
    assert set((await counts(sessions)).values()) == {0}


async def test_an_id_number_already_on_another_file_is_refused(db: tuple[Sessions, Vault], tmp_path: Path) -> None:
    sessions, vault = db
    await stage(db, write(tmp_path, "day1.json", family()), effective_from=TODAY)
    await apply_due_batches(sessions, vault, TODAY)
    duplicates = [vaccinee(CHILD, registry_ref="DEMO-DUP"), newborn(registry_ref="DEMO-DUP2")]
    with pytest.raises(RegistryRejected) as caught:
        await stage(db, write(tmp_path, "day2.json", duplicates))
    assert [str(error) for error in caught.value.errors] == [
        "[0]: ID number is already on another registry file (ask for a merge)",
        "[1]: birth certificate number is already on another registry file (ask for a merge)",
    ]


# --- corrections ---------------------------------------------------------------------------------


async def test_a_correction_imported_today_is_seen_tomorrow(db: tuple[Sessions, Vault], tmp_path: Path) -> None:
    sessions, vault = db
    await stage(db, write(tmp_path, "first.json", family()), effective_from=TODAY)
    await apply_due_batches(sessions, vault, TODAY)
    before = await must_see(sessions, vault, CHILD.ref)

    corrected_doses = [*CHILD_DOSES[:2], ("HepB", 2, date(2023, 6, 21))]
    correction = [
        vaccinee(CHILD, name="林晓满", doses=corrected_doses),
        newborn(birth_date="2026-11-19", doses=[{"vaccine_code": "HepB", "dose_number": 1, "given_on": "2026-11-19"}]),
    ]
    await stage(db, write(tmp_path, "correction.csv", correction), today=TODAY)  # effective tomorrow

    assert await apply_due_batches(sessions, vault, TODAY) == []
    today_child = await must_see(sessions, vault, CHILD.ref)
    assert today_child == before  # users see yesterday's file all day
    assert (await must_see(sessions, vault, NEWBORN.ref)).birth_date == "2026-11-20"

    [applied] = await apply_due_batches(sessions, vault, TOMORROW)
    assert (applied.files_updated, applied.files_unchanged, applied.doses_changed) == (2, 0, 2)
    child = await must_see(sessions, vault, CHILD.ref)
    assert (child.id, child.name, child.effective_from) == (before.id, "林晓满", TOMORROW)
    assert child.doses[("HepB", 2)] == (date(2023, 6, 21), "registry")
    baby = await must_see(sessions, vault, NEWBORN.ref)
    assert baby.birth_date == "2026-11-19" and baby.doses == {("HepB", 1): (date(2026, 11, 19), "registry")}
    parent = await must_see(sessions, vault, PARENT.ref)
    assert parent.effective_from == TODAY  # files the correction does not mention are untouched


async def test_guardians_are_replaced(db: tuple[Sessions, Vault], tmp_path: Path) -> None:
    sessions, vault = db
    await stage(db, write(tmp_path, "first.json", family()), effective_from=TODAY)
    await apply_due_batches(sessions, vault, TODAY)
    grandpa = demo_id_number("320602", date(1960, 2, 2), 15)
    await stage(
        db,
        write(
            tmp_path,
            "guardians.csv",
            [vaccinee(CHILD, doses=CHILD_DOSES, guardians=[("father", WX_PARENT.id_number), ("grandfather", grandpa)])],
        ),
    )
    await apply_due_batches(sessions, vault, TOMORROW)
    child = await must_see(sessions, vault, CHILD.ref)
    assert child.guardians == {("father", WX_PARENT.id_number), ("grandfather", grandpa)}
    async with sessions() as session:
        mothers = await session.scalar(
            select(func.count())
            .select_from(Guardian)
            .where(Guardian.id_number_hash == vault.digest("id_number", PARENT.id_number))
        )
        assert mothers == 0  # the mother is no longer listed anywhere (so nothing is pending for her)

    # The same guardian with a corrected relationship: replaced too (no clash on the unique key).
    day3 = TOMORROW + timedelta(days=1)
    fixed = [("guardian", WX_PARENT.id_number), ("grandfather", grandpa)]
    await stage(
        db, write(tmp_path, "relationship.json", [vaccinee(CHILD, doses=CHILD_DOSES, guardians=fixed)]), today=TOMORROW
    )
    await apply_due_batches(sessions, vault, day3)
    assert (await must_see(sessions, vault, CHILD.ref)).guardians == {(relation, n) for relation, n in fixed}


async def test_a_newborn_keyed_by_birth_certificate_later_gets_an_id_number(
    db: tuple[Sessions, Vault], tmp_path: Path
) -> None:
    sessions, vault = db
    await stage(db, write(tmp_path, "birth.json", [clinic(), newborn()]), effective_from=TODAY)
    await apply_due_batches(sessions, vault, TODAY)
    baby = await must_see(sessions, vault, NEWBORN.ref)
    assert (baby.id_number, baby.birth_cert, baby.stage) == (None, NEWBORN.birth_cert_no, "obstetrics")

    id_number = demo_id_number("320602", NEWBORN.birth, 191)
    registered = newborn(id_number=id_number, stage="child_clinic")
    await stage(db, write(tmp_path, "household.csv", [registered]))
    await apply_due_batches(sessions, vault, TOMORROW)
    grown = await must_see(sessions, vault, NEWBORN.ref)
    assert (grown.id, grown.id_number, grown.birth_cert, grown.stage) == (
        baby.id,
        id_number,
        NEWBORN.birth_cert_no,
        "child_clinic",
    )
    async with sessions() as session:
        file = await session.get(Vaccinee, baby.id)
        assert file is not None and file.id_number_hash == vault.digest("id_number", id_number)


async def test_desk_doses_recorded_after_the_import_are_not_overwritten(
    db: tuple[Sessions, Vault], tmp_path: Path
) -> None:
    sessions, vault = db
    await stage(db, write(tmp_path, "first.json", family()), effective_from=TODAY)
    await apply_due_batches(sessions, vault, TODAY)
    child = await must_see(sessions, vault, CHILD.ref)
    async with sessions() as session, session.begin():
        # Recorded at a desk before tonight's import: the registry has it by now (and may correct it).
        desk = Dose.sealed(vault, child.id, DoseDetail("IPV", 1, date(2023, 7, 20), source=DoseSource.CLINIC), TODAY)
        desk.created_at = utcnow() - timedelta(hours=2)
        session.add(desk)
    registry_view = [
        *CHILD_DOSES[:2],  # HepB 2 withdrawn by the registry (it was entered on the wrong child)
        ("IPV", 1, date(2023, 7, 21)),  # the registry's corrected date for the desk dose
        ("IPV", 2, date(2023, 8, 22)),  # the registry's (late) view of a dose a desk records after the import
    ]
    await stage(db, write(tmp_path, "nightly.json", [vaccinee(CHILD, doses=registry_view)]))
    async with sessions() as session, session.begin():
        session.add_all(
            [
                Dose.sealed(vault, child.id, DoseDetail("IPV", 2, date(2023, 8, 21), source=DoseSource.CLINIC), TODAY),
                # Not in the registry yet: a desk dose is never removed by an import.
                Dose.sealed(vault, child.id, DoseDetail("DTaP", 1, date(2023, 8, 21), source=DoseSource.CLINIC), TODAY),
            ]
        )
    [applied] = await apply_due_batches(sessions, vault, TOMORROW)
    assert (applied.doses_kept, applied.doses_changed, applied.doses_removed, applied.doses_added) == (1, 1, 1, 0)
    doses = (await must_see(sessions, vault, CHILD.ref)).doses
    assert doses == {
        ("HepB", 1): (date(2023, 5, 20), "registry"),
        ("BCG", 1): (date(2023, 5, 21), "registry"),
        ("IPV", 1): (date(2023, 7, 21), "registry"),
        ("IPV", 2): (date(2023, 8, 21), "clinic"),
        ("DTaP", 1): (date(2023, 8, 21), "clinic"),
    }


# --- applying safely -----------------------------------------------------------------------------


async def snapshot(sessions: Sessions) -> list[Any]:
    async with sessions() as session:
        rows: list[Any] = []
        for model in (Clinic, Vaccinee, Guardian, Dose):
            for row in (await session.scalars(select(model).order_by(model.id))).all():
                rows.append({c.name: getattr(row, c.key) for c in model.__mapper__.columns if c.name != "updated_at"})
        return rows


async def test_applying_is_idempotent(db: tuple[Sessions, Vault], tmp_path: Path) -> None:
    sessions, vault = db
    path = write(tmp_path, "registry.csv", family())
    await stage(db, path, effective_from=TODAY)
    assert len(await apply_due_batches(sessions, vault, TODAY)) == 1
    before = await snapshot(sessions)
    assert await apply_due_batches(sessions, vault, TODAY) == []
    assert await apply_due_batches(sessions, vault, TOMORROW) == []
    assert await snapshot(sessions) == before

    # The same file again, as tomorrow's nightly import: applied, and nothing changes (not even ciphertexts).
    await stage(db, path)
    [again] = await apply_due_batches(sessions, vault, TOMORROW)
    assert (again.files_unchanged, again.files_updated, again.doses_added, again.doses_changed) == (3, 0, 0, 0)
    assert await snapshot(sessions) == before


async def test_two_processes_applying_at_once_apply_each_batch_once(
    database_url: str, keys_dir: Path, tmp_path: Path
) -> None:
    engines = [create_engine(_settings(database_url, keys_dir)) for _ in range(2)]
    vault = Vault(load_keyring(keys_dir))
    first, second = (sessionmaker(engine) for engine in engines)
    try:
        await stage((first, vault), write(tmp_path, "a.json", family()), effective_from=TODAY)
        await stage(
            (first, vault),
            write(tmp_path, "b.csv", [vaccinee(CHILD, name="林晓满", doses=CHILD_DOSES)]),
            effective_from=TODAY,
        )
        results = await asyncio.gather(apply_due_batches(first, vault, TODAY), apply_due_batches(second, vault, TODAY))
        applied = sorted(report.batch_id for result in results for report in result)
        assert applied == [1, 2]
        assert (await counts(first))["vaccinees"] == 3
        assert (await must_see(first, vault, CHILD.ref)).name == "林晓满"  # in order: the correction last
        async with first() as session:
            rows = (
                await session.scalars(select(AuditEntry.action).where(AuditEntry.action == "registry_applied"))
            ).all()
            assert len(rows) == 2
    finally:
        for engine in engines:
            await engine.dispose()


async def test_batches_apply_in_effective_date_order(db: tuple[Sessions, Vault], tmp_path: Path) -> None:
    sessions, vault = db
    later = await stage(
        db, write(tmp_path, "later.json", [clinic(), vaccinee(CHILD, name="后来")]), effective_from=TOMORROW
    )
    sooner = await stage(
        db, write(tmp_path, "sooner.json", [clinic(), vaccinee(CHILD, name="先前")]), effective_from=TODAY
    )
    assert [b.batch_id for b in await apply_due_batches(sessions, vault, TODAY)] == [sooner]
    assert (await must_see(sessions, vault, CHILD.ref)).name == "先前"
    assert [b.batch_id for b in await apply_due_batches(sessions, vault, TOMORROW)] == [later]
    assert (await must_see(sessions, vault, CHILD.ref)).name == "后来"


async def test_a_clinic_staged_in_an_earlier_batch_may_be_used(db: tuple[Sessions, Vault], tmp_path: Path) -> None:
    sessions, vault = db
    await stage(db, write(tmp_path, "clinics.json", [clinic()]), effective_from=TOMORROW)
    child = write(tmp_path, "child.json", [vaccinee(CHILD)])
    with pytest.raises(RegistryRejected) as caught:  # it would be applied before the clinic exists
        await stage(db, child, effective_from=TODAY)
    assert [str(error) for error in caught.value.errors] == [
        "[0]: clinic_code is neither a known clinic nor defined in this file"
    ]
    await stage(db, child, effective_from=TOMORROW)
    assert len(await apply_due_batches(sessions, vault, TOMORROW)) == 2
    assert (await must_see(sessions, vault, CHILD.ref)).name == CHILD.name


# --- personal data -------------------------------------------------------------------------------


async def test_no_personal_data_in_the_database_file_or_the_logs(
    database_url: str, keys_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    engine = create_engine(_settings(database_url, keys_dir))
    vault = Vault(load_keyring(keys_dir))
    sessions = sessionmaker(engine)
    records = demo_registry_records()
    await stage((sessions, vault), write(tmp_path, "registry.json", records))
    await apply_due_batches(sessions, vault, TOMORROW)
    with pytest.raises(RegistryRejected):
        await stage((sessions, vault), write(tmp_path, "bad.csv", bad_records()))
    async with sessions() as session:
        sources = (await session.scalars(select(RegistryBatch.source))).all()
    await engine.dispose()
    secrets = secrets_of(records) + secrets_of(bad_records())
    assert {"林晓雨", PARENT.id_number, NEWBORN.birth_cert_no} <= set(secrets)
    logged = "\n".join(f"{record.getMessage()} {vars(record)}" for record in caplog.records)
    assert "registry batch staged" in logged and "registry file refused" in logged
    for secret in secrets:
        assert secret not in logged, "a log record carries personal data"
        assert all(secret not in source for source in sources)
    if database_url.startswith("sqlite"):
        database = Path(database_url.split("///", 1)[1])
        raw = b"".join(
            path.read_bytes() for path in (database, database.with_name(database.name + "-wal")) if path.exists()
        )
        assert len(raw) > 0
        for secret in secrets:
            assert secret.encode() not in raw, "the database file carries personal data in the clear"


# --- the demo world and the command ------------------------------------------------------------


async def test_the_demo_world_is_loaded_through_the_import(db: tuple[Sessions, Vault]) -> None:
    sessions, vault = db
    assert await seed_demo(sessions, vault, today=TODAY) is True
    assert await seed_demo(sessions, vault, today=TODAY) is False
    async with sessions() as session:
        [batch] = (await session.scalars(select(RegistryBatch))).all()
        assert (batch.source, batch.effective_from, batch.applied_at is not None) == ("demo-registry.json", TODAY, True)
        regions = {c.code: c.region_code for c in (await session.scalars(select(Clinic))).all()}
        assert regions == {code: region for code, _, region in CLINICS}
    assert (await counts(sessions))["vaccinees"] == 10
    parent = await must_see(sessions, vault, PARENT.ref)
    assert parent.stage == "adult" and any(
        code == "HPV9" and given >= date(2020, 12, 1) for (code, _), (given, _) in parent.doses.items()
    )
    baby = await must_see(sessions, vault, NEWBORN.ref)
    assert (baby.id_number, baby.birth_cert, baby.stage) == (None, NEWBORN.birth_cert_no, "obstetrics")
    assert baby.guardians == {("father", WX_PARENT.id_number)}
    for person in (CHILD, INFANT, OLDER):
        assert (await must_see(sessions, vault, person.ref)).guardians == {("mother", PARENT.id_number)}
    assert (await must_see(sessions, vault, GRANDMA.ref)).guardians == set()
    # The story holds on 2026-11-23: complete, due and overdue children, per the schedule.
    toddler = await must_see(sessions, vault, WX_TODDLER.ref)
    assert ("MMR", 1) in toddler.doses and ("MMR", 2) not in toddler.doses  # due since 18 months (2026-11-10)
    child = await must_see(sessions, vault, CHILD.ref)
    assert ("DTaP", 3) in child.doses and ("DTaP", 4) not in child.doses  # overdue: past 24 months
    complete = await must_see(sessions, vault, WX_CHILD.ref)
    assert {("DTaP", 5), ("MPSV-AC", 2), ("bOPV", 2), ("JE-L", 2)} <= set(complete.doses)
    assert all(given <= TODAY for doses in (toddler, child, complete) for given, _ in doses.doses.values())
    async with sessions() as session:
        nanjing = (await session.scalars(select(Vaccinee).where(Vaccinee.registry_ref == NJ_CHILD.ref))).one()
        clinic_id = nanjing.profile(vault).clinic_id
        assert clinic_id is not None
        where = await session.get(Clinic, clinic_id)
        assert where is not None and where.region_code.startswith("3201")


def test_the_docs_examples_are_valid() -> None:
    doc = (Path(__file__).parent.parent / "docs" / "registry-format.md").read_text(encoding="utf-8")
    blocks = dict(re.findall(r"```(csv|json)\n(.*?)```", doc, flags=re.S))
    for kind in ("csv", "json"):
        parsed = parse_registry(f"example.{kind}", blocks[kind].encode(), today=TODAY)
        assert parsed.errors == [], kind
        assert parsed.files


def test_the_registry_command(
    keys_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import bot.cli

    monkeypatch.chdir(tmp_path)  # no .env from the working directory
    monkeypatch.setenv("VAXBOT_ENV", "test")
    monkeypatch.setenv("VAXBOT_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("VAXBOT_KEYS_DIR", str(keys_dir))
    monkeypatch.setattr(bot.cli, "configure_logging", lambda *args: None)  # leave pytest's log capture alone
    demo = tmp_path / "demo.json"
    demo.write_bytes(demo_registry_json())

    def run(*argv: str) -> tuple[int, str, str]:
        code = bot.cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    assert run("db", "upgrade")[0] == 0
    code, out, _ = run("registry", "import", str(demo), "--dry-run")
    assert code == 0 and "demo.json: valid, 10 file(s)" in out and "nothing written" in out
    code, out, _ = run("registry", "import", str(demo))
    assert code == 0 and out.startswith("batch 1 staged from demo.json") and "effective " in out
    assert run("registry", "apply")[1] == "no registry batch is due\n"  # tomorrow's
    code, out, _ = run("registry", "import", str(demo), "--effective", "today")
    assert code == 0 and out.startswith("batch 2 staged")
    code, out, _ = run("registry", "apply")
    assert code == 0 and out.startswith("applied batch 2 (demo.json, effective ") and "files 10 created" in out
    bad = write(tmp_path, "bad.csv", bad_records())
    code, out, err = run("registry", "import", str(bad))
    assert code == 1 and out == ""
    lines = err.splitlines()
    assert lines[0] == f"bad.csv: refused, nothing written ({len(EXPECTED_CSV_ERRORS)} error(s)):"
    assert lines[1:] == [f"  {n}. {error}" for n, error in enumerate(EXPECTED_CSV_ERRORS, 1)]
    code, _, err = run("registry", "import", str(demo), "--effective", "2020-01-01")
    assert code == 2 and "in the past" in err
    code, _, err = run("registry", "import", str(tmp_path / "missing.csv"))
    assert code == 2 and "no such file" in err


async def test_the_service_schedules_the_apply_job(app: Any) -> None:
    from bot.web.appkeys import SCHEDULER

    assert "registry" in app[SCHEDULER].jobs()
