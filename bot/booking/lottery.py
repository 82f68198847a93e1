"""Lottery slots (摇号): registration with a committed seed, one entry per person, the draw, offers passed down.

A lottery belongs to one slot published in lottery mode; its places are never booked first come. When
registration opens a random seed is drawn, sealed at rest, and its SHA-256 published. A person enters once
(one row per file, and one per entry hash); a retry finds the entry made. Entering takes the lottery row
(a conditional UPDATE on ``status = 'open'``), so the draw, which claims the same row the same way, waits for
entries in flight and sees them all; once drawn, no entry gets in. The draw (``bot.booking.draw``) ranks the
entries; the first places are offered until a deadline, the rest wait in draw order. An offer confirmed
books the place (``bookings.book``: the slot's capacity and the one-active-booking index hold); an offer not
confirmed in time lapses and the place passes to the next on the waiting list. A no-show for a lottery
vaccine keeps a person out of that vaccine's lotteries for a configurable period. Nothing here commits.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime, time, timedelta
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.booking import bookings, draw, slots
from bot.booking.slots import Mode, SlotSpec
from bot.core.chinatime import CHINA, china_date
from bot.core.pii import Vault
from models import (
    Appointment,
    AppointmentStatus,
    Clinic,
    EntryStatus,
    Lottery,
    LotteryEntry,
    LotteryStatus,
    Slot,
    Vaccinee,
)
from models.lottery import SEED_FIELD

# The field name keyed into an entry hash (with the lottery's public id and the person's ID hash).
ENTRY_FIELD = "lottery_entry"


class LotteryRefused(slots.SlotRefused):
    """A lottery staff could not mean (in English, for staff tools)."""


class EntryOutcome(StrEnum):
    """What an attempt to enter came to."""

    ENTERED = "entered"
    ALREADY = "already"  # entered before (a retry, another device, another family member)
    NOT_OPEN = "not_open"  # registration opens later
    CLOSED = "closed"  # registration has closed (or the draw has been made)
    PENALISED = "penalised"  # a no-show for this vaccine within the penalty period
    GONE = "gone"


@dataclasses.dataclass(frozen=True)
class EntryResult:
    """An entry attempt's outcome, with the entry and lottery concerned, and a penalty's end."""

    outcome: EntryOutcome
    lottery: Lottery | None = None
    entry: LotteryEntry | None = None
    penalty_until: datetime | None = None


class ConfirmOutcome(StrEnum):
    """What confirming an offered place came to."""

    CONFIRMED = "confirmed"
    ALREADY = "already"  # confirmed before
    LAPSED = "lapsed"  # the deadline passed: the place went down the waiting list
    HELD = "held"  # the person holds another booking for this vaccine: cancel it first
    NOT_OFFERED = "not_offered"  # waiting, or not this person's entry
    CLOSED = "closed"  # the slot was closed or has started


@dataclasses.dataclass(frozen=True)
class ConfirmResult:
    """A confirmation's outcome and the booking it made (or the one held)."""

    outcome: ConfirmOutcome
    appointment: Appointment | None = None


def public_id_for(slot_id: int) -> str:
    """A lottery's public id (its slot's number: nothing personal)."""
    return f"LT{slot_id:08d}"


def entry_hash(vault: Vault, lottery: Lottery, vaccinee: Vaccinee) -> str:
    """The person's entry hash in this lottery: keyed, so it reveals no ID number and links no two lotteries."""
    person = vaccinee.id_number_hash or vaccinee.birth_cert_hash or f"file:{vaccinee.registry_ref}"
    return vault.digest(ENTRY_FIELD, f"{lottery.public_id}:{person}")


def short_hash(value: str) -> str:
    """The first 8 hex digits: enough to find oneself in the published list."""
    return value[:8]


async def open_lottery(
    session: AsyncSession,
    vault: Vault,
    slot: Slot,
    *,
    opens_at: datetime,
    closes_at: datetime,
    confirm_hours: int,
    seed: str | None = None,
) -> Lottery:
    """Open registration for a lottery slot: draw and seal a seed and commit to it (its SHA-256 is public)."""
    if slot.mode != Mode.LOTTERY:
        raise LotteryRefused("the slot is not a lottery slot")
    if not opens_at < closes_at:
        raise LotteryRefused("registration must close after it opens")
    if closes_at + timedelta(hours=confirm_hours) > slot.starts_at:
        raise LotteryRefused("registration must close, and offers be confirmed, before the slot starts")
    seed = seed or draw.new_seed()
    lottery = Lottery(
        public_id=public_id_for(slot.id),
        slot_id=slot.id,
        clinic_id=slot.clinic_id,
        vaccine_code=slot.vaccine_code,
        places=slot.capacity,
        registration_opens_at=opens_at,
        registration_closes_at=closes_at,
        seed_sha256=draw.commitment(seed),
        seed_enc=vault.seal(SEED_FIELD, seed),
        status=LotteryStatus.OPEN,
        entry_count=0,
        confirm_hours=confirm_hours,
    )
    session.add(lottery)
    await session.flush()
    return lottery


