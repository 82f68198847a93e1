"""The provincial registry import: a whole file validated, staged sealed, and applied on its effective date.

Importing writes only ``registry_batches`` and ``registry_staged`` (every record sealed); the tables users
read (vaccinees, guardians, doses, clinics) change only when :func:`apply_due_batches` applies a batch
whose effective date (China time) has come. So a correction imported today is what users see tomorrow.
The file format is described in ``docs/registry-format.md``.

Error messages name a line (CSV) or an index (JSON) and a field, never a value: a registry file is
personal data from its first byte to its last.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import io
import json
import logging
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.core.audit import record_access
from bot.core.chinatime import china_today
from bot.core.pii import Vault
from bot.core.validators import IdNumber, InvalidIdNumber, parse_id_number
from bot.immunization.vaccines import find_vaccine
from models import (
    Clinic,
    Dose,
    DoseSource,
    Guardian,
    RegistryBatch,
    RegistryStaged,
    Relationship,
    Stage,
    Vaccinee,
    Visit,
    utcnow,
)

log = logging.getLogger("vaxbot.registry")

STAGES = tuple(Stage)
RELATIONSHIPS = tuple(Relationship)
RELATIONSHIP_SEX: dict[str, str] = {
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
SEALED_FIELD = "registry_record"
CLINIC_REF_PREFIX = "clinic:"  # staged clinic rows: registry refs never contain a colon
_CHUNK = 500  # rows per IN (...) query

CSV_COLUMNS = (
    "record",
    "registry_ref",
    "id_number",
    "birth_cert_no",
    "name",
    "sex",
    "birth_date",
    "region_code",
    "clinic_code",
    "stage",
    "guardians",
    "vaccine_code",
    "dose_number",
    "given_on",
    "lot_number",
    "address",
    "phone",
)
_FILE_FIELDS = (
    "registry_ref",
    "id_number",
    "birth_cert_no",
    "name",
    "sex",
    "birth_date",
    "region_code",
    "clinic_code",
    "stage",
)
_DOSE_FIELDS = ("vaccine_code", "dose_number", "given_on", "clinic_code", "lot_number")
_CLINIC_FIELDS = ("clinic_code", "name", "region_code", "address", "phone")
# Which CSV columns each kind of row may fill.
_CSV_ROW_FIELDS = {
    "vaccinee": {"record", "guardians", *_FILE_FIELDS},
    "dose": {"record", "registry_ref", *_DOSE_FIELDS},
    "clinic": {"record", *_CLINIC_FIELDS},
}
_ID_REASONS = {
    "id_length": "must be 18 characters",
    "id_chars": "must be 17 digits and a digit or X",
    "id_birth_date": "carries a birth date that is not a real past date",
    "id_check_char": "check character is wrong",
}
_SAFE_NAME = re.compile(r"^[a-z_]{1,32}$")  # a column or key name we may echo back (it cannot be data)
_GUARDIAN_PAIR = re.compile(r"^([^:：]*)[:：](.*)$")  # relationship:id_number (a full-width colon too)


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


# --- validated records -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, order=True)
class RowError:
    """One problem in a registry file: where (CSV line or JSON index) and what — never a value."""

    position: int
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclasses.dataclass(frozen=True)
class GuardianRecord:
    """A guardian listed on a file."""

    relationship: str
    id_number: str


@dataclasses.dataclass(frozen=True)
class DoseRecord:
    """A dose on a file, as the registry has it."""

    vaccine_code: str
    dose_number: int
    given_on: date
    clinic_code: str | None
    lot_number: str


@dataclasses.dataclass(frozen=True)
class FileRecord:
    """One registry file (a vaccinee) with its guardians and doses, validated and normalised."""

    line: int
    registry_ref: str
    id_number: str | None
    birth_cert_no: str | None
    name: str
    sex: str
    birth_date: date
    region_code: str
    clinic_code: str
    stage: str
    guardians: tuple[GuardianRecord, ...]
    doses: tuple[DoseRecord, ...]

    def payload(self) -> dict[str, Any]:
        """The normalised record as JSON-ready data (sealed when staged)."""
        return {
            "kind": "vaccinee",
            "registry_ref": self.registry_ref,
            "id_number": self.id_number,
            "birth_cert_no": self.birth_cert_no,
            "name": self.name,
            "sex": self.sex,
            "birth_date": self.birth_date.isoformat(),
            "region_code": self.region_code,
            "clinic_code": self.clinic_code,
            "stage": self.stage,
            "guardians": [dataclasses.asdict(guardian) for guardian in self.guardians],
            "doses": [
                {
                    "vaccine_code": dose.vaccine_code,
                    "dose_number": dose.dose_number,
                    "given_on": dose.given_on.isoformat(),
                    "clinic_code": dose.clinic_code,
                    "lot_number": dose.lot_number,
                }
                for dose in self.doses
            ],
        }

    @classmethod
    def from_payload(cls, line: int, data: Mapping[str, Any]) -> FileRecord:
        """Rebuild a record from :meth:`payload`'s data."""
        return cls(
            line=line,
            registry_ref=data["registry_ref"],
            id_number=data["id_number"],
            birth_cert_no=data["birth_cert_no"],
            name=data["name"],
            sex=data["sex"],
            birth_date=date.fromisoformat(data["birth_date"]),
            region_code=data["region_code"],
            clinic_code=data["clinic_code"],
            stage=data["stage"],
            guardians=tuple(GuardianRecord(**guardian) for guardian in data["guardians"]),
            doses=tuple(
                DoseRecord(
                    vaccine_code=dose["vaccine_code"],
                    dose_number=dose["dose_number"],
                    given_on=date.fromisoformat(dose["given_on"]),
                    clinic_code=dose["clinic_code"],
                    lot_number=dose["lot_number"],
                )
                for dose in data["doses"]
            ),
        )


