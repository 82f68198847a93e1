"""预约接种 and 我的预约 in chat, on WeChat and Alipay: the whole journey, holder and grantee, and its clear answers."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, time, timedelta

from sqlalchemy import select

from bot.booking import bookings, slots
from bot.booking.slots import Funding, SlotSpec
from bot.certificates.rules import revoke_grant
from bot.core.chinatime import CHINA, china_date
from bot.dev.demo import CHILD
from bot.dev.fakes.wechat import WeChatClientSim
from bot.reminders.appointments import send_appointment_reminders
from bot.web.appkeys import SERVICES, SESSIONS
from models import Appointment, AppointmentStatus, Certificate, Grant, Identity, OutboxKind, Slot, utcnow
from tests.channels import Channel
from tests.desk_kit import DeskWorld, desk_world, queue_visit
from tests.helpers import Client, outbox_rows, post
from tests.world import registry_file


async def _publish(client: Client, clinic_id: int, days_ahead: int, capacity: int = 5, **extra: object) -> int:
    day = china_date(utcnow()) + timedelta(days=days_ahead)
    async with client.app[SESSIONS]() as session, session.begin():
        spec = SlotSpec("HepB", day, time(9), time(10), capacity, **extra)  # type: ignore[arg-type]
        return (await slots.publish(session, clinic_id, spec)).id


async def _appointments(client: Client, world: DeskWorld) -> list[Appointment]:
    async with client.app[SESSIONS]() as session:
        query = select(Appointment).where(Appointment.vaccinee_id == world.vaccinee_id).order_by(Appointment.id)
        return list((await session.scalars(query)).all())


async def _booked(client: Client, slot_id: int) -> int:
    async with client.app[SESSIONS]() as session:
        slot = await session.get(Slot, slot_id)
        assert slot is not None
        return slot.booked


async def test_book_then_cancel_holder_and_grantee(app_client: Client, channel: Channel) -> None:
    client = app_client
    world = await desk_world(client, channel.platform, channel.app_id)
    other = await _publish(client, world.other_clinic_id, 3)
    mine = await _publish(client, world.clinic_id, 2, funding=Funding.SELF_PAID, price_fen=12000)
    await _publish(client, world.clinic_id, 4, opens_at=utcnow() + timedelta(days=1))
    user = world.parent_user

    vaccines = await channel.say(user, "预约接种")
    assert "林*满" in vaccines and "1. 乙肝疫苗 第2剂" in vaccines and CHILD.name not in vaccines
    assert "卡介苗" not in vaccines  # overdue too, but no clinic has places for it
    clinics = await channel.say(user, "1")
    assert clinics.index("建档门诊") < clinics.index("南京"), clinics  # the file's clinic first
    days = await channel.say(user, "1")
    assert "余5个" in days and "开放预约" in days  # the later day opens tomorrow
    windows = await channel.say(user, "1")
    assert "09:00–10:00" in windows and "自费 120元" in windows
    confirmation = await channel.say(user, "1")
    assert "请核对预约信息" in confirmation and "林*满" in confirmation and CHILD.name not in confirmation
    assert CHILD.id_number not in confirmation
    done = await channel.say(user, "确认")
    assert "预约成功" in done and "预约号：" in done
    await channel.say(user, "确认")  # a double tap after the booking: nothing more is booked
    booked = await _appointments(client, world)
    assert len(booked) == 1 and booked[0].slot_id == mine and booked[0].booked_by_identity_id == world.parent_id
    assert await _booked(client, mine) == 1 and await _booked(client, other) == 0
    number = bookings.booking_number(booked[0])

    # The grandmother (authorised) tries the same vaccine: she is told it is booked, and where.
    await channel.say(world.grandma_user, "预约接种")
    held = await channel.say(world.grandma_user, "1")
    assert "已经预约了乙肝疫苗" in held and number in held

    listed = await channel.say(world.grandma_user, "我的预约")
    assert number in listed and "林*满" in listed
    ask = await channel.say(world.grandma_user, "1")
    assert "确认取消" in ask and "改期" in ask and number in ask
    assert "确认取消" in await channel.say(world.grandma_user, "好的")  # anything else: how to confirm
    assert "已为林*满取消预约" in await channel.say(world.grandma_user, "确认取消")
    assert [row.status for row in await _appointments(client, world)] == [AppointmentStatus.CANCELLED]
    assert await _booked(client, mine) == 0
    assert "没有待接种的预约" in await channel.say(user, "我的预约")


async def test_the_last_place_taken_meanwhile_and_not_yet_open(app_client: Client, channel: Channel) -> None:
    client = app_client
    world = await desk_world(client, channel.platform, channel.app_id)
    last = await _publish(client, world.clinic_id, 2, capacity=1)
    opens = utcnow() + timedelta(hours=30)
    await _publish(client, world.clinic_id, 5, opens_at=opens)
    user = world.parent_user
    for answer in ("预约接种", "1", "1", "1", "1"):
        reply = await channel.say(user, answer)
    assert "请核对预约信息" in reply
    # Someone else takes the last place while the parent reads the confirmation.
    stranger = await registry_file(client, ref="B-OTHER", name="王小明", id_number=None, birth=CHILD.birth)
    async with client.app[SESSIONS]() as session, session.begin():
        taken = await bookings.book(session, last, stranger, world.grandma_id, "elsewhere", utcnow())
        assert taken.outcome == bookings.Outcome.BOOKED
    gone = await channel.say(user, "确认")
    # That day has no place left: the answer says so and lists the other days (the later one not open yet).
    assert "刚刚约满" in gone and "其他日期" in gone and "开放预约" in gone
    assert await _appointments(client, world) == []

    # Back to the days: the later day says when booking opens, and choosing its window says it again.
    await channel.say(user, "预约接种")
    await channel.say(user, "1")
    days = await channel.say(user, "1")
    assert "开放预约" in days
    await channel.say(user, "2")
    local = opens.astimezone(CHINA)
    not_open = await channel.say(user, "1")
    assert "还没有开放预约" in not_open and f"{local.month}月{local.day}日" in not_open


async def test_long_lists_are_paged(app_client: Client, channel: Channel) -> None:
    client = app_client
    world = await desk_world(client, channel.platform, channel.app_id)
    for days_ahead in range(1, 10):
        await _publish(client, world.clinic_id, days_ahead)
    user = world.parent_user
    await channel.say(user, "预约接种")
    await channel.say(user, "1")
    first = await channel.say(user, "1")
    assert "1. " in first and "6. " in first and "7. " not in first and "第1/2页" in first
    second = await channel.say(user, "下一页")
    assert "7. " in second and "9. " in second and "第2/2页" in second
    windows = await channel.say(user, "9")
    assert "请选择时段" in windows
    day = china_date(utcnow()) + timedelta(days=9)
    assert f"{day.month}月{day.day}日" in windows


async def test_a_booked_childs_code_scanned_at_the_desk_marks_the_booking_attended(
    app_client: Client, channel: Channel
) -> None:
    client = app_client
    world = await desk_world(client, channel.platform, channel.app_id)
    today = china_date(utcnow())
    day_before = utcnow() - timedelta(days=1)
    async with client.app[SESSIONS]() as session, session.begin():
        spec = SlotSpec("HepB", today, time(0), time(23, 59), 5)
        slot = await slots.publish(session, world.clinic_id, spec)
        elsewhere = await slots.publish(
            session, world.other_clinic_id, SlotSpec("MMR", today, time(0), time(23, 59), 5)
        )
        for target, key in ((slot, "here"), (elsewhere, "there")):
            made = await bookings.book(session, target.id, world.vaccinee_id, world.parent_id, key, day_before)
            assert made.outcome == bookings.Outcome.BOOKED
    await queue_visit(client, world, world.grandma_id)
    statuses = {row.slot_id: row.status for row in await _appointments(client, world)}
    # Only the booking at the clinic that scanned the code is attended.
    assert statuses == {slot.id: AppointmentStatus.ATTENDED, elsewhere.id: AppointmentStatus.BOOKED}


async def test_the_day_before_reminder_reaches_the_holder_and_the_grantee_once(
    app_client: Client, channel: Channel
) -> None:
    client = app_client
    world = await desk_world(client, channel.platform, channel.app_id)
    services = client.app[SERVICES]
    slot_id = await _publish(client, world.clinic_id, 1)
    later_id = await _publish(client, world.clinic_id, 2)
    other = await registry_file(client, ref="B-LATER", name="王小明", id_number=None, birth=CHILD.birth)
    async with client.app[SESSIONS]() as session, session.begin():
        for target, person, key in ((slot_id, world.vaccinee_id, "tomorrow"), (later_id, other, "later")):
            made = await bookings.book(session, target, person, world.parent_id, key, utcnow())
            assert made.outcome == bookings.Outcome.BOOKED
    morning = datetime.combine(china_date(utcnow()), time(10), tzinfo=CHINA)
    night = datetime.combine(china_date(utcnow()), time(23), tzinfo=CHINA)
    remind = send_appointment_reminders
    args = (client.app[SESSIONS], services.vault, services.catalogue, services.settings)
    assert await remind(*args, night) == 0  # outside the sending hours
    assert await remind(*args, morning) == 2  # the parent and the grandmother
    assert await remind(*args, morning) == 0  # once
    for user in (world.parent_user, world.grandma_user):
        (row,) = [row for row in await outbox_rows(client, recipient=user) if row.kind == OutboxKind.TEMPLATE]
        text = json.dumps(row.payload, ensure_ascii=False)
        assert "林*满" in text and "乙肝疫苗" in text and "南通" in text and CHILD.name not in text
    async with client.app[SESSIONS]() as session:
        reminded = (await session.scalars(select(Appointment).where(Appointment.reminded_at.is_not(None)))).all()
    assert [row.slot_id for row in reminded] == [slot_id]  # the booking two days out waits


async def test_a_platform_retry_of_the_confirmation_books_once(app_client: Client, wechat: WeChatClientSim) -> None:
    client = app_client
    world = await desk_world(client, "wechat", wechat.app_id)
    slot_id = await _publish(client, world.clinic_id, 2)
    user = world.parent_user
    for answer in ("预约接种", "1", "1", "1", "1"):
        await post(client, wechat.sign(wechat.text(user, answer)))
    confirmation = wechat.text(user, "确认", msg_id=990001)
    # WeChat sends the same message again when the first answer is slow; both arrive at once here.
    await asyncio.gather(post(client, wechat.sign(confirmation)), post(client, wechat.sign(confirmation)))
    assert len(await _appointments(client, world)) == 1
    assert await _booked(client, slot_id) == 1


async def test_reschedule_in_chat_moves_the_booking(app_client: Client, channel: Channel) -> None:
    client = app_client
    world = await desk_world(client, channel.platform, channel.app_id)
    first = await _publish(client, world.clinic_id, 2)
    later = await _publish(client, world.clinic_id, 3)
    user = world.parent_user
    for answer in ("预约接种", "1", "1", "1", "1", "确认"):
        reply = await channel.say(user, answer)
    assert "预约成功" in reply
    await channel.say(world.grandma_user, "我的预约")
    await channel.say(world.grandma_user, "1")
    days = await channel.say(world.grandma_user, "改期")
    assert "请选择日期" in days and "2. " in days
    await channel.say(world.grandma_user, "2")
    confirmation = await channel.say(world.grandma_user, "1")
    assert "原预约将同时取消" in confirmation and "乙肝疫苗 第2剂" in confirmation
    moved = await channel.say(world.grandma_user, "确认")
    assert "改期成功" in moved and "原预约已取消" in moved
    rows = await _appointments(client, world)
    assert [(row.slot_id, row.status) for row in rows] == [
        (first, AppointmentStatus.CANCELLED),
        (later, AppointmentStatus.BOOKED),
    ]
    assert rows[1].booked_by_identity_id == world.grandma_id
    assert await _booked(client, first) == 0 and await _booked(client, later) == 1


async def test_a_grant_revoked_before_the_confirmation_books_nothing(app_client: Client, channel: Channel) -> None:
    client = app_client
    world = await desk_world(client, channel.platform, channel.app_id)
    slot_id = await _publish(client, world.clinic_id, 2)
    for answer in ("预约接种", "1", "1", "1", "1"):
        reply = await channel.say(world.grandma_user, answer)
    assert "请核对预约信息" in reply
    async with client.app[SESSIONS]() as session, session.begin():
        holder = await session.get(Identity, world.parent_id)
        certificate = await session.get(Certificate, world.certificate_id)
        grant = (await session.scalars(select(Grant).where(Grant.certificate_id == world.certificate_id))).one()
        assert holder is not None and certificate is not None
        assert await revoke_grant(session, holder, certificate, grant, channel.platform, utcnow())
    assert "已无法查看" in await channel.say(world.grandma_user, "确认")
    assert await _appointments(client, world) == [] and await _booked(client, slot_id) == 0
