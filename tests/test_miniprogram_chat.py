"""The mini program's customer-service chat: the same journeys as the Official Account, its own app and token."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from bot.core.config import Settings
from bot.dev.fakes.wechat import FakeWeChatAPI, WeChatClientSim
from bot.dev.fakes.wxmini import FakeMiniProgramAPI, MiniProgramClientSim
from bot.web.appkeys import ENGINE, SESSIONS
from models import ConversationState, OutboxMessage, PlatformAccount, utcnow
from tests.channels import WeChat
from tests.helpers import Client, Gate, drain_outbox, outbox_rows
from tests.mini_channel import MiniProgram
from tests.test_journeys_both_platforms import SCRIPT


@pytest.fixture
def settings(make_settings: Any, fake_mini: tuple[FakeMiniProgramAPI, str, Gate]) -> Settings:
    """The test settings, with the mini program's API on its own fake."""
    return make_settings(wxmini_api_base=fake_mini[1])  # type: ignore[no-any-return]


CHAT_STEPS = [step for step, _ in SCRIPT if step[0] not in ("follow", "unfollow", "enter")]


@pytest.mark.parametrize("fmt", ["xml", "json"])
async def test_the_same_script_reads_the_same_as_on_the_official_account(
    app_client: Client,
    wechat: WeChatClientSim,
    fake: FakeWeChatAPI,
    mini_sim: MiniProgramClientSim,
    fake_mini: tuple[FakeMiniProgramAPI, str, Gate],
    fmt: str,
) -> None:
    official, chat = WeChat(app_client, wechat, fake), MiniProgram(app_client, mini_sim, fake_mini[0], fmt)
    await official.do("same-oa", ("follow", ""))
    await chat.do("same-mini", ("enter", "records"))
    on_official = [await official.do("same-oa", step) for step in CHAT_STEPS]
    in_mini = [await chat.do("same-mini", step) for step in CHAT_STEPS]
    assert in_mini == on_official
    assert sum(len(answers) for answers in in_mini) >= 6
    # Every answer went out through message/custom/send with the mini program's own token, none passively.
    rows = await outbox_rows(app_client, recipient="same-mini")
    assert rows and {(row.platform, row.app_id, row.status) for row in rows} == {("wxmini", mini_sim.app_id, "sent")}
    tokens = {item.token for item in fake_mini[0].received}
    assert tokens and tokens <= set(fake_mini[0].tokens) and not tokens & set(fake.tokens)
    assert [item for item in fake.received if item.body.get("touser") == "same-mini"] == []


async def test_a_link_card_goes_out_as_a_link_not_news(mini: MiniProgram) -> None:
    await mini.do("mini-link", ("text", "实名认证"))
    await mini.do("mini-link", ("text", "林晓雨"))
    answers = await mini.do("mini-link", ("text", "320602199203141227"))
    kinds = [item.body["msgtype"] for item in mini.fake.sent_to("mini-link")]
    assert "link" in kinds and "news" not in kinds
    assert any(answer.startswith("[链接] ") and "/verify/" in answer for answer in answers), answers


async def test_the_official_account_and_the_mini_program_keep_separate_conversations(
    app_client: Client, wechat: WeChatClientSim, fake: FakeWeChatAPI, mini: MiniProgram
) -> None:
    official = WeChat(app_client, wechat, fake)
    user = "o-same-person"  # the same id string on both apps must still be two conversations
    await official.do(user, ("text", "实名认证"))
    mini_answers = await mini.do(user, ("text", "随便说点什么"))
    assert any("没太明白" in answer for answer in mini_answers), mini_answers
    async with app_client.app[SESSIONS]() as session:
        states = (await session.scalars(select(ConversationState).where(ConversationState.user_id == user))).all()
        accounts = (await session.scalars(select(PlatformAccount).where(PlatformAccount.user_id == user))).all()
    assert {state.platform for state in states} >= {"wechat"}
    assert sorted(account.platform for account in accounts) == ["wechat", "wxmini"]


async def test_an_answer_after_the_window_is_dead_lettered_not_sent(app_client: Client, mini: MiniProgram) -> None:
    user = "mini-late"
    status, _ = await mini.push(mini.sim.text_push(user, "客服电话"))
    assert status == 200
    await app_client.app[ENGINE].drain(grace=5)
    async with app_client.app[SESSIONS]() as session, session.begin():
        await session.execute(
            update(PlatformAccount)
            .where(PlatformAccount.user_id == user)
            .values(last_inbound_at=utcnow() - timedelta(hours=49))
        )
        due_now = update(OutboxMessage).where(OutboxMessage.recipient == user).values(available_at=utcnow())
        await session.execute(due_now)
    await drain_outbox(app_client)
    rows = await outbox_rows(app_client, recipient=user)
    assert [(row.status, "window" in str(row.last_error)) for row in rows] == [("dead", True)]
    assert mini.fake.sent_to(user) == []


async def test_opening_the_chat_allows_answers_for_a_minute_only(app_client: Client, mini: MiniProgram) -> None:
    user = "mini-enter"
    assert await mini.do(user, ("enter", "")) == []  # opening the chat asks for no answer
    async with app_client.app[SESSIONS]() as session:
        account = (await session.scalars(select(PlatformAccount).where(PlatformAccount.user_id == user))).one()
    assert account.last_interaction_kind == "enter"


