"""One person, known accounts: the notice when another account joins, 「我的账号」, unbinding, and the audit."""

from __future__ import annotations

from datetime import date, datetime

import pytest
from sqlalchemy import func, select

from bot.chat.menu import MENU, MenuKey, alipay_menu, wechat_menu
from bot.core.chinatime import CHINA
from bot.dev.fakes.alipay import AlipayClientSim
from bot.dev.fakes.alipay_gateway import FakeAlipayGateway
from bot.dev.fakes.wechat import FakeWeChatAPI, WeChatClientSim
from bot.identity.accounts import mask_user_id, unbind_account
from bot.web.appkeys import SERVICES, SESSIONS
from models import AuditEntry, Certificate, CodePage, CodeToken, Identity, PlatformAccount, Verification, utcnow
from tests.channels import Alipay, Channel, WeChat
from tests.helpers import Client, drain_outbox
from tests.test_verify import ID_NUMBER, NAME, _face, _link
from tests.world import registry_file

WECHAT_USER = "o6_bmjrPTlm6_2sgVt7hMZOPfXk3"
ALIPAY_USER = "2088102146225135"
PHONE = "400-101-6588"


@pytest.fixture
def on_wechat(app_client: Client, wechat: WeChatClientSim, fake: FakeWeChatAPI) -> WeChat:
    """The person's WeChat side."""
    return WeChat(app_client, wechat, fake)


@pytest.fixture
def on_alipay(app_client: Client, alipay: AlipayClientSim, fake_alipay: tuple[FakeAlipayGateway, str]) -> Alipay:
    """The person's Alipay side."""
    return Alipay(app_client, alipay, fake_alipay[0])


async def _verify(client: Client, channel: Channel, user: str) -> None:
    """A real verification: the chat, the link, a passing face, the result told."""
    await channel.do(user, ("follow", ""))
    status, page = await _face(client, channel, user, await _link(channel, user), "pass")
    assert status == 200 and "实名认证成功" in page, page
    await drain_outbox(client)


async def _account(client: Client, user: str) -> PlatformAccount:
    async with client.app[SESSIONS]() as session:
        return (await session.scalars(select(PlatformAccount).where(PlatformAccount.user_id == user))).one()


async def _audit(client: Client, action: str) -> list[AuditEntry]:
    async with client.app[SESSIONS]() as session:
        query = select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)
        return list((await session.scalars(query)).all())


async def _own_certificate(client: Client) -> int:
    """The person's own (adult) certificate, claimed already, with one dose to show."""
    file = await registry_file(
        client,
        ref="ACC-1",
        name=NAME,
        id_number=ID_NUMBER,
        birth=date(1992, 3, 14),
        doses=[("HPV9", 1, date(2024, 4, 8))],
    )
    vault = client.app[SERVICES].vault
    async with client.app[SESSIONS]() as session, session.begin():
        digest = vault.digest("id_number", ID_NUMBER)
        identity = (await session.scalars(select(Identity).where(Identity.id_number_hash == digest))).one()
        certificate = Certificate(
            vaccinee_id=file, holder_identity_id=identity.id, kind="adult", claimed_at=utcnow(), claimed_via="wechat"
        )
        session.add(certificate)
        await session.flush()
        return certificate.id


def _china_minute(moment: datetime | None) -> str:
    assert moment is not None
    local = moment.astimezone(CHINA)
    return f"{local.year}年{local.month}月{local.day}日 {local.hour:02d}:{local.minute:02d}"


async def test_the_earlier_account_is_told_when_another_binds(
    app_client: Client, on_wechat: WeChat, on_alipay: Alipay
) -> None:
    await _verify(app_client, on_wechat, WECHAT_USER)
    told_before = len(on_wechat.inbox(WECHAT_USER))
    await _verify(app_client, on_alipay, ALIPAY_USER)

    notices = [text for text in on_wechat.inbox(WECHAT_USER)[told_before:] if "账号安全提醒" in text]
    assert len(notices) == 1, on_wechat.inbox(WECHAT_USER)
    notice = notices[0]
    async with app_client.app[SESSIONS]() as session:
        alipay_account = await _account(app_client, ALIPAY_USER)
        bound_at = await session.scalar(
            select(Verification.completed_at).where(
                Verification.account_id == alipay_account.id, Verification.status == "passed"
            )
        )
    # Which platform, which (masked) account, when in China time, and what to do if it was not them.
    assert "支付宝" in notice and "2088…135" in notice
    assert f"{_china_minute(bound_at)}（北京时间）" in notice
    assert "「我的账号」" in notice and PHONE in notice
    # Nothing unmasked: no user id, no name, no ID number.
    assert ALIPAY_USER not in notice and NAME not in notice and ID_NUMBER not in notice
    assert ID_NUMBER[-4:] not in notice
    # The account that just bound is told its own result, not the notice.
    assert not any("账号安全提醒" in text for text in on_alipay.inbox(ALIPAY_USER))


async def test_the_first_account_binds_without_a_notice(app_client: Client, on_wechat: WeChat) -> None:
    await _verify(app_client, on_wechat, WECHAT_USER)
    assert not any("账号安全提醒" in text for text in on_wechat.inbox(WECHAT_USER))


