"""预约接种's acceptance, end to end through both platforms' protocols, with the demo world:

the Chen father on WeChat books his daughter's due dose in chat at her own clinic in Wuxi and moves it to
another clinic (改期 → 换一家门诊); the grandmother, authorised on Alipay, sees the booking; with the clock
moved to the day before, the father and the grandmother each get the day-before reminder once; the clinic
closes that day with a closure notice and both hear once (a resend of the same notice tells nobody); an HPV9
lottery is entered (in chat and by other families), drawn, exported, and ``vaxbot lottery verify`` reproduces
it from the file, while one flipped bit gives MISMATCH. No plain name or ID number appears in what they read.
"""

from __future__ import annotations

import json
from datetime import date, datetime, time, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

import bot.cli
from bot.booking import draw, lottery
from bot.booking.slots import Funding, SlotSpec
from bot.certificates.rules import Grantee, add_grant
from bot.core.chinatime import CHINA, china_date
from bot.dev.demo import WX_GIRL, WX_PARENT, WX_TODDLER, demo_id_number, seed_demo
from bot.dev.fakes import alipay_gateway
from bot.dev.fakes.alipay import AlipayClientSim
from bot.dev.fakes.alipay_gateway import FakeAlipayGateway
from bot.dev.fakes.wechat import FakeWeChatAPI, WeChatClientSim
from bot.notices.compose import Composer, Draft, Window, send
from bot.reminders.appointments import send_appointment_reminders
from bot.reminders.lottery_news import run_draws
from bot.web.appkeys import SERVICES, SESSIONS
from models import (
    Appointment,
    AppointmentStatus,
    Certificate,
    Clinic,
    Identity,
    NoticeAction,
    NoticeAudience,
    NoticeKind,
    OutboxKind,
    OutboxStatus,
    Slot,
    Vaccinee,
    utcnow,
)
from tests.channels import Alipay, WeChat
from tests.helpers import Client, drain_outbox, outbox_rows
from tests.test_cli import cli_env
from tests.world import registry_file, verified

# The girl's grandmother (fictional), authorised by her father.
GRANDMOTHER_NAME = "王秀英"
GRANDMOTHER_ID = demo_id_number("320213", date(1961, 4, 18), 248)
FATHER_USER, GRANDMOTHER_USER = "o-chen-father", "2088000000000811"
DUE = ("百白破疫苗 第4剂", "麻腮风疫苗 第2剂", "甲肝减毒活疫苗 第1剂", "乙脑减毒活疫苗 第2剂")


async def _family(client: Client, father_app: str, grandmother_app: str) -> tuple[int, int]:
    """The demo world; the father holds the girl's certificate and authorised the grandmother: her file id, his."""
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
        return girl.id, father


