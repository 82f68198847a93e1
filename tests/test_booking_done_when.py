"""预约接种's acceptance, end to end through both platforms' protocols, with the demo world:

the Chen father on WeChat books his daughter's due dose in chat at her own clinic in Wuxi and moves it to
another clinic (改期 → 换一家门诊); the grandmother, authorised on Alipay, sees the booking; with the clock
moved to the day before, the father and the grandmother each get the day-before reminder once. No plain
name or ID number appears in what they read.
"""

from __future__ import annotations

import json
from datetime import date, datetime, time, timedelta

from sqlalchemy import select

from bot.certificates.rules import Grantee, add_grant
from bot.core.chinatime import CHINA, china_date
from bot.dev.demo import WX_PARENT, WX_TODDLER, demo_id_number, seed_demo
from bot.dev.fakes import alipay_gateway
from bot.dev.fakes.alipay import AlipayClientSim
from bot.dev.fakes.alipay_gateway import FakeAlipayGateway
from bot.dev.fakes.wechat import FakeWeChatAPI, WeChatClientSim
from bot.reminders.appointments import send_appointment_reminders
from bot.web.appkeys import SERVICES, SESSIONS
from models import (
    Appointment,
    AppointmentStatus,
    Certificate,
    Clinic,
    Identity,
    OutboxKind,
    OutboxStatus,
    Slot,
    Vaccinee,
    utcnow,
)
from tests.channels import Alipay, WeChat
from tests.helpers import Client, drain_outbox, outbox_rows
from tests.world import verified

# The girl's grandmother (fictional), authorised by her father.
GRANDMOTHER_NAME = "王秀英"
GRANDMOTHER_ID = demo_id_number("320213", date(1961, 4, 18), 248)
FATHER_USER, GRANDMOTHER_USER = "o-chen-father", "2088000000000811"
DUE = ("百白破疫苗 第4剂", "麻腮风疫苗 第2剂", "甲肝减毒活疫苗 第1剂", "乙脑减毒活疫苗 第2剂")


async def _family(client: Client, father_app: str, grandmother_app: str) -> int:
    """The demo world; the father holds the girl's certificate and authorised the grandmother. The file id."""
    services = client.app[SERVICES]
    assert await seed_demo(client.app[SESSIONS], services.vault)
    father = await verified(client, "wechat", FATHER_USER, WX_PARENT.name, WX_PARENT.id_number, father_app)
    await verified(client, "alipay", GRANDMOTHER_USER, GRANDMOTHER_NAME, GRANDMOTHER_ID, grandmother_app)
    async with client.app[SESSIONS]() as session, session.begin():
        digest = services.vault.digest("id_number", WX_TODDLER.id_number)
        girl = (await session.scalars(select(Vaccinee).where(Vaccinee.id_number_hash == digest))).one()
        certificate = Certificate(vaccinee_id=girl.id, holder_identity_id=father, kind="child", claimed_via="wechat")
        session.add(certificate)
        await session.flush()
        holder = await session.get(Identity, father)
        assert holder is not None
        grantee = Grantee(id_number=GRANDMOTHER_ID, name=GRANDMOTHER_NAME, relationship="grandmother", phone="")
        grant, problem = await add_grant(
            session, services.vault, holder, certificate, grantee, services.settings, "wechat", utcnow()
        )
        assert grant is not None, problem
        return girl.id


async def _clinic_of(client: Client, appointment: Appointment) -> str:
    async with client.app[SESSIONS]() as session:
        slot = await session.get(Slot, appointment.slot_id)
        assert slot is not None
        clinic = await session.get(Clinic, slot.clinic_id)
        assert clinic is not None
        return clinic.code


