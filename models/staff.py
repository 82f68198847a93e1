"""Clinic staff who sign in to the clinic console, and their console sessions."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, BigId, StrEnumType, UTCDateTime, utcnow


class StaffRole(StrEnum):
    """What a staff member does at the desk; the console's permissions follow from it."""

    REGISTRAR = "registrar"  # 登记台: scan, queue, register, 一验证
    VACCINATOR = "vaccinator"  # 接种台: verify, record the dose
    OBSERVER = "observer"  # 留观区: observation and its end
    ADMIN = "admin"  # the clinic's lead: every step


class ClinicStaff(Base):
    """A staff member of one clinic: a login name, a role and an argon2 password hash."""

    __tablename__ = "clinic_staff"
    __table_args__ = (UniqueConstraint("clinic_id", "login"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    clinic_id: Mapped[int] = mapped_column(ForeignKey("clinics.id"), index=True)
    login: Mapped[str] = mapped_column(String(64))  # what they type to sign in, unique within the clinic
    display_name: Mapped[str] = mapped_column(String(64))  # shown on the console and recorded as vaccinator
    role: Mapped[StaffRole] = mapped_column(StrEnumType(StaffRole))
    password_hash: Mapped[str] = mapped_column(String(256))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    failed_attempts: Mapped[int] = mapped_column(Integer, default=0)  # consecutive, reset by a good sign-in
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class StaffSession(Base):
    """A signed-in console session: only a keyed hash of its random token is kept."""

    __tablename__ = "staff_sessions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    staff_id: Mapped[int] = mapped_column(ForeignKey("clinic_staff.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # signed out, expired or replaced