async def of_slot(session: AsyncSession, slot_id: int) -> Lottery | None:
    """The lottery of a slot, if it is a lottery slot."""
    return (await session.scalars(select(Lottery).where(Lottery.slot_id == slot_id))).first()


async def by_public_id(session: AsyncSession, public_id: str) -> Lottery | None:
    """The lottery with this public id."""
    return (await session.scalars(select(Lottery).where(Lottery.public_id == public_id))).first()


async def penalty_until(
    session: AsyncSession, vaccinee_id: int, vaccine_code: str, now: datetime, days: int
) -> datetime | None:
    """When a no-show penalty for this vaccine's lotteries ends for this person (None: no penalty)."""
    if days <= 0:
        return None
    latest = await session.scalar(
        select(func.max(Slot.starts_at))
        .join(Appointment, Appointment.slot_id == Slot.id)
        .where(
            Appointment.vaccinee_id == vaccinee_id,
            Appointment.vaccine_code == vaccine_code,
            Appointment.status == AppointmentStatus.NO_SHOW,
            Slot.mode == Mode.LOTTERY.value,
            Slot.starts_at > now - timedelta(days=days),
        )
    )
    return None if latest is None else latest + timedelta(days=days)


async def _entry_of(session: AsyncSession, lottery_id: int, vaccinee_id: int) -> LotteryEntry | None:
    query = select(LotteryEntry).where(LotteryEntry.lottery_id == lottery_id, LotteryEntry.vaccinee_id == vaccinee_id)
    return (await session.scalars(query.execution_options(populate_existing=True))).first()


async def enter(
    session: AsyncSession,
    vault: Vault,
    lottery_id: int,
    vaccinee_id: int,
    entered_by_identity_id: int,
    now: datetime,
    *,
    penalty_days: int,
) -> EntryResult:
    """Enter a person in a lottery, once: a retry or a second family member finds the entry already made."""
    lottery = await session.get(Lottery, lottery_id, populate_existing=True)
    vaccinee = await session.get(Vaccinee, vaccinee_id)
    if lottery is None or vaccinee is None:
        return EntryResult(EntryOutcome.GONE)
    earlier = await _entry_of(session, lottery_id, vaccinee_id)
    if earlier is not None:
        return EntryResult(EntryOutcome.ALREADY, lottery, earlier)
    if lottery.status != LotteryStatus.OPEN or now >= lottery.registration_closes_at:
        return EntryResult(EntryOutcome.CLOSED, lottery)
    if now < lottery.registration_opens_at:
        return EntryResult(EntryOutcome.NOT_OPEN, lottery)
    until = await penalty_until(session, vaccinee_id, lottery.vaccine_code, now, penalty_days)
    if until is not None:
        return EntryResult(EntryOutcome.PENALISED, lottery, penalty_until=until)
    try:
        async with session.begin_nested():
            # Taking the lottery row orders this entry before the draw (which takes it too) or refuses it.
            taken = await session.execute(
                update(Lottery)
                .where(Lottery.id == lottery_id, Lottery.status == LotteryStatus.OPEN)
                .values(entry_count=Lottery.entry_count + 1)
                .execution_options(synchronize_session=False)
            )
            if not getattr(taken, "rowcount", 0):
                return EntryResult(EntryOutcome.CLOSED, lottery)
            entry = LotteryEntry(
                lottery_id=lottery_id,
                vaccinee_id=vaccinee_id,
                entered_by_identity_id=entered_by_identity_id,
                entry_hash=entry_hash(vault, lottery, vaccinee),
                status=EntryStatus.ENTERED,
                created_at=now,
            )
            session.add(entry)
            await session.flush()
    except IntegrityError:
        # Entered meanwhile by another request (a double tap, two family members at once): the savepoint
        # took the count back with it.
        earlier = await _entry_of(session, lottery_id, vaccinee_id)
        if earlier is None:
            raise
        return EntryResult(EntryOutcome.ALREADY, lottery, earlier)
    return EntryResult(EntryOutcome.ENTERED, lottery, entry)


