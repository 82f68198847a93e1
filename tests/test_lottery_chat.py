"""摇号 in chat, on WeChat and Alipay: entering from 预约接种, the outcome told once to holder and grantee,
「确认中签」 booking the place, 「我的摇号」, and the no-show penalty said kindly."""

from __future__ import annotations

import json
from datetime import datetime, time, timedelta

from sqlalchemy import select, update

from bot.booking import lottery
from bot.booking.slots import SlotSpec
from bot.core.chinatime import china_date
from bot.dev.demo import CHILD
from bot.reminders.lottery_news import run_draws, run_pass_down, tell_lottery_news
from bot.web.appkeys import SERVICES, SESSIONS
from models import (
    Appointment,
    AppointmentStatus,
    AuditEntry,
    EntryStatus,
    Lottery,
    LotteryEntry,
    OutboxKind,
    utcnow,
)
from tests.channels import Channel
from tests.desk_kit import desk_world
from tests.helpers import Client, outbox_rows
from tests.world import registry_file


async def _lottery(client: Client, clinic_id: int, days_ahead: int, closes: datetime, places: int = 1) -> Lottery:
    day = china_date(utcnow()) + timedelta(days=days_ahead)
    async with client.app[SESSIONS]() as session, session.begin():
        spec = SlotSpec("HepB", day, time(9), time(10), places)
        _, made = await lottery.publish_lottery(
            session,
            client.app[SERVICES].vault,
            clinic_id,
            spec,
            opens_at=utcnow() - timedelta(hours=1),
            closes_at=closes,
            confirm_hours=24,
        )
        return made


async def _entries(client: Client, lottery_id: int) -> list[LotteryEntry]:
    async with client.app[SESSIONS]() as session:
        query = select(LotteryEntry).where(LotteryEntry.lottery_id == lottery_id).order_by(LotteryEntry.id)
        return list((await session.scalars(query)).all())


async def test_enter_in_chat_told_once_and_confirm_the_place(app_client: Client, channel: Channel) -> None:
    client = app_client
    services = client.app[SERVICES]
    world = await desk_world(client, channel.platform, channel.app_id)
    closes = utcnow() + timedelta(days=1)
    made = await _lottery(client, world.clinic_id, 5, closes)
    user = world.parent_user

    _, clinics, days, windows = [await channel.say(user, answer) for answer in ("预约接种", "1", "1", "1")]
    # A lottery's places are 摇号 in every list, never first-come 「余N个」.
    assert "（摇号 1个名额）" in clinics and "余" not in clinics, clinics
    assert "摇号 1个名额" in days and "截止报名" in days and "余" not in days, days
    assert "摇号 1个名额" in windows and "截止报名" in windows
    ask = await channel.say(user, "1")
    assert "请核对摇号报名信息" in ask and "林*满" in ask and CHILD.name not in ask and "回复「报名摇号」" in ask
    assert "请回复「报名摇号」" in await channel.say(user, "好的")  # anything else: how to enter
    entered = await channel.say(user, "报名摇号")
    (entry,) = await _entries(client, made.id)
    assert "已为林*满报名摇号" in entered and lottery.short_hash(entry.entry_hash) in entered
    # The grandmother tries too: one entry per person.
    for answer in ("预约接种", "1", "1", "1", "1"):
        await channel.say(world.grandma_user, answer)
    assert "已经报名过" in await channel.say(world.grandma_user, "报名摇号")
    assert "已报名" in await channel.say(user, "我的摇号")
    # A stranger (no one follows their file here) enters too.
    stranger = await registry_file(client, ref="B-LOT", name="王小明", id_number=None, birth=CHILD.birth)
    async with client.app[SESSIONS]() as session, session.begin():
        other = await lottery.enter(
            session, services.vault, made.id, stranger, world.grandma_id, utcnow(), penalty_days=180
        )
        assert other.outcome == lottery.EntryOutcome.ENTERED

    assert await run_draws(client.app[SESSIONS], services.vault, closes) == 1
    assert await run_draws(client.app[SESSIONS], services.vault, closes) == 0
    args = (client.app[SESSIONS], services.vault, services.catalogue, services.settings)
    assert await tell_lottery_news(*args, closes) == 2  # the parent and the grandmother, about the child
    assert await tell_lottery_news(*args, closes) == 0  # once
    child = next(row for row in await _entries(client, made.id) if row.vaccinee_id == world.vaccinee_id)
    won = child.status == EntryStatus.OFFERED
    for who in (world.parent_user, world.grandma_user):
        (row,) = [row for row in await outbox_rows(client, recipient=who) if row.kind == OutboxKind.TEMPLATE]
        text = json.dumps(row.payload, ensure_ascii=False)
        assert "林*满" in text and CHILD.name not in text
        assert ("中签" in text and "确认中签" in text) if won else "候补第1位" in text
    if not won:
        # The stranger does not confirm: at the deadline the place passes down to the child, who is told.
        assert "候补第1位" in await channel.say(user, "我的摇号")
        deadline = closes + timedelta(hours=24)
        assert await run_pass_down(client.app[SESSIONS], deadline) == 1
        assert await tell_lottery_news(*args, deadline) == 2
        assert await tell_lottery_news(*args, deadline) == 0
        passed = [row for row in await outbox_rows(client, recipient=user) if row.kind == OutboxKind.TEMPLATE]
        assert len(passed) == 2 and "候补名额轮到林*满" in json.dumps(passed[-1].payload, ensure_ascii=False)
    assert "中签待确认" in await channel.say(user, "我的摇号")
    done = await channel.say(world.grandma_user, "确认中签")
    again = await channel.say(user, "确认中签")  # a second tap (another family member): the same booking
    async with client.app[SESSIONS]() as session:
        booked = (await session.scalars(select(Appointment).where(Appointment.vaccinee_id == world.vaccinee_id))).all()
    assert [row.status for row in booked] == [AppointmentStatus.BOOKED]
    assert "已为林*满确认中签名额" in done and f"预约号：{booked[0].number}" in done
    assert f"预约号：{booked[0].number}" in again
    async with client.app[SESSIONS]() as session:
        audited = (
            await session.scalars(select(AuditEntry.action).where(AuditEntry.vaccinee_id == world.vaccinee_id))
        ).all()
    assert {"lottery_entered", "lottery_news_sent", "lottery_confirmed", "lottery_entries_view"} <= set(audited)
    assert "已确认" in await channel.say(user, "我的摇号")

    # The child does not come: a later HepB lottery refuses the entry, kindly, with the date it ends.
    async with client.app[SESSIONS]() as session, session.begin():
        await session.execute(update(Appointment).values(status=AppointmentStatus.NO_SHOW))
    later = await _lottery(client, world.clinic_id, 12, utcnow() + timedelta(days=2))
    for answer in ("预约接种", "1", "1"):
        days = await channel.say(user, answer)
    assert "请选择日期" in days
    await channel.say(user, "2")  # the later day
    assert "请核对摇号报名信息" in await channel.say(user, "1")
    refused = await channel.say(user, "报名摇号")
    until = china_date(utcnow()) + timedelta(days=5 + 180)
    assert "不能报名" in refused and f"{until.year}年{until.month}月{until.day}日" in refused
    assert await _entries(client, later.id) == []
