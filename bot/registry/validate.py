"""The provincial registry import: a whole file read and validated, with no database needed.

The import is three steps: :func:`parse_registry` here (every row checked, every problem listed),
``bot.registry.staging`` (checks against the database, then the batch staged sealed) and
``bot.registry.apply`` (applied on its effective date, China time). Importing writes only
``registry_batches`` and ``registry_staged``; the tables users read (vaccinees, guardians, doses,
clinics) change only when a batch is applied. So a correction imported today is what users see tomorrow.
The file format is described in ``docs/registry-format.md``.

Error messages name a line (CSV) or an index (JSON) and a field, never a value: a registry file is
personal data from its first byte to its last.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import TypeVar

from bot.core.validators import IdNumber, InvalidIdNumber, parse_id_number
from bot.immunization.vaccines import find_vaccine
from bot.registry.formats import Problems, RawDose, RawFile, read_csv, read_json
from bot.registry.records import ClinicRecord, DoseRecord, FileRecord, GuardianRecord, ParsedRegistry
from models import Relationship, Stage

E = TypeVar("E", bound=StrEnum)

RELATIONSHIP_SEX: dict[Relationship, str] = {
    Relationship.MOTHER: "F",
    Relationship.FATHER: "M",
    Relationship.GRANDMOTHER: "F",
    Relationship.GRANDFATHER: "M",
}
# ⚠ The birth certificate (出生医学证明) number since 2014: one letter and nine digits. Not checked
# against the official specification; change it here if the registry sends another shape.
BIRTH_CERT_SHAPE = re.compile(r"^[A-Z]\d{9}$")
REGISTRY_REF_SHAPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
CLINIC_CODE_SHAPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")
REGION_SHAPE = re.compile(r"^\d{6}$")
EARLIEST_BIRTH = date(1900, 1, 1)
MAX_DOSE_NUMBER = 20

_ID_REASONS = {
    "id_length": "must be 18 characters",
    "id_chars": "must be 17 digits and a digit or X",
    "id_birth_date": "carries a birth date that is not a real past date",
    "id_check_char": "check character is wrong",
}


def parse_registry(name: str, content: bytes, *, today: date) -> ParsedRegistry:
    """Read and validate a whole registry file (``.csv`` or ``.json`` by its name); no database needed."""
    problems = Problems()
    parsed = ParsedRegistry(name=name)
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        problems.add(0, "file", "is not UTF-8 text (save it as UTF-8)")
        parsed.errors = problems.errors
        return parsed
    suffix = Path(name).suffix.lower()
    clinics: list[tuple[int, str, dict[str, str | None]]] = []
    files: list[RawFile] = []
    if suffix == ".csv":
        read_csv(text, problems, clinics, files)
    elif suffix == ".json":
        read_json(text, problems, clinics, files)
    else:
        problems.add(0, "file", "name must end in .csv or .json")
    if not problems.errors and not clinics and not files:
        problems.add(0, "file", "has no records")
    _validate(parsed, clinics, files, problems, today)
    parsed.errors = sorted(problems.errors)
    return parsed


def _plain_text(value: str, limit: int) -> bool:
    return len(value) <= limit and not any(ord(char) < 32 or ord(char) == 127 for char in value)


def _real_date(value: str | None) -> date | None:
    if value is None or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def _id_number(raw: str, today: date) -> IdNumber | str:
    """The parsed ID number, or the reason it is wrong (words, no value)."""
    try:
        return parse_id_number(raw, today)
    except InvalidIdNumber as exc:
        return _ID_REASONS.get(exc.reason, "is not a valid ID number")


def _validate(
    parsed: ParsedRegistry,
    clinics: list[tuple[int, str, dict[str, str | None]]],
    files: list[RawFile],
    problems: Problems,
    today: date,
) -> None:
    seen_clinics: dict[str, str] = {}
    for position, where, fields in clinics:
        parsed.clinic_codes.add(fields.get("clinic_code") or "")
        clinic = _validate_clinic(position, where, fields, problems)
        if clinic is None:
            continue
        if clinic.code in seen_clinics:
            problems.add(position, where, f"clinic_code is already defined ({seen_clinics[clinic.code]})")
            continue
        seen_clinics[clinic.code] = where
        parsed.clinics.append(clinic)
    seen_refs: dict[str, str] = {}
    seen_ids: dict[str, str] = {}
    seen_certs: dict[str, str] = {}
    for raw in files:
        record = _validate_file(raw, problems, today, parsed)
        if record is None:
            continue
        if record.registry_ref in seen_refs:
            problems.add(raw.position, raw.where, f"registry_ref is already used ({seen_refs[record.registry_ref]})")
            continue
        duplicate = False
        for value, seen, label in (
            (record.id_number, seen_ids, "ID number"),
            (record.birth_cert_no, seen_certs, "birth certificate number"),
        ):
            if value is not None and value in seen:
                problems.add(raw.position, raw.where, f"{label} is already on another file ({seen[value]})")
                duplicate = True
        if duplicate:
            continue
        seen_refs[record.registry_ref] = raw.where
        if record.id_number is not None:
            seen_ids[record.id_number] = raw.where
        if record.birth_cert_no is not None:
            seen_certs[record.birth_cert_no] = raw.where
        parsed.files.append(record)
        parsed.file_where[record.registry_ref] = (raw.position, raw.where)


def _validate_clinic(
    position: int, where: str, fields: Mapping[str, str | None], problems: Problems
) -> ClinicRecord | None:
    before = len(problems.errors)
    code = fields.get("clinic_code")
    if code is None:
        problems.add(position, where, "clinic_code is required")
    elif not CLINIC_CODE_SHAPE.match(code):
        problems.add(position, where, "clinic_code must be up to 32 letters, digits, '.', '_' or '-'")
    name = fields.get("name")
    if name is None:
        problems.add(position, where, "name is required")
    elif not _plain_text(name, 128):
        problems.add(position, where, "name must be at most 128 characters, without control characters")
    region = fields.get("region_code")
    if region is None or not REGION_SHAPE.match(region):
        problems.add(position, where, "region_code must be 6 digits")
    for key, limit in (("address", 256), ("phone", 32)):
        value = fields.get(key)
        if value is not None and not _plain_text(value, limit):
            problems.add(position, where, f"{key} must be at most {limit} characters, without control characters")
    if len(problems.errors) > before:
        return None
    assert code is not None and name is not None and region is not None
    return ClinicRecord(position, code, name, region, fields.get("address") or "", fields.get("phone") or "")


class _Report:
    """Problems of one row (or one of its guardians or doses), filed under its position; counts what it adds."""

    def __init__(self, problems: Problems, position: int, where: str) -> None:
        self._problems = problems
        self._position = position
        self.where = where
        self.count = 0

    def __call__(self, message: str, at: str | None = None) -> None:
        self._problems.add(self._position, at or self.where, message)
        self.count += 1


def _validate_file(raw: RawFile, problems: Problems, today: date, parsed: ParsedRegistry) -> FileRecord | None:
    fields = raw.fields
    bad = _Report(problems, raw.position, raw.where)
    ref = _check_ref(fields.get("registry_ref"), bad, today)
    own_id, cert = _check_id_and_birth_cert(fields, bad, today)
    name = fields.get("name")
    if name is None:
        bad("name is required")
    elif not _plain_text(name, 64):
        bad("name must be at most 64 characters, without control characters")
    sex = _check_sex(fields.get("sex"), own_id, bad)
    birth = _check_birth_date(fields.get("birth_date"), own_id, bad, today)
    region = fields.get("region_code")
    if region is None or not REGION_SHAPE.match(region):
        bad("region_code must be 6 digits")
    clinic_code = fields.get("clinic_code")
    if clinic_code is None:
        bad("clinic_code is required")
    elif not CLINIC_CODE_SHAPE.match(clinic_code):
        bad("clinic_code must be up to 32 letters, digits, '.', '_' or '-'")
    else:
        parsed.clinic_refs.append((raw.position, raw.where, clinic_code))
    stage = _member(Stage, fields.get("stage"))
    if stage is None:
        bad("stage must be obstetrics, child_clinic or adult")
    guardians = _check_guardians(raw, own_id, birth, bad, today)
    if fields.get("id_number") is None and cert is not None and not raw.guardians:
        bad("a file without an ID number needs a guardian (birth certificate number plus a guardian's ID number)")
    doses = _check_doses(raw.doses, birth, problems, today, parsed)
    if bad.count or doses is None:
        return None
    assert ref is not None and name is not None and birth is not None and region is not None
    assert clinic_code is not None and sex is not None and stage is not None
    return FileRecord(
        line=raw.position,
        registry_ref=ref,
        id_number=own_id.value if own_id is not None else None,
        birth_cert_no=cert,
        name=name,
        sex=sex,
        birth_date=birth,
        region_code=region,
        clinic_code=clinic_code,
        stage=stage,
        guardians=tuple(guardians),
        doses=tuple(sorted(doses, key=lambda d: (d.given_on, d.vaccine_code, d.dose_number))),
    )


def _member(enum: type[E], raw: str | None) -> E | None:
    """The member a cell names (without regard to case), or None."""
    try:
        return enum((raw or "").lower())
    except ValueError:
        return None


def _check_ref(ref: str | None, bad: _Report, today: date) -> str | None:
    if ref is None:
        bad("registry_ref is required")
    elif not REGISTRY_REF_SHAPE.match(ref):
        bad("registry_ref must be up to 64 letters, digits, '.', '_' or '-'")
    elif len(ref) == 18 and isinstance(_id_number(ref, today), IdNumber):
        bad("registry_ref must be the registry's file number, not an ID number")
    else:
        return ref
    return None


def _check_id_and_birth_cert(
    fields: Mapping[str, str | None], bad: _Report, today: date
) -> tuple[IdNumber | None, str | None]:
    """The file's own ID number (when valid) and birth certificate number (upper-cased); one is required."""
    own_id: IdNumber | None = None
    raw_id = fields.get("id_number")
    if raw_id is not None:
        checked = _id_number(raw_id, today)
        if isinstance(checked, IdNumber):
            own_id = checked
        else:
            bad(f"ID number {checked}")
    cert = fields.get("birth_cert_no")
    if cert is not None:
        cert = cert.upper()
        if not BIRTH_CERT_SHAPE.match(cert):
            bad("birth_cert_no must be one letter and 9 digits")
    if raw_id is None and cert is None:
        bad("id_number or birth_cert_no is required (a newborn without an ID number needs birth_cert_no)")
    return own_id, cert