async def test_my_accounts_lists_both_masked_and_unbinding_the_other_removes_its_access(
    app_client: Client, on_wechat: WeChat, on_alipay: Alipay
) -> None:
    await _verify(app_client, on_wechat, WECHAT_USER)
    await _verify(app_client, on_alipay, ALIPAY_USER)
    await _own_certificate(app_client)
    wechat_account = await _account(app_client, WECHAT_USER)
    alipay_account = await _account(app_client, ALIPAY_USER)
    # Both accounts see the person's records: each look is audited with the account it came from.
    assert "林*雨的接种记录" in await on_wechat.say(WECHAT_USER, "接种记录")
    assert "林*雨的接种记录" in await on_alipay.say(ALIPAY_USER, "接种记录")

    listing = await on_wechat.say(WECHAT_USER, "我的账号")
    lines = listing.splitlines()
    wechat_line = next(line for line in lines if line.startswith("1. "))
    alipay_line = next(line for line in lines if line.startswith("2. "))
    assert "微信账号 o6_b…Xk3" in wechat_line and "（当前账号）" in wechat_line
    assert "支付宝账号 2088…135" in alipay_line and "当前账号" not in alipay_line
    assert "，绑定于" in alipay_line and "年" in alipay_line  # when it was bound
    assert WECHAT_USER not in listing and ALIPAY_USER not in listing and NAME not in listing

    await on_alipay.say(ALIPAY_USER, "亮码接种")  # the Alipay account opens a code (and its page) first
    async with app_client.app[SESSIONS]() as session:
        assert await session.scalar(select(func.count()).select_from(CodePage)) == 1
        assert await session.scalar(select(func.count()).select_from(CodeToken)) >= 1

    confirm = await on_wechat.say(WECHAT_USER, "2")
    assert "确定解绑支付宝账号 2088…135" in confirm and "「确认解绑」" in confirm
    done = await on_wechat.say(WECHAT_USER, "确认解绑")
    assert "已解绑支付宝账号 2088…135" in done
    # The unbound account is told who unbound it and when (the owner hears of an unbinding they did not do).
    await drain_outbox(app_client)
    told = [text for text in on_alipay.inbox(ALIPAY_USER) if "解绑了您实名信息下的支付宝账号（2088…135）" in text]
    assert len(told) == 1 and "微信账号（o6_b…Xk3）" in told[0] and "客服电话" in told[0], told
    assert not [text for text in on_wechat.inbox(WECHAT_USER) if "解绑了您实名信息" in text]  # not the one acting

    # Nothing it already held keeps working: the person's live codes and code pages ended with the unbinding.
    async with app_client.app[SESSIONS]() as session:
        now = utcnow()
        for model in (CodePage, CodeToken):
            live = await session.scalar(select(func.count()).select_from(model).where(model.expires_at > now))
            assert live == 0, model
    # The Alipay account lost access at once: it is asked to verify before seeing any record.
    assert (await _account(app_client, ALIPAY_USER)).identity_id is None
    records = await on_alipay.say(ALIPAY_USER, "接种记录")
    assert "需要先完成实名认证" in records and "林*雨" not in records
    # The WeChat account keeps everything.
    assert "林*雨的接种记录" in await on_wechat.say(WECHAT_USER, "接种记录")
    after = await on_wechat.say(WECHAT_USER, "我的账号")
    assert "微信账号 o6_b…Xk3" in after and "支付宝" not in after.split("\n\n")[0]

    # The audit names the acting account, not only the person.
    identity = wechat_account.identity_id
    views = await _audit(app_client, "records_view")
    assert [entry.actor_ref for entry in views] == [
        f"identity:{identity}/account:{wechat_account.id}",
        f"identity:{identity}/account:{alipay_account.id}",
        f"identity:{identity}/account:{wechat_account.id}",
    ]
    (unbound,) = await _audit(app_client, "account_unbound")
    assert unbound.actor_ref == f"identity:{identity}/account:{wechat_account.id}"
    assert unbound.detail == {"account": alipay_account.id} and unbound.reason == "other"
    listings = await _audit(app_client, "accounts_view")
    assert [entry.actor_ref for entry in listings] == [f"identity:{identity}/account:{wechat_account.id}"] * 2
    binds = await _audit(app_client, "identity_bound")
    assert [entry.actor_ref for entry in binds] == [
        f"identity:{identity}/account:{wechat_account.id}",
        f"identity:{identity}/account:{alipay_account.id}",
    ]


async def test_an_unbound_account_verified_again_tells_the_other_again(
    app_client: Client, on_wechat: WeChat, on_alipay: Alipay
) -> None:
    await _verify(app_client, on_wechat, WECHAT_USER)
    await _verify(app_client, on_alipay, ALIPAY_USER)
    await on_wechat.say(WECHAT_USER, "我的账号")
    await on_wechat.say(WECHAT_USER, "2")
    await on_wechat.say(WECHAT_USER, "确认解绑")
    await _verify(app_client, on_alipay, ALIPAY_USER)
    notices = [text for text in on_wechat.inbox(WECHAT_USER) if "账号安全提醒" in text]
    assert len(notices) == 2  # each binding is news, however often the same account binds


