"""Lotteries (摇号) for scarce vaccines: one per lottery-mode slot, its entries and its draw.

The seed is committed when registration opens (its SHA-256 is public from then on) and kept sealed until
the draw reveals it. An entry is published only as its per-lottery entry hash, a keyed hash of the person's
ID hash and the lottery's public id: it names nobody and does not link one lottery's list to another's.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, BigId, StrEnumType, UTCDateTime, utcnow

# The field name bound into a lottery's sealed seed.
SEED_FIELD = "lottery_seed"


class LotteryStatus(StrEnum):
    """open (registration, then waiting for the draw) → drawn (places offered down the ranking)."""

    OPEN = "open"
    DRAWN = "drawn"


class EntryStatus(StrEnum):
    """An entry: entered → offered (a place, until a deadline) → confirmed | lapsed; or waiting after the draw."""

    ENTERED = "entered"
    WAITING = "waiting"  # drawn, not (yet) offered a place: on the waiting list by rank
    OFFERED = "offered"  # offered a place, to be confirmed before ``deadline``
    CONFIRMED = "confirmed"  # booked: ``appointment_id`` holds the place
    LAPSED = "lapsed"  # not confirmed in time: the place passed down


class Lottery(Base):
    """A lottery for one slot's places: a registration window, a committed seed, then the draw."""

    __tablename__ = "lotteries"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    slot_id: Mapped[int] = mapped_column(ForeignKey("slots.id"), unique=True)
    clinic_id: Mapped[int] = mapped_column(ForeignKey("clinics.id"), index=True)
    vaccine_code: Mapped[str] = mapped_column(String(32))
    places: Mapped[int] = mapped_column(Integer)
    registration_opens_at: Mapped[datetime] = mapped_column(UTCDateTime)
    registration_closes_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    seed_sha256: Mapped[str] = mapped_column(String(64))  # published from the start
    seed_enc: Mapped[bytes] = mapped_column(LargeBinary)  # sealed until the draw
    seed: Mapped[str | None] = mapped_column(String(64))  # revealed (hex) by the draw
    status: Mapped[LotteryStatus] = mapped_column(StrEnumType(LotteryStatus), default=LotteryStatus.OPEN)
    entry_count: Mapped[int] = mapped_column(Integer, default=0)
    confirm_hours: Mapped[int] = mapped_column(Integer, default=24)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    drawn_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class LotteryEntry(Base):
    """One person's entry in one lottery (one per person: by file and by entry hash)."""

    __tablename__ = "lottery_entries"
    __table_args__ = (
        UniqueConstraint("lottery_id", "entry_hash"),
        UniqueConstraint("lottery_id", "vaccinee_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    lottery_id: Mapped[int] = mapped_column(ForeignKey("lotteries.id"))
    vaccinee_id: Mapped[int] = mapped_column(ForeignKey("vaccinees.id"), index=True)
    entered_by_identity_id: Mapped[int] = mapped_column(ForeignKey("identities.id"))
    entry_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[EntryStatus] = mapped_column(StrEnumType(EntryStatus), default=EntryStatus.ENTERED)
    rank: Mapped[int | None] = mapped_column(Integer)  # 1 = first drawn
    deadline: Mapped[datetime | None] = mapped_column(UTCDateTime)  # while offered
    appointment_id: Mapped[int | None] = mapped_column(ForeignKey("appointments.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Claimed by conditional UPDATEs, so one process tells each: the draw's outcome, and an offered place.
    outcome_told_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    offer_told_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


# The pass-down job's query: a lottery's offers by status and deadline.
Index("ix_lottery_entries_status", LotteryEntry.lottery_id, LotteryEntry.status, LotteryEntry.rank)
