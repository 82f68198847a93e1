"""The webhook end to end: follow, text, and the three encryption modes."""

from __future__ import annotations

from typing import Any

import pytest

from bot.core.config import DEV_WECHAT_AES_KEY
from bot.dev.fakes.wechat import FakeWeChatAPI, WeChatClientSim
from tests.conftest import Serve
from tests.helpers import Client, drain_outbox, post


@pytest.mark.parametrize("mode", ["safe", "compatible"])
async def test_follow_gets_welcome_in_every_mode(app_client: Client, wechat: WeChatClientSim, mode: str) -> None:
    status, body = await post(app_client, wechat.sign(wechat.event("o-parent-1", "subscribe"), mode=mode))
    assert status == 200
    reply = wechat.open_reply(body)
    assert reply is not None
    assert reply["MsgType"] == "text"
    assert reply["ToUserName"] == "o-parent-1"
    assert "欢迎关注电子预防接种证助手" in reply["Content"]
    assert "<Encrypt>" in body


async def test_text_question_answered_from_faq(app_client: Client, wechat: WeChatClientSim) -> None:
    status, body = await post(app_client, wechat.sign(wechat.text("o-parent-2", "为什么看不到狂犬疫苗的记录？")))
    assert status == 200
    reply = wechat.open_reply(body)
    assert reply is not None and "犬伤预防接种信息系统" in reply["Content"]


async def test_passive_reply_is_not_sent_again_by_worker(
    app_client: Client, wechat: WeChatClientSim, fake_wechat: tuple[FakeWeChatAPI, str]
) -> None:
    await post(app_client, wechat.sign(wechat.text("o-parent-3", "客服电话")))
    await drain_outbox(app_client)
    assert fake_wechat[0].sent_to("o-parent-3") == []


async def test_plain_mode_works_without_an_aes_key(make_settings: Any, serve: Serve) -> None:
    settings = make_settings(wechat_aes_key="")
    client = await serve(settings)
    sim = WeChatClientSim(settings.wechat_token, settings.wechat_appid)
    status, body = await post(client, sim.sign(sim.event("o-plain", "subscribe"), mode="plain"))
    assert status == 200 and "<Encrypt>" not in body
    reply = sim.open_reply(body)
    assert reply is not None and "欢迎关注" in reply["Content"]
    other = WeChatClientSim(settings.wechat_token, settings.wechat_appid, DEV_WECHAT_AES_KEY)
    refused, _ = await post(client, other.sign(other.text("o-plain", "你好"), mode="safe"))
    assert refused == 400  # encrypted, but we hold no key


async def test_plain_request_is_refused_when_a_key_is_configured(app_client: Client, wechat: WeChatClientSim) -> None:
    # A captured signature/timestamp/nonce must not let anyone post an unencrypted body of their choosing.
    captured = wechat.sign(wechat.text("o-victim", "你好"))
    forged = wechat.sign(wechat.text("o-victim", "客服电话"), mode="plain")
    forged.query.update({k: captured.query[k] for k in ("signature", "timestamp", "nonce")})
    status, body = await post(app_client, forged)
    assert status == 403 and "plain request" in body