async def test_unbinding_the_current_account_warns_and_asks_to_verify_again(
    app_client: Client, on_wechat: WeChat, on_alipay: Alipay
) -> None:
    await _verify(app_client, on_wechat, WECHAT_USER)
    await _verify(app_client, on_alipay, ALIPAY_USER)
    await on_wechat.say(WECHAT_USER, "账号管理")
    warning = await on_wechat.say(WECHAT_USER, "1")
    assert "正在使用的这个微信账号（o6_b…Xk3）" in warning and "重新完成实名认证" in warning
    assert "解绑当前账号" in await on_wechat.say(WECHAT_USER, "确认解绑")
    assert (await _account(app_client, WECHAT_USER)).identity_id is None
    assert "需要先完成实名认证" in await on_wechat.say(WECHAT_USER, "我的账号")
    # The other account is untouched, and sees that only it is left.
    listing = await on_alipay.say(ALIPAY_USER, "我的账号")
    assert "1. 支付宝账号 2088…135" in listing and "微信" not in listing.split("\n\n")[0]
    (unbound,) = await _audit(app_client, "account_unbound")
    assert unbound.reason == "self"


async def test_the_list_and_the_confirmation_keep_to_their_words(
    app_client: Client, on_wechat: WeChat, on_alipay: Alipay
) -> None:
    await _verify(app_client, on_wechat, WECHAT_USER)
    await _verify(app_client, on_alipay, ALIPAY_USER)
    await on_wechat.do(WECHAT_USER, ("click", MenuKey.ACCOUNTS.value))
    assert "请回复列表中的序号" in await on_wechat.say(WECHAT_USER, "9")
    assert "请回复列表中的序号" in await on_wechat.say(WECHAT_USER, "解绑那个")
    await on_wechat.say(WECHAT_USER, "2")
    assert "请回复「确认解绑」" in await on_wechat.say(WECHAT_USER, "好的")
    back = await on_wechat.say(WECHAT_USER, "上一步")
    assert "与您实名信息绑定的账号" in back
    assert (await _account(app_client, ALIPAY_USER)).identity_id is not None


@pytest.mark.parametrize("word", ["取消", "帮助", "接种记录"])
async def test_global_commands_leave_the_flow_and_unbind_nothing(
    app_client: Client, on_wechat: WeChat, on_alipay: Alipay, word: str
) -> None:
    await _verify(app_client, on_wechat, WECHAT_USER)
    await _verify(app_client, on_alipay, ALIPAY_USER)
    await on_wechat.say(WECHAT_USER, "我的账号")
    await on_wechat.say(WECHAT_USER, "2")  # waiting for 「确认解绑」
    answer = await on_wechat.say(WECHAT_USER, word)
    assert "已解绑" not in answer
    if word != "取消":
        assert "已退出我的账号" in answer
    # The flow is left: confirming now does nothing.
    assert "已解绑" not in await on_wechat.say(WECHAT_USER, "确认解绑")
    assert (await _account(app_client, ALIPAY_USER)).identity_id is not None
    assert await _audit(app_client, "account_unbound") == []


async def test_an_unverified_user_is_told_to_verify_first(app_client: Client, on_alipay: Alipay) -> None:
    await on_alipay.do(ALIPAY_USER, ("follow", ""))
    answer = await on_alipay.say(ALIPAY_USER, "我的账号")
    assert "需要先完成实名认证" in answer and "「实名认证」" in answer
    assert await _audit(app_client, "accounts_view") == []


async def test_unbinding_twice_moves_nothing(app_client: Client, on_wechat: WeChat, on_alipay: Alipay) -> None:
    await _verify(app_client, on_wechat, WECHAT_USER)
    await _verify(app_client, on_alipay, ALIPAY_USER)
    target = (await _account(app_client, ALIPAY_USER)).id
    async with app_client.app[SESSIONS]() as session, session.begin():
        acting = (await session.scalars(select(PlatformAccount).where(PlatformAccount.user_id == WECHAT_USER))).one()
        identity = await session.get(Identity, acting.identity_id)
        assert identity is not None
        assert await unbind_account(session, identity, acting, target)
        assert not await unbind_account(session, identity, acting, target)
    assert len(await _audit(app_client, "account_unbound")) == 1


def test_user_ids_are_masked() -> None:
    assert mask_user_id(WECHAT_USER) == "o6_b…Xk3"
    assert mask_user_id(ALIPAY_USER) == "2088…135"
    assert mask_user_id("abcdef") == "a…f" and mask_user_id("ab") == "…"


def test_the_menu_offers_my_accounts_within_both_platforms_limits() -> None:
    assert len(MENU) <= 3 and all(len(items) <= 5 for _, items in MENU)
    keys = [sub["key"] for button in wechat_menu()["button"] for sub in button["sub_button"]]
    assert MenuKey.ACCOUNTS.value in keys
    assert MenuKey.ACCOUNTS.value in [
        sub["action_param"] for button in alipay_menu()["button"] for sub in button["sub_button"]
    ]
