"""The registry import's records: what a validated file holds, its errors, and what staging seals.

Error messages name a line (CSV) or an index (JSON) and a field, never a value: a registry file is
personal data from its first byte to its last.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from datetime import date
from typing import Any

from models import Relationship, Stage

SEALED_FIELD = "registry_record"
CLINIC_REF_PREFIX = "clinic:"  # staged clinic rows: registry refs never contain a colon
CHUNK = 500  # rows per IN (...) query


def chunks(values: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    """``values`` in slices of at most ``size`` (one IN (...) query each)."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


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

    relationship: Relationship
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
    stage: Stage
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
            stage=Stage(data["stage"]),
            guardians=tuple(
                GuardianRecord(Relationship(guardian["relationship"]), guardian["id_number"])
                for guardian in data["guardians"]
            ),
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
