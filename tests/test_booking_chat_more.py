"""More of 预约接种 and 我的预约 in chat, on WeChat and Alipay: self-paid vaccines (自费, the price, who may have
them), eligibility checked again at the confirmation, a place gone with others still free, and 改期 to another
clinic."""

from __future__ import annotations

from datetime import date, time, timedelta

from sqlalchemy import select

from bot.booking import lottery, slots
from bot.booking.slots import Funding, SlotSpec
from bot.certificates.rules import revoke_grant
from bot.core.chinatime import china_date
from bot.dev.demo import CHILD, PARENT, WX_GIRL, WX_PARENT, demo_id_number, seed_demo
from bot.immunization.forecast import add_months
from bot.web.appkeys import SERVICES, SESSIONS
from models import (
    Appointment,
    AppointmentStatus,
    Certificate,
    Dose,
    DoseDetail,
    Grant,
    Identity,
    Slot,
    Vaccinee,
    utcnow,
)
from tests.channels import Channel
from tests.desk_kit import DeskWorld, desk_world
from tests.helpers import Client
from tests.world import registry_file, verified

GIRL_NAME = "林小雅"
GIRL_BIRTH = date(2017, 2, 1)  # nine: old enough for 9-valent HPV (9–45), and claimable (born from 2017)


async def _publish(client: Client, clinic_id: int, days_ahead: int, code: str = "HepB", capacity: int = 5) -> int:
    day = china_date(utcnow()) + timedelta(days=days_ahead)
    paid = {"funding": Funding.SELF_PAID, "price_fen": 131800} if code == "HPV9" else {}
    async with client.app[SESSIONS]() as session, session.begin():
        spec = SlotSpec(code, day, time(9), time(10), capacity, **paid)  # type: ignore[arg-type]
        return (await slots.publish(session, clinic_id, spec)).id


async def _girl(client: Client, world: DeskWorld, platform: str) -> int:
    """The parent's nine-year-old daughter (hepatitis B complete), her certificate held by the parent: her file id."""
    birth = GIRL_BIRTH
    doses = [("HepB", 1, birth), ("HepB", 2, birth + timedelta(days=31)), ("HepB", 3, birth + timedelta(days=184))]
    vaccinee = await registry_file(
        client,
        ref="D-GIRL",
        name=GIRL_NAME,
        id_number=demo_id_number("320602", birth, 164),
        birth=birth,
        sex="F",
        guardians=[PARENT.id_number],
        doses=doses,
    )
    async with client.app[SESSIONS]() as session, session.begin():
        session.add(
            Certificate(vaccinee_id=vaccinee, holder_identity_id=world.parent_id, kind="child", claimed_via=platform)
        )
    return vaccinee


def _number_of(listing: str, masked: str) -> str:
    """The list number of the line naming ``masked``."""
    return next(line.split(".")[0].strip() for line in listing.splitlines() if masked in line and "." in line)


async def _appointments(client: Client, vaccinee_id: int) -> list[Appointment]:
    async with client.app[SESSIONS]() as session:
        query = select(Appointment).where(Appointment.vaccinee_id == vaccinee_id).order_by(Appointment.id)
        return list((await session.scalars(query)).all())


async def test_a_self_paid_vaccine_shows_its_price_and_only_to_who_may_have_it(
    app_client: Client, channel: Channel
) -> None:
    client = app_client
    world = await desk_world(client, channel.platform, channel.app_id)
    girl = await _girl(client, world, channel.platform)
    await _publish(client, world.clinic_id, 2)
    hpv = await _publish(client, world.other_clinic_id, 3, "HPV9")
    user = world.parent_user

    who = await channel.say(user, "预约接种")
    boy = await channel.say(user, _number_of(who, "林*满"))
    assert "乙肝疫苗 第2剂" in boy and "九价HPV疫苗" not in boy  # a boy of three: not offered
    who = await channel.say(user, "预约接种")
    vaccines = await channel.say(user, _number_of(who, "林*雅"))
    assert "1. 九价HPV疫苗 第1剂（自费 1318元起）" in vaccines and "乙肝疫苗" not in vaccines
    clinics = await channel.say(user, "1")
    assert "南京" in clinics and "南通" not in clinics  # only the clinic with HPV9 places
    days = await channel.say(user, "1")
    windows = await channel.say(user, "1")
    assert "自费 1318元" in windows and days
    confirmation = await channel.say(user, "1")
    assert "请核对预约信息" in confirmation and "自费 1318元" in confirmation and GIRL_NAME not in confirmation
    done = await channel.say(user, "确认")
    assert "预约成功" in done
    assert [(row.slot_id, row.status) for row in await _appointments(client, girl)] == [(hpv, AppointmentStatus.BOOKED)]


