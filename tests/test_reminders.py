"""Dose reminders: planned from the forecast, sent once per child to the holder and every grantee on
their own platforms (template messages through the real senders and the platform fakes), audited."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from bot.certificates.rules import Grantee, add_grant
from bot.core.chinatime import CHINA, china_date, china_today
from bot.core.config import DEV_REMINDER_TEMPLATE
from bot.core.pii import Vault
from bot.dev.demo import CHILD, GRANDMA, PARENT
from bot.dev.fakes.alipay import AlipayClientSim
from bot.dev.fakes.alipay_gateway import SINGLE_SEND, FakeAlipayGateway
from bot.dev.fakes.wechat import FakeWeChatAPI, WeChatClientSim
from bot.reminders.doses import next_reminder_time, plan_reminders, send_due_reminders
from bot.web.appkeys import SERVICES, SESSIONS
from models import AuditEntry, Certificate, Dose, DoseDetail, Grant, Identity, PlatformAccount, Reminder, utcnow
from tests.channels import Alipay, WeChat
from tests.helpers import Client, drain_outbox
from tests.world import registry_file, verified

# Born 2023-05-20: HepB and BCG only, so the DTaP, IPV, MMR… series are all late on any day after 2026.
DOSES = [("HepB", 1, date(2023, 5, 20)), ("BCG", 1, date(2023, 5, 21)), ("HepB", 2, date(2023, 6, 20))]
SECRETS = [CHILD.name, CHILD.id_number, PARENT.name, PARENT.id_number, GRANDMA.name, GRANDMA.id_number]


@pytest.fixture
def family(
    app_client: Client,
    wechat: WeChatClientSim,
    fake: FakeWeChatAPI,
    alipay: AlipayClientSim,
    fake_alipay: tuple[FakeAlipayGateway, str],
) -> tuple[WeChat, Alipay]:
    """The parent's side on WeChat and the grandmother's on Alipay."""
    return WeChat(app_client, wechat, fake), Alipay(app_client, alipay, fake_alipay[0])


def test_reminders_wait_for_the_morning_in_china() -> None:
    def at(hour: int, minute: int = 0) -> datetime:
        return datetime(2026, 11, 23, hour, minute, tzinfo=CHINA)

    assert next_reminder_time(at(8, 59), 9) == at(9)
    assert next_reminder_time(at(9), 9) == at(9)
    assert next_reminder_time(at(9, 1), 9) == at(9) + timedelta(days=1)
    assert next_reminder_time(datetime(2026, 11, 23, 16, 30, tzinfo=UTC), 9) == at(9) + timedelta(days=1)  # 00:30


async def _world(client: Client, parent: WeChat, grandma: Alipay) -> int:
    """The child's certificate held by the parent (WeChat), shared with the grandmother (Alipay)."""
    child = await registry_file(
        client, ref="T-REM", name=CHILD.name, id_number=CHILD.id_number, birth=CHILD.birth, sex="M", doses=DOSES
    )
    await parent.do("o-rem-parent", ("follow", ""))
    await grandma.do("2088000000000951", ("follow", ""))
    holder = await verified(client, "wechat", "o-rem-parent", PARENT.name, PARENT.id_number, parent.app_id)
    await verified(client, "alipay", "2088000000000951", GRANDMA.name, GRANDMA.id_number, grandma.app_id)
    services = client.app[SERVICES]
    async with client.app[SESSIONS]() as session, session.begin():
        certificate = Certificate(vaccinee_id=child, holder_identity_id=holder, kind="child", claimed_via="wechat")
        session.add(certificate)
        await session.flush()
        holder_row = await session.get(Identity, holder)
        assert holder_row is not None
        grantee = Grantee(GRANDMA.id_number, GRANDMA.name, "grandmother", "13912345678")
        grant, _ = await add_grant(
            session, services.vault, holder_row, certificate, grantee, services.settings, "t", utcnow()
        )
        assert grant is not None
    return child