async def due_for_draw(session: AsyncSession, now: datetime) -> Sequence[int]:
    """Lotteries whose registration has closed and that are not drawn yet."""
    query = select(Lottery.id).where(Lottery.status == LotteryStatus.OPEN, Lottery.registration_closes_at <= now)
    return (await session.scalars(query.order_by(Lottery.id))).all()


async def draw_lottery(session: AsyncSession, vault: Vault, lottery_id: int, now: datetime) -> bool:
    """Draw a lottery whose registration has closed, once (a conditional UPDATE claims it); False if not drawn."""
    lottery = await session.get(Lottery, lottery_id, populate_existing=True)
    if lottery is None:
        return False
    seed = vault.open(SEED_FIELD, lottery.seed_enc)
    if draw.commitment(seed) != lottery.seed_sha256:
        raise RuntimeError(f"lottery {lottery.public_id}: the sealed seed does not match its commitment")
    claimed = await session.execute(
        update(Lottery)
        .where(
            Lottery.id == lottery_id,
            Lottery.status == LotteryStatus.OPEN,
            Lottery.registration_closes_at <= now,
        )
        .values(status=LotteryStatus.DRAWN, seed=seed, drawn_at=now)
        .execution_options(synchronize_session=False)
    )
    if not getattr(claimed, "rowcount", 0):
        return False  # drawn by another process, or registration still open
    rows = (
        await session.execute(
            select(LotteryEntry.entry_hash, LotteryEntry.id).where(LotteryEntry.lottery_id == lottery_id)
        )
    ).all()
    ids = {value: number for value, number in rows}
    ranking = draw.rank(seed, sorted(ids))
    slot = await session.get(Slot, lottery.slot_id, populate_existing=True)
    free = max(0, (slot.capacity - slot.booked) if slot is not None else 0)
    deadline = now + timedelta(hours=lottery.confirm_hours)
    await _write_ranks(session, [(ids[value], number) for number, value in enumerate(ranking, 1)], free, deadline)
    await session.execute(
        update(Lottery)
        .where(Lottery.id == lottery_id)
        .values(entry_count=len(ranking))
        .execution_options(synchronize_session=False)
    )
    return True


async def _write_ranks(session: AsyncSession, ranks: Sequence[tuple[int, int]], free: int, deadline: datetime) -> None:
    """Each entry's rank, and offered (until ``deadline``) within the first ``free`` ranks, else waiting.

    On PostgreSQL one statement over two arrays; elsewhere one prepared UPDATE executed for every entry.
    """
    if not ranks:
        return
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(
            text(
                "UPDATE lottery_entries SET rank = ranked.rank,"
                " status = CASE WHEN ranked.rank <= :free THEN :offered ELSE :waiting END,"
                " deadline = CASE WHEN ranked.rank <= :free THEN CAST(:deadline AS TIMESTAMPTZ) END"
                " FROM unnest(CAST(:ids AS BIGINT[]), CAST(:ranks AS INTEGER[])) AS ranked (id, rank)"
                " WHERE lottery_entries.id = ranked.id"
            ),
            {
                "ids": [entry_id for entry_id, _ in ranks],
                "ranks": [number for _, number in ranks],
                "free": free,
                "offered": EntryStatus.OFFERED.value,
                "waiting": EntryStatus.WAITING.value,
                "deadline": deadline,
            },
        )
        return
    table = cast(Table, LotteryEntry.__table__)
    await session.execute(
        update(table)
        .where(table.c.id == bindparam("entry_id"))
        .values(rank=bindparam("entry_rank"), status=bindparam("entry_status"), deadline=bindparam("entry_deadline")),
        [
            {
                "entry_id": entry_id,
                "entry_rank": number,
                "entry_status": (EntryStatus.OFFERED if number <= free else EntryStatus.WAITING).value,
                "entry_deadline": deadline if number <= free else None,
            }
            for entry_id, number in ranks
        ],
    )


