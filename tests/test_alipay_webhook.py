"""The /alipay endpoint over HTTP on both databases: handshake, acks, rejections, duplicates, failures."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import select

from bot.chat.conversation import Context, Route, text_in
from bot.core.config import Settings
from bot.dev.fakes.alipay import AlipayClientSim
from bot.dev.fakes.alipay_gateway import FakeAlipayGateway
from bot.platforms.alipay import sign as alipay_sign
from bot.web.appkeys import SESSIONS
from models import OutboxMessage, PlatformAccount, ProcessedMessage
from tests.conftest import Serve
from tests.helpers import (
    PATIENCE_SECONDS,
    Client,
    count,
    drain_outbox,
    eventually,
    outbox_rows,
    post_alipay,
    router_with,
)

USER = "2088000000000201"


def _texts(rows: list[OutboxMessage]) -> list[str]:
    return [str(row.payload.get("content", "")) for row in rows]


async def test_gateway_check_over_http(app_client: Client, alipay: AlipayClientSim, settings: Settings) -> None:
    status, body, content_type = await post_alipay(app_client, alipay.check_form())
    assert status == 200 and content_type == "text/xml;charset=GBK"
    reply = alipay.open_reply(body)
    ours = alipay_sign.read_public_key(settings.keys_dir / "alipay_app_public.pem")
    assert reply.inner["success"] == "true"
    assert reply.inner["biz_content"] == alipay_sign.public_key_body(ours)

    stranger = alipay_sign.read_private_key(settings.keys_dir / "alipay_app_private.pem")  # not Alipay's key
    status, body, _ = await post_alipay(app_client, alipay.check_form(key=stranger))
    assert status == 200
    assert alipay.open_reply(body).inner["error_code"] == "VERIFY_FAILED"
    assert await count(app_client, ProcessedMessage) == 0


async def test_text_is_acked_and_answered_through_the_outbox(app_client: Client, alipay: AlipayClientSim) -> None:
    for charset in ("GBK", "UTF-8"):
        body = alipay.form(alipay.text(USER, "客服电话是多少"), charset=charset)
        status, raw, content_type = await post_alipay(app_client, body)
        assert status == 200 and content_type == f"text/xml;charset={charset}"
        ack = alipay.open_reply(raw, charset=charset).inner["XML"]
        assert (ack["MsgType"], ack["ToUserId"]) == ("ack", USER)
    rows = await outbox_rows(app_client, platform="alipay", recipient=USER)
    assert len(rows) == 2 and all("400-101-6588" in text for text in _texts(rows))
    assert {row.status for row in rows} == {"pending"}  # no passive reply on Alipay: the worker sends them
    assert all(row.available_at <= row.created_at for row in rows)  # not held back


async def test_rejections_change_nothing(app_client: Client, alipay: AlipayClientSim, settings: Settings) -> None:
    stranger = alipay_sign.read_private_key(settings.keys_dir / "alipay_app_private.pem")

    def swap(fields: dict[str, str]) -> None:
        fields["biz_content"] = fields["biz_content"].replace("你好", "您好")

    xml = alipay.text(USER, "你好")
    cases = [
        (alipay.form(xml, key=stranger), 403),
        (alipay.form(xml, tamper=swap), 403),
        (alipay.form(xml, service="alipay.open.public.unknown"), 400),
        (alipay.form("<XML><AppId>broken"), 400),
        (b"charset=GBK&service=alipay.mobile.public.message.notify", 400),
        (b"\x00\xff garbage", 400),
    ]
    for body, expected in cases:
        status, raw, _ = await post_alipay(app_client, body)
        assert status == expected, raw
        assert b"Traceback" not in raw
    assert await count(app_client, ProcessedMessage) == 0
    assert await count(app_client, OutboxMessage) == 0
    assert await count(app_client, PlatformAccount) == 0


async def test_oversized_body_is_refused(app_client: Client, alipay: AlipayClientSim, settings: Settings) -> None:
    body = alipay.form(alipay.text(USER, "啊" * settings.max_body_bytes))
    status, _, _ = await post_alipay(app_client, body)
    assert status == 413
    assert await count(app_client, ProcessedMessage) == 0


async def test_redeliveries_take_effect_once(app_client: Client, alipay: AlipayClientSim) -> None:
    body = alipay.form(alipay.text(USER, "客服电话", msg_id="77001"))
    for _ in range(3):
        status, raw, _ = await post_alipay(app_client, body)
        assert status == 200 and alipay.open_reply(raw).inner["XML"]["MsgType"] == "ack"
    results = await asyncio.gather(*(post_alipay(app_client, body) for _ in range(3)))
    assert {status for status, _, _ in results} == {200}
    assert await count(app_client, ProcessedMessage) == 1
    assert len(await outbox_rows(app_client, recipient=USER)) == 1


async def test_two_taps_in_one_second_both_count(app_client: Client, alipay: AlipayClientSim) -> None:
    now = alipay.now_ms()
    for offset in (0, 300):
        body = alipay.form(alipay.event(USER, "click", "HELP_CONTACT", create_time=now + offset))
        assert (await post_alipay(app_client, body))[0] == 200
    again = alipay.form(alipay.event(USER, "click", "HELP_CONTACT", create_time=now))
    assert (await post_alipay(app_client, again))[0] == 200
    assert len(await outbox_rows(app_client, recipient=USER)) == 2


async def test_enter_is_contact_without_an_answer(app_client: Client, alipay: AlipayClientSim) -> None:
    body = alipay.form(alipay.event(USER, "enter", alipay.scene("CLINIC-NT-CC-01")))
    status, _, _ = await post_alipay(app_client, body)
    assert status == 200
    assert await outbox_rows(app_client, recipient=USER) == []
    async with app_client.app[SESSIONS]() as session:
        account = (await session.scalars(select(PlatformAccount).where(PlatformAccount.user_id == USER))).one()
    assert account.platform == "alipay" and account.last_interaction_kind == "enter"
    assert account.last_inbound_at is not None


async def test_follow_unfollow_and_welcome(app_client: Client, alipay: AlipayClientSim) -> None:
    await post_alipay(app_client, alipay.form(alipay.event(USER, "follow")))
    rows = await outbox_rows(app_client, recipient=USER)
    assert rows and "欢迎" in _texts(rows)[0]
    await post_alipay(app_client, alipay.form(alipay.event(USER, "unfollow")))
    async with app_client.app[SESSIONS]() as session:
        account = (await session.scalars(select(PlatformAccount).where(PlatformAccount.user_id == USER))).one()
    assert account.following is False
    assert len(await outbox_rows(app_client, recipient=USER)) == 1  # nothing said to someone who left


async def test_a_replayed_old_message_is_acknowledged_and_ignored(app_client: Client, alipay: AlipayClientSim) -> None:
    two_days_ago = alipay.now_ms() - 2 * 24 * 3600 * 1000
    body = alipay.form(alipay.text(USER, "客服电话", create_time=two_days_ago))
    status, raw, _ = await post_alipay(app_client, body)
    assert status == 200 and alipay.open_reply(raw).inner["XML"]["MsgType"] == "ack"
    assert await count(app_client, ProcessedMessage) == 0
    assert await count(app_client, OutboxMessage) == 0


async def test_slow_work_is_acked_by_the_deadline_and_answered_later(
    make_settings: Any, serve: Serve, alipay: AlipayClientSim
) -> None:
    finish = asyncio.Event()
    progress: list[str] = []

    async def slow(ctx: Context) -> None:
        progress.append("started")
        await finish.wait()  # still working when the deadline passes, however fast the machine
        ctx.say("contact")
        progress.append("finished")

    client = await serve(make_settings(reply_deadline_seconds=0.3), router=router_with(Route(text_in("慢一点"), slow)))
    status, raw, _ = await asyncio.wait_for(
        post_alipay(client, alipay.form(alipay.text(USER, "慢一点"))), PATIENCE_SECONDS
    )
    assert status == 200 and alipay.open_reply(raw).inner["XML"]["MsgType"] == "ack"
    assert progress == ["started"]  # acknowledged by the deadline, before the handler finished
    finish.set()

    async def queued() -> bool:
        return bool(await outbox_rows(client, recipient=USER))

    await eventually(queued, "the late answer is queued")
    rows = await outbox_rows(client, recipient=USER)
    assert len(rows) == 1 and "400-101-6588" in _texts(rows)[0]


async def test_handler_crash_apologises_through_the_outbox(
    make_settings: Any, serve: Serve, alipay: AlipayClientSim
) -> None:
    async def broken(ctx: Context) -> None:
        ctx.say("contact")
        raise RuntimeError("bug")

    client = await serve(make_settings(), router=router_with(Route(text_in("坏了"), broken)))
    body = alipay.form(alipay.text(USER, "坏了"))
    for _ in range(2):
        status, _, _ = await post_alipay(client, body)
        assert status == 200
    texts = _texts(await outbox_rows(client, recipient=USER))
    assert len(texts) == 1 and "系统刚才开了个小差" in texts[0]


async def test_a_first_contact_that_fails_is_apologised_to_within_the_window(
    make_settings: Any, serve: Serve, alipay: AlipayClientSim, fake_alipay: tuple[FakeAlipayGateway, str]
) -> None:
    async def broken(ctx: Context) -> None:
        await ctx.account()
        raise RuntimeError("bug")

    client = await serve(make_settings(), router=router_with(Route(text_in("坏了"), broken)))
    newcomer = "2088000000000299"
    status, _, _ = await post_alipay(client, alipay.form(alipay.text(newcomer, "坏了")))
    assert status == 200

    async def apologised() -> bool:
        await drain_outbox(client)
        return bool(fake_alipay[0].texts_to(newcomer))

    await eventually(apologised, "the apology reaches the brand-new user")
    assert "系统刚才开了个小差" in fake_alipay[0].texts_to(newcomer)[0]
    assert [row.status for row in await outbox_rows(client, recipient=newcomer)] == ["sent"]  # not dead-lettered
    async with client.app[SESSIONS]() as session:
        account = (await session.scalars(select(PlatformAccount).where(PlatformAccount.user_id == newcomer))).one()
    assert account.last_inbound_at is not None and account.last_interaction_kind == "text"


async def test_database_outage_asks_alipay_to_deliver_again(keys_dir: Any, serve: Serve) -> None:
    from tests.conftest import _settings

    settings = _settings("postgresql+asyncpg://nobody@127.0.0.1:9/none", keys_dir)
    client = await serve(settings)
    sim = AlipayClientSim(
        settings.alipay_appid,
        alipay_sign.read_private_key(keys_dir / "alipay_platform_private.pem"),
        alipay_sign.read_public_key(keys_dir / "alipay_app_public.pem"),
    )
    status, _, _ = await post_alipay(client, sim.form(sim.text(USER, "你好")))
    assert status == 503


async def test_channel_off_means_no_endpoint(make_settings: Any, serve: Serve, alipay: AlipayClientSim) -> None:
    client = await serve(make_settings(alipay_appid=""))
    status, _, _ = await post_alipay(client, alipay.form(alipay.text(USER, "你好")))
    assert status in (404, 405)
