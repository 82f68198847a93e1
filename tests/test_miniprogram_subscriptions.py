"""Subscription messages: each one-time consent recorded once, one spent per message, none sent without one."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from bot.certificates.rules import Grantee, add_grant
from bot.core.config import DEV_SUBSCRIBE_TEMPLATE, Settings
from bot.dev.demo import CHILD, GRANDMA, PARENT
from bot.dev.fakes.wechat import FakeWeChatAPI, WeChatClientSim
from bot.dev.fakes.wxmini import FakeMiniProgramAPI
from bot.platforms.wxmini.client import subscription_field_problem
from bot.platforms.wxmini.consents import consents_left, queue_subscription, record_consents
from bot.reminders.doses import next_reminder_time, plan_reminders, send_due_reminders
from bot.web.appkeys import ENGINE, SERVICES, SESSIONS
from models import AuditEntry, Certificate, ConsentSource, Identity, OutboxMessage, PlatformAccount, utcnow
from tests.channels import WeChat
from tests.helpers import Client, Gate, drain_outbox, outbox_rows
from tests.mini_channel import MiniProgram
from tests.test_reminders import DOSES
from tests.world import registry_file, verified

GRANDMA_MINI = "o-mini-grandma"


@pytest.fixture
def settings(make_settings: Any, fake_mini: tuple[FakeMiniProgramAPI, str, Gate]) -> Settings:
    """The test settings, with the mini program's API on its own fake."""
    return make_settings(wxmini_api_base=fake_mini[1])  # type: ignore[no-any-return]


async def _account(client: Client, platform: str, user: str) -> PlatformAccount:
    async with client.app[SESSIONS]() as session:
        query = select(PlatformAccount).where(PlatformAccount.platform == platform, PlatformAccount.user_id == user)
        return (await session.scalars(query)).one()


async def _left(client: Client, user: str, template: str = DEV_SUBSCRIBE_TEMPLATE) -> int:
    account = await _account(client, "wxmini", user)
    async with client.app[SESSIONS]() as session:
        return await consents_left(session, account.id, template)


@pytest.mark.parametrize("fmt", ["xml", "json"])
async def test_the_popup_records_one_consent_per_accepted_template(mini: MiniProgram, fmt: str) -> None:
    user = f"o-popup-{fmt}"
    popup = mini.sim.popup(user, {DEV_SUBSCRIBE_TEMPLATE: "accept", "other-template": "reject"}, fmt=fmt)
    for _ in range(2):  # WeChat's retry of the same push records nothing more
        assert await mini.push(popup) == (200, "success")
    await mini.client.app[ENGINE].drain(grace=5)
    assert await _left(mini.client, user) == 1
    assert await _left(mini.client, user, "other-template") == 0
    assert await outbox_rows(mini.client, recipient=user) == []  # a platform report gets no answer


async def test_a_tap_reported_by_push_and_by_the_page_is_one_consent(app_client: Client, mini: MiniProgram) -> None:
    user = "o-both-reports"
    await mini.push(mini.sim.popup(user, {DEV_SUBSCRIBE_TEMPLATE: "accept"}))
    await app_client.app[ENGINE].drain(grace=5)
    account = await _account(app_client, "wxmini", user)
    now = utcnow()
    async with app_client.app[SESSIONS]() as session, session.begin():
        # The page reports the same tap, then a second tap it alone saw (WeChat's push for it was lost).
        assert await record_consents(session, account, [DEV_SUBSCRIBE_TEMPLATE], ConsentSource.PAGE, now) == 0
        assert await record_consents(session, account, [DEV_SUBSCRIBE_TEMPLATE], ConsentSource.PAGE, now) == 1
    assert await _left(app_client, user) == 2


async def test_no_consent_no_message_and_one_consent_one_message(app_client: Client, mini: MiniProgram) -> None:
    user = "o-spend"
    await mini.do(user, ("text", "你好"))
    account = await _account(app_client, "wxmini", user)
    data = {"thing1": "林*满", "thing2": "百白破第1剂", "thing3": "现在可以接种"}

    async def queue(key: str) -> OutboxMessage | None:
        async with app_client.app[SESSIONS]() as session, session.begin():
            return await queue_subscription(
                session, account, template_id=DEV_SUBSCRIBE_TEMPLATE, data=data, page="", key=key, now=utcnow()
            )

    assert await queue("k1") is None  # nothing consented: nothing queued
    async with app_client.app[SESSIONS]() as session, session.begin():
        await record_consents(session, account, [DEV_SUBSCRIBE_TEMPLATE], ConsentSource.PAGE, utcnow())
    mini.fake.consent(user, DEV_SUBSCRIBE_TEMPLATE)
    assert await queue("k2") is not None
    assert await queue("k2") is None  # the same message is never queued (nor a consent spent) twice
    assert await queue("k3") is None  # the one consent is spent
    await drain_outbox(app_client)
    assert len(mini.fake.subscriptions_to(user)) == 1
    assert mini.fake.consents[(user, DEV_SUBSCRIBE_TEMPLATE)] == 0


