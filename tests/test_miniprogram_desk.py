"""The clinic desk's news to a mini-program-only family: a subscription message of the desk template, one consent
each, with the queue number and the step in typed fields; without a consent, a text as before (never sent outside
the chat's window)."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from bot.core.config import ConfigError, Settings, load_settings
from bot.desk import steps
from bot.desk.notify import DeskNews, FamilyTeller
from bot.dev.fakes.wxmini import FakeMiniProgramAPI
from bot.platforms.wxmini.consents import consents_left, record_consents
from bot.web.appkeys import SERVICES, SESSIONS
from models import ConsentSource, OutboxKind, OutboxMessage, OutboxStatus, PlatformAccount, SubscriptionConsent
from tests.desk_kit import GIVEN, NO_PROBLEMS, desk_world, plan, queue_visit
from tests.helpers import Client, Gate, drain_outbox

DESK_TEMPLATE = "desk-progress-template-0001"


@pytest.fixture
def settings(make_settings: Any, fake_mini: tuple[FakeMiniProgramAPI, str, Gate]) -> Settings:
    """The test settings, with the mini program's API on its own fake."""
    return make_settings(wxmini_api_base=fake_mini[1])  # type: ignore[no-any-return]


async def _step(client: Client, call: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
    services = client.app[SERVICES]
    async with client.app[SESSIONS]() as session, session.begin():
        return await call(session, services.vault, *args, **kwargs)


async def _consent(client: Client, fake: FakeMiniProgramAPI, user: str) -> None:
    """The user taps 「允许」 once for the desk template: recorded by us and known to WeChat."""
    async with client.app[SESSIONS]() as session, session.begin():
        account = (await session.scalars(select(PlatformAccount).where(PlatformAccount.user_id == user))).one()
        assert await record_consents(session, account, [DESK_TEMPLATE], ConsentSource.PAGE, datetime.now(UTC)) == 1
    fake.consent(user, DESK_TEMPLATE)


async def test_a_mini_program_grandmother_hears_the_queue_number_and_the_dose_as_subscription_messages(
    app_client: Client, fake_mini: tuple[FakeMiniProgramAPI, str, Gate]
) -> None:
    client, fake = app_client, fake_mini[0]
    services = client.app[SERVICES]
    world = await desk_world(client, "wxmini", services.settings.wxmini_appid)  # nobody wrote: outside the window
    teller = FamilyTeller.from_settings(
        dataclasses.replace(services.settings, wxmini_desk_template=DESK_TEMPLATE), services.catalogue
    )
    await _consent(client, fake, world.grandma_user)
    visit = await queue_visit(client, world, world.grandma_id, family=teller)  # she shows the code
    await _step(client, steps.register, world.actor, visit, NO_PROBLEMS, desk="2号接种台", family=teller)
    await _step(client, steps.request_confirmation, world.actor, visit, plan(), family=teller)
    await _step(client, steps.confirm_in_person, world.actor, visit, "家长当面口头核对")
    await _consent(client, fake, world.grandma_user)  # the records page asks again before the dose
    await _step(client, steps.vaccinate, world.actor, visit, GIVEN, family=teller)
    await drain_outbox(client)
    await drain_outbox(client)  # a second pass sends nothing again

    queued, dose = fake.subscriptions_to(world.grandma_user)
    number = queued["data"]["character_string4"]["value"]
    assert queued["template_id"] == DESK_TEMPLATE and number.isdigit()
    assert (queued["data"]["thing1"]["value"], queued["data"]["phrase2"]["value"]) == ("林*满", "取号")
    assert dose["data"]["phrase2"]["value"] == "接种" and "乙肝" in dose["data"]["thing3"]["value"]
    assert dose["data"]["character_string4"]["value"] == "-" and "年" in dose["data"]["time5"]["value"]
    assert len(dose["data"]["thing3"]["value"]) <= 20
    # The parent consented to nothing: no subscription message, and no text outside the window either.
    assert fake.subscriptions_to(world.parent_user) == []
    assert [item for item in fake.received if item.body.get("touser") == world.parent_user] == []

    async with client.app[SESSIONS]() as session:
        grandma = (
            await session.scalars(select(PlatformAccount).where(PlatformAccount.user_id == world.grandma_user))
        ).one()
        assert await consents_left(session, grandma.id, DESK_TEMPLATE) == 0
        spent = (await session.scalars(select(SubscriptionConsent.spent_for).order_by(SubscriptionConsent.id))).all()
        rows = (
            await session.scalars(
                select(OutboxMessage).where(OutboxMessage.recipient == world.grandma_user).order_by(OutboxMessage.id)
            )
        ).all()
    assert spent == [f"desk_queue:{visit}:{grandma.id}", f"desk:{visit}:vaccinated:{grandma.id}"]
    subscribed = [row for row in rows if row.kind == OutboxKind.SUBSCRIBE]
    assert [row.status for row in subscribed] == [OutboxStatus.SENT, OutboxStatus.SENT]
    # The steps between, with no consent left, fell back to texts, which the sender could not deliver.
    texts = [row for row in rows if row.kind == OutboxKind.TEXT]
    assert texts and all(row.status == OutboxStatus.DEAD for row in texts)


async def test_inside_the_window_the_desk_news_is_a_text_and_no_consent_is_spent(
    app_client: Client, fake_mini: tuple[FakeMiniProgramAPI, str, Gate]
) -> None:
    client, fake = app_client, fake_mini[0]
    services = client.app[SERVICES]
    world = await desk_world(client, "wxmini", services.settings.wxmini_appid)
    teller = FamilyTeller.from_settings(
        dataclasses.replace(services.settings, wxmini_desk_template=DESK_TEMPLATE), services.catalogue
    )
    await _consent(client, fake, world.grandma_user)
    async with client.app[SESSIONS]() as session, session.begin():
        grandma = (
            await session.scalars(select(PlatformAccount).where(PlatformAccount.user_id == world.grandma_user))
        ).one()
        grandma.last_inbound_at = datetime.now(UTC)  # she just wrote in the mini program's chat
        grandma.last_interaction_kind = "text"
    fake.note_contact(world.grandma_user)
    await queue_visit(client, world, world.grandma_id, family=teller)
    await drain_outbox(client)
    assert fake.subscriptions_to(world.grandma_user) == []
    async with client.app[SESSIONS]() as session:
        assert await consents_left(session, grandma.id, DESK_TEMPLATE) == 1  # kept for when she is away


def test_desk_news_fits_the_typed_fields_or_is_refused() -> None:
    teller = FamilyTeller.plain()
    teller = dataclasses.replace(teller, mini_template=DESK_TEMPLATE)
    now = datetime(2026, 12, 1, 1, 5, tzinfo=UTC)
    long = "今天接种的是百白破疫苗第三剂，请在门诊留观三十分钟后再离开"
    data = teller.subscription_data(DeskNews("…", "林*满", "接种", long, number="12"), now)
    assert data is not None
    assert data["thing3"] == long[:19] + "…" and data["character_string4"] == "12"
    assert data["time5"] == "2026年12月1日 09:05"  # China time
    # A step that is no phrase (more than five Chinese characters) cannot be sent: the caller sends a text.
    assert teller.subscription_data(DeskNews("…", "林*满", "已经完成留观了", "可以离开"), now) is None


def test_the_desk_field_mapping_is_checked_at_start(tmp_path: Any) -> None:
    environ = {"VAXBOT_ENV": "test", "VAXBOT_ENV_FILE": str(tmp_path / "none.env")}
    good = load_settings({**environ, "VAXBOT_WXMINI_DESK_FIELDS": "name=thing2,step=phrase1,time=time3"})
    assert good.wxmini_desk_fields == ("name=thing2", "step=phrase1", "time=time3")
    for bad in ("name=thing1,name=thing2,step=phrase3", "name=thing1", "who=thing1,step=phrase2", "name=x,step=y"):
        with pytest.raises(ConfigError):
            load_settings({**environ, "VAXBOT_WXMINI_DESK_FIELDS": bad})
