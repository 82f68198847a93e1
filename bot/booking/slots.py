"""Publishing slots, closing a day or a window, and finding the slots a person could book."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from enum import StrEnum

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.core.chinatime import CHINA, china_date
from bot.immunization.eligibility import self_paid_now
from bot.immunization.forecast import GivenDose, forecast_next_doses
from bot.immunization.vaccines import find_vaccine
from models import Clinic, Slot


class Mode(StrEnum):
    """How places are given: first come, first served, or drawn by lottery (``bot.booking.lottery``)."""

    FIRST_COME = "first_come"
    LOTTERY = "lottery"


class Funding(StrEnum):
    """Who pays: the national programme (free) or the family (the price is shown)."""

    PROGRAMME = "programme"
    SELF_PAID = "self_paid"


class SlotRefused(ValueError):
    """A slot that cannot be published as asked; the message says why (in English, for staff tools)."""


@dataclasses.dataclass(frozen=True)
class SlotSpec:
    """What staff publish: one vaccine's window on one day, its capacity, when booking opens, and who pays."""

    vaccine_code: str
    day: date
    start: time
    end: time
    capacity: int
    opens_at: datetime | None = None
    mode: Mode = Mode.FIRST_COME
    funding: Funding = Funding.PROGRAMME
    price_fen: int | None = None

    def window(self) -> tuple[datetime, datetime]:
        """The window as instants (the day and times are China time)."""
        return (
            datetime.combine(self.day, self.start, tzinfo=CHINA),
            datetime.combine(self.day, self.end, tzinfo=CHINA),
        )


def check(spec: SlotSpec) -> None:
    """Refuse a slot staff could not mean: unknown vaccine, empty window, no places, a price on a free dose."""
    if find_vaccine(spec.vaccine_code) is None:
        raise SlotRefused(f"unknown vaccine code {spec.vaccine_code!r}")
    if spec.end <= spec.start:
        raise SlotRefused("the window must end after it starts")
    if not 1 <= spec.capacity <= 10_000:
        raise SlotRefused("capacity must be between 1 and 10000")
    if spec.mode == Mode.LOTTERY and spec.opens_at is not None:
        raise SlotRefused("a lottery slot's places are drawn: it has a registration window, not an opening time")
    if spec.funding == Funding.SELF_PAID and (spec.price_fen is None or spec.price_fen <= 0):
        raise SlotRefused("a self-paid slot needs its price")
    if spec.funding == Funding.PROGRAMME and spec.price_fen:
        raise SlotRefused("a programme dose is free: no price")


async def publish(session: AsyncSession, clinic_id: int, spec: SlotSpec) -> Slot:
    """Add one slot for a clinic (checked first); returns it flushed."""
    check(spec)
    starts_at, ends_at = spec.window()
    slot = Slot(
        clinic_id=clinic_id,
        vaccine_code=spec.vaccine_code,
        starts_at=starts_at,
        ends_at=ends_at,
        capacity=spec.capacity,
        booked=0,
        mode=spec.mode.value,
        opens_at=spec.opens_at,
        funding=spec.funding.value,
        price_fen=spec.price_fen,
    )
    session.add(slot)
    await session.flush()
    return slot


