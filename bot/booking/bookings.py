"""Booking a place, cancelling it, and listing a person's bookings: correct when many try at once.

A place is taken by one conditional UPDATE (``booked = booked + 1 WHERE booked < capacity``), so two
bookings of the last place cannot both succeed on any backend; the schema's CHECK is the last guard. One
active booking per person per vaccine is a partial unique index, and the idempotency key is unique, so a
double tap or a platform retry books once. Each attempt runs in a savepoint: a conflict undoes the taken
place with it and becomes an outcome, never a database error shown to anyone. Nothing here commits.

Under a rush (thousands confirming one slot at once) most attempts find the slot full: that is read from the
slot row just loaded, without the UPDATE, so they neither queue on the row's lock nor open a savepoint.
Booking numbers are random (``models.booking_numbers``); a clash with an existing one is retried.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from models import Appointment, AppointmentStatus, Slot
from models.booking_numbers import new_booking_number, normalise_booking_number

NUMBER_ATTEMPTS = 3  # fresh booking numbers tried when one clashes (about once in 10**14 bookings)


class Outcome(StrEnum):
    """What an attempt to book came to."""

    BOOKED = "booked"  # this attempt (or an earlier one with the same key) holds the place
    HELD = "held"  # the person already holds another active booking for this vaccine
    FULL = "full"  # the last place went to someone else
    NOT_OPEN = "not_open"  # booking opens later (``slot.opens_at``)
    CLOSED = "closed"  # the clinic closed it, or it has started
    GONE = "gone"  # no such slot


@dataclasses.dataclass(frozen=True)
class Booking:
    """An attempt's outcome, the booking it concerns (booked or held) and the slot."""

    outcome: Outcome
    appointment: Appointment | None = None
    slot: Slot | None = None
    repeated: bool = False  # the same key had booked already: nothing new was taken


def booking_number(appointment: Appointment) -> str:
    """The number the family quotes at the clinic (not a secret: the booking is found by it and the code)."""
    return appointment.number


async def by_number(session: AsyncSession, text: str) -> Appointment | None:
    """The booking with this number, as someone typed or read it out (spaces, dashes, lower case); or None."""
    number = normalise_booking_number(text)
    if not number:
        return None
    return (await session.scalars(select(Appointment).where(Appointment.number == number))).first()


async def _by_key(session: AsyncSession, key: str) -> Appointment | None:
    return (await session.scalars(select(Appointment).where(Appointment.idempotency_key == key))).first()


async def _held(session: AsyncSession, vaccinee_id: int, vaccine_code: str) -> Appointment | None:
    query = select(Appointment).where(
        Appointment.vaccinee_id == vaccinee_id,
        Appointment.vaccine_code == vaccine_code,
        Appointment.status == AppointmentStatus.BOOKED,
    )
    return (await session.scalars(query)).first()


async def _known(
    session: AsyncSession,
    key: str,
    vaccinee_id: int,
    vaccine_code: str,
    *,
    looked_up: bool = False,
    earlier: Appointment | None = None,
) -> Booking | None:
    """The same key booked already (a retry), or the person holds this vaccine elsewhere.

    With ``looked_up``, ``earlier`` is the key's booking (or None) the caller has just read: not read again.
    """
    if not looked_up:
        earlier = await _by_key(session, key)
    if earlier is not None:
        if earlier.vaccinee_id != vaccinee_id:
            raise ValueError("an idempotency key reused for another person")
        return Booking(Outcome.BOOKED, earlier, await session.get(Slot, earlier.slot_id), repeated=True)
    held = await _held(session, vaccinee_id, vaccine_code)
    if held is not None:
        # Booked with this very key since the key was read (the same tap committing in another transaction).
        repeated = held.idempotency_key == key
        outcome = Outcome.BOOKED if repeated else Outcome.HELD
        return Booking(outcome, held, await session.get(Slot, held.slot_id), repeated=repeated)
    return None


