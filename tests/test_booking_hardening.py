"""The booking core under a rush and the details around it: random booking numbers, a full slot answered
without its row lock, one message for 名额已满, a double tap in chat, audit rows, the reminder's template."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, time, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy import Connection, Insert, MetaData, Table, event, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from bot.booking import bookings
from bot.booking.bookings import Outcome
from bot.core.chinatime import CHINA, china_date
from bot.core.config import Settings
from bot.core.db import alembic_config, create_engine, sessionmaker
from bot.dev.demo import CHILD
from bot.dev.fakes.wechat import WeChatClientSim
from bot.reminders.appointments import send_appointment_reminders
from bot.web.appkeys import SERVICES, SESSIONS
from models import Appointment, AuditEntry, OutboxKind, Slot, utcnow
from models.booking_numbers import ALPHABET
from tests.channels import Channel
from tests.desk_kit import desk_world
from tests.helpers import Client, outbox_rows, post
from tests.test_booking import NOW, _book, _invariant, _people, _slot
from tests.test_booking_chat import _appointments, _booked, _publish
from tests.world import registry_file


@pytest.fixture
async def sessions(settings: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(settings)
    yield sessionmaker(engine)
    await engine.dispose()


async def test_booking_numbers_are_random_and_a_clash_is_drawn_again(
    sessions: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    clinic_id, identity_id, files = await _people(sessions, 3)
    slot_id = await _slot(sessions, clinic_id, 5)
    first = await _book(sessions, slot_id, files[0], identity_id, "n1")
    assert first.appointment is not None
    number = first.appointment.number
    assert len(number) == 10 and set(number) <= set(ALPHABET)
    drawn: Iterator[str] = iter([number, number, "ZZZZZ22222"])  # the first two clash with the booking above
    monkeypatch.setattr(bookings, "new_booking_number", lambda: next(drawn))
    second = await _book(sessions, slot_id, files[1], identity_id, "n2")
    assert second.outcome == Outcome.BOOKED and second.appointment is not None
    assert second.appointment.number == "ZZZZZ22222"
    assert await _invariant(sessions, slot_id) == (2, 2)  # the clashing attempts gave their places back


async def test_a_tap_committed_after_its_key_was_read_is_the_same_booking(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    clinic_id, identity_id, (child,) = await _people(sessions, 1)
    slot_id = await _slot(sessions, clinic_id, 5)
    first = await _book(sessions, slot_id, child, identity_id, "tap")
    assert first.appointment is not None
    # Another transaction read the key before this one committed: it finds the booking as "held" by the key.
    async with sessions() as session:
        seen = await bookings._known(session, "tap", child, "HepB", looked_up=True, earlier=None)
        other = await bookings._known(session, "another-tap", child, "HepB")
    assert seen is not None and (seen.outcome, seen.repeated) == (Outcome.BOOKED, True)
    assert seen.appointment is not None and seen.appointment.id == first.appointment.id
    assert other is not None and other.outcome == Outcome.HELD  # a different confirmation: already booked


async def test_a_full_slot_is_answered_without_an_update(sessions: async_sessionmaker[AsyncSession]) -> None:
    clinic_id, identity_id, files = await _people(sessions, 3)
    slot_id = await _slot(sessions, clinic_id, 1)
    assert (await _book(sessions, slot_id, files[0], identity_id, "w")).outcome == Outcome.BOOKED
    statements: list[str] = []

    def note(_conn: Connection, _cursor: object, statement: str, *_: object) -> None:
        statements.append(statement.split()[0].upper())

    async with sessions() as session, session.begin():
        sync_engine = session.bind.sync_engine
        event.listen(sync_engine, "before_cursor_execute", note)
        try:
            result = await bookings.book(session, slot_id, files[1], identity_id, "late", NOW)
        finally:
            event.remove(sync_engine, "before_cursor_execute", note)
    assert result.outcome == Outcome.FULL
    # Read, not written: no UPDATE queues on the row lock of whoever is booking, no savepoint is opened.
    assert "UPDATE" not in statements and "SAVEPOINT" not in statements, statements
    assert await _invariant(sessions, slot_id) == (1, 1)


def _filled(table: Table, **values: object) -> Insert:
    """An INSERT of ``values``, any other required column given a placeholder of its type (tables as they were)."""
    placeholders: list[tuple[type, object]] = [
        (sa.Boolean, False),
        (sa.Integer, 0),
        (sa.DateTime, NOW),
        (sa.Date, NOW.date()),
        (sa.LargeBinary, b"x"),
        (sa.JSON, {}),
        (sa.String, "x"),
    ]
    row = dict(values)
    for column in table.columns:
        if column.name in row or column.nullable or column.primary_key or column.server_default is not None:
            continue
        row[column.name] = next(value for kind, value in placeholders if isinstance(column.type, kind))
    return insert(table).values(row).returning(table.c.id)


def _rows_at_0011(sync: Connection) -> None:
    """Down to the schema before booking numbers, and three bookings made then."""
    command.downgrade(alembic_config(sync), "0011")
    tables = MetaData()
    tables.reflect(sync, only=["clinics", "identities", "vaccinees", "slots", "appointments"])
    table = tables.tables
    clinic_id = sync.execute(_filled(table["clinics"], code="M-1")).scalar_one()
    identity_id = sync.execute(_filled(table["identities"], id_number_hash="m")).scalar_one()
    slot_id = sync.execute(
        _filled(table["slots"], clinic_id=clinic_id, starts_at=NOW, ends_at=NOW, capacity=5, booked=3)
    ).scalar_one()
    for n in range(3):
        file_id = sync.execute(_filled(table["vaccinees"], registry_ref=f"M{n}")).scalar_one()
        values = {"vaccinee_id": file_id, "booked_by_identity_id": identity_id, "status": "booked"}
        sync.execute(_filled(table["appointments"], slot_id=slot_id, idempotency_key=f"m{n}", **values))


async def test_the_migration_gives_existing_bookings_distinct_numbers(database_url: str) -> None:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_rows_at_0011)
            await connection.commit()
            await connection.run_sync(lambda sync: command.upgrade(alembic_config(sync), "head"))
            await connection.commit()
            numbers = (await connection.execute(select(Appointment.number))).scalars().all()
    finally:
        await engine.dispose()
    assert len(numbers) == len(set(numbers)) == 3
    assert all(len(number) == 10 and set(number) <= set(ALPHABET) for number in numbers)


@pytest.mark.parametrize("platform", ["wechat"])
async def test_a_double_tap_on_confirm_books_once_and_is_audited(
    app_client: Client, wechat: WeChatClientSim, platform: str
) -> None:
    client = app_client
    world = await desk_world(client, platform, wechat.app_id)
    slot_id = await _publish(client, world.clinic_id, 2)
    user = world.parent_user
    for answer in ("预约接种", "1", "1", "1", "1"):
        await post(client, wechat.sign(wechat.text(user, answer)))
    # Two taps: two messages with their own ids, arriving together (not a platform retry of one).
    taps = [wechat.sign(wechat.text(user, "确认", msg_id=991001 + tap)) for tap in range(2)]
    await asyncio.gather(*(post(client, tap) for tap in taps))
    (appointment,) = await _appointments(client, world)
    assert await _booked(client, slot_id) == 1
    async with client.app[SESSIONS]() as session:
        rows = (await session.scalars(select(AuditEntry).where(AuditEntry.action.like("booking%")))).all()
    made = [row for row in rows if row.action == "booking_made"]
    assert len(made) == 1 and made[0].vaccinee_id == world.vaccinee_id
    assert made[0].actor_ref.startswith(f"identity:{world.parent_id}/account:")
    assert made[0].detail["booking"] == appointment.id and made[0].detail["via"] == "chat"
    assert made[0].platform == platform


async def test_cancel_and_a_full_slot_in_chat_are_audited_and_full_is_one_message(
    app_client: Client, channel: Channel
) -> None:
    client = app_client
    world = await desk_world(client, channel.platform, channel.app_id)
    last = await _publish(client, world.clinic_id, 2, capacity=1)
    await _publish(client, world.clinic_id, 3)
    user = world.parent_user
    for answer in ("预约接种", "1", "1", "1", "1"):
        await channel.say(user, answer)
    stranger = await registry_file(client, ref="H-OTHER", name="王小明", id_number=None, birth=CHILD.birth)
    async with client.app[SESSIONS]() as session, session.begin():
        taken = await bookings.book(session, last, stranger, world.grandma_id, "elsewhere", utcnow())
        assert taken.outcome == Outcome.BOOKED
    answer = await channel.do(user, ("text", "确认"))
    assert len(answer) == 1, answer  # why, and the other days, in one message
    assert "刚刚约满" in answer[0] and "余1个" not in answer[0] and "余5个" in answer[0]
    await channel.say(user, "2")  # the other day
    await channel.say(user, "1")
    assert "预约成功" in await channel.say(user, "确认")
    await channel.say(user, "我的预约")
    await channel.say(user, "1")
    assert "已为" in await channel.say(user, "确认取消")
    async with client.app[SESSIONS]() as session:
        rows = (await session.scalars(select(AuditEntry).order_by(AuditEntry.id))).all()
    actions = [(row.action, row.reason) for row in rows if row.action.startswith("booking")]
    assert actions == [
        ("booking_refused", "full"),
        ("booking_made", ""),
        ("bookings_view", ""),
        ("booking_cancelled", ""),
    ]
    assert all(row.vaccinee_id == world.vaccinee_id for row in rows if row.action.startswith("booking"))


@pytest.mark.parametrize("own_template", ["", "booking-tpl-1"])
async def test_the_booking_reminder_has_its_own_template_and_says_what_to_bring(
    serve: Any, make_settings: Any, wechat: WeChatClientSim, own_template: str
) -> None:
    client = await serve(make_settings(wechat_booking_template=own_template))
    world = await desk_world(client, "wechat", wechat.app_id)
    services = client.app[SERVICES]
    slot_id = await _publish(client, world.clinic_id, 1)
    async with client.app[SESSIONS]() as session, session.begin():
        made = await bookings.book(session, slot_id, world.vaccinee_id, world.parent_id, "tpl", utcnow())
        assert made.outcome == Outcome.BOOKED
    morning = datetime.combine(china_date(utcnow()), time(10), tzinfo=CHINA)
    args = (client.app[SESSIONS], services.vault, services.catalogue, services.settings)
    assert await send_appointment_reminders(*args, morning) >= 1
    (row,) = [row for row in await outbox_rows(client, recipient=world.parent_user) if row.kind == OutboxKind.TEMPLATE]
    expected = own_template or services.settings.wechat_reminder_template
    assert row.payload["template_id"] == expected
    shown = json.dumps(row.payload, ensure_ascii=False)
    assert "身份证" in shown and "预防接种证" in shown and "出生证明" in shown
    assert timedelta(0) < (await _slot_start(client, slot_id)) - utcnow() < timedelta(days=2)


async def _slot_start(client: Client, slot_id: int) -> datetime:
    async with client.app[SESSIONS]() as session:
        slot = await session.get(Slot, slot_id)
        assert slot is not None
        return slot.starts_at
