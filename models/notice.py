"""A clinic's notices to its families (a closure, a rescheduling, stock arriving, free text) and their delivery.

A notice names its audience (the families booked in chosen days or windows, or everyone registered at the
clinic) and, for a closure or a rescheduling, what happens to the bookings in those windows (cancelled, or
moved to another day or window). Each account told gets one delivery row, linked to the outbox row that
carries the message: the delivery report reads sent, waiting and failed (with the reason) from there.
"""

from __future__ import annotations

from datetime import date, datetime, time
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Date, ForeignKey, Integer, String, Time, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, BigId, StrEnumType, UTCDateTime, utcnow


class NoticeKind(StrEnum):
    """Why a clinic writes to its families."""

    CLOSURE = "closure"  # the days or windows are closed; their bookings are cancelled or moved
    RESCHEDULE = "reschedule"  # the windows move: their bookings are moved (cancelled where no room is left)
    STOCK = "stock"  # a vaccine arrived
    FREE = "free"  # anything else, within the template's limits


class NoticeAudience(StrEnum):
    """Who hears: the families booked in the chosen windows, or everyone registered at the clinic."""

    BOOKED = "booked"
    REGISTERED = "registered"


class NoticeAction(StrEnum):
    """What happens to the bookings in the chosen windows."""

    NONE = "none"
    CANCEL = "cancel"
    MOVE = "move"


class Notice(Base):
    """One notice a clinic sent: its text, audience, windows and what it did to the bookings there."""

    __tablename__ = "notices"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    clinic_id: Mapped[int] = mapped_column(ForeignKey("clinics.id"), index=True)
    kind: Mapped[NoticeKind] = mapped_column(StrEnumType(NoticeKind))
    text: Mapped[str] = mapped_column(String(256))
    audience: Mapped[NoticeAudience] = mapped_column(StrEnumType(NoticeAudience))
    # The chosen windows, China time: [["2026-12-08", null], ["2026-12-09", "09:00"]] (a whole day, or one window).
    windows: Mapped[list[Any]] = mapped_column(JSON, default=list)
    action: Mapped[NoticeAction] = mapped_column(StrEnumType(NoticeAction), default=NoticeAction.NONE)
    move_to_day: Mapped[date | None] = mapped_column(Date)
    move_to_start: Mapped[time | None] = mapped_column(Time)
    # Who composed it: a staff member (their id, also in ``composed_by``) or a clinic system's API key.
    staff_id: Mapped[int | None] = mapped_column(ForeignKey("clinic_staff.id"))
    composed_by: Mapped[str] = mapped_column(String(64))
    # The composing form's (or API call's) key: sending twice sends once.
    request_key: Mapped[str] = mapped_column(String(64), unique=True)
    slots_closed: Mapped[int] = mapped_column(Integer, default=0)
    bookings_cancelled: Mapped[int] = mapped_column(Integer, default=0)
    bookings_moved: Mapped[int] = mapped_column(Integer, default=0)
    move_failed: Mapped[int] = mapped_column(Integer, default=0)  # no room at the target: cancelled instead
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class NoticeBookingOutcome(StrEnum):
    """What a notice did to one booking."""

    CANCELLED = "cancelled"
    MOVED = "moved"
    MOVE_FAILED = "move_failed"  # the target had no room: cancelled instead


class NoticeBooking(Base):
    """One booking a notice cancelled or moved (``moved_to``: the booking it became), for the family's list."""

    __tablename__ = "notice_bookings"
    __table_args__ = (UniqueConstraint("notice_id", "appointment_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    notice_id: Mapped[int] = mapped_column(ForeignKey("notices.id", ondelete="CASCADE"))
    appointment_id: Mapped[int] = mapped_column(ForeignKey("appointments.id"), index=True)
    vaccinee_id: Mapped[int] = mapped_column(ForeignKey("vaccinees.id"), index=True)
    outcome: Mapped[NoticeBookingOutcome] = mapped_column(StrEnumType(NoticeBookingOutcome))
    moved_to_appointment_id: Mapped[int | None] = mapped_column(ForeignKey("appointments.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class NoticeDelivery(Base):
    """One account told of one notice (once), and the outbox row carrying it (None: it could not be queued)."""

    __tablename__ = "notice_deliveries"
    __table_args__ = (UniqueConstraint("notice_id", "account_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    notice_id: Mapped[int] = mapped_column(ForeignKey("notices.id", ondelete="CASCADE"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("platform_accounts.id"))
    platform: Mapped[str] = mapped_column(String(16))
    outbox_id: Mapped[int | None] = mapped_column(ForeignKey("outbox.id"))
    # Why nothing was queued (a mini-program user without a subscription consent, say); "" when queued.
    problem: Mapped[str] = mapped_column(String(32), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