@dataclasses.dataclass(frozen=True)
class ClinicRecord:
    """A clinic defined in a registry file."""

    line: int
    code: str
    name: str
    region_code: str
    address: str
    phone: str

    def payload(self) -> dict[str, Any]:
        """The record as JSON-ready data."""
        return {
            "kind": "clinic",
            "code": self.code,
            "name": self.name,
            "region_code": self.region_code,
            "address": self.address,
            "phone": self.phone,
        }

    @classmethod
    def from_payload(cls, line: int, data: Mapping[str, Any]) -> ClinicRecord:
        """Rebuild a record from :meth:`payload`'s data."""
        return cls(line, data["code"], data["name"], data["region_code"], data["address"], data["phone"])


@dataclasses.dataclass
class ParsedRegistry:
    """A registry file read and checked on its own (the database checks come when it is staged)."""

    name: str
    clinics: list[ClinicRecord] = dataclasses.field(default_factory=list)
    files: list[FileRecord] = dataclasses.field(default_factory=list)
    errors: list[RowError] = dataclasses.field(default_factory=list)
    # Where each file's (and each dose's) clinic code was written, for errors found against the database.
    clinic_refs: list[tuple[int, str, str]] = dataclasses.field(default_factory=list)
    clinic_codes: set[str] = dataclasses.field(default_factory=set)  # defined in the file, even on a bad row
    file_where: dict[str, tuple[int, str]] = dataclasses.field(default_factory=dict)


class RegistryRejected(Exception):
    """The file has errors; nothing was written."""

    def __init__(self, errors: Sequence[RowError]) -> None:
        super().__init__(f"{len(errors)} error(s) in the registry file; nothing was written")
        self.errors = sorted(errors)


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


# --- reading a file ----------------------------------------------------------------------------


@dataclasses.dataclass
class _RawDose:
    position: int
    where: str
    fields: dict[str, str | None]


@dataclasses.dataclass
class _RawFile:
    position: int
    where: str
    fields: dict[str, str | None]
    guardians: list[tuple[str, str | None, str | None]]  # (where, relationship, id number)
    doses: list[_RawDose]


class _Problems:
    def __init__(self) -> None:
        self.errors: list[RowError] = []

    def add(self, position: int, where: str, message: str) -> None:
        self.errors.append(RowError(position, where, message))