async def test_planned_once_sent_once_to_the_holder_and_the_grantee(
    app_client: Client, family: tuple[WeChat, Alipay], fake: FakeWeChatAPI, fake_alipay: tuple[FakeAlipayGateway, str]
) -> None:
    child = await _world(app_client, *family)
    services = app_client.app[SERVICES]
    sessions = app_client.app[SESSIONS]
    now = utcnow()

    planned = await plan_reminders(sessions, services.vault, services.settings, now)
    assert planned >= 5  # DTaP, IPV, HepB 3, MMR, JE… all late
    assert await plan_reminders(sessions, services.vault, services.settings, now) == 0  # never twice
    async with sessions() as session:
        reminders = (await session.scalars(select(Reminder))).all()
    send_at = next_reminder_time(now, services.settings.reminder_hour)
    assert {r.send_at for r in reminders} == {send_at} and {r.vaccinee_id for r in reminders} == {child}
    assert ("DTaP", 1) in {_dose(services.vault, r) for r in reminders}

    # HepB 3 is given before the morning: its reminder is dropped, the others still go.
    async with sessions() as session, session.begin():
        session.add(Dose.sealed(services.vault, child, DoseDetail("HepB", 3, china_today()), china_today()))
    assert (
        await send_due_reminders(
            sessions, services.vault, services.catalogue, services.settings, send_at - timedelta(minutes=1)
        )
        == 0
    )
    assert await send_due_reminders(sessions, services.vault, services.catalogue, services.settings, send_at) == 2
    assert await send_due_reminders(sessions, services.vault, services.catalogue, services.settings, send_at) == 0
    await drain_outbox(app_client)

    to_parent = [
        item.body
        for item in fake.received
        if item.path == "message/template/send" and item.body.get("touser") == "o-rem-parent"
    ]
    assert len(to_parent) == 1 and to_parent[0]["template_id"] == DEV_REMINDER_TEMPLATE
    values = {key: value["value"] for key, value in to_parent[0]["data"].items()}
    assert (
        values["keyword1"] == "林*满" and "已经逾期" in values["first"] and values["keyword3"] == "已逾期，请尽快接种"
    )
    assert re.fullmatch(r".+第1剂等\d+剂", values["keyword2"]) and len(values["keyword2"]) <= 20  # summed up
    to_grandma = [item.biz for item in fake_alipay[0].calls(SINGLE_SEND) if item.to_user_id == "2088000000000951"]
    assert len(to_grandma) == 1
    context: dict[str, Any] = to_grandma[0]["template"]["context"]
    assert context["keyword1"]["value"] == "林*满" and context["keyword2"]["value"] == values["keyword2"]
    everything = str(to_parent) + str(to_grandma)
    for secret in SECRETS:
        assert secret not in everything

    async with sessions() as session:
        rows = {_dose(services.vault, r): r for r in (await session.scalars(select(Reminder))).all()}
        audit = (await session.scalars(select(AuditEntry).where(AuditEntry.action == "reminder_sent"))).all()
    assert rows[("HepB", 3)].status == "cancelled" and rows[("DTaP", 1)].status == "sent"
    assert len(audit) == 1 and rows[("DTaP", 1)].id in audit[0].detail["reminders"]
    assert rows[("HepB", 3)].id not in audit[0].detail["reminders"] and "DTaP" not in str(audit[0].detail)
    assert [to.split(":")[0] for to in audit[0].detail["to"]] == ["alipay", "wechat"]