async def book(
    session: AsyncSession,
    slot_id: int,
    vaccinee_id: int,
    booked_by_identity_id: int,
    key: str,
    now: datetime,
    *,
    by_lottery: bool = False,
) -> Booking:
    """Take a place in a slot for a person, once per ``key``; the outcome says what happened.

    A lottery slot's places are only booked by confirming an offer (``by_lottery``), never first come.
    """
    earlier = await _by_key(session, key)
    slot = await session.get(Slot, earlier.slot_id if earlier else slot_id, populate_existing=True)
    if slot is None:
        return Booking(Outcome.GONE)
    known = await _known(session, key, vaccinee_id, slot.vaccine_code, looked_up=True, earlier=earlier)
    if known is not None:
        return known
    if slot.closed_at is not None or slot.starts_at <= now:
        return Booking(Outcome.CLOSED, slot=slot)
    if slot.opens_at is not None and slot.opens_at > now:
        return Booking(Outcome.NOT_OPEN, slot=slot)
    if slot.mode == "lottery" and not by_lottery:
        return Booking(Outcome.CLOSED, slot=slot)
    for _ in range(NUMBER_ATTEMPTS):
        if slot.booked >= slot.capacity:
            # Full when just read: no UPDATE that would wait on the row lock of whoever books now.
            return Booking(Outcome.FULL, slot=slot)
        try:
            async with session.begin_nested():
                taken = await session.execute(
                    update(Slot)
                    .where(Slot.id == slot_id, Slot.booked < Slot.capacity, Slot.closed_at.is_(None))
                    .values(booked=Slot.booked + 1)
                    .execution_options(synchronize_session=False)
                )
                if not getattr(taken, "rowcount", 0):
                    await session.refresh(slot)
                    return Booking(Outcome.FULL, slot=slot)
                appointment = Appointment(
                    slot_id=slot_id,
                    vaccinee_id=vaccinee_id,
                    vaccine_code=slot.vaccine_code,
                    booked_by_identity_id=booked_by_identity_id,
                    status=AppointmentStatus.BOOKED,
                    idempotency_key=key,
                    number=new_booking_number(),
                    created_at=now,
                )
                session.add(appointment)
                await session.flush()
        except IntegrityError:
            # Another transaction booked with this key or for this person and vaccine meanwhile (the savepoint
            # gave the place back), or the CHECK refused a place that was not there, or the number clashed.
            known = await _known(session, key, vaccinee_id, slot.vaccine_code)
            await session.refresh(slot)
            if known is not None:
                return known
            continue  # a full slot is answered at the top; otherwise a fresh number
        await session.refresh(slot)
        return Booking(Outcome.BOOKED, appointment, slot)
    return Booking(Outcome.FULL, slot=slot)


async def cancel(session: AsyncSession, appointment_id: int, now: datetime) -> bool:
    """Cancel an active booking and give its place back; False if it was not active (cancelled twice, say)."""
    done = await session.execute(
        update(Appointment)
        .where(Appointment.id == appointment_id, Appointment.status == AppointmentStatus.BOOKED)
        .values(status=AppointmentStatus.CANCELLED, cancelled_at=now)
        .returning(Appointment.slot_id)
        .execution_options(synchronize_session=False)
    )
    slot_id = done.scalar_one_or_none()
    if slot_id is None:
        return False
    await session.execute(
        update(Slot)
        .where(Slot.id == slot_id, Slot.booked > 0)
        .values(booked=Slot.booked - 1)
        .execution_options(synchronize_session=False)
    )
    return True


async def reschedule(
    session: AsyncSession, appointment_id: int, slot_id: int, booked_by_identity_id: int, key: str, now: datetime
) -> Booking:
    """Move an active booking to another slot of the same vaccine: both places change together, or neither.

    The old booking stays when the new place is gone or not open yet.
    """
    earlier = await _by_key(session, key)
    if earlier is not None:  # a retry of a move that was made
        return Booking(Outcome.BOOKED, earlier, await session.get(Slot, earlier.slot_id), repeated=True)
    old = await session.get(Appointment, appointment_id, populate_existing=True)
    target = await session.get(Slot, slot_id, populate_existing=True)
    if old is None or old.status != AppointmentStatus.BOOKED or target is None:
        return Booking(Outcome.GONE, slot=target)
    if target.vaccine_code != old.vaccine_code:
        raise ValueError("a booking moved to another vaccine's slot")
    move = await session.begin_nested()
    try:
        if not await cancel(session, appointment_id, now):  # cancelled meanwhile (another tap, another device)
            await move.rollback()
            return Booking(Outcome.GONE, slot=target)
        result = await book(session, slot_id, old.vaccinee_id, booked_by_identity_id, key, now)
    except BaseException:
        await move.rollback()
        raise
    if result.outcome != Outcome.BOOKED:
        await move.rollback()
        await session.refresh(target)
        return dataclasses.replace(result, slot=target)
    await move.commit()
    return result


async def active_of(session: AsyncSession, vaccinee_ids: Sequence[int]) -> Sequence[tuple[Appointment, Slot]]:
    """These people's active bookings with their slots, soonest first."""
    if not vaccinee_ids:
        return []
    rows = await session.execute(
        select(Appointment, Slot)
        .join(Slot, Slot.id == Appointment.slot_id)
        .where(Appointment.vaccinee_id.in_(sorted(set(vaccinee_ids))), Appointment.status == AppointmentStatus.BOOKED)
        .order_by(Slot.starts_at, Appointment.id)
    )
    return [(appointment, slot) for appointment, slot in rows.all()]


async def count_active(session: AsyncSession, slot_id: int) -> int:
    """How many active bookings a slot holds (what ``slots.booked`` must equal)."""
    query = select(func.count()).where(Appointment.slot_id == slot_id, Appointment.status == AppointmentStatus.BOOKED)
    return int((await session.scalar(query)) or 0)


async def mark_attended(session: AsyncSession, vaccinee_id: int, clinic_id: int, day_start: datetime) -> int:
    """The person came to the clinic (their code was scanned): that day's bookings there are attended; how many."""
    that_day = select(Slot.id).where(
        Slot.clinic_id == clinic_id, Slot.starts_at >= day_start, Slot.starts_at < day_start + timedelta(days=1)
    )
    result = await session.execute(
        update(Appointment)
        .where(
            Appointment.vaccinee_id == vaccinee_id,
            Appointment.status == AppointmentStatus.BOOKED,
            Appointment.slot_id.in_(that_day.scalar_subquery()),
        )
        .values(status=AppointmentStatus.ATTENDED)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)