@pytest.mark.parametrize("mode", ["safe", "plain"])
async def test_json_and_xml_pushes_become_the_same_update(
    app_client: Client, settings: object, mini: MiniProgram, mode: str
) -> None:
    from bot.platforms.wxmini.inbound import MiniProgramGateway

    gateway = MiniProgramGateway(settings)  # type: ignore[arg-type]
    if mode == "plain":
        import dataclasses

        gateway = MiniProgramGateway(dataclasses.replace(settings, wxmini_aes_key=""))  # type: ignore[type-var]
    created = int(time.time())
    updates = []
    for fmt in ("xml", "json"):
        body = mini.sim.push("o-fmt", "text", {"Content": "你好", "MsgId": 42}, fmt=fmt, create_time=created)
        request = mini.sim.sign_push(body, mode=mode)
        updates.append(gateway.open_push(request.query, request.body))
    assert updates[0] == updates[1]
    assert (updates[0].platform.value, updates[0].text, updates[0].message_id) == ("wxmini", "你好", "42")


async def test_every_rejection_path_answers_4xx_and_changes_nothing(app_client: Client, mini: MiniProgram) -> None:
    from bot.dev.fakes.wechat import SignedRequest
    from tests.helpers import post

    body = mini.sim.text_push("o-bad", "你好")
    good = mini.sim.sign_push(body)
    forged = SignedRequest({**good.query, "signature": "0" * 40}, good.body)
    bad_msg = SignedRequest({**good.query, "msg_signature": "0" * 40}, good.body)
    stale = mini.sim.sign_push(body, timestamp=int(time.time()) - 3600)
    plain = mini.sim.sign_push(body, mode="plain")
    official = WeChatClientSim(mini.sim.token, "wx0000000000de0001", mini.sim.aes_key)  # another app's envelope
    other_app = official.sign(body)
    unsigned = SignedRequest({}, good.body)
    json_plain = MiniProgramClientSim(mini.sim.token, mini.sim.app_id).sign_push('{"ToUserName": [', mode="plain")
    cases = {
        "unsigned": (unsigned, 400),
        "bad signature": (forged, 403),
        "bad msg_signature": (bad_msg, 403),
        "stale timestamp": (stale, 403),
        "plain body in safe mode": (plain, 403),
        "wrong app id": (other_app, 403),
        "plain non-json": (json_plain, 403),  # refused before the body is read while an AES key is set
    }
    for name, (request, expected) in cases.items():
        status, _ = await post(app_client, request, path="/wechat/mini")
        assert status == expected, name
    assert await outbox_rows(app_client, recipient="o-bad") == []
    async with app_client.app[SESSIONS]() as session:
        assert (await session.scalars(select(PlatformAccount).where(PlatformAccount.user_id == "o-bad"))).all() == []


async def test_a_retried_push_takes_effect_once(app_client: Client, mini: MiniProgram) -> None:
    from tests.helpers import post

    request = mini.sim.sign_push(mini.sim.text_push("o-retry", "客服电话"))
    mini.fake.note_contact("o-retry")

    for _ in range(3):  # WeChat retries a push it got no answer to
        assert await post(app_client, request, path="/wechat/mini") == (200, "success")
    await app_client.app[ENGINE].drain(grace=5)
    await drain_outbox(app_client)
    assert len(mini.fake.sent_to("o-retry")) == 1


async def test_url_check_echoes_only_with_the_mini_programs_token(app_client: Client, mini: MiniProgram) -> None:
    good = await app_client.get("/wechat/mini", params=mini.sim.url_check("hello-mini"))
    assert (good.status, await good.text()) == (200, "hello-mini")
    other = WeChatClientSim("vaxbotdevtoken", mini.sim.app_id).url_check("nope")  # the Official Account's token
    refused = await app_client.get("/wechat/mini", params=other)
    assert refused.status == 403


def test_malformed_pushes_are_refused_by_the_gateway(settings: object) -> None:
    import dataclasses

    from bot.platforms.common import Rejected
    from bot.platforms.wxmini.inbound import MiniProgramGateway

    plain = dataclasses.replace(settings, wxmini_aes_key="")  # type: ignore[type-var]
    gateway = MiniProgramGateway(plain)
    sim = MiniProgramClientSim(plain.wxmini_token, plain.wxmini_appid)
    for body, reason in (
        ('{"ToUserName": [', "malformed json"),
        ("[1, 2]", "neither json nor xml"),
        ('{"ToUserName": "gh", "FromUserName": "o", "CreateTime": 1}', "missing MsgType"),
        ("<!DOCTYPE x><xml></xml>", "xml declarations are not accepted"),
        ("[" * 5000, "neither json nor xml"),
    ):
        request = sim.sign_push(body, mode="plain")
        with pytest.raises(Rejected) as refused:
            gateway.open_push(request.query, request.body)
        assert refused.value.reason == reason and refused.value.status == 400


async def test_past_the_windows_allowance_an_answer_is_dead_lettered_with_wechats_reason(
    app_client: Client, mini: MiniProgram
) -> None:
    user = "o-chatty"
    assert await mini.do(user, ("enter", "")) == []
    mini.fake.sent_in_window[user] = 2  # the two messages opening the chat allows are used up
    status, _ = await mini.push(mini.sim.text_push(user, "客服电话"))  # a message WeChat has not seen yet
    assert status == 200
    await app_client.app[ENGINE].drain(grace=5)
    await drain_outbox(app_client)
    rows = await outbox_rows(app_client, recipient=user)
    assert [(row.status, "service_message_limit" in str(row.last_error)) for row in rows] == [("dead", True)]