async def test_a_dose_recorded_before_the_confirmation_refuses_that_day(app_client: Client, channel: Channel) -> None:
    client = app_client
    world = await desk_world(client, channel.platform, channel.app_id)
    girl = await _girl(client, world, channel.platform)
    hpv = await _publish(client, world.other_clinic_id, 3, "HPV9")
    user = world.parent_user
    who = await channel.say(user, "预约接种")
    for answer in (_number_of(who, "林*雅"), "1", "1", "1"):
        await channel.say(user, answer)
    confirmation = await channel.say(user, "1")
    assert "请核对预约信息" in confirmation
    # Meanwhile a clinic gives her the first dose (the registry records it): dose 2 waits a month.
    today = china_date(utcnow())
    vault = client.app[SERVICES].vault
    async with client.app[SESSIONS]() as session, session.begin():
        slot = await session.get(Slot, hpv)
        assert slot is not None
        session.add(
            Dose.sealed(vault, girl, DoseDetail("HPV9", 1, today, world.clinic_id), effective_from=date(2020, 1, 1))
        )
    refused = await channel.say(user, "确认")
    earliest = add_months(today, 1)
    assert (
        "还不能接种九价HPV疫苗" in refused
        and f"最早可以在{earliest.year}年{earliest.month}月{earliest.day}日" in refused
    )
    assert await _appointments(client, girl) == []


async def test_a_window_gone_shows_the_days_other_windows(app_client: Client, channel: Channel) -> None:
    client = app_client
    world = await desk_world(client, channel.platform, channel.app_id)
    day = china_date(utcnow()) + timedelta(days=2)
    async with client.app[SESSIONS]() as session, session.begin():
        early = await slots.publish(session, world.clinic_id, SlotSpec("HepB", day, time(9), time(10), 1))
        await slots.publish(session, world.clinic_id, SlotSpec("HepB", day, time(14), time(15), 4))
        early_id = early.id
    user = world.parent_user
    for answer in ("预约接种", "1", "1", "1"):
        await channel.say(user, answer)
    assert "请核对预约信息" in await channel.say(user, "1")
    async with client.app[SESSIONS]() as session, session.begin():
        slot = await session.get(Slot, early_id)
        assert slot is not None
        slot.booked = slot.capacity  # the last place went to another family
    gone = await channel.say(user, "确认")
    assert "刚刚约满" in gone and "14:00–15:00" in gone and "余4个" in gone
    assert await _appointments(client, world.vaccinee_id) == []
    assert "请核对预约信息" in await channel.say(user, "2")  # the free window, right from the answer


async def test_reschedule_to_another_clinic(app_client: Client, channel: Channel) -> None:
    client = app_client
    world = await desk_world(client, channel.platform, channel.app_id)
    first = await _publish(client, world.clinic_id, 2)
    elsewhere = await _publish(client, world.other_clinic_id, 4)
    user = world.parent_user
    for answer in ("预约接种", "1", "1", "1", "1", "确认"):
        reply = await channel.say(user, answer)
    assert "预约成功" in reply
    await channel.say(user, "我的预约")
    await channel.say(user, "1")
    days = await channel.say(user, "改期")
    assert "南通" in days and "换一家门诊" in days  # the same clinic first, and the way to another
    clinics = await channel.say(user, "换一家门诊")
    assert clinics.index("南通") < clinics.index("南京"), clinics  # the file's clinic still first
    days = await channel.say(user, "2")
    assert "南京" in days
    await channel.say(user, "1")
    confirmation = await channel.say(user, "1")
    assert "原预约将同时取消" in confirmation and "南京" in confirmation and CHILD.name not in confirmation
    moved = await channel.say(user, "确认")
    assert "改期成功" in moved and "南京" in moved
    rows = await _appointments(client, world.vaccinee_id)
    assert [(row.slot_id, row.status) for row in rows] == [
        (first, AppointmentStatus.CANCELLED),
        (elsewhere, AppointmentStatus.BOOKED),
    ]
    listed = await channel.say(world.grandma_user, "我的预约")
    assert "南京" in listed and "南通" not in listed


