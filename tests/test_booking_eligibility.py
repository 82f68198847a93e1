"""What a person is offered (programme doses first, then self-paid ones they may have), and moving a booking
to another clinic (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date, datetime, time

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.booking import bookings, slots
from bot.booking.bookings import Outcome
from bot.booking.slots import Funding, SlotSpec
from bot.core.chinatime import CHINA
from bot.core.config import Settings
from bot.core.db import create_engine, sessionmaker
from bot.immunization.forecast import GivenDose
from models import Clinic, Identity, Slot, Vaccinee

NOW = datetime(2026, 12, 1, 10, 0, tzinfo=CHINA)
DAY = date(2026, 12, 8)


@pytest.fixture
async def sessions(settings: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(settings)
    yield sessionmaker(engine)
    await engine.dispose()


async def _world(sessions: async_sessionmaker[AsyncSession]) -> tuple[int, int, int, int]:
    """Two clinics, one booking identity and one file; their ids."""
    async with sessions() as session, session.begin():
        here = Clinic(code="T-EL-01", name="测试甲门诊", region_code="320602")
        there = Clinic(code="T-EL-02", name="测试乙门诊", region_code="320213")
        identity = Identity(
            id_number_hash="h-el", id_number_enc=b"x", name_enc=b"x", verified_at=NOW, verification_method="face"
        )
        file = Vaccinee(registry_ref="R-EL", name_enc=b"x", birth_date_enc=b"x", profile_enc=b"x", effective_from=DAY)
        session.add_all([here, there, identity, file])
        await session.flush()
        return here.id, there.id, identity.id, file.id


async def _slot(
    sessions: async_sessionmaker[AsyncSession], clinic_id: int, code: str, day: date = DAY, capacity: int = 3
) -> int:
    paid = {"funding": Funding.SELF_PAID, "price_fen": 131800} if code.startswith("HPV9") else {}
    async with sessions() as session, session.begin():
        spec = SlotSpec(code, day, time(9), time(10), capacity, **paid)  # type: ignore[arg-type]
        return (await slots.publish(session, clinic_id, spec)).id


async def _offers(
    sessions: async_sessionmaker[AsyncSession], birth: date, sex: str, given: list[GivenDose] | None = None
) -> list[slots.Offer]:
    async with sessions() as session:
        return await slots.offers(session, birth, sex, given or [], NOW)


async def test_self_paid_vaccines_come_after_programme_doses_and_only_for_who_may_have_them(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    here, there, _, _ = await _world(sessions)
    await _slot(sessions, here, "HepB")
    await _slot(sessions, there, "HPV9")
    await _slot(sessions, there, "HPV9", date(2026, 12, 12))
    await _slot(sessions, there, "EV71")  # nobody here is the age for it
    girl = date(2016, 3, 1)  # ten, her hepatitis B second dose missing
    offered = await _offers(sessions, girl, "F", [GivenDose("HepB", 1, girl)])
    assert [(offer.vaccine_code, offer.status) for offer in offered] == [("HepB", "overdue"), ("HPV9", "self_paid")]
    hpv = offered[1]
    assert hpv.self_paid and hpv.price_fen == 131800 and hpv.dose_number == 1
    assert [offer.vaccine_code for offer in await _offers(sessions, girl, "M", [GivenDose("HepB", 1, girl)])] == [
        "HepB"
    ]
    eight = await _offers(sessions, date(2018, 3, 1), "F")
    assert "HPV9" not in {offer.vaccine_code for offer in eight}

    # A woman whose 46th birthday falls between the two HPV9 days: only the earlier day is hers.
    woman = await _offers(sessions, date(1980, 12, 10), "F")
    (hpv,) = [offer for offer in woman if offer.vaccine_code == "HPV9"]
    assert hpv.until == date(2026, 12, 10)
    async with sessions() as session:
        upcoming = await slots.upcoming(session, "HPV9", NOW)
    assert [slots.offered(hpv, slot) for slot in upcoming] == [True, False]

    # Dose 2 a month after dose 1: a dose given a week ago leaves no HPV9 slot in reach, so none is offered.
    recent = [GivenDose("HPV9", 1, date(2026, 11, 24))]
    assert "HPV9" not in {offer.vaccine_code for offer in await _offers(sessions, girl, "F", recent)}


async def test_a_booking_moves_to_another_clinic_or_stays_where_it_was(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    here, there, identity_id, file_id = await _world(sessions)
    first = await _slot(sessions, here, "HepB")
    full = await _slot(sessions, there, "HepB", capacity=1)
    free = await _slot(sessions, there, "HepB", date(2026, 12, 9))
    async with sessions() as session, session.begin():
        made = await bookings.book(session, first, file_id, identity_id, "el-1", NOW)
        assert made.outcome == Outcome.BOOKED and made.appointment is not None
        appointment_id = made.appointment.id
        other_person = Vaccinee(
            registry_ref="R-EL2", name_enc=b"x", birth_date_enc=b"x", profile_enc=b"x", effective_from=DAY
        )
        session.add(other_person)
        await session.flush()
        taken = await bookings.book(session, full, other_person.id, identity_id, "el-2", NOW)
        assert taken.outcome == Outcome.BOOKED

    async def move(slot_id: int, key: str) -> bookings.Booking:
        async with sessions() as session, session.begin():
            return await bookings.reschedule(session, appointment_id, slot_id, identity_id, key, NOW)

    assert (await move(full, "el-m1")).outcome == Outcome.FULL  # gone at the other clinic: the old place stays
    async with sessions() as session:
        held = await bookings.active_of(session, [file_id])
        assert [(row.id, slot.clinic_id) for row, slot in held] == [(appointment_id, here)]
    moved = await move(free, "el-m2")
    assert moved.outcome == Outcome.BOOKED and moved.slot is not None and moved.slot.clinic_id == there
    async with sessions() as session:
        held = await bookings.active_of(session, [file_id])
        counts = {slot_id: (await session.get(Slot, slot_id)) for slot_id in (first, free)}
        assert [slot.id for _, slot in held] == [free]
        assert {slot_id: slot.booked for slot_id, slot in counts.items() if slot is not None} == {first: 0, free: 1}
        assert await bookings.count_active(session, first) == 0 and await bookings.count_active(session, free) == 1
