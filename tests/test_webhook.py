"""The /wechat endpoint over HTTP on both databases: rejections, duplicates, the deadline, failures."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update

from bot.chat.conversation import Context, Route, text_in
from bot.core.config import Settings
from bot.dev.fakes.wechat import FakeWeChatAPI, SignedRequest, WeChatClientSim
from bot.web.appkeys import METRICS, SESSIONS
from models import AuditEntry, ConversationState, OutboxMessage, PlatformAccount, ProcessedMessage, utcnow
from tests.conftest import Serve
from tests.helpers import (
    PATIENCE_SECONDS,
    Client,
    Gate,
    count,
    drain_outbox,
    eventually,
    outbox_rows,
    post,
    router_with,
)


async def test_url_check(app_client: Client, wechat: WeChatClientSim) -> None:
    response = await app_client.get("/wechat", params=wechat.url_check("hello-echo"))
    assert response.status == 200 and await response.text() == "hello-echo"
    bad = wechat.url_check("hello-echo")
    bad["timestamp"] = str(int(bad["timestamp"]) + 1)
    response = await app_client.get("/wechat", params=bad)
    assert response.status == 403


def _tamper(request: SignedRequest, **query: str) -> SignedRequest:
    return SignedRequest({**request.query, **query}, request.body)


async def test_rejections_change_nothing(app_client: Client, wechat: WeChatClientSim) -> None:
    good = wechat.sign(wechat.text("o-x", "你好"))
    wrong_app = WeChatClientSim(wechat.token, "wx_not_our_app", wechat.aes_key).sign(wechat.text("o-x", "你好"))
    stale = wechat.sign(wechat.text("o-x", "你好"), timestamp=int(time.time()) - 3600)
    cases: list[tuple[SignedRequest, int]] = [
        (_tamper(good, signature="0" * 40), 403),
        (_tamper(good, msg_signature="f" * 40), 403),
        (wrong_app, 403),
        (stale, 403),
        (SignedRequest({k: v for k, v in good.query.items() if k != "nonce"}, good.body), 400),
        (SignedRequest({}, good.body), 400),
        (SignedRequest(wechat.sign("<xml/>", mode="plain").query, b"<xml><oops"), 400),
    ]
    for request, status in cases:
        got, body = await post(app_client, request)
        assert got == status, (request.query, body)
        assert "Traceback" not in body
    assert await count(app_client, ProcessedMessage) == 0
    assert await count(app_client, OutboxMessage) == 0
    assert await count(app_client, PlatformAccount) == 0


async def test_oversized_body_is_refused(app_client: Client, wechat: WeChatClientSim, settings: Settings) -> None:
    huge = wechat.sign(wechat.text("o-big", "啊" * settings.max_body_bytes), mode="plain")
    status, _ = await post(app_client, huge)
    assert status == 413
    assert await count(app_client, ProcessedMessage) == 0


async def test_retries_take_effect_once_and_answer_once(
    app_client: Client, wechat: WeChatClientSim, fake_wechat: tuple[FakeWeChatAPI, str]
) -> None:
    xml = wechat.text("o-dup", "客服电话", msg_id=424242)
    answers = []
    for _ in range(3):  # WeChat's three tries, one after another
        status, body = await post(app_client, wechat.sign(xml))
        assert status == 200
        answers.append(wechat.open_reply(body))
    assert answers[0] is not None and "400-101-6588" in answers[0]["Content"]
    assert answers[1:] == [None, None]
    await drain_outbox(app_client)
    assert fake_wechat[0].sent_to("o-dup") == []
    assert await count(app_client, ProcessedMessage) == 1
    assert len(await outbox_rows(app_client, recipient="o-dup")) == 1


async def test_concurrent_duplicates_answer_once(
    app_client: Client, wechat: WeChatClientSim, fake_wechat: tuple[FakeWeChatAPI, str]
) -> None:
    for n in range(4):
        xml = wechat.text(f"o-race-{n}", "帮助", msg_id=777000 + n)
        results = await asyncio.gather(*(post(app_client, wechat.sign(xml)) for _ in range(3)))
        assert all(status == 200 for status, _ in results)
        passive = [wechat.open_reply(body) for _, body in results]
        await drain_outbox(app_client)
        pushed = fake_wechat[0].texts_to(f"o-race-{n}")
        assert len([p for p in passive if p is not None]) + len(pushed) == 1, (passive, pushed)
    assert await count(app_client, ProcessedMessage) == 4


async def test_duplicate_follow_events_greet_once(app_client: Client, wechat: WeChatClientSim) -> None:
    xml = wechat.event("o-follow", "subscribe", create_time=int(time.time()))
    bodies = [await post(app_client, wechat.sign(xml)) for _ in range(2)]
    assert wechat.open_reply(bodies[0][1]) is not None
    assert wechat.open_reply(bodies[1][1]) is None


async def test_slow_work_is_acknowledged_in_time_and_answered_through_the_outbox(
    make_settings: Any, serve: Serve, fake_wechat: tuple[FakeWeChatAPI, str]
) -> None:
    finish = asyncio.Event()
    progress: list[str] = []

    async def slow(ctx: Context) -> None:
        progress.append("started")
        await finish.wait()  # still working when the deadline passes, however fast the machine
        ctx.say("contact")
        progress.append("finished")

    settings = make_settings(reply_deadline_seconds=0.3)
    client = await serve(settings, router=router_with(Route(text_in("慢一点"), slow)))
    sim = WeChatClientSim(settings.wechat_token, settings.wechat_appid, settings.wechat_aes_key)
    status, body = await asyncio.wait_for(post(client, sim.sign(sim.text("o-slow", "慢一点"))), PATIENCE_SECONDS)
    assert status == 200 and body == "success"  # acknowledged at the deadline: no passive answer
    assert progress == ["started"]  # the acknowledgement did not wait for the handler
    finish.set()

    async def pushed() -> bool:
        await drain_outbox(client)
        return bool(fake_wechat[0].texts_to("o-slow"))

    # The late reply is released to the worker as soon as it is queued (not when its hold lapses).
    await eventually(pushed, "the late answer is pushed through the outbox")
    texts = fake_wechat[0].texts_to("o-slow")
    assert len(texts) == 1 and "400-101-6588" in texts[0]


async def test_handler_crash_rolls_back_and_apologises(make_settings: Any, serve: Serve) -> None:
    async def broken(ctx: Context) -> None:
        (await ctx.account()).following = False
        ctx.say("contact")
        raise RuntimeError("bug")

    settings = make_settings()
    client = await serve(settings, router=router_with(Route(text_in("坏了"), broken)))
    sim = WeChatClientSim(settings.wechat_token, settings.wechat_appid, settings.wechat_aes_key)
    xml = sim.text("o-crash", "坏了")
    status, body = await post(client, sim.sign(xml))
    reply = sim.open_reply(body)
    assert status == 200 and reply is not None
    assert "系统刚才开了个小差" in reply["Content"]
    # The retry is a duplicate: no second apology.
    _, again = await post(client, sim.sign(xml))
    assert again == "success"
    rows = await outbox_rows(client, recipient="o-crash")
    assert [row.payload["content"] for row in rows] == [reply["Content"]]
    assert client.app[METRICS].handler_errors.labels("wechat")._value.get() == 1


async def test_a_first_contact_that_fails_late_is_apologised_to_within_the_window(
    make_settings: Any, serve: Serve, fake_wechat: tuple[FakeWeChatAPI, str]
) -> None:
    finish = asyncio.Event()

    async def broken_late(ctx: Context) -> None:
        await ctx.account()
        await finish.wait()  # past the deadline: the apology goes through the outbox, under the window's rule
        raise RuntimeError("bug")

    settings = make_settings(reply_deadline_seconds=0.3)
    client = await serve(settings, router=router_with(Route(text_in("坏了"), broken_late)))
    sim = WeChatClientSim(settings.wechat_token, settings.wechat_appid, settings.wechat_aes_key)
    status, body = await asyncio.wait_for(post(client, sim.sign(sim.text("o-first", "坏了"))), PATIENCE_SECONDS)
    assert (status, body) == (200, "success")
    finish.set()

    async def apologised() -> bool:
        await drain_outbox(client)
        return bool(fake_wechat[0].texts_to("o-first"))

    await eventually(apologised, "the apology reaches the brand-new user")
    assert "系统刚才开了个小差" in fake_wechat[0].texts_to("o-first")[0]
    assert [row.status for row in await outbox_rows(client, recipient="o-first")] == ["sent"]  # not dead-lettered
    async with client.app[SESSIONS]() as session:
        account = (await session.scalars(select(PlatformAccount).where(PlatformAccount.user_id == "o-first"))).one()
    assert account.last_inbound_at is not None and account.last_interaction_kind == "text"


async def test_unknown_types_get_a_polite_answer(app_client: Client, wechat: WeChatClientSim) -> None:
    from bot.dev.fakes.wechat import message_xml

    voice = message_xml("gh", "o-voice", "voice", {"MediaId": "m", "Format": "amr", "MsgId": 99001}, int(time.time()))
    status, body = await post(app_client, wechat.sign(voice))
    reply = wechat.open_reply(body)
    assert status == 200 and reply is not None and "只能看懂文字" in reply["Content"]
    status, body = await post(app_client, wechat.sign(wechat.event("o-voice", "LOCATION", Latitude="1")))
    assert status == 200 and body == "success"  # a location report is not something the user said


async def test_platform_reports_get_no_answer(app_client: Client, wechat: WeChatClientSim) -> None:
    report = wechat.event("o-r", "TEMPLATESENDJOBFINISH", MsgID=1234, Status="success")
    status, body = await post(app_client, wechat.sign(report))
    assert status == 200 and body == "success"


async def test_unfollow_is_recorded_and_refollow_welcomes_back(app_client: Client, wechat: WeChatClientSim) -> None:
    await post(app_client, wechat.sign(wechat.event("o-u", "subscribe", create_time=1_800_000_000 - 10)))
    status, body = await post(
        app_client, wechat.sign(wechat.event("o-u", "unsubscribe", create_time=1_800_000_000 - 5))
    )
    assert status == 200 and body == "success"
    from sqlalchemy import select

    from bot.web.appkeys import SESSIONS

    async with app_client.app[SESSIONS]() as session:
        account = (await session.scalars(select(PlatformAccount).where(PlatformAccount.user_id == "o-u"))).one()
        assert account.following is False and account.unfollowed_at is not None
    _, body = await post(app_client, wechat.sign(wechat.event("o-u", "subscribe", create_time=1_800_000_000)))
    reply = wechat.open_reply(body)
    assert reply is not None and "欢迎关注" in reply["Content"]  # never verified: nothing to welcome back to

    from models import Identity, utcnow

    async with app_client.app[SESSIONS]() as session, session.begin():
        identity = Identity(
            id_number_hash="h" * 64, id_number_enc=b"x", name_enc=b"x", verified_at=utcnow(), verification_method="face"
        )
        session.add(identity)
        await session.flush()
        account = (await session.scalars(select(PlatformAccount).where(PlatformAccount.user_id == "o-u"))).one()
        account.identity_id = identity.id
    await post(app_client, wechat.sign(wechat.event("o-u", "unsubscribe", create_time=1_800_000_005)))
    _, body = await post(app_client, wechat.sign(wechat.event("o-u", "subscribe", create_time=1_800_000_010)))
    reply = wechat.open_reply(body)
    assert reply is not None and "欢迎回来" in reply["Content"]


async def test_faq_menu_flow_keeps_state_between_messages(app_client: Client, wechat: WeChatClientSim) -> None:
    async def say(text: str) -> str:
        _, body = await post(app_client, wechat.sign(wechat.text("o-faq", text)))
        reply = wechat.open_reply(body)
        assert reply is not None
        return str(reply["Content"])

    assert "回复数字" in await say("常见问题")
    assert "犬伤预防接种信息系统" in await say("5")
    assert "产科" in await say("第4个")  # still in the menu: another number works, however it is written
    assert "试点城市" in await say("３.")
    assert "我可以帮您办理" in await say("帮助")  # not trapped: other things still work in the menu
    assert "没太明白" in await say("随便说点什么")
    assert "400-101-6588" in await say("7")  # and the menu is still there
    assert "已退出" in await say("退出")
    assert "没太明白" in await say("5")  # out of the menu: a bare number means nothing now
    from sqlalchemy import select

    from bot.web.appkeys import SESSIONS

    async with app_client.app[SESSIONS]() as session:
        row = (await session.scalars(select(ConversationState).where(ConversationState.user_id == "o-faq"))).one()
        assert row.state is None


async def test_expired_step_is_explained(app_client: Client, wechat: WeChatClientSim) -> None:
    from datetime import timedelta

    from sqlalchemy import update

    from bot.web.appkeys import SESSIONS
    from models import utcnow

    _, body = await post(app_client, wechat.sign(wechat.text("o-exp", "常见问题")))
    async with app_client.app[SESSIONS]() as session, session.begin():
        await session.execute(
            update(ConversationState)
            .where(ConversationState.user_id == "o-exp")
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    _, body = await post(app_client, wechat.sign(wechat.text("o-exp", "3")))
    reply = wechat.open_reply(body)
    assert reply is not None and "超时" in reply["Content"]


async def test_menu_items_answer_honestly(app_client: Client, wechat: WeChatClientSim) -> None:
    from bot.chat.menu import LABELS
    from handlers.coming_soon import PENDING_JOURNEYS

    for key, label in LABELS.items():
        _, body = await post(app_client, wechat.sign(wechat.event(f"o-menu-{key}", "CLICK", EventKey=key)))
        reply = wechat.open_reply(body)
        assert reply is not None, key
        assert reply["Content"].strip(), key
        if key in PENDING_JOURNEYS:
            assert f"「{label}」功能正在建设中" in reply["Content"]
        else:
            assert "功能正在建设中" not in reply["Content"], key


async def test_no_audit_rows_from_plain_chat(app_client: Client, wechat: WeChatClientSim) -> None:
    await post(app_client, wechat.sign(wechat.text("o-a", "你好")))
    assert await count(app_client, AuditEntry) == 0


async def test_database_outage_still_answers_the_user(keys_dir: Any, serve: Serve) -> None:
    from tests.conftest import _settings

    settings = _settings("postgresql+asyncpg://nobody@127.0.0.1:9/none", keys_dir)
    client = await serve(settings)
    sim = WeChatClientSim(settings.wechat_token, settings.wechat_appid, settings.wechat_aes_key)
    status, body = await post(client, sim.sign(sim.text("o-outage", "你好")))
    reply = sim.open_reply(body)
    assert status == 200 and reply is not None
    assert "请稍后再试" in reply["Content"]


async def test_a_slow_token_fetch_does_not_stall_the_webhook(
    app_client: Client, wechat: WeChatClientSim, wechat_gate: Gate
) -> None:
    from bot.web.appkeys import WECHAT_API

    wechat_gate.hold("/cgi-bin/stable_token")  # WeChat takes its time: until the test lets the answer go
    fetch = asyncio.create_task(app_client.app[WECHAT_API].access_token())
    await eventually(lambda: wechat_gate.arrived("/cgi-bin/stable_token") == 1, "the token fetch reaches WeChat")
    status, body = await post(app_client, wechat.sign(wechat.text("o-during-fetch", "客服电话")))
    assert status == 200 and wechat.open_reply(body) is not None  # answered passively, in time
    assert not fetch.done()  # answered while the fetch was still waiting for WeChat
    wechat_gate.release("/cgi-bin/stable_token")
    assert await fetch


async def test_a_retry_after_a_lost_answer_gets_it_pushed_once(
    app_client: Client, wechat: WeChatClientSim, fake_wechat: tuple[FakeWeChatAPI, str]
) -> None:
    from datetime import timedelta

    from sqlalchemy import update

    from bot.web.appkeys import SESSIONS
    from models import utcnow

    xml = wechat.text("o-lost", "客服电话", msg_id=5150001)
    _, first = await post(app_client, wechat.sign(xml))
    answer = wechat.open_reply(first)
    assert answer is not None
    # WeChat never got that answer (it arrived after 5 s), so it retries five seconds later.
    async with app_client.app[SESSIONS]() as session, session.begin():
        await session.execute(
            update(ProcessedMessage)
            .where(ProcessedMessage.dedupe_key == "msg:5150001")
            .values(created_at=utcnow() - timedelta(seconds=5))
        )
    _, retry = await post(app_client, wechat.sign(xml))
    assert retry == "success"  # a passive answer to the retry could come too late again: it is pushed
    await drain_outbox(app_client)
    assert fake_wechat[0].texts_to("o-lost") == [answer["Content"]]  # once
    _, second = await post(app_client, wechat.sign(xml))
    assert second == "success"
    await drain_outbox(app_client)
    assert fake_wechat[0].texts_to("o-lost") == [answer["Content"]]
    assert await count(app_client, ProcessedMessage) == 1


async def test_an_image_to_upload_or_a_credential_is_never_the_passive_reply(
    make_settings: Any, serve: Serve, fake_wechat: tuple[FakeWeChatAPI, str]
) -> None:
    import base64

    from bot.core.update import Article, Image
    from bot.outbox.queue import SCRUBBED, SCRUBBED_MESSAGE

    png = base64.b64encode(bytes.fromhex("89504e470d0a1a0a") + b"\0" * 64).decode()

    async def picture(ctx: Context) -> None:
        ctx.reply(Image(png_base64=png))
        ctx.reply(Article(title="码", description="页面", url="http://127.0.0.1/code/h", credential=True))

    settings = make_settings()
    client = await serve(settings, router=router_with(Route(text_in("图片"), picture)))
    sim = WeChatClientSim(settings.wechat_token, settings.wechat_appid, settings.wechat_aes_key)
    first = sim.text("o-pic", "图片")
    status, body = await post(client, sim.sign(first))
    assert status == 200 and body == "success"  # acknowledged: both go through the outbox

    async def released() -> bool:
        rows = await outbox_rows(client, recipient="o-pic")
        return len(rows) == 2 and all(row.available_at is None or row.available_at <= utcnow() for row in rows)

    await eventually(released, "both replies are released to the worker")
    await drain_outbox(client)
    sent = [item.body for item in fake_wechat[0].sent_to("o-pic")]
    assert [body["msgtype"] for body in sent] == ["image", "news"]
    assert fake_wechat[0].media[sent[0]["image"]["media_id"]].startswith(bytes.fromhex("89504e47"))
    rows = {row.kind: row for row in await outbox_rows(client)}
    assert rows["image"].payload == SCRUBBED_MESSAGE  # delivered: no reply to a person is kept
    assert rows["news"].payload == SCRUBBED and rows["news"].status == "sent"
    # WeChat's retry of that message, long after: still no passive image or credential.
    async with client.app[SESSIONS]() as session, session.begin():
        await session.execute(update(ProcessedMessage).values(created_at=utcnow() - timedelta(seconds=30)))
    _, again = await post(client, sim.sign(first))
    assert again == "success"