async def test_a_move_to_another_clinic_whose_place_went_keeps_the_old_booking(
    app_client: Client, channel: Channel
) -> None:
    client = app_client
    world = await desk_world(client, channel.platform, channel.app_id)
    first = await _publish(client, world.clinic_id, 2)
    elsewhere = await _publish(client, world.other_clinic_id, 4, capacity=1)
    user = world.grandma_user  # the authorised grandmother books and moves
    for answer in ("预约接种", "1", "1", "1", "1", "确认"):
        reply = await channel.say(user, answer)
    assert "预约成功" in reply
    for answer in ("我的预约", "1", "改期", "换一家门诊", "2", "1"):
        await channel.say(user, answer)
    assert "原预约将同时取消" in await channel.say(user, "1")
    async with client.app[SESSIONS]() as session, session.begin():
        slot = await session.get(Slot, elsewhere)
        assert slot is not None
        slot.booked = slot.capacity  # someone else took it
    gone = await channel.say(user, "确认")
    assert "刚刚约满" in gone
    rows = await _appointments(client, world.vaccinee_id)
    assert [(row.slot_id, row.status) for row in rows] == [(first, AppointmentStatus.BOOKED)]


async def test_a_move_never_lists_lottery_slots(app_client: Client, channel: Channel) -> None:
    client = app_client
    world = await desk_world(client, channel.platform, channel.app_id)
    await _publish(client, world.clinic_id, 2)
    await _publish(client, world.clinic_id, 5)
    async with client.app[SESSIONS]() as session, session.begin():
        for clinic_id, days_ahead in ((world.clinic_id, 3), (world.other_clinic_id, 4)):
            spec = SlotSpec("HepB", china_date(utcnow()) + timedelta(days=days_ahead), time(9), time(10), 20)
            await lottery.publish_lottery(
                session,
                client.app[SERVICES].vault,
                clinic_id,
                spec,
                opens_at=utcnow() - timedelta(hours=1),
                closes_at=utcnow() + timedelta(days=1),
                confirm_hours=24,
            )
        names = await slots.clinic_names(session, [world.other_clinic_id])
    user = world.parent_user
    for answer in ("预约接种", "1", "1", "1", "1", "确认"):
        reply = await channel.say(user, answer)
    assert "预约成功" in reply
    days = [await channel.say(user, answer) for answer in ("我的预约", "1", "改期")][-1]
    lottery_day, later = (china_date(utcnow()) + timedelta(days=ahead) for ahead in (3, 5))
    assert "摇号" not in days and f"{lottery_day.month}月{lottery_day.day}日" not in days, days
    assert f"{later.month}月{later.day}日" in days, days  # the same clinic's later first-come day is offered
    clinics = await channel.say(user, "换一家门诊")
    # The other clinic has only a lottery for hepatitis B: nothing a move could take there.
    assert "摇号" not in clinics and names[world.other_clinic_id] not in clinics, clinics
    rows = await _appointments(client, world.vaccinee_id)
    assert [row.status for row in rows] == [AppointmentStatus.BOOKED]