async def confirm(session: AsyncSession, entry_id: int, identity_id: int, now: datetime) -> ConfirmResult:
    """Confirm an offered place before its deadline: the place is booked (once; a retry finds it booked)."""
    entry = await session.get(LotteryEntry, entry_id, populate_existing=True)
    if entry is None:
        return ConfirmResult(ConfirmOutcome.NOT_OFFERED)
    if entry.status == EntryStatus.CONFIRMED:
        appointment = await session.get(Appointment, entry.appointment_id) if entry.appointment_id else None
        return ConfirmResult(ConfirmOutcome.ALREADY, appointment)
    if entry.status == EntryStatus.LAPSED or (
        entry.status == EntryStatus.OFFERED and entry.deadline is not None and entry.deadline <= now
    ):
        return ConfirmResult(ConfirmOutcome.LAPSED)
    if entry.status != EntryStatus.OFFERED:
        return ConfirmResult(ConfirmOutcome.NOT_OFFERED)
    lottery = await session.get(Lottery, entry.lottery_id)
    assert lottery is not None
    step = await session.begin_nested()
    try:
        claimed = await session.execute(
            update(LotteryEntry)
            .where(LotteryEntry.id == entry_id, LotteryEntry.status == EntryStatus.OFFERED, LotteryEntry.deadline > now)
            .values(status=EntryStatus.CONFIRMED)
            .execution_options(synchronize_session=False)
        )
        if not getattr(claimed, "rowcount", 0):
            await step.rollback()
            return await confirm(session, entry_id, identity_id, now)  # confirmed or lapsed meanwhile
        booking = await bookings.book(
            session, lottery.slot_id, entry.vaccinee_id, identity_id, f"lottery:{entry_id}", now, by_lottery=True
        )
    except BaseException:
        await step.rollback()
        raise
    if booking.outcome != bookings.Outcome.BOOKED or booking.appointment is None:
        await step.rollback()
        if booking.outcome == bookings.Outcome.HELD:
            return ConfirmResult(ConfirmOutcome.HELD, booking.appointment)
        return ConfirmResult(ConfirmOutcome.CLOSED)
    await session.execute(
        update(LotteryEntry)
        .where(LotteryEntry.id == entry_id)
        .values(appointment_id=booking.appointment.id)
        .execution_options(synchronize_session=False)
    )
    await step.commit()
    await session.refresh(entry)
    return ConfirmResult(ConfirmOutcome.CONFIRMED, booking.appointment)


async def drawn_with_offers(session: AsyncSession) -> Sequence[int]:
    """Drawn lotteries that still have offers open or people waiting (the pass-down job's work list)."""
    query = (
        select(LotteryEntry.lottery_id)
        .where(LotteryEntry.status.in_((EntryStatus.OFFERED, EntryStatus.WAITING)))
        .distinct()
        .order_by(LotteryEntry.lottery_id)
    )
    return (await session.scalars(query)).all()


async def pass_down(session: AsyncSession, lottery_id: int, now: datetime) -> list[int]:
    """Lapse the offers past their deadline and offer their places down the waiting list in draw order.

    Returns the entries newly offered. The lottery row is taken first, so two processes pass down in turn.
    """
    taken = await session.execute(
        update(Lottery)
        .where(Lottery.id == lottery_id, Lottery.status == LotteryStatus.DRAWN)
        .values(status=LotteryStatus.DRAWN)
        .execution_options(synchronize_session=False)
    )
    if not getattr(taken, "rowcount", 0):
        return []
    lottery = await session.get(Lottery, lottery_id, populate_existing=True)
    assert lottery is not None
    slot = await session.get(Slot, lottery.slot_id, populate_existing=True)
    if slot is None or slot.closed_at is not None or slot.starts_at <= now:
        return []
    await session.execute(
        update(LotteryEntry)
        .where(
            LotteryEntry.lottery_id == lottery_id,
            LotteryEntry.status == EntryStatus.OFFERED,
            LotteryEntry.deadline <= now,
        )
        .values(status=EntryStatus.LAPSED)
        .execution_options(synchronize_session=False)
    )
    outstanding = await session.scalar(
        select(func.count()).where(LotteryEntry.lottery_id == lottery_id, LotteryEntry.status == EntryStatus.OFFERED)
    )
    free = slot.capacity - slot.booked - int(outstanding or 0)
    if free <= 0:
        return []
    chosen = (
        await session.scalars(
            select(LotteryEntry.id)
            .where(LotteryEntry.lottery_id == lottery_id, LotteryEntry.status == EntryStatus.WAITING)
            .order_by(LotteryEntry.rank)
            .limit(free)
        )
    ).all()
    if chosen:
        await session.execute(
            update(LotteryEntry)
            .where(LotteryEntry.id.in_(chosen), LotteryEntry.status == EntryStatus.WAITING)
            .values(status=EntryStatus.OFFERED, deadline=now + timedelta(hours=lottery.confirm_hours))
            .execution_options(synchronize_session=False)
        )
    return list(chosen)


def day_start(now: datetime) -> datetime:
    """The start of today, China time, as an instant."""
    return datetime.combine(china_date(now), time(0), tzinfo=CHINA)