def test_subscription_fields_follow_their_types() -> None:
    assert subscription_field_problem("thing1", "二十个字以内的事物说明") is None
    assert subscription_field_problem("thing1", "字" * 21) is not None
    assert subscription_field_problem("phrase2", "配送中") is None
    assert subscription_field_problem("phrase2", "不止五个汉字了") is not None
    assert subscription_field_problem("phrase2", "ok") is not None
    assert subscription_field_problem("character_string3", "A-001") is None
    assert subscription_field_problem("character_string3", "x" * 33) is not None
    assert subscription_field_problem("name4", "林晓雨") is None
    assert subscription_field_problem("name4", "林" * 11) is not None
    assert subscription_field_problem("time5", "2026年12月1日 09:00") is None
    assert subscription_field_problem("time5", "明天") is not None
    assert subscription_field_problem("keyword1", "x") is not None  # a template message's name, not a type


async def _family(client: Client, parent: WeChat) -> int:
    """The child held by the parent (Official Account), shared with the grandmother, who uses only the mini program."""
    child = await registry_file(
        client, ref="T-MINI", name=CHILD.name, id_number=CHILD.id_number, birth=CHILD.birth, sex="M", doses=DOSES
    )
    await parent.do("o-mini-parent", ("follow", ""))
    settings = client.app[SERVICES].settings
    holder = await verified(client, "wechat", "o-mini-parent", PARENT.name, PARENT.id_number, parent.app_id)
    await verified(client, "wxmini", GRANDMA_MINI, GRANDMA.name, GRANDMA.id_number, settings.wxmini_appid)
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


async def _remind(client: Client) -> int:
    services = client.app[SERVICES]
    sessions = client.app[SESSIONS]
    now = utcnow()
    await plan_reminders(sessions, services.vault, services.settings, now)
    send_at = next_reminder_time(now, services.settings.reminder_hour)
    sent = await send_due_reminders(sessions, services.vault, services.catalogue, services.settings, send_at)
    await drain_outbox(client)
    return sent


@pytest.mark.parametrize("consented", [0, 1, 2])
async def test_a_mini_program_only_grandmother_hears_once_per_consent(
    app_client: Client,
    wechat: WeChatClientSim,
    fake: FakeWeChatAPI,
    mini: MiniProgram,
    consented: int,
) -> None:
    await _family(app_client, WeChat(app_client, wechat, fake))
    for tap in range(consented):  # she tapped 「允许」 in the popup this many times, seconds apart
        tapped_at = int(time.time()) - 60 + tap
        await mini.push(mini.sim.popup(GRANDMA_MINI, {DEV_SUBSCRIBE_TEMPLATE: "accept"}, create_time=tapped_at))
        await app_client.app[ENGINE].drain(grace=5)
        mini.fake.consent(GRANDMA_MINI, DEV_SUBSCRIBE_TEMPLATE)
    assert await _remind(app_client) == (2 if consented else 1)  # the parent always, by template message
    to_grandma = mini.fake.subscriptions_to(GRANDMA_MINI)
    assert len(to_grandma) == (1 if consented else 0)
    assert await _left(app_client, GRANDMA_MINI) == max(consented - 1, 0)
    if consented:
        body = to_grandma[0]
        values = {name: value["value"] for name, value in body["data"].items()}
        assert body["template_id"] == DEV_SUBSCRIBE_TEMPLATE and body["page"]
        assert values["thing1"] == "林*满" and all(len(value) <= 20 for value in values.values())
        for secret in (CHILD.name, CHILD.id_number, GRANDMA.name, GRANDMA.id_number):
            assert secret not in str(body)
    async with app_client.app[SESSIONS]() as session:
        audit = (await session.scalars(select(AuditEntry).where(AuditEntry.action == "reminder_sent"))).one()
    assert [to.split(":")[0] for to in audit.detail["to"]] == (["wechat", "wxmini"] if consented else ["wechat"])
    assert [to.split(":")[0] for to in audit.detail["no_consent"]] == ([] if consented else ["wxmini"])


async def test_who_also_follows_the_official_account_hears_once_there(
    app_client: Client, wechat: WeChatClientSim, fake: FakeWeChatAPI, mini: MiniProgram
) -> None:
    parent = WeChat(app_client, wechat, fake)
    await _family(app_client, parent)
    await parent.do("o-grandma-oa", ("follow", ""))
    await verified(app_client, "wechat", "o-grandma-oa", GRANDMA.name, GRANDMA.id_number, parent.app_id)
    await mini.push(mini.sim.popup(GRANDMA_MINI, {DEV_SUBSCRIBE_TEMPLATE: "accept"}))
    await app_client.app[ENGINE].drain(grace=5)
    mini.fake.consent(GRANDMA_MINI, DEV_SUBSCRIBE_TEMPLATE)
    assert await _remind(app_client) == 2
    templates = [item for item in fake.received if item.path == "message/template/send"]
    assert sorted(item.body["touser"] for item in templates) == ["o-grandma-oa", "o-mini-parent"]
    assert mini.fake.subscriptions_to(GRANDMA_MINI) == []
    assert await _left(app_client, GRANDMA_MINI) == 1  # kept for a message only the mini program can carry