async def test_the_demo_girl_can_book_the_demo_hpv9(app_client: Client, channel: Channel) -> None:
    services = app_client.app[SERVICES]
    assert await seed_demo(app_client.app[SESSIONS], services.vault)
    user = "o-demo-hpv" if channel.platform == "wechat" else "2088000000000931"
    father = await verified(app_client, channel.platform, user, WX_PARENT.name, WX_PARENT.id_number, channel.app_id)
    async with app_client.app[SESSIONS]() as session, session.begin():
        digest = services.vault.digest("id_number", WX_GIRL.id_number)
        girl = (await session.scalars(select(Vaccinee).where(Vaccinee.id_number_hash == digest))).one()
        session.add(Certificate(vaccinee_id=girl.id, holder_identity_id=father, kind="child", claimed_via="t"))
    vaccines = await channel.say(user, "预约接种")
    assert "陈*琪" in vaccines and "1. 九价HPV疫苗 第1剂（自费 1318元起）" in vaccines, vaccines
    clinics = await channel.say(user, "1")
    lines = clinics.splitlines()
    # The file's clinic (Wuxi, first come) comes first; the demo's HPV9 lottery at Nantong is listed as 摇号,
    # never as first-come places.
    assert lines[1].startswith("1. 无锡市梁溪区") and "建档门诊" in lines[1], clinics
    assert lines[2].startswith("2. 南通市") and "摇号" in lines[2] and "余" not in lines[2], clinics
    days = await channel.say(user, "1")
    assert days.startswith("无锡市梁溪区"), days  # choosing 1 is the Wuxi clinic
    assert "开放预约" in days and "摇号" not in days  # the demo's HPV9 opens tomorrow morning: the family is told when


async def test_pages_turn_back_and_a_grant_revoked_before_a_cancel_changes_nothing(
    app_client: Client, channel: Channel
) -> None:
    client = app_client
    world = await desk_world(client, channel.platform, channel.app_id)
    first = await _publish(client, world.clinic_id, 1)
    for days_ahead in range(2, 9):
        await _publish(client, world.clinic_id, days_ahead)
    user = world.grandma_user
    for answer in ("预约接种", "1", "1"):
        days = await channel.say(user, answer)
    assert "第1/2页" in days and "7. " not in days
    assert "7. " in await channel.say(user, "下一页")
    back = await channel.say(user, "上一页")
    assert "第1/2页" in back and "1. " in back and "7. " not in back
    for answer in ("1", "1", "确认"):
        reply = await channel.say(user, answer)
    assert "预约成功" in reply
    await channel.say(user, "我的预约")
    assert "确认取消" in await channel.say(user, "1")

    async with client.app[SESSIONS]() as session, session.begin():
        holder = await session.get(Identity, world.parent_id)
        certificate = await session.get(Certificate, world.certificate_id)
        grant = (await session.scalars(select(Grant).where(Grant.certificate_id == world.certificate_id))).one()
        assert holder is not None and certificate is not None
        assert await revoke_grant(session, holder, certificate, grant, channel.platform, utcnow())
    assert "已无法查看" in await channel.say(user, "确认取消")
    assert "没有待接种的预约" in await channel.say(user, "我的预约")  # she sees nobody's bookings now
    rows = await _appointments(client, world.vaccinee_id)
    assert [(row.slot_id, row.status) for row in rows] == [(first, AppointmentStatus.BOOKED)]


async def test_a_grant_revoked_during_a_move_keeps_the_booking(app_client: Client, channel: Channel) -> None:
    client = app_client
    world = await desk_world(client, channel.platform, channel.app_id)
    first = await _publish(client, world.clinic_id, 2)
    await _publish(client, world.other_clinic_id, 3)
    user = world.grandma_user
    for answer in ("预约接种", "1", "1", "1", "1", "确认"):
        reply = await channel.say(user, answer)
    assert "预约成功" in reply
    for answer in ("我的预约", "1"):
        await channel.say(user, answer)
    assert "换一家门诊" in await channel.say(user, "改期")
    async with client.app[SESSIONS]() as session, session.begin():
        holder = await session.get(Identity, world.parent_id)
        certificate = await session.get(Certificate, world.certificate_id)
        grant = (await session.scalars(select(Grant).where(Grant.certificate_id == world.certificate_id))).one()
        assert holder is not None and certificate is not None
        assert await revoke_grant(session, holder, certificate, grant, channel.platform, utcnow())
    assert "已无法查看" in await channel.say(user, "换一家门诊")
    rows = await _appointments(client, world.vaccinee_id)
    assert [(row.slot_id, row.status) for row in rows] == [(first, AppointmentStatus.BOOKED)]