def _check_sex(raw: str | None, own_id: IdNumber | None, bad: _Report) -> str | None:
    sex = (raw or "").upper()
    if sex not in ("M", "F"):
        bad("sex must be M or F")
        return None
    if own_id is not None and own_id.male != (sex == "M"):
        bad("sex does not match the ID number (odd sequence = M, even = F)")
    return sex


def _check_birth_date(raw: str | None, own_id: IdNumber | None, bad: _Report, today: date) -> date | None:
    """The birth date as written (None when it is not a real date); every problem with it is reported."""
    birth = _real_date(raw)
    if birth is None:
        bad("birth_date must be a real date written YYYY-MM-DD")
    elif birth > today:
        bad("birth_date is in the future")
    elif birth < EARLIEST_BIRTH:
        bad("birth_date is before 1900")
    elif own_id is not None and own_id.birth_date != birth:
        bad("birth_date does not match the birth date in the ID number")
    # Returned even when wrong, as read: the guardians' and doses' dates are checked against it too.
    return birth


def _check_guardians(
    raw: RawFile, own_id: IdNumber | None, birth: date | None, bad: _Report, today: date
) -> list[GuardianRecord]:
    guardians: list[GuardianRecord] = []
    guardian_ids: set[str] = set()
    for label, relationship_raw, guardian_raw in raw.guardians:
        relationship = _member(Relationship, relationship_raw)
        if relationship is None:
            bad("relationship must be one of " + ", ".join(Relationship), label)
        if guardian_raw is None:
            bad("ID number is required", label)
            continue
        checked = _id_number(guardian_raw, today)
        if not isinstance(checked, IdNumber):
            bad(f"ID number {checked}", label)
            continue
        guardian_sex = "M" if checked.male else "F"
        if relationship is not None and RELATIONSHIP_SEX.get(relationship, guardian_sex) != guardian_sex:
            bad("relationship does not match the sex in the guardian's ID number", label)
        if own_id is not None and checked.value == own_id.value:
            bad("ID number is the file's own ID number", label)
        elif checked.value in guardian_ids:
            bad("ID number is listed twice", label)
        elif birth is not None and checked.birth_date >= birth:
            bad("ID number says the guardian was born after the child", label)
        guardian_ids.add(checked.value)
        if relationship is not None:
            guardians.append(GuardianRecord(relationship, checked.value))
    return guardians