async def mark_no_shows(session: AsyncSession, now: datetime) -> int:
    """Bookings still booked for a slot of a day that has ended (China time) become no-shows, once; how many."""
    ended = select(Slot.id).where(Slot.starts_at < day_start(now))
    result = await session.execute(
        update(Appointment)
        .where(Appointment.status == AppointmentStatus.BOOKED, Appointment.slot_id.in_(ended.scalar_subquery()))
        .values(status=AppointmentStatus.NO_SHOW)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def counts(session: AsyncSession, lottery_id: int) -> dict[str, int]:
    """A lottery's entries by status (for staff: numbers only)."""
    rows = await session.execute(
        select(LotteryEntry.status, func.count())
        .where(LotteryEntry.lottery_id == lottery_id)
        .group_by(LotteryEntry.status)
    )
    found = {str(status): int(number) for status, number in rows.all()}
    found["entries"] = sum(found.values())
    return found


async def published_record(session: AsyncSession, lottery_id: int) -> dict[str, Any] | None:
    """The lottery's published record (``bot.booking.draw.published``): the seed and ranking once drawn."""
    lottery = await session.get(Lottery, lottery_id)
    if lottery is None:
        return None
    clinic = await session.get(Clinic, lottery.clinic_id)
    rows = (
        await session.execute(
            select(LotteryEntry.entry_hash, LotteryEntry.rank).where(LotteryEntry.lottery_id == lottery_id)
        )
    ).all()
    drawn = lottery.status == LotteryStatus.DRAWN
    ranking = [value for value, _ in sorted(rows, key=lambda row: row[1] or 0)] if drawn else None
    return draw.published(
        lottery=lottery.public_id,
        vaccine=lottery.vaccine_code,
        clinic=clinic.code if clinic is not None else "",
        places=lottery.places,
        registration_opens_at=lottery.registration_opens_at.astimezone(CHINA).isoformat(),
        registration_closes_at=lottery.registration_closes_at.astimezone(CHINA).isoformat(),
        seed_sha256=lottery.seed_sha256,
        entries=sorted(value for value, _ in rows),
        seed=lottery.seed if drawn else None,
        ranking=ranking,
    )


async def publish_lottery(
    session: AsyncSession,
    vault: Vault,
    clinic_id: int,
    spec: SlotSpec,
    *,
    opens_at: datetime,
    closes_at: datetime,
    confirm_hours: int,
) -> tuple[Slot, Lottery]:
    """Publish a lottery-mode slot and open its registration (the seed committed) in one go."""
    if spec.opens_at is not None:
        raise LotteryRefused("a lottery slot has a registration window, not a booking opening time")
    slot = await slots.publish(session, clinic_id, dataclasses.replace(spec, mode=Mode.LOTTERY))
    lottery = await open_lottery(
        session, vault, slot, opens_at=opens_at, closes_at=closes_at, confirm_hours=confirm_hours
    )
    return slot, lottery


def registration_from_fields(*, opens: str, closes: str, now: datetime) -> tuple[datetime, datetime]:
    """A registration window as staff typed it (China time, ``YYYY-MM-DDTHH:MM``; opens empty: now)."""
    try:
        closes_at = datetime.fromisoformat(closes).replace(tzinfo=CHINA)
        opens_at = datetime.fromisoformat(opens).replace(tzinfo=CHINA) if opens else now
    except (TypeError, ValueError) as exc:
        raise LotteryRefused(str(exc)) from None
    if closes_at <= now:
        raise LotteryRefused("registration must close in the future")
    return opens_at, closes_at


async def of_slots(session: AsyncSession, slot_ids: Sequence[int]) -> dict[int, Lottery]:
    """The lotteries of these slots, by slot id."""
    if not slot_ids:
        return {}
    found = await session.scalars(select(Lottery).where(Lottery.slot_id.in_(sorted(set(slot_ids)))))
    return {item.slot_id: item for item in found}


async def view(session: AsyncSession, lottery: Lottery) -> dict[str, Any]:
    """A lottery as staff and clinic systems read it: its window, commitment, status and counts (no one's data)."""
    numbers = await counts(session, lottery.id)
    return {
        "lottery_id": lottery.public_id,
        "status": lottery.status.value,
        "places": lottery.places,
        "registration_opens_at": lottery.registration_opens_at.isoformat(),
        "registration_closes_at": lottery.registration_closes_at.isoformat(),
        "seed_sha256": lottery.seed_sha256,
        "drawn_at": lottery.drawn_at.isoformat() if lottery.drawn_at else None,
        "entries": numbers.get("entries", 0),
        "offered": numbers.get(EntryStatus.OFFERED.value, 0),
        "confirmed": numbers.get(EntryStatus.CONFIRMED.value, 0),
        "waiting": numbers.get(EntryStatus.WAITING.value, 0),
        "lapsed": numbers.get(EntryStatus.LAPSED.value, 0),
    }
