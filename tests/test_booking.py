"""bot.booking: publishing and closing slots, booking under contention, cancelling, listing (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import date, datetime, time, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import bot.cli
from bot.booking import bookings, slots
from bot.booking.bookings import Outcome
from bot.booking.slots import Funding, SlotRefused, SlotSpec
from bot.core.chinatime import CHINA
from bot.core.config import Settings, load_settings
from bot.core.db import create_engine, sessionmaker
from bot.dev.demo import CLINICS, seed_demo_slots
from models import Appointment, AppointmentStatus, Clinic, Identity, Slot, Vaccinee
from tests.test_cli import cli_env

NOW = datetime(2026, 12, 1, 2, 0, tzinfo=CHINA)
DAY = date(2026, 12, 8)


@pytest.fixture
async def sessions(settings: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(settings, **({} if settings.database_url.startswith("sqlite") else {"pool_size": 8}))
    yield sessionmaker(engine)
    await engine.dispose()


async def _people(sessions: async_sessionmaker[AsyncSession], count: int) -> tuple[int, int, list[int]]:
    """A clinic, one booking identity and ``count`` files; their ids."""
    async with sessions() as session, session.begin():
        clinic = Clinic(code="T-BK-01", name="测试预防接种门诊", region_code="320602")
        identity = Identity(
            id_number_hash="h-parent", id_number_enc=b"x", name_enc=b"x", verified_at=NOW, verification_method="face"
        )
        session.add_all([clinic, identity])
        files = [
            Vaccinee(registry_ref=f"R{n}", name_enc=b"x", birth_date_enc=b"x", profile_enc=b"x", effective_from=DAY)
            for n in range(count)
        ]
        session.add_all(files)
        await session.flush()
        return clinic.id, identity.id, [file.id for file in files]


async def _slot(sessions: async_sessionmaker[AsyncSession], clinic_id: int, capacity: int, **extra: object) -> int:
    async with sessions() as session, session.begin():
        spec = SlotSpec("HepB", DAY, time(9), time(10), capacity, **extra)  # type: ignore[arg-type]
        return (await slots.publish(session, clinic_id, spec)).id


async def _book(
    sessions: async_sessionmaker[AsyncSession], slot_id: int, file_id: int, identity_id: int, key: str
) -> bookings.Booking:
    async with sessions() as session, session.begin():
        return await bookings.book(session, slot_id, file_id, identity_id, key, NOW)


async def _invariant(sessions: async_sessionmaker[AsyncSession], slot_id: int) -> tuple[int, int]:
    """The slot's counter and its active bookings (they must agree)."""
    async with sessions() as session:
        slot = await session.get(Slot, slot_id)
        assert slot is not None
        return slot.booked, await bookings.count_active(session, slot_id)


async def test_publishing_refuses_what_staff_cannot_mean(sessions: async_sessionmaker[AsyncSession]) -> None:
    clinic_id, _, _ = await _people(sessions, 0)
    bad = [
        SlotSpec("NOPE", DAY, time(9), time(10), 5),
        SlotSpec("HepB", DAY, time(10), time(9), 5),
        SlotSpec("HepB", DAY, time(9), time(10), 0),
        SlotSpec("HepB", DAY, time(9), time(10), 5, funding=Funding.SELF_PAID),
        SlotSpec("HepB", DAY, time(9), time(10), 5, price_fen=100),
    ]
    for spec in bad:
        with pytest.raises(SlotRefused):
            async with sessions() as session, session.begin():
                await slots.publish(session, clinic_id, spec)
    slot_id = await _slot(sessions, clinic_id, 3, funding=Funding.SELF_PAID, price_fen=59800)
    async with sessions() as session:
        slot = await session.get(Slot, slot_id)
        assert slot is not None and slot.price_fen == 59800 and slot.funding == "self_paid"
        assert slot.starts_at == datetime(2026, 12, 8, 9, tzinfo=CHINA)


