"""The provincial registry as imported: clinics, vaccinees' files, their guardians and doses."""

from __future__ import annotations

import dataclasses
import json
from datetime import date, datetime
from enum import StrEnum
from typing import Protocol

from sqlalchemy import Date, ForeignKey, Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, BigId, StrEnumType, UTCDateTime, utcnow


class Stage(StrEnum):
    """Where a file is kept: the maternity ward, a child clinic, or an adult clinic."""

    OBSTETRICS = "obstetrics"
    CHILD_CLINIC = "child_clinic"
    ADULT = "adult"


class Relationship(StrEnum):
    """A guardian's relationship to the file's person, as the registry records it."""

    MOTHER = "mother"
    FATHER = "father"
    GRANDMOTHER = "grandmother"
    GRANDFATHER = "grandfather"
    GUARDIAN = "guardian"


class DoseSource(StrEnum):
    """Where a dose record came from: the registry import or a clinic desk."""

    REGISTRY = "registry"
    CLINIC = "clinic"


class Sealer(Protocol):
    """What a model needs to seal and open its sealed details (``bot.core.pii.Vault`` is one)."""

    def seal(self, field: str, value: str) -> bytes:
        """Encrypt ``value`` with ``field`` bound in."""
        ...

    def open(self, field: str, blob: bytes) -> str:
        """Decrypt a value sealed for ``field``."""
        ...

    def digest(self, field: str, value: str) -> str:
        """Keyed hash of ``value`` for equality look-ups."""
        ...


# The field names bound into the sealed details (changing one makes every stored value unreadable).
PROFILE_FIELD = "vaccinee_profile"
DOSE_FIELD = "dose_detail"
DOSE_KEY_FIELD = "dose_key"