async def test_the_chen_girl_booked_moved_and_reminded(
    app_client: Client,
    wechat: WeChatClientSim,
    fake: FakeWeChatAPI,
    alipay: AlipayClientSim,
    fake_alipay: tuple[FakeAlipayGateway, str],
) -> None:
    client = app_client
    girl = await _family(client, wechat.app_id, alipay.app_id)
    father, grandmother = WeChat(client, wechat, fake), Alipay(client, alipay, fake_alipay[0])
    read: list[str] = []

    async def say(text: str) -> str:
        read.append(await father.say(FATHER_USER, text))
        return read[-1]

    vaccines = await say("预约接种")
    assert "陈*语" in vaccines and any(f"1. {dose}" in vaccines for dose in DUE), vaccines  # a due dose first
    clinics = await say("1")
    assert clinics.index("无锡") < clinics.index("南通"), clinics  # her own clinic (Wuxi) first
    await say("1")
    await say("1")
    confirmation = await say("1")
    assert "请核对预约信息" in confirmation and "陈*语" in confirmation
    done = await say("确认")
    async with client.app[SESSIONS]() as session:
        (booked,) = (await session.scalars(select(Appointment).where(Appointment.vaccinee_id == girl))).all()
    assert "预约成功" in done and f"预约号：{booked.number}" in done
    assert await _clinic_of(client, booked) == "WX-LX-01"

    # 改期 to the Nantong clinic: the same vaccine, another clinic, the old place given back at once.
    await say("我的预约")
    await say("1")
    assert "换一家门诊" in await say("改期")
    other = await say("换一家门诊")
    await say(next(line.split(".")[0] for line in other.splitlines() if "南通" in line and "." in line))
    await say("1")
    assert "原预约将同时取消" in await say("1")
    moved = await say("确认")
    assert "改期成功" in moved and "南通" in moved
    async with client.app[SESSIONS]() as session:
        rows = (
            await session.scalars(select(Appointment).where(Appointment.vaccinee_id == girl).order_by(Appointment.id))
        ).all()
        slot = await session.get(Slot, rows[-1].slot_id)
        assert slot is not None
        day = china_date(slot.starts_at)
    assert [row.status for row in rows] == [AppointmentStatus.CANCELLED, AppointmentStatus.BOOKED]
    assert await _clinic_of(client, rows[-1]) == "NT-CC-01" and rows[-1].vaccine_code == booked.vaccine_code

    listed = "\n".join(await grandmother.do(GRANDMOTHER_USER, ("text", "我的预约")))
    read.append(listed)
    assert "陈*语" in listed and "南通" in listed

    # The day before, in the morning: one reminder each, on their own platforms; a second pass sends none.
    services = client.app[SERVICES]
    args = (client.app[SESSIONS], services.vault, services.catalogue, services.settings)
    day_before = datetime.combine(day - timedelta(days=1), time(10), tzinfo=CHINA)
    assert await send_appointment_reminders(*args, day_before) == 2
    assert await send_appointment_reminders(*args, day_before + timedelta(hours=1)) == 0
    for user in (FATHER_USER, GRANDMOTHER_USER):
        (row,) = [row for row in await outbox_rows(client, recipient=user) if row.kind == OutboxKind.TEMPLATE]
        text = json.dumps(row.payload, ensure_ascii=False)
        assert "陈*语" in text and "南通" in text, text
        read.append(text)
    await drain_outbox(client)
    for user in (FATHER_USER, GRANDMOTHER_USER):
        (row,) = [row for row in await outbox_rows(client, recipient=user) if row.kind == OutboxKind.TEMPLATE]
        assert row.status == OutboxStatus.SENT
    # Delivered through each platform's API: one template each.
    templates = [item for item in fake.received if item.path == "message/template/send"]
    assert [item.body.get("touser") for item in templates] == [FATHER_USER]
    singles = fake_alipay[0].calls(alipay_gateway.SINGLE_SEND)
    assert [item.to_user_id for item in singles] == [GRANDMOTHER_USER]
    everything = "\n".join(read)
    for secret in (WX_TODDLER.name, WX_TODDLER.id_number, WX_PARENT.name, GRANDMOTHER_NAME, GRANDMOTHER_ID):
        assert secret not in everything, secret