async def test_book_retry_held_cancel_and_list(sessions: async_sessionmaker[AsyncSession]) -> None:
    clinic_id, identity_id, (child, other) = await _people(sessions, 2)
    first = await _slot(sessions, clinic_id, 2)
    second = await _slot(sessions, clinic_id, 2)
    booked = await _book(sessions, first, child, identity_id, "k1")
    assert booked.outcome == Outcome.BOOKED and not booked.repeated and booked.appointment is not None
    number = bookings.booking_number(booked.appointment)
    assert len(number) == 10 and str(booked.appointment.id) not in number
    async with sessions() as session:
        found = await bookings.by_number(session, f" {number[:5].lower()}-{number[5:]} ")  # as typed
    assert found is not None and found.id == booked.appointment.id
    again = await _book(sessions, first, child, identity_id, "k1")  # a platform retry of the same update
    assert again.outcome == Outcome.BOOKED and again.repeated
    assert again.appointment is not None and again.appointment.id == booked.appointment.id
    held = await _book(sessions, second, child, identity_id, "k2")  # the same vaccine in another slot
    assert held.outcome == Outcome.HELD and held.appointment is not None
    assert held.appointment.id == booked.appointment.id
    assert await _invariant(sessions, first) == (1, 1)
    assert await _invariant(sessions, second) == (0, 0)
    async with sessions() as session:
        listed = await bookings.active_of(session, [child, other])
    assert [appointment.id for appointment, _ in listed] == [booked.appointment.id]
    async with sessions() as session, session.begin():
        assert await bookings.cancel(session, booked.appointment.id, NOW)
    async with sessions() as session, session.begin():
        assert not await bookings.cancel(session, booked.appointment.id, NOW)  # twice gives back one place
    assert await _invariant(sessions, first) == (0, 0)
    rebooked = await _book(sessions, second, child, identity_id, "k3")
    assert rebooked.outcome == Outcome.BOOKED


async def test_not_open_closed_and_gone(sessions: async_sessionmaker[AsyncSession]) -> None:
    clinic_id, identity_id, (child,) = await _people(sessions, 1)
    later = await _slot(sessions, clinic_id, 5, opens_at=NOW + timedelta(hours=6))
    result = await _book(sessions, later, child, identity_id, "a")
    assert result.outcome == Outcome.NOT_OPEN and result.slot is not None
    assert result.slot.opens_at == NOW + timedelta(hours=6)
    open_slot = await _slot(sessions, clinic_id, 5)
    async with sessions() as session, session.begin():
        assert await slots.close(session, clinic_id, DAY, NOW, start=time(9)) == 2
    assert (await _book(sessions, open_slot, child, identity_id, "b")).outcome == Outcome.CLOSED
    assert (await _book(sessions, 987654, child, identity_id, "c")).outcome == Outcome.GONE
    async with sessions() as session:
        assert await slots.upcoming(session, "HepB", NOW) == []


async def test_a_rush_on_the_last_places_never_overbooks(sessions: async_sessionmaker[AsyncSession]) -> None:
    clinic_id, identity_id, files = await _people(sessions, 12)
    slot_id = await _slot(sessions, clinic_id, 3)
    # Everyone at once, and each person taps twice (two keys): 24 attempts for 3 places.
    attempts = [
        _book(sessions, slot_id, file_id, identity_id, f"{file_id}-{tap}") for file_id in files for tap in (1, 2)
    ]
    results = await asyncio.gather(*attempts)
    won = [result for result in results if result.outcome == Outcome.BOOKED]
    assert len({result.appointment.id for result in won if result.appointment}) == 3
    assert {result.outcome for result in results} <= {Outcome.BOOKED, Outcome.FULL, Outcome.HELD}
    assert await _invariant(sessions, slot_id) == (3, 3)
    async with sessions() as session:
        people = (await session.scalars(select(Appointment.vaccinee_id).where(Appointment.slot_id == slot_id))).all()
    assert len(people) == len(set(people)) == 3


async def test_a_cancel_racing_a_booking_keeps_the_count(sessions: async_sessionmaker[AsyncSession]) -> None:
    clinic_id, identity_id, (holder, *others) = await _people(sessions, 6)
    slot_id = await _slot(sessions, clinic_id, 1)
    held = await _book(sessions, slot_id, holder, identity_id, "holder")
    assert held.appointment is not None

    async def cancel() -> bool:
        async with sessions() as session, session.begin():
            return await bookings.cancel(session, held.appointment.id, NOW)  # type: ignore[union-attr]

    results = await asyncio.gather(
        cancel(), cancel(), *[_book(sessions, slot_id, file_id, identity_id, f"o{file_id}") for file_id in others]
    )
    assert sorted(results[:2]) == [False, True]
    won = [
        result for result in results[2:] if isinstance(result, bookings.Booking) and result.outcome == Outcome.BOOKED
    ]
    assert len(won) <= 1
    booked, active = await _invariant(sessions, slot_id)
    assert booked == active == len(won)
    async with sessions() as session:
        status = await session.scalar(select(Appointment.status).where(Appointment.id == held.appointment.id))
    assert status == AppointmentStatus.CANCELLED