async def test_a_refused_subscription_is_dead_lettered_not_retried(app_client: Client, mini: MiniProgram) -> None:
    user = "o-revoked"
    await mini.do(user, ("text", "你好"))
    account = await _account(app_client, "wxmini", user)
    async with app_client.app[SESSIONS]() as session, session.begin():
        await record_consents(session, account, [DEV_SUBSCRIBE_TEMPLATE], ConsentSource.PAGE, utcnow())
        row = await queue_subscription(
            session,
            account,
            template_id=DEV_SUBSCRIBE_TEMPLATE,
            data={"thing1": "提醒"},
            page="",
            key="revoked-1",
            now=utcnow() - timedelta(seconds=1),
        )
        assert row is not None
    # WeChat has no consent on record (the user turned it off in the settings): 43101, given up at once.
    await drain_outbox(app_client)
    rows = await outbox_rows(app_client, recipient=user, kind="subscribe")
    assert [(r.status, "subscription_refused" in str(r.last_error)) for r in rows] == [("dead", True)]


@pytest.mark.parametrize("consented", [True, False])
async def test_a_notice_outside_the_window_goes_as_a_subscription_notice_only_with_a_consent(
    serve: Any, make_settings: Any, fake_mini: tuple[FakeMiniProgramAPI, str, Gate], consented: bool
) -> None:
    from bot.core.update import Text
    from bot.identity.accounts import notify

    client = await serve(make_settings(wxmini_api_base=fake_mini[1], wxmini_notice_template="dev-notice"))
    fake = fake_mini[0]
    settings = client.app[SERVICES].settings
    person = await verified(client, "wxmini", GRANDMA_MINI, GRANDMA.name, GRANDMA.id_number, settings.wxmini_appid)
    account = await _account(client, "wxmini", GRANDMA_MINI)  # she never wrote in the chat: no window
    if consented:
        async with client.app[SESSIONS]() as session, session.begin():
            await record_consents(session, account, ["dev-notice"], ConsentSource.PAGE, utcnow())
        fake.consent(GRANDMA_MINI, "dev-notice")
    async with client.app[SESSIONS]() as session, session.begin():
        await notify(
            session,
            Text("林*雨已授权您查看林*满的电子预防接种证。\n回复「接种记录」即可查看。"),
            "t",
            identity_ids=[person],
        )
    for _ in range(2):
        await drain_outbox(client)
    rows = await outbox_rows(client, recipient=GRANDMA_MINI)
    sent = fake.subscriptions_to(GRANDMA_MINI)
    assert fake.sent_to(GRANDMA_MINI) == []  # no customer-service message outside the window
    if consented:
        assert [row.status for row in rows] == ["sent"] and len(sent) == 1
        values = {name: value["value"] for name, value in sent[0]["data"].items()}
        assert values["thing1"].startswith("林*雨已授权您查看") and len(values["thing1"]) <= 20
        assert "年" in values["time2"] and ":" in values["time2"]
        async with client.app[SESSIONS]() as session:
            assert await consents_left(session, account.id, "dev-notice") == 0
    else:
        assert [(row.status, "no_consent" in str(row.last_error)) for row in rows] == [("dead", True)]
        assert sent == []


async def test_a_retried_notice_spends_its_consent_once(
    serve: Any, make_settings: Any, fake_mini: tuple[FakeMiniProgramAPI, str, Gate]
) -> None:
    from sqlalchemy import update as sql_update

    from bot.core.update import Text
    from bot.identity.accounts import notify

    client = await serve(make_settings(wxmini_api_base=fake_mini[1], wxmini_notice_template="dev-notice"))
    fake = fake_mini[0]
    settings = client.app[SERVICES].settings
    await verified(client, "wxmini", GRANDMA_MINI, GRANDMA.name, GRANDMA.id_number, settings.wxmini_appid)
    account = await _account(client, "wxmini", GRANDMA_MINI)
    async with client.app[SESSIONS]() as session, session.begin():
        for _ in range(2):  # two taps the page reported
            await record_consents(session, account, ["dev-notice"], ConsentSource.PAGE, utcnow())
        await notify(session, Text("您的取号：A012"), "queue", accounts=[account])
    fake.consent(GRANDMA_MINI, "dev-notice", times=2)
    fake.fail("message/subscribe/send", -1)  # WeChat busy once: the row is retried
    await drain_outbox(client)
    async with client.app[SESSIONS]() as session, session.begin():
        await session.execute(sql_update(OutboxMessage).values(available_at=utcnow()))
    await drain_outbox(client)
    assert len(fake.subscriptions_to(GRANDMA_MINI)) == 1
    assert await _left(client, GRANDMA_MINI, "dev-notice") == 1  # two consents, one message: one left