async def test_no_reminders_for_adults_or_complete_children(app_client: Client) -> None:
    from bot.dev.demo import WX_CHILD, WX_CHILD_DOSES, WX_PARENT

    services = app_client.app[SERVICES]
    complete = await registry_file(
        app_client,
        ref="T-DONE",
        name=WX_CHILD.name,
        id_number=WX_CHILD.id_number,
        birth=WX_CHILD.birth,
        sex="M",
        doses=WX_CHILD_DOSES,
    )
    father = await verified(app_client, "wechat", "o-rem-father", WX_PARENT.name, WX_PARENT.id_number, "wx")
    async with app_client.app[SESSIONS]() as session, session.begin():
        session.add(Certificate(vaccinee_id=complete, holder_identity_id=father, kind="child", claimed_via="wechat"))
    adult = await registry_file(
        app_client, ref="T-ADULT", name=PARENT.name, id_number=PARENT.id_number, birth=PARENT.birth
    )
    holder = await verified(app_client, "wechat", "o-rem-adult", PARENT.name, PARENT.id_number, "wx")
    async with app_client.app[SESSIONS]() as session, session.begin():
        session.add(Certificate(vaccinee_id=adult, holder_identity_id=holder, kind="adult", claimed_via="wechat"))
    assert await plan_reminders(app_client.app[SESSIONS], services.vault, services.settings, utcnow()) == 0


async def _planned(client: Client, parent: WeChat, grandma: Alipay) -> tuple[int, datetime]:
    """The world, with its reminders planned; returns the child and the morning they are for."""
    child = await _world(client, parent, grandma)
    services = client.app[SERVICES]
    now = utcnow()
    assert await plan_reminders(client.app[SESSIONS], services.vault, services.settings, now) > 0
    return child, next_reminder_time(now, services.settings.reminder_hour)


async def _send(client: Client, at: datetime) -> int:
    services = client.app[SERVICES]
    return await send_due_reminders(client.app[SESSIONS], services.vault, services.catalogue, services.settings, at)


def _dose(vault: Vault, reminder: Reminder) -> tuple[str, int]:
    detail = reminder.detail(vault)
    return detail.vaccine_code, detail.dose_number


async def _statuses(client: Client) -> dict[tuple[str, int], Reminder]:
    vault = client.app[SERVICES].vault
    async with client.app[SESSIONS]() as session:
        return {_dose(vault, r): r for r in (await session.scalars(select(Reminder))).all()}


async def test_nothing_goes_out_at_night_and_two_senders_send_once(
    app_client: Client, family: tuple[WeChat, Alipay]
) -> None:
    _, morning = await _planned(app_client, *family)
    night = morning + timedelta(hours=17)  # 02:00 the next day, the backlog still due
    assert await _send(app_client, night) == 0
    assert {r.status for r in (await _statuses(app_client)).values()} == {"scheduled"}
    sent = await asyncio.gather(_send(app_client, morning), _send(app_client, morning))
    assert sum(sent) == 2  # one message each for the holder and the grandmother, whoever sent it


async def test_a_revoked_grantee_and_a_dose_moved_later(app_client: Client, family: tuple[WeChat, Alipay]) -> None:
    child, morning = await _planned(app_client, *family)
    async with app_client.app[SESSIONS]() as session, session.begin():
        await session.execute(update(Grant).values(revoked_at=utcnow()))
        # MMR 1 given the day before the morning: the other live vaccines (JE-L 1…) must wait 28 days now.
        given = china_date(morning) - timedelta(days=1)
        vault = app_client.app[SERVICES].vault
        session.add(Dose.sealed(vault, child, DoseDetail("MMR", 1, given), effective_from=given))
    assert await _send(app_client, morning) == 1  # the holder only
    reminders = await _statuses(app_client)
    assert reminders[("MMR", 1)].status == "cancelled"
    later = reminders[("JE-L", 1)]
    assert later.status == "scheduled" and later.send_at > morning + timedelta(days=20)  # near its new date


async def test_nobody_following_means_no_recipient(app_client: Client, family: tuple[WeChat, Alipay]) -> None:
    _, morning = await _planned(app_client, *family)
    async with app_client.app[SESSIONS]() as session, session.begin():
        await session.execute(update(PlatformAccount).values(following=False))
    assert await _send(app_client, morning) == 0
    assert {r.status for r in (await _statuses(app_client)).values()} <= {"no_recipient", "cancelled"}