async def close(session: AsyncSession, clinic_id: int, day: date, now: datetime, *, start: time | None = None) -> int:
    """Close a clinic's day (or the one window starting at ``start``) to new bookings; how many slots closed.

    Bookings already made stay: a closure notice (``bot.notices``) cancels or moves them and tells the families.
    """
    first = datetime.combine(day, start or time(0), tzinfo=CHINA)
    last = first + timedelta(seconds=1) if start is not None else first + timedelta(days=1)
    result = await session.execute(
        update(Slot)
        .where(
            Slot.clinic_id == clinic_id,
            Slot.starts_at >= first,
            Slot.starts_at < last,
            Slot.closed_at.is_(None),
        )
        .values(closed_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def is_bookable(slot: Slot, now: datetime) -> bool:
    """Open now: not closed, not started, booking has opened, and a place is left."""
    return (
        slot.closed_at is None
        and slot.starts_at > now
        and (slot.opens_at is None or slot.opens_at <= now)
        and slot.booked < slot.capacity
    )


async def upcoming(
    session: AsyncSession, vaccine_code: str, now: datetime, *, clinic_id: int | None = None
) -> Sequence[Slot]:
    """One vaccine's slots not closed and not yet started (open or not yet open), by clinic and time."""
    query = select(Slot).where(Slot.vaccine_code == vaccine_code, Slot.closed_at.is_(None), Slot.starts_at > now)
    if clinic_id is not None:
        query = query.where(Slot.clinic_id == clinic_id)
    return (await session.scalars(query.order_by(Slot.clinic_id, Slot.starts_at, Slot.id))).all()


async def clinic_names(session: AsyncSession, clinic_ids: Sequence[int]) -> dict[int, str]:
    """The names of these clinics."""
    if not clinic_ids:
        return {}
    rows = await session.execute(select(Clinic.id, Clinic.name).where(Clinic.id.in_(sorted(set(clinic_ids)))))
    return {clinic_id: name for clinic_id, name in rows}


async def clinic_by_code(session: AsyncSession, code: str) -> Clinic | None:
    """The clinic with this registry code."""
    return (await session.scalars(select(Clinic).where(Clinic.code == code))).first()


def spec_from_fields(
    *, vaccine: str, day: str, start: str, end: str, capacity: str | int, opens: str = "", price_yuan: str = ""
) -> SlotSpec:
    """A slot as staff typed it (a form or a JSON body): dates and times China time, the price in yuan.

    Raises :class:`SlotRefused` (a ValueError) for anything that is not a slot staff could mean.
    """
    try:
        price = round(float(price_yuan) * 100) if price_yuan else None
        spec = SlotSpec(
            vaccine_code=vaccine,
            day=date.fromisoformat(day),
            start=time.fromisoformat(start),
            end=time.fromisoformat(end),
            capacity=int(capacity),
            opens_at=datetime.fromisoformat(opens).replace(tzinfo=CHINA) if opens else None,
            funding=Funding.SELF_PAID if price_yuan else Funding.PROGRAMME,
            price_fen=price,
        )
    except (TypeError, ValueError) as exc:
        raise SlotRefused(str(exc)) from None
    check(spec)
    return spec


def view(slot: Slot) -> dict[str, object]:
    """A slot as the clinic's systems read it (no one's data: counts only)."""
    return {
        "slot_id": slot.id,
        "vaccine_code": slot.vaccine_code,
        "starts_at": slot.starts_at.isoformat(),
        "ends_at": slot.ends_at.isoformat(),
        "capacity": slot.capacity,
        "booked": slot.booked,
        "opens_at": slot.opens_at.isoformat() if slot.opens_at else None,
        "mode": slot.mode,
        "funding": slot.funding,
        "price_fen": slot.price_fen,
        "closed": slot.closed_at is not None,
    }


async def coming(session: AsyncSession, clinic_id: int, now: datetime, days: int) -> Sequence[Slot]:
    """A clinic's slots not yet over and starting within ``days`` days, by time."""
    query = (
        select(Slot)
        .where(Slot.clinic_id == clinic_id, Slot.ends_at > now, Slot.starts_at < now + timedelta(days=days))
        .order_by(Slot.starts_at, Slot.vaccine_code, Slot.id)
    )
    return (await session.scalars(query)).all()


@dataclasses.dataclass(frozen=True)
class Offer:
    """A vaccine a person may book: the dose expected next, the first day it may be given, and the last.

    ``status`` is the forecast's (overdue, due, upcoming) for a programme dose and ``self_paid`` for one the
    family pays for (``price_fen`` is then the lowest price among its slots); ``until`` (exclusive) is the
    day the person is too old for it, when the vaccine has an age limit.
    """

    vaccine_code: str
    dose_number: int
    earliest: date
    status: str
    until: date | None = None
    price_fen: int | None = None

    @property
    def self_paid(self) -> bool:
        """True for a self-paid vaccine (shown with 自费 and its price)."""
        return self.status == SELF_PAID_STATUS


SELF_PAID_STATUS = "self_paid"


def offered(offer: Offer, slot: Slot) -> bool:
    """Whether this slot may be booked for this offer: the same vaccine, on a day the person may have it."""
    day = china_date(slot.starts_at)
    return (
        slot.vaccine_code == offer.vaccine_code and day >= offer.earliest and (offer.until is None or day < offer.until)
    )


async def offers(
    session: AsyncSession, birth: date, sex: str, given: Sequence[GivenDose], now: datetime
) -> list[Offer]:
    """What a person may book, each only if a slot exists for it (open now or opening later).

    Due and late programme doses first, then those within a month, then self-paid vaccines the person may
    have today by age, sex and spacing (``bot.immunization.eligibility``).
    """
    today = china_date(now)
    order = {"overdue": 0, "due": 1, "upcoming": 2}
    forecasts = forecast_next_doses(birth, sex, given, today)
    soon = [item for item in forecasts if item.status != "upcoming" or item.earliest <= today + timedelta(days=31)]
    soon.sort(key=lambda item: (order.get(item.status, 3), item.earliest))
    candidates = [Offer(item.vaccine_code, item.dose_number, item.earliest, item.status) for item in soon]
    candidates += [
        Offer(item.vaccine_code, item.dose_number, item.earliest, SELF_PAID_STATUS, item.until)
        for item in self_paid_now(birth, sex, given, today)
    ]
    found: list[Offer] = []
    for offer in candidates:
        if any(each.vaccine_code == offer.vaccine_code for each in found):
            continue
        usable = [slot for slot in await upcoming(session, offer.vaccine_code, now) if offered(offer, slot)]
        if not usable:
            continue
        if offer.self_paid:
            prices = [slot.price_fen for slot in usable if slot.price_fen]
            offer = dataclasses.replace(offer, price_fen=min(prices) if prices else None)
        found.append(offer)
    return found