def _line_number(listed: str, needle: str) -> str:
    """The number of the first numbered line of ``listed`` that contains ``needle``."""
    return next(line.split(".")[0] for line in listed.splitlines() if needle in line and ". " in line)


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
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client = app_client
    girl, father_id = await _family(client, wechat.app_id, alipay.app_id)
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

    # The clinic closes that day with a closure notice (sent as the console sends it): both hear once, each
    # on their own platform; the same notice sent again (the same form key) tells nobody again.
    draft = Draft(
        NoticeKind.CLOSURE,
        "因疫苗冷链设备检修停诊一天，请改约其他日期。",
        NoticeAudience.BOOKED,
        windows=(Window(day),),
        action=NoticeAction.CANCEL,
    )
    for repeated in (False, True):
        async with client.app[SESSIONS]() as session, session.begin():
            composer = Composer(clinic_id=slot.clinic_id, actor_kind="staff", actor_ref="staff:done-when")
            sent = await send(
                session, services.vault, services.catalogue, services.settings, composer, draft, "close-day", utcnow()
            )
        assert sent.repeated is repeated and sent.notice.bookings_cancelled == 1
        for user in (FATHER_USER, GRANDMOTHER_USER):
            told = [row for row in await outbox_rows(client, recipient=user) if row.kind == OutboxKind.TEMPLATE]
            assert len(told) == 2, told  # the reminder, the notice: once
            if not repeated:
                text = json.dumps(told[-1].payload, ensure_ascii=False)
                assert "陈*语" in text and "冷链" in text, text
                read.append(text)
        await drain_outbox(client)
    for user in (FATHER_USER, GRANDMOTHER_USER):
        statuses = [row.status for row in await outbox_rows(client, recipient=user) if row.kind == OutboxKind.TEMPLATE]
        assert statuses == [OutboxStatus.SENT] * 2
    templates = [item for item in fake.received if item.path == "message/template/send"]
    assert [item.body.get("touser") for item in templates] == [FATHER_USER] * 2
    assert [item.to_user_id for item in fake_alipay[0].calls(alipay_gateway.SINGLE_SEND)] == [GRANDMOTHER_USER] * 2
    async with client.app[SESSIONS]() as session:
        closed = await session.get(Appointment, rows[-1].id, populate_existing=True)
        assert closed is not None and closed.status == AppointmentStatus.CANCELLED

    # An HPV9 lottery is published at her clinic; the father enters his older daughter in chat, three other
    # families enter too; it is drawn, exported, and `vaxbot lottery verify` reproduces it from the file.
    lottery_day = china_date(utcnow()) + timedelta(days=20)
    closes = utcnow() + timedelta(days=2)
    async with client.app[SESSIONS]() as session, session.begin():
        wuxi = (await session.scalars(select(Clinic).where(Clinic.code == "WX-LX-01"))).one()
        spec = SlotSpec("HPV9", lottery_day, time(9), time(11), 2, funding=Funding.SELF_PAID, price_fen=131800)
        _, made = await lottery.publish_lottery(
            session, services.vault, wuxi.id, spec, opens_at=utcnow(), closes_at=closes, confirm_hours=24
        )
        digest = services.vault.digest("id_number", WX_GIRL.id_number)
        older = (await session.scalars(select(Vaccinee).where(Vaccinee.id_number_hash == digest))).one()
        session.add(Certificate(vaccinee_id=older.id, holder_identity_id=father_id, kind="child", claimed_via="t"))
    people = await say("预约接种")
    await say(_line_number(people, "陈*琪"))
    clinics = await say("1")  # HPV9, her first
    assert "（摇号 " in clinics or "另有摇号" in clinics, clinics
    days = await say(_line_number(clinics, "无锡"))
    label = f"{lottery_day.month}月{lottery_day.day}日"
    windows = await say(_line_number(days, label))
    ask = await say(_line_number(windows, "摇号 2个名额"))
    assert "请核对摇号报名信息" in ask and "陈*琪" in ask, ask
    entered = await say("报名摇号")
    assert "已为陈*琪报名摇号" in entered, entered
    for number in range(3):
        other = await registry_file(
            client,
            ref=f"DW-LT-{number}",
            name=f"赵小{'一二三'[number]}",
            id_number=None,
            birth=date(2012, 3, 1 + number),
        )
        async with client.app[SESSIONS]() as session, session.begin():
            result = await lottery.enter(session, services.vault, made.id, other, father_id, utcnow(), penalty_days=180)
            assert result.outcome == lottery.EntryOutcome.ENTERED
    assert await run_draws(client.app[SESSIONS], services.vault, closes) == 1
    async with client.app[SESSIONS]() as session:
        record = await lottery.published_record(session, made.id)
    assert record is not None and len(record["entries"]) == 4
    published = tmp_path / "lottery.json"
    published.write_text(draw.dumps(record), encoding="utf-8")
    for key, value in cli_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    capsys.readouterr()
    assert bot.cli.main(["lottery", "verify", str(published)]) == 0
    assert "OK: lottery" in capsys.readouterr().out
    # One bit flipped in one published entry hash: the file no longer reproduces.
    first = record["entries"][0]
    flipped = first[:-1] + format(int(first[-1], 16) ^ 1, "x")
    published.write_text(draw.dumps({**record, "entries": [flipped, *record["entries"][1:]]}), encoding="utf-8")
    assert bot.cli.main(["lottery", "verify", str(published)]) == 1
    assert "MISMATCH" in capsys.readouterr().out

    everything = "\n".join(read)
    for secret in (WX_TODDLER.name, WX_TODDLER.id_number, WX_PARENT.name, GRANDMOTHER_NAME, GRANDMOTHER_ID):
        assert secret not in everything, secret