def test_slots_from_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key, value in cli_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    assert bot.cli.main(["init"]) == 0
    assert bot.cli.main(["clinic", "add", "--code", "T-CLI-01", "--name", "测试门诊", "--region", "320602"]) == 0
    add = ["clinic", "slot", "add", "--clinic", "T-CLI-01", "--vaccine", "HPV9", "--day", "2030-03-01"]
    window = ["--start", "09:00", "--end", "10:30", "--capacity", "30"]
    assert bot.cli.main([*add, *window, "--price", "1318", "--opens", "2030-02-20T08:00"]) == 0
    assert "30 places" in capsys.readouterr().out
    assert bot.cli.main([*add, *window, "--price", "-1"]) == 1  # refused, nothing added
    assert "nothing was changed" in capsys.readouterr().err
    assert bot.cli.main(["clinic", "slot", "close", "--clinic", "T-CLI-01", "--day", "2030-03-01"]) == 0
    assert "1 slot(s)" in capsys.readouterr().out

    async def stored() -> list[Slot]:
        engine = create_engine(load_settings())
        async with sessionmaker(engine)() as session:
            rows = list((await session.scalars(select(Slot))).all())
        await engine.dispose()
        return rows

    (slot,) = asyncio.run(stored())
    assert (slot.vaccine_code, slot.capacity, slot.price_fen, slot.funding) == ("HPV9", 30, 131800, "self_paid")
    assert slot.opens_at == datetime(2030, 2, 20, 8, tzinfo=CHINA) and slot.closed_at is not None
    assert slot.ends_at == datetime(2030, 3, 1, 10, 30, tzinfo=CHINA)


async def test_reschedule_moves_both_or_neither(sessions: async_sessionmaker[AsyncSession]) -> None:
    clinic_id, identity_id, (child, other) = await _people(sessions, 2)
    first = await _slot(sessions, clinic_id, 2)
    full = await _slot(sessions, clinic_id, 1)
    free = await _slot(sessions, clinic_id, 3)
    booked = await _book(sessions, first, child, identity_id, "k1")
    assert booked.appointment is not None
    assert (await _book(sessions, full, other, identity_id, "o1")).outcome == Outcome.BOOKED

    async def move(slot_id: int, key: str) -> bookings.Booking:
        async with sessions() as session, session.begin():
            return await bookings.reschedule(session, booked.appointment.id, slot_id, identity_id, key, NOW)  # type: ignore[union-attr]

    refused = await move(full, "m1")
    assert refused.outcome == Outcome.FULL
    assert await _invariant(sessions, first) == (1, 1) and await _invariant(sessions, full) == (1, 1)
    moved = await move(free, "m2")
    assert moved.outcome == Outcome.BOOKED and moved.appointment is not None
    again = await move(free, "m2")  # a retry of the move
    assert again.repeated and again.appointment is not None and again.appointment.id == moved.appointment.id
    assert await _invariant(sessions, first) == (0, 0) and await _invariant(sessions, free) == (1, 1)
    assert (await move(free, "m3")).outcome == Outcome.GONE  # the old booking is no longer active


async def test_the_demo_world_gets_slots_once(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as session, session.begin():
        for code, name, region in CLINICS:
            session.add(Clinic(code=code, name=name, region_code=region))
    monday = date(2026, 12, 7)
    assert await seed_demo_slots(sessions, monday) > 0
    assert await seed_demo_slots(sessions, monday) == 0  # once
    async with sessions() as session:
        rows = (await session.scalars(select(Slot))).all()
        clinic_codes = {clinic.id: clinic.code for clinic in (await session.scalars(select(Clinic))).all()}
    assert {clinic_codes[row.clinic_id] for row in rows} == {"NT-CC-01", "WX-LX-01"}
    assert all(row.starts_at.astimezone(CHINA).weekday() < 5 for row in rows)
    hpv = [row for row in rows if row.vaccine_code == "HPV9"]
    assert hpv and all(row.price_fen == 131800 and row.opens_at is not None for row in hpv)
