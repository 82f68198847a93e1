"""Authorising a grandmother who uses only the WeChat mini program: the parent is told she was notified only when
a message can reach her (inside the mini program's window, or with a consent to the notice template)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from bot.core.config import Settings
from bot.dev.demo import GRANDMA, PARENT, seed_demo
from bot.dev.fakes.wechat import FakeWeChatAPI, WeChatClientSim
from bot.dev.fakes.wxmini import FakeMiniProgramAPI
from bot.platforms.wxmini.consents import record_consents
from bot.web.appkeys import SERVICES, SESSIONS
from models import ConsentSource, PlatformAccount, utcnow
from tests.channels import WeChat
from tests.helpers import Client, Gate, drain_outbox
from tests.world import verified

NOTICE_TEMPLATE = "general-notice-template-01"
GRANDMA_USER = "o-mini-grandma"


@pytest.fixture
def settings(make_settings: Any, fake_mini: tuple[FakeMiniProgramAPI, str, Gate]) -> Settings:
    """The mini program on its fake, with a general notice template configured."""
    return make_settings(wxmini_api_base=fake_mini[1], wxmini_notice_template=NOTICE_TEMPLATE)  # type: ignore[no-any-return]


async def _grant_grandma(client: Client, parent: WeChat) -> str:
    """The parent (Official Account) claims the child and authorises the grandmother; the last answer."""
    settings = client.app[SERVICES].settings
    assert await seed_demo(client.app[SESSIONS], client.app[SERVICES].vault)
    await verified(client, "wechat", "o-parent", PARENT.name, PARENT.id_number, settings.wechat_appid)
    await verified(client, "wxmini", GRANDMA_USER, GRANDMA.name, GRANDMA.id_number, settings.wxmini_appid)
    listing = "\n".join(await parent.do("o-parent", ("click", "CERT_CLAIM")))
    number = next(line.split(".")[0] for line in listing.splitlines() if "林*满" in line and "." in line)
    await parent.say("o-parent", number)
    assert "申领成功" in await parent.say("o-parent", "同意并申领")
    await parent.do("o-parent", ("click", "CERT_GRANT"))
    for step in ("添加", GRANDMA.name, GRANDMA.id_number, "祖母", "13912345678"):
        await parent.say("o-parent", step)
    return await parent.say("o-parent", "确认授权")


async def test_a_grandmother_only_in_the_mini_program_without_a_consent_is_not_called_notified(
    app_client: Client, wechat: WeChatClientSim, fake: FakeWeChatAPI, fake_mini: tuple[FakeMiniProgramAPI, str, Gate]
) -> None:
    done = await _grant_grandma(app_client, WeChat(app_client, wechat, fake))
    catalogue = app_client.app[SERVICES].catalogue
    assert "已授权周*兰（祖母）" in done
    assert catalogue("grant_added_not_reached") in done
    assert catalogue("grant_added_notified") not in done and "关注" not in done  # she is verified: no such advice
    await drain_outbox(app_client)
    assert [item for item in fake_mini[0].received if item.body.get("touser") == GRANDMA_USER] == []


async def test_with_a_consent_to_the_notice_she_is_told_and_the_parent_hears_so(
    app_client: Client, wechat: WeChatClientSim, fake: FakeWeChatAPI, fake_mini: tuple[FakeMiniProgramAPI, str, Gate]
) -> None:
    settings = app_client.app[SERVICES].settings
    await verified(app_client, "wxmini", GRANDMA_USER, GRANDMA.name, GRANDMA.id_number, settings.wxmini_appid)
    async with app_client.app[SESSIONS]() as session, session.begin():
        account = (await session.scalars(select(PlatformAccount).where(PlatformAccount.user_id == GRANDMA_USER))).one()
        await record_consents(session, account, [NOTICE_TEMPLATE], ConsentSource.PAGE, utcnow())
    fake_mini[0].consent(GRANDMA_USER, NOTICE_TEMPLATE)
    done = await _grant_grandma(app_client, WeChat(app_client, wechat, fake))
    assert app_client.app[SERVICES].catalogue("grant_added_notified") in done
    await drain_outbox(app_client)
    [notice] = fake_mini[0].subscriptions_to(GRANDMA_USER)  # outside her window: as the notice, one consent
    assert notice["template_id"] == NOTICE_TEMPLATE and notice["data"]["thing1"]["value"].startswith("您好！林*雨")