def _dump(values: dict[str, object]) -> str:
    return json.dumps(values, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


@dataclasses.dataclass(frozen=True)
class FileProfile:
    """A file's details that no query needs: kept sealed in ``vaccinees.profile_enc``."""

    sex: str  # M | F
    region_code: str  # six digits: where the person is registered
    clinic_id: int | None  # the clinic that keeps the file
    stage: Stage = Stage.CHILD_CLINIC

    def to_json(self) -> str:
        """The profile as the JSON text that is sealed."""
        return _dump(
            {"sex": self.sex, "region_code": self.region_code, "clinic_id": self.clinic_id, "stage": self.stage.value}
        )

    @classmethod
    def from_json(cls, text: str) -> FileProfile:
        """The profile :meth:`to_json` wrote."""
        data = json.loads(text)
        return cls(data["sex"], data["region_code"], data["clinic_id"], Stage(data["stage"]))


@dataclasses.dataclass(frozen=True)
class DoseDetail:
    """Everything about one dose but its file: kept sealed in ``doses.detail_enc``."""

    vaccine_code: str
    dose_number: int
    given_on: date
    clinic_id: int | None = None
    lot_number: str = ""
    source: DoseSource = DoseSource.REGISTRY

    def to_json(self) -> str:
        """The detail as the JSON text that is sealed."""
        return _dump(
            {
                "vaccine_code": self.vaccine_code,
                "dose_number": self.dose_number,
                "given_on": self.given_on.isoformat(),
                "clinic_id": self.clinic_id,
                "lot_number": self.lot_number,
                "source": self.source.value,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> DoseDetail:
        """The detail :meth:`to_json` wrote."""
        data = json.loads(text)
        return cls(
            vaccine_code=data["vaccine_code"],
            dose_number=data["dose_number"],
            given_on=date.fromisoformat(data["given_on"]),
            clinic_id=data["clinic_id"],
            lot_number=data["lot_number"],
            source=DoseSource(data["source"]),
        )


class Clinic(Base):
    """A vaccination clinic (接种门诊)."""

    __tablename__ = "clinics"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(128))
    region_code: Mapped[str] = mapped_column(String(6), index=True)
    address: Mapped[str] = mapped_column(String(256), default="")
    phone: Mapped[str] = mapped_column(String(32), default="")


class Vaccinee(Base):
    """A registry file (接种档案): one person who receives vaccines."""

    __tablename__ = "vaccinees"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    registry_ref: Mapped[str] = mapped_column(String(64), unique=True)  # the registry's own file number
    id_number_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    id_number_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    # Newborns have no ID number yet: the birth certificate number keys the file until they do.
    birth_cert_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    birth_cert_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    name_enc: Mapped[bytes] = mapped_column(LargeBinary)
    birth_date_enc: Mapped[bytes] = mapped_column(LargeBinary)
    # Sex, region, clinic and stage (a FileProfile): no query selects files by them, so they stay sealed.
    profile_enc: Mapped[bytes] = mapped_column(LargeBinary)
    # Registry corrections take effect the next day (China time): rows carry the date they become visible.
    # Plain: it is the registry batch's date, shared by every row the batch touched, not the person's.
    effective_from: Mapped[date] = mapped_column(Date)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    def profile(self, vault: Sealer) -> FileProfile:
        """The file's sealed profile, opened."""
        return FileProfile.from_json(vault.open(PROFILE_FIELD, self.profile_enc))

    def set_profile(self, vault: Sealer, profile: FileProfile) -> bool:
        """Seal ``profile`` into the file unless it holds that already; True when it changed."""
        if self.profile_enc and self.profile(vault) == profile:
            return False
        self.profile_enc = vault.seal(PROFILE_FIELD, profile.to_json())
        return True


class Guardian(Base):
    """A guardian's ID number listed on a child's file."""

    __tablename__ = "guardians"
    __table_args__ = (UniqueConstraint("vaccinee_id", "id_number_hash"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    vaccinee_id: Mapped[int] = mapped_column(ForeignKey("vaccinees.id", ondelete="CASCADE"), index=True)
    id_number_hash: Mapped[str] = mapped_column(String(64), index=True)
    id_number_enc: Mapped[bytes] = mapped_column(LargeBinary)
    relationship: Mapped[Relationship] = mapped_column(StrEnumType(Relationship), default=Relationship.GUARDIAN)


class Dose(Base):
    """One dose given (from the registry import or recorded at a clinic desk); its details are sealed.

    A child's first doses are given on the day of birth, so the vaccine, number, date, clinic, lot and
    source all live in ``detail_enc`` (a DoseDetail); only the file it belongs to stays plain.
    """

    __tablename__ = "doses"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    vaccinee_id: Mapped[int] = mapped_column(ForeignKey("vaccinees.id", ondelete="CASCADE"), index=True)
    # Keyed hash of (file, vaccine, dose number): one row per dose of a file, without saying which dose.
    dose_key: Mapped[str] = mapped_column(String(64), unique=True)
    detail_enc: Mapped[bytes] = mapped_column(LargeBinary)
    # Plain: the registry batch's date (or the desk's day of recording), filtered on to hide corrections
    # until they take effect; it is the import's date, never the date the dose was given.
    effective_from: Mapped[date] = mapped_column(Date)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    @staticmethod
    def key_for(vault: Sealer, vaccinee_id: int, vaccine_code: str, dose_number: int) -> str:
        """The ``dose_key`` of one dose of one file."""
        return vault.digest(DOSE_KEY_FIELD, f"{vaccinee_id}:{vaccine_code}:{dose_number}")

    @classmethod
    def sealed(cls, vault: Sealer, vaccinee_id: int, detail: DoseDetail, effective_from: date) -> Dose:
        """A new dose row for ``vaccinee_id`` holding ``detail`` sealed."""
        dose = cls(vaccinee_id=vaccinee_id, effective_from=effective_from)
        dose.set_detail(vault, detail)
        return dose

    def detail(self, vault: Sealer) -> DoseDetail:
        """The dose's sealed detail, opened."""
        return DoseDetail.from_json(vault.open(DOSE_FIELD, self.detail_enc))

    def set_detail(self, vault: Sealer, detail: DoseDetail) -> None:
        """Seal ``detail`` into the row and key it by its file, vaccine and dose number."""
        self.dose_key = self.key_for(vault, self.vaccinee_id, detail.vaccine_code, detail.dose_number)
        self.detail_enc = vault.seal(DOSE_FIELD, detail.to_json())


class RegistryBatch(Base):
    """One import of a registry file: staged whole, applied whole on its effective date (China time)."""

    __tablename__ = "registry_batches"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    source: Mapped[str] = mapped_column(String(128))  # the file's name, never its content
    records: Mapped[int] = mapped_column(Integer)
    imported_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    effective_from: Mapped[date] = mapped_column(Date, index=True)
    applied_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class RegistryStaged(Base):
    """One validated record of a batch (a file with its guardians and doses), sealed until applied."""

    __tablename__ = "registry_staged"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("registry_batches.id", ondelete="CASCADE"), index=True)
    line: Mapped[int] = mapped_column(Integer)
    registry_ref: Mapped[str] = mapped_column(String(64))
    payload_enc: Mapped[bytes] = mapped_column(LargeBinary)
