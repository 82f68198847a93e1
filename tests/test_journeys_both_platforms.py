"""The same journey scripts on WeChat and on Alipay, through each platform's own protocol, end to end.

WeChat answers passively (and through the customer-service API when there is more than one reply);
Alipay only acks, and every answer goes through the outbox to the fake gateway, which verifies our
signatures and enforces its windows. What the user reads must be the same on both.
"""

from __future__ import annotations

from bot.dev.fakes.alipay import AlipayClientSim
from bot.dev.fakes.alipay_gateway import FakeAlipayGateway
from bot.dev.fakes.wechat import FakeWeChatAPI, WeChatClientSim
from models import OutboxMessage
from tests.channels import Alipay, Channel, Step, WeChat
from tests.helpers import Client, drain_outbox, outbox_rows, post_alipay

SCRIPT: list[tuple[Step, list[str]]] = [
    (("follow", ""), ["欢迎关注"]),
    (("click", "HELP_FAQ"), ["回复数字"]),
    (("text", "5"), ["犬伤预防接种信息系统"]),
    (("text", "第4个"), ["产科"]),
    (("text", "退出"), ["已退出"]),
    (("text", "客服电话是多少"), ["400-101-6588"]),
    (("click", "CERT_CLAIM"), ["需要先完成实名认证"]),
    (("click", "BOOK_MINE"), ["预约接种需要先完成实名认证"]),
    (("text", "随便说点什么"), ["没太明白"]),
    (("enter", "CLINIC-NT-CC-01"), []),
    (("unfollow", ""), []),
]


async def test_the_same_script_reads_the_same(channel: Channel, app_client: Client) -> None:
    user = "2088000000000401"
    transcript = []
    for step, expected in SCRIPT:
        answers = await channel.do(user, step)
        transcript.append((step, answers))
        if step[0] == "enter" and isinstance(channel, WeChat):
            continue
        assert len(answers) == len(expected), (step, answers)
        for answer, fragment in zip(answers, expected, strict=True):
            assert fragment in answer, (step, answer)
    rows = await outbox_rows(app_client, recipient=user)
    assert all(row.status in ("sent", "passive") for row in rows), [(r.kind, r.status, r.last_error) for r in rows]


async def test_both_platforms_give_identical_answers(
    app_client: Client,
    wechat: WeChatClientSim,
    fake: FakeWeChatAPI,
    alipay: AlipayClientSim,
    fake_alipay: tuple[FakeAlipayGateway, str],
) -> None:
    channels = {"wechat": WeChat(app_client, wechat, fake), "alipay": Alipay(app_client, alipay, fake_alipay[0])}
    transcripts: dict[str, list[list[str]]] = {}
    for name, channel in channels.items():
        user = f"same-{name}"
        transcripts[name] = [await channel.do(user, step) for step, _ in SCRIPT if step[0] != "enter"]
    assert transcripts["wechat"] == transcripts["alipay"]
    assert sum(len(answers) for answers in transcripts["alipay"]) >= 7


async def test_an_alipay_answer_outside_the_window_is_dead_lettered_not_spammed(
    app_client: Client, alipay: AlipayClientSim, fake_alipay: tuple[FakeAlipayGateway, str]
) -> None:
    from datetime import timedelta

    from sqlalchemy import update

    from bot.web.appkeys import SESSIONS
    from models import utcnow

    user = "2088000000000402"
    await post_alipay(app_client, alipay.form(alipay.text(user, "客服电话")))
    # The worker was down for ten minutes: Alipay's 5-minute window has closed.
    async with app_client.app[SESSIONS]() as session, session.begin():
        await session.execute(
            update(OutboxMessage).where(OutboxMessage.recipient == user).values(available_at=utcnow())
        )
        from models import PlatformAccount

        await session.execute(
            update(PlatformAccount)
            .where(PlatformAccount.user_id == user)
            .values(last_inbound_at=utcnow() - timedelta(minutes=10))
        )
    await drain_outbox(app_client)
    rows = await outbox_rows(app_client, recipient=user)
    assert [(row.status, row.last_error) for row in rows] == [("dead", rows[0].last_error)]
    assert "window" in str(rows[0].last_error)
    assert fake_alipay[0].sent_to(user) == []