def parse_registry(name: str, content: bytes, *, today: date) -> ParsedRegistry:
    """Read and validate a whole registry file (``.csv`` or ``.json`` by its name); no database needed."""
    problems = _Problems()
    parsed = ParsedRegistry(name=name)
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        problems.add(0, "file", "is not UTF-8 text (save it as UTF-8)")
        parsed.errors = problems.errors
        return parsed
    suffix = Path(name).suffix.lower()
    clinics: list[tuple[int, str, dict[str, str | None]]] = []
    files: list[_RawFile] = []
    if suffix == ".csv":
        _read_csv(text, problems, clinics, files)
    elif suffix == ".json":
        _read_json(text, problems, clinics, files)
    else:
        problems.add(0, "file", "name must end in .csv or .json")
    if not problems.errors and not clinics and not files:
        problems.add(0, "file", "has no records")
    _validate(parsed, clinics, files, problems, today)
    parsed.errors = sorted(problems.errors)
    return parsed


def _clean(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _read_csv(
    text: str, problems: _Problems, clinics: list[tuple[int, str, dict[str, str | None]]], files: list[_RawFile]
) -> None:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error:
        problems.add(1, "line 1", "is not valid CSV")
        return
    columns = [column.strip().lower() for column in header]
    unknown = [i for i, column in enumerate(columns, 1) if column not in CSV_COLUMNS]
    if len(unknown) == len(columns):
        problems.add(1, "line 1", "is not a header: the first line must name the columns (see docs/registry-format.md)")
        return
    for index in unknown:
        name = columns[index - 1]
        problems.add(
            1, "line 1", f"unknown column {name}" if _SAFE_NAME.match(name) else f"column {index}: unknown name"
        )
    for column in sorted({c for c in columns if columns.count(c) > 1 and c in CSV_COLUMNS}):
        problems.add(1, "line 1", f"column {column} appears twice")
    if problems.errors:
        return
    doses_by_ref: dict[str, list[_RawDose]] = {}
    line = reader.line_num
    while True:
        start = line + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error:
            problems.add(start, f"line {start}", "is not valid CSV (an unclosed quote?)")
            return
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        where = f"line {start}"
        if len(row) != len(columns):
            problems.add(start, where, f"has {len(row)} cells, the header has {len(columns)}")
            continue
        fields = {column: _clean(cell) for column, cell in zip(columns, row, strict=True)}
        kind = (fields.get("record") or "vaccinee").lower()
        if kind not in _CSV_ROW_FIELDS:
            problems.add(start, where, "record must be vaccinee, dose or clinic")
            continue
        stray = sorted(column for column, value in fields.items() if value and column not in _CSV_ROW_FIELDS[kind])
        for column in stray:
            problems.add(start, where, f"{column} is not used on a {kind} row")
        if kind == "clinic":
            clinics.append((start, where, fields))
        elif kind == "dose":
            ref = fields.get("registry_ref")
            if ref is None:
                problems.add(start, where, "registry_ref is required (the file the dose belongs to)")
                continue
            doses_by_ref.setdefault(ref, []).append(_RawDose(start, where, fields))
        else:
            guardians: list[tuple[str, str | None, str | None]] = []
            cell = fields.get("guardians")
            if cell:
                for number, item in enumerate(re.split(r"[;；]", cell), 1):
                    if not item.strip():
                        continue
                    pair = _GUARDIAN_PAIR.match(item.strip())
                    if pair is None:
                        problems.add(start, f"{where}: guardian {number}", "write it as relationship:id_number")
                        continue
                    guardians.append((f"{where}: guardian {number}", _clean(pair[1]), _clean(pair[2])))
            files.append(_RawFile(start, where, fields, guardians, []))
    owners = {raw.fields.get("registry_ref"): raw for raw in files}
    for ref, doses in doses_by_ref.items():
        owner = owners.get(ref)
        if owner is None:
            for dose in doses:
                problems.add(dose.position, dose.where, "registry_ref has no vaccinee row in this file")
            continue
        owner.doses.extend(doses)


def _read_json(
    text: str, problems: _Problems, clinics: list[tuple[int, str, dict[str, str | None]]], files: list[_RawFile]
) -> None:
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        problems.add(0, "file", f"is not valid JSON (line {exc.lineno}, column {exc.colno})")
        return
    if not isinstance(items, list):
        problems.add(0, "file", "must be a JSON list of records")
        return
    for index, item in enumerate(items):
        where = f"[{index}]"
        if not isinstance(item, dict):
            problems.add(index, where, "must be an object")
            continue
        kind = item.get("record", "vaccinee")
        if kind == "clinic":
            fields = _json_fields(item, index, where, {"record", *_CLINIC_FIELDS}, problems)
            if fields is not None:
                clinics.append((index, where, fields))
            continue
        if kind != "vaccinee":
            problems.add(index, where, "record must be vaccinee or clinic")
            continue
        fields = _json_fields(item, index, where, {"record", "guardians", "doses", *_FILE_FIELDS}, problems)
        if fields is None:
            continue
        raw = _RawFile(index, where, fields, [], [])
        for key, entries in (("guardians", item.get("guardians", [])), ("doses", item.get("doses", []))):
            if not isinstance(entries, list):
                problems.add(index, f"{where}.{key}", "must be a list")
                continue
            for number, entry in enumerate(entries):
                label = f"{where}.{key}[{number}]"
                allowed = {"relationship", "id_number"} if key == "guardians" else set(_DOSE_FIELDS)
                if not isinstance(entry, dict):
                    problems.add(index, label, "must be an object")
                    continue
                values = _json_fields(entry, index, label, allowed, problems)
                if values is None:
                    continue
                if key == "guardians":
                    raw.guardians.append((label, values.get("relationship"), values.get("id_number")))
                else:
                    raw.doses.append(_RawDose(index, label, values))
        files.append(raw)


def _json_fields(
    item: Mapping[str, Any], position: int, where: str, allowed: set[str], problems: _Problems
) -> dict[str, str | None] | None:
    fields: dict[str, str | None] = {}
    ok = True
    for key, value in item.items():
        if key not in allowed:
            label = key if isinstance(key, str) and _SAFE_NAME.match(key) else "a field"
            problems.add(position, where, f"unknown field {label}")
            ok = False
        elif key in ("guardians", "doses"):
            continue
        elif value is None or isinstance(value, str) or (key == "dose_number" and type(value) is int):
            fields[key] = _clean(value)
        else:
            problems.add(position, where, f"{key} must be a string")
            ok = False
    return fields if ok else None


# --- validating records ------------------------------------------------------------------------


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
    files: list[_RawFile],
    problems: _Problems,
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
    position: int, where: str, fields: Mapping[str, str | None], problems: _Problems
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


def _validate_file(raw: _RawFile, problems: _Problems, today: date, parsed: ParsedRegistry) -> FileRecord | None:
    position, where, fields = raw.position, raw.where, raw.fields
    before = len(problems.errors)

    def bad(message: str, at: str = where, pos: int = position) -> None:
        problems.add(pos, at, message)

    ref = fields.get("registry_ref")
    if ref is None:
        bad("registry_ref is required")
    elif not REGISTRY_REF_SHAPE.match(ref):
        bad("registry_ref must be up to 64 letters, digits, '.', '_' or '-'")
    elif len(ref) == 18 and isinstance(_id_number(ref, today), IdNumber):
        bad("registry_ref must be the registry's file number, not an ID number")

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

    name = fields.get("name")
    if name is None:
        bad("name is required")
    elif not _plain_text(name, 64):
        bad("name must be at most 64 characters, without control characters")

    sex = (fields.get("sex") or "").upper()
    if sex not in ("M", "F"):
        bad("sex must be M or F")
    elif own_id is not None and own_id.male != (sex == "M"):
        bad("sex does not match the ID number (odd sequence = M, even = F)")

    birth = _real_date(fields.get("birth_date"))
    if birth is None:
        bad("birth_date must be a real date written YYYY-MM-DD")
    elif birth > today:
        bad("birth_date is in the future")
    elif birth < EARLIEST_BIRTH:
        bad("birth_date is before 1900")
    elif own_id is not None and own_id.birth_date != birth:
        bad("birth_date does not match the birth date in the ID number")

    region = fields.get("region_code")
    if region is None or not REGION_SHAPE.match(region):
        bad("region_code must be 6 digits")

    clinic_code = fields.get("clinic_code")
    if clinic_code is None:
        bad("clinic_code is required")
    elif not CLINIC_CODE_SHAPE.match(clinic_code):
        bad("clinic_code must be up to 32 letters, digits, '.', '_' or '-'")
    else:
        parsed.clinic_refs.append((position, where, clinic_code))

    stage = (fields.get("stage") or "").lower()
    if stage not in STAGES:
        bad("stage must be obstetrics, child_clinic or adult")

    guardians: list[GuardianRecord] = []
    guardian_ids: set[str] = set()
    for label, relationship, guardian_raw in raw.guardians:
        relationship = (relationship or "").lower()
        if relationship not in RELATIONSHIPS:
            bad("relationship must be one of " + ", ".join(RELATIONSHIPS), label)
        if guardian_raw is None:
            bad("ID number is required", label)
            continue
        checked = _id_number(guardian_raw, today)
        if not isinstance(checked, IdNumber):
            bad(f"ID number {checked}", label)
            continue
        guardian_sex = "M" if checked.male else "F"
        if RELATIONSHIP_SEX.get(relationship, guardian_sex) != guardian_sex:
            bad("relationship does not match the sex in the guardian's ID number", label)
        if own_id is not None and checked.value == own_id.value:
            bad("ID number is the file's own ID number", label)
        elif checked.value in guardian_ids:
            bad("ID number is listed twice", label)
        elif birth is not None and checked.birth_date >= birth:
            bad("ID number says the guardian was born after the child", label)
        guardian_ids.add(checked.value)
        guardians.append(GuardianRecord(relationship, checked.value))
    if raw_id is None and cert is not None and not raw.guardians:
        bad("a file without an ID number needs a guardian (birth certificate number plus a guardian's ID number)")

    doses: list[DoseRecord] = []
    dose_keys: dict[tuple[str, int], str] = {}
    for dose in raw.doses:
        dose_before = len(problems.errors)

        def bad_dose(message: str, dose: _RawDose = dose) -> None:
            problems.add(dose.position, dose.where, message)

        code_raw = dose.fields.get("vaccine_code")
        vaccine = find_vaccine(code_raw) if code_raw else None
        code = vaccine.code if vaccine is not None else None
        if code_raw is None:
            bad_dose("vaccine_code is required")
        elif code is None:
            bad_dose("vaccine_code is not a known vaccine code (see docs/registry-format.md)")
        number_raw = dose.fields.get("dose_number")
        number = int(number_raw) if number_raw is not None and number_raw.isdigit() else 0
        if not 1 <= number <= MAX_DOSE_NUMBER:
            bad_dose(f"dose_number must be a whole number from 1 to {MAX_DOSE_NUMBER}")
        given = _real_date(dose.fields.get("given_on"))
        if given is None:
            bad_dose("given_on must be a real date written YYYY-MM-DD")
        elif given > today:
            bad_dose("given_on is in the future")
        elif birth is not None and given < birth:
            bad_dose("given_on is before the birth date")
        dose_clinic = dose.fields.get("clinic_code")
        if dose_clinic is not None:
            if CLINIC_CODE_SHAPE.match(dose_clinic):
                parsed.clinic_refs.append((dose.position, dose.where, dose_clinic))
            else:
                bad_dose("clinic_code must be up to 32 letters, digits, '.', '_' or '-'")
        lot = dose.fields.get("lot_number") or ""
        if not _plain_text(lot, 64):
            bad_dose("lot_number must be at most 64 characters, without control characters")
        if code is not None and number >= 1:
            if (code, number) in dose_keys:
                bad_dose(f"{code} dose {number} is listed twice on this file ({dose_keys[code, number]})")
            dose_keys.setdefault((code, number), dose.where)
        if len(problems.errors) == dose_before and code is not None and given is not None:
            doses.append(DoseRecord(code, number, given, dose_clinic, lot))

    if len(problems.errors) > before:
        return None
    assert ref is not None and name is not None and birth is not None and region is not None
    assert clinic_code is not None
    return FileRecord(
        line=position,
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


# --- staging -----------------------------------------------------------------------------------


def _chunks(values: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


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
    for chunk in _chunks(sorted({code for _, _, code in parsed.clinic_refs} - known)):
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
        for chunk in _chunks(sorted(by_hash)):
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


# --- applying ----------------------------------------------------------------------------------


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
        rows = (
            await session.scalars(
                select(RegistryStaged).where(RegistryStaged.batch_id == batch.id).order_by(RegistryStaged.id)
            )
        ).all()
        clinics: list[ClinicRecord] = []
        files: list[FileRecord] = []
        for row in rows:
            data = json.loads(vault.open(SEALED_FIELD, row.payload_enc))
            if data["kind"] == "clinic":
                clinics.append(ClinicRecord.from_payload(row.line, data))
            else:
                files.append(FileRecord.from_payload(row.line, data))
        report = AppliedBatch(batch.id, batch.source, batch.effective_from)
        clinic_ids = await _apply_clinics(session, clinics, files, report)
        for chunk in _chunks(files):
            await _apply_files(session, vault, batch, chunk, clinic_ids, report)
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


async def _apply_clinics(
    session: AsyncSession, clinics: Sequence[ClinicRecord], files: Sequence[FileRecord], report: AppliedBatch
) -> dict[str, int]:
    """Upsert the batch's clinics; returns the id of every clinic code the batch uses."""
    codes = {clinic.code for clinic in clinics} | {record.clinic_code for record in files}
    codes |= {dose.clinic_code for record in files for dose in record.doses if dose.clinic_code is not None}
    existing: dict[str, Clinic] = {}
    for chunk in _chunks(sorted(codes)):
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
    missing = codes - set(existing)
    if missing:
        # Import checked this; a clinic cannot vanish in between, so this is a bug, not bad data.
        raise RuntimeError(f"batch {report.batch_id} uses {len(missing)} clinic code(s) that do not exist")
    return {code: clinic.id for code, clinic in existing.items()}


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
            session, vaccinee, record, doses.get(vaccinee.id, []), on_visits, clinic_ids, batch, report
        )
        if created:
            report.files_created += 1
        elif changed:
            report.files_updated += 1
        else:
            report.files_unchanged += 1
            continue
        vaccinee.effective_from = batch.effective_from
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
    plain = {
        "sex": record.sex,
        "birth_year": record.birth_date.year,
        "region_code": record.region_code,
        "clinic_id": clinic_ids[record.clinic_code],
        "stage": record.stage,
    }
    for key, wanted in plain.items():
        if getattr(vaccinee, key) != wanted:
            setattr(vaccinee, key, wanted)
            changed = True
    return changed


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
    vaccinee: Vaccinee,
    record: FileRecord,
    current: Iterable[Dose],
    on_visits: set[int],
    clinic_ids: Mapping[str, int],
    batch: RegistryBatch,
    report: AppliedBatch,
) -> bool:
    """Upsert the record's doses; remove registry doses it no longer lists; leave desk doses recorded since."""
    existing = {(dose.vaccine_code, dose.dose_number): dose for dose in current}
    changed = False
    for wanted in record.doses:
        values = {
            "given_on": wanted.given_on,
            "clinic_id": clinic_ids[wanted.clinic_code] if wanted.clinic_code is not None else None,
            "lot_number": wanted.lot_number,
            "source": DoseSource.REGISTRY,
        }
        dose = existing.pop((wanted.vaccine_code, wanted.dose_number), None)
        if dose is None:
            session.add(
                Dose(
                    vaccinee_id=vaccinee.id,
                    vaccine_code=wanted.vaccine_code,
                    dose_number=wanted.dose_number,
                    effective_from=batch.effective_from,
                    **values,
                )
            )
            report.doses_added += 1
            changed = True
        elif dose.source == DoseSource.CLINIC and dose.created_at > batch.imported_at:
            # Recorded at a desk after this file was imported: the registry could not have known it yet.
            report.doses_kept += 1
        elif any(getattr(dose, key) != value for key, value in values.items()):
            for key, value in values.items():
                setattr(dose, key, value)
            dose.effective_from = batch.effective_from
            report.doses_changed += 1
            changed = True
    for dose in existing.values():
        # The record is the whole file: a registry dose it no longer lists was withdrawn or renumbered.
        # Desk doses, and doses a desk visit points at, stay until the registry lists them.
        if dose.source == DoseSource.REGISTRY and dose.id not in on_visits:
            report.doses_removed += 1
            changed = True
            await session.delete(dose)  # removed keys never collide with the doses added above
    return changed
