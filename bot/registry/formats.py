"""Reading a registry file: CSV or JSON into raw rows (checked for shape, not yet for meaning).

See ``docs/registry-format.md``. Problems name a line (CSV) or an index (JSON) and a field, never a value.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
from collections.abc import Mapping
from typing import Any

from bot.registry.records import RowError

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
FILE_FIELDS = (
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
DOSE_FIELDS = ("vaccine_code", "dose_number", "given_on", "clinic_code", "lot_number")
CLINIC_FIELDS = ("clinic_code", "name", "region_code", "address", "phone")
# Which CSV columns each kind of row may fill.
CSV_ROW_FIELDS = {
    "vaccinee": {"record", "guardians", *FILE_FIELDS},
    "dose": {"record", "registry_ref", *DOSE_FIELDS},
    "clinic": {"record", *CLINIC_FIELDS},
}
_SAFE_NAME = re.compile(r"^[a-z_]{1,32}$")  # a column or key name we may echo back (it cannot be data)
_GUARDIAN_PAIR = re.compile(r"^([^:：]*)[:：](.*)$")  # relationship:id_number (a full-width colon too)


@dataclasses.dataclass
class RawDose:
    """A dose row (CSV) or entry (JSON) as read: cleaned cells, not yet checked."""

    position: int
    where: str
    fields: dict[str, str | None]


@dataclasses.dataclass
class RawFile:
    """A vaccinee row or object as read, with its guardians and the dose rows that name it."""

    position: int
    where: str
    fields: dict[str, str | None]
    guardians: list[tuple[str, str | None, str | None]]  # (where, relationship, id number)
    doses: list[RawDose]


class Problems:
    """Every problem found in a file so far (all are reported at once, so one pass fixes the file)."""

    def __init__(self) -> None:
        self.errors: list[RowError] = []

    def add(self, position: int, where: str, message: str) -> None:
        """Report a problem at ``where`` (a line or an index), in words that carry no value of the file."""
        self.errors.append(RowError(position, where, message))


def clean(value: Any) -> str | None:
    """A cell stripped of surrounding blanks; None when empty."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def read_csv(
    text: str, problems: Problems, clinics: list[tuple[int, str, dict[str, str | None]]], files: list[RawFile]
) -> None:
    """Read CSV rows into ``clinics`` and ``files`` (dose rows joined to their file), reporting problems."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error:
        problems.add(1, "line 1", "is not valid CSV")
        return
    columns = _csv_columns(header, problems)
    if columns is None:
        return
    _read_csv_rows(reader, columns, problems, clinics, files)


def _csv_columns(header: list[str], problems: Problems) -> list[str] | None:
    """The header's column names, or None when the header is wrong (reported)."""
    columns = [column.strip().lower() for column in header]
    unknown = [i for i, column in enumerate(columns, 1) if column not in CSV_COLUMNS]
    if len(unknown) == len(columns):
        problems.add(1, "line 1", "is not a header: the first line must name the columns (see docs/registry-format.md)")
        return None
    for index in unknown:
        name = columns[index - 1]
        problems.add(
            1, "line 1", f"unknown column {name}" if _SAFE_NAME.match(name) else f"column {index}: unknown name"
        )
    for column in sorted({c for c in columns if columns.count(c) > 1 and c in CSV_COLUMNS}):
        problems.add(1, "line 1", f"column {column} appears twice")
    return None if problems.errors else columns


def _read_csv_rows(
    reader: Any,
    columns: list[str],
    problems: Problems,
    clinics: list[tuple[int, str, dict[str, str | None]]],
    files: list[RawFile],
) -> None:
    doses_by_ref: dict[str, list[RawDose]] = {}
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
        fields = {column: clean(cell) for column, cell in zip(columns, row, strict=True)}
        kind = (fields.get("record") or "vaccinee").lower()
        if kind not in CSV_ROW_FIELDS:
            problems.add(start, where, "record must be vaccinee, dose or clinic")
            continue
        stray = sorted(column for column, value in fields.items() if value and column not in CSV_ROW_FIELDS[kind])
        for column in stray:
            problems.add(start, where, f"{column} is not used on a {kind} row")
        if kind == "clinic":
            clinics.append((start, where, fields))
        elif kind == "dose":
            ref = fields.get("registry_ref")
            if ref is None:
                problems.add(start, where, "registry_ref is required (the file the dose belongs to)")
                continue
            doses_by_ref.setdefault(ref, []).append(RawDose(start, where, fields))
        else:
            guardians = _guardian_pairs(fields.get("guardians"), start, where, problems)
            files.append(RawFile(start, where, fields, guardians, []))
    owners = {raw.fields.get("registry_ref"): raw for raw in files}
    for ref, doses in doses_by_ref.items():
        owner = owners.get(ref)
        if owner is None:
            for dose in doses:
                problems.add(dose.position, dose.where, "registry_ref has no vaccinee row in this file")
            continue
        owner.doses.extend(doses)


def _guardian_pairs(
    cell: str | None, position: int, where: str, problems: Problems
) -> list[tuple[str, str | None, str | None]]:
    """``relationship:id_number`` pairs separated by ``;`` (full-width ``；`` and ``：`` too)."""
    guardians: list[tuple[str, str | None, str | None]] = []
    for number, item in enumerate(re.split(r"[;；]", cell or ""), 1):
        if not item.strip():
            continue
        pair = _GUARDIAN_PAIR.match(item.strip())
        if pair is None:
            problems.add(position, f"{where}: guardian {number}", "write it as relationship:id_number")
            continue
        guardians.append((f"{where}: guardian {number}", clean(pair[1]), clean(pair[2])))
    return guardians


def read_json(
    text: str, problems: Problems, clinics: list[tuple[int, str, dict[str, str | None]]], files: list[RawFile]
) -> None:
    """Read a JSON list of records into ``clinics`` and ``files`` (doses inside their file), reporting problems."""
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
            fields = _json_fields(item, index, where, {"record", *CLINIC_FIELDS}, problems)
            if fields is not None:
                clinics.append((index, where, fields))
            continue
        if kind != "vaccinee":
            problems.add(index, where, "record must be vaccinee or clinic")
            continue
        fields = _json_fields(item, index, where, {"record", "guardians", "doses", *FILE_FIELDS}, problems)
        if fields is None:
            continue
        raw = RawFile(index, where, fields, [], [])
        for key, entries in (("guardians", item.get("guardians", [])), ("doses", item.get("doses", []))):
            if not isinstance(entries, list):
                problems.add(index, f"{where}.{key}", "must be a list")
                continue
            for number, entry in enumerate(entries):
                label = f"{where}.{key}[{number}]"
                allowed = {"relationship", "id_number"} if key == "guardians" else set(DOSE_FIELDS)
                if not isinstance(entry, dict):
                    problems.add(index, label, "must be an object")
                    continue
                values = _json_fields(entry, index, label, allowed, problems)
                if values is None:
                    continue
                if key == "guardians":
                    raw.guardians.append((label, values.get("relationship"), values.get("id_number")))
                else:
                    raw.doses.append(RawDose(index, label, values))
        files.append(raw)


def _json_fields(
    item: Mapping[str, Any], position: int, where: str, allowed: set[str], problems: Problems
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
            fields[key] = clean(value)
        else:
            problems.add(position, where, f"{key} must be a string")
            ok = False
    return fields if ok else None
