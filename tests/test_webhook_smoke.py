"""The webhook end to end: follow, text, and the three encryption modes."""

from __future__ import annotations

import pytest

from bot.fakes.wechat import FakeWeChatAPI, WeChatClientSim
from tests.helpers import Client, drain_outbox, post


@pytest.mark.parametrize("mode", ["safe", "compatible", "plain"])
async def test_follow_gets_welcome_in_every_mode(app_client: Client, wechat: WeChatClientSim, mode: str) -> None:
    status, body = await post(app_client, wechat.sign(wechat.event("o-parent-1", "subscribe"), mode=mode))
    assert status == 200
    reply = wechat.open_reply(body)
    assert reply is not None
    assert reply["MsgType"] == "text"
    assert reply["ToUserName"] == "o-parent-1"
    assert "欢迎关注电子预防接种证助手" in reply["Content"]
    if mode != "plain":
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