def _check_doses(
    raws: list[RawDose], birth: date | None, problems: Problems, today: date, parsed: ParsedRegistry
) -> list[DoseRecord] | None:
    """The file's doses, or None when any of them is wrong (each problem is reported on its dose)."""
    doses: list[DoseRecord] = []
    seen: dict[tuple[str, int], str] = {}
    failed = False
    for raw in raws:
        bad = _Report(problems, raw.position, raw.where)
        key, dose = _check_dose(raw, birth, bad, today, parsed)
        if key is not None and key in seen:
            bad(f"{key[0]} dose {key[1]} is listed twice on this file ({seen[key]})")
        elif key is not None:
            seen[key] = raw.where
        if bad.count or dose is None:
            failed = True
        else:
            doses.append(dose)
    return None if failed else doses


def _check_dose(
    raw: RawDose, birth: date | None, bad: _Report, today: date, parsed: ParsedRegistry
) -> tuple[tuple[str, int] | None, DoseRecord | None]:
    """One dose: its (code, number) when both are readable, for the duplicate check, and the record when fine."""
    code_raw = raw.fields.get("vaccine_code")
    vaccine = find_vaccine(code_raw) if code_raw else None
    if code_raw is None:
        bad("vaccine_code is required")
    elif vaccine is None:
        bad("vaccine_code is not a known vaccine code (see docs/registry-format.md)")
    number_raw = raw.fields.get("dose_number")
    number = int(number_raw) if number_raw is not None and number_raw.isdigit() else 0
    if not 1 <= number <= MAX_DOSE_NUMBER:
        bad(f"dose_number must be a whole number from 1 to {MAX_DOSE_NUMBER}")
    given = _real_date(raw.fields.get("given_on"))
    if given is None:
        bad("given_on must be a real date written YYYY-MM-DD")
    elif given > today:
        bad("given_on is in the future")
    elif birth is not None and given < birth:
        bad("given_on is before the birth date")
    clinic = raw.fields.get("clinic_code")
    if clinic is not None:
        if CLINIC_CODE_SHAPE.match(clinic):
            parsed.clinic_refs.append((raw.position, raw.where, clinic))
        else:
            bad("clinic_code must be up to 32 letters, digits, '.', '_' or '-'")
    lot = raw.fields.get("lot_number") or ""
    if not _plain_text(lot, 64):
        bad("lot_number must be at most 64 characters, without control characters")
    key = (vaccine.code, number) if vaccine is not None and number >= 1 else None
    if key is None or given is None or bad.count:
        return key, None
    return key, DoseRecord(key[0], key[1], given, clinic, lot)
