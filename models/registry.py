"""The provincial registry as imported: clinics, vaccinees' files, their guardians and doses."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

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
    sex: Mapped[str] = mapped_column(String(1))  # M | F
    birth_date_enc: Mapped[bytes] = mapped_column(LargeBinary)
    # Coarse, non-identifying: enough to apply claim rules without opening the ciphertext.
    birth_year: Mapped[int] = mapped_column(Integer)
    region_code: Mapped[str] = mapped_column(String(6), index=True)
    clinic_id: Mapped[int | None] = mapped_column(ForeignKey("clinics.id"), index=True)
    stage: Mapped[Stage] = mapped_column(StrEnumType(Stage), default=Stage.CHILD_CLINIC)
    # Registry corrections take effect the next day (China time): rows carry the date they become visible.
    effective_from: Mapped[date] = mapped_column(Date)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


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
    """One dose given (from the registry import or recorded at a clinic desk)."""

    __tablename__ = "doses"
    __table_args__ = (UniqueConstraint("vaccinee_id", "vaccine_code", "dose_number"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    vaccinee_id: Mapped[int] = mapped_column(ForeignKey("vaccinees.id", ondelete="CASCADE"), index=True)
    vaccine_code: Mapped[str] = mapped_column(String(32))
    dose_number: Mapped[int] = mapped_column(Integer)
    given_on: Mapped[date] = mapped_column(Date)
    clinic_id: Mapped[int | None] = mapped_column(ForeignKey("clinics.id"))
    lot_number: Mapped[str] = mapped_column(String(64), default="")
    source: Mapped[DoseSource] = mapped_column(StrEnumType(DoseSource), default=DoseSource.REGISTRY)
    effective_from: Mapped[date] = mapped_column(Date)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


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
