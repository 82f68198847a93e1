"""Journey 2 on both platforms: name, ID number, a single-use link, the provider round trip, the binding."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select, update

from bot.certificates.rules import Grantee, add_grant, revoke_grant
from bot.core.config import Settings
from bot.dev.demo import demo_id_number
from bot.dev.fakes.alipay import AlipayClientSim
from bot.dev.fakes.alipay_gateway import FakeAlipayGateway
from bot.dev.fakes.wechat import FakeWeChatAPI, WeChatClientSim
from bot.web.appkeys import SERVICES, SESSIONS
from models import Certificate, Identity, PlatformAccount, Verification, utcnow
from tests.channels import Alipay, Channel, WeChat, authorise, link_in
from tests.conftest import Serve
from tests.helpers import Client, count, drain_outbox
from tests.world import registry_file, verified

NAME = "林晓雨"
ID_NUMBER = demo_id_number("320602", date(1992, 3, 14), 122)
WRONG_CHECK = ID_NUMBER[:-1] + ("1" if ID_NUMBER[-1] != "1" else "2")


def _path(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


async def _link(channel: Channel, user: str, name: str = NAME, id_number: str = ID_NUMBER) -> str:
    intro = await channel.do(user, ("click", "HELP_VERIFY"))
    assert len(intro) == 1 and "请输入您的姓名" in intro[0]
    assert "请输入您本人的18位身份证号" in await channel.say(user, name)
    answers = await channel.do(user, ("text", id_number))
    assert any("链接30分钟内有效" in answer for answer in answers), answers
    assert all(name not in answer and id_number not in answer for answer in answers)  # masked
    return link_in(answers)


async def _face(client: Client, channel: Channel, user: str, link: str, decision: str) -> tuple[int, str]:
    """The user's browser: open the link (authorised as ``user``), decide on the (dev) provider's page, come back."""
    started = await authorise(client, link, channel.platform, user)
    assert started.status == 302, await started.text()
    provider_page = started.headers["Location"]
    assert "/_dev/face/" in provider_page
    assert (await client.get(_path(provider_page))).status == 200
    decided = await client.post(_path(provider_page), data={"decision": decision}, allow_redirects=False)
    assert decided.status == 303
    back = await client.get(_path(decided.headers["Location"]))
    return back.status, await back.text()


async def test_verification_binds_the_account(channel: Channel, app_client: Client) -> None:
    user = f"v-{channel.platform}"
    link = await _link(channel, user)
    status, page = await _face(app_client, channel, user, link, "pass")
    assert status == 200 and "实名认证成功" in page
    await drain_outbox(app_client)
    async with app_client.app[SESSIONS]() as session:
        account = (await session.scalars(select(PlatformAccount).where(PlatformAccount.user_id == user))).one()
        assert account.identity_id is not None
        attempt = (await session.scalars(select(Verification))).one()
        assert (attempt.status, attempt.provider) == ("passed", "dev")
    answers = await channel.do(user, ("click", "HELP_VERIFY"))
    assert "您已完成实名认证（林*雨，3206**********" in answers[0]

    # The same link, and the same return, a second time: nothing moves.
    again = await app_client.get(_path(link), allow_redirects=False)
    assert again.status == 410
    done = link.rstrip("/") + "/done"
    replay = await app_client.get(_path(done))
    assert replay.status == 410 and "已经使用过" in await replay.text()
    assert await count(app_client, Identity) == 1


async def test_the_result_is_told_in_the_chat(channel: Channel, app_client: Client) -> None:
    user = f"told-{channel.platform}"
    link = await _link(channel, user)
    before = len(channel.inbox(user))
    await _face(app_client, channel, user, link, "pass")
    await drain_outbox(app_client)
    pushed = channel.inbox(user)[before:]
    assert len(pushed) == 1
    assert "实名认证成功！您已认证为 林*雨（3206**********" in pushed[0]


async def test_a_failed_face_binds_nothing(channel: Channel, app_client: Client) -> None:
    user = f"fail-{channel.platform}"
    status, page = await _face(app_client, channel, user, await _link(channel, user), "fail")
    assert status == 200 and "没有通过" in page
    assert await count(app_client, Identity) == 0


async def test_another_persons_face_is_a_mismatch(channel: Channel, app_client: Client) -> None:
    user = f"other-{channel.platform}"
    status, page = await _face(app_client, channel, user, await _link(channel, user), "other")
    assert status == 200 and "不一致" in page
    assert await count(app_client, Identity) == 0
    async with app_client.app[SESSIONS]() as session:
        attempt = (await session.scalars(select(Verification))).one()
    assert (attempt.status, attempt.reason) == ("mismatch", "provider_reported_another_person")


async def test_forged_expired_and_unstarted_links(channel: Channel, app_client: Client) -> None:
    forged = await app_client.get("/verify/not-a-real-handle", allow_redirects=False)
    assert forged.status == 404 and "无效" in await forged.text()
    assert (await app_client.get("/verify/not-a-real-handle/done")).status == 404

    user = f"exp-{channel.platform}"
    link = await _link(channel, user)
    never_started = await app_client.get(_path(link.rstrip("/") + "/done"))
    assert never_started.status == 409  # a return without a start: forged, nothing moves
    async with app_client.app[SESSIONS]() as session, session.begin():
        await session.execute(update(Verification).values(expires_at=utcnow() - timedelta(seconds=1)))
    expired = await app_client.get(_path(link), allow_redirects=False)
    assert expired.status == 410 and "已过期" in await expired.text()
    assert await count(app_client, Identity) == 0


async def test_id_number_mistakes_are_explained_step_by_step(channel: Channel, app_client: Client) -> None:
    user = f"typo-{channel.platform}"
    await channel.do(user, ("click", "HELP_VERIFY"))
    assert "姓名格式好像不对" in await channel.say(user, "12345")
    assert "身份证号" in await channel.say(user, NAME)
    assert "校验码不对" in await channel.say(user, WRONG_CHECK)
    assert "位数不对" in await channel.say(user, "3206021992")
    assert "出生日期不正确" in await channel.say(user, "320602199213140000")
    assert "请输入您的姓名" in await channel.say(user, "上一步")
    assert "身份证号" in await channel.say(user, NAME)
    assert "已退出" in await channel.say(user, "取消")
    assert await count(app_client, Verification) == 0


async def test_age_tiers_choose_the_method(
    make_settings: Any, serve: Serve, wechat: WeChatClientSim, fake: FakeWeChatAPI
) -> None:
    client = await serve(make_settings(face_age_tiers="0-16:birth_certificate,17-59:face,60-:household"))
    channel = WeChat(client, wechat, fake)
    for user, name, id_number, expected in [
        ("o-elder", "周桂兰", demo_id_number("320602", date(1950, 8, 2), 226), "户籍信息核验"),
        ("o-teen", "林小川", demo_id_number("320602", date(2012, 8, 2), 153), "出生医学证明"),
        ("o-adult", NAME, ID_NUMBER, "链接30分钟内有效"),
    ]:
        await channel.do(user, ("click", "HELP_VERIFY"))
        await channel.say(user, name)
        assert expected in "\n".join(await channel.do(user, ("text", id_number))), user
    assert await count(client, Verification) == 1


async def test_the_same_person_on_both_platforms_is_one_identity(
    app_client: Client,
    wechat: WeChatClientSim,
    fake: FakeWeChatAPI,
    alipay: AlipayClientSim,
    fake_alipay: tuple[FakeAlipayGateway, str],
) -> None:
    on_wechat = WeChat(app_client, wechat, fake)
    on_alipay = Alipay(app_client, alipay, fake_alipay[0])
    await _face(app_client, on_wechat, "o-both", await _link(on_wechat, "o-both"), "pass")
    await _face(app_client, on_alipay, "2088000000000601", await _link(on_alipay, "2088000000000601"), "pass")
    async with app_client.app[SESSIONS]() as session:
        accounts = (
            await session.scalars(select(PlatformAccount).where(PlatformAccount.identity_id.is_not(None)))
        ).all()
    assert sorted(account.platform for account in accounts) == ["alipay", "wechat"]
    assert accounts[0].identity_id == accounts[1].identity_id
    assert await count(app_client, Identity) == 1


async def test_a_newly_verified_grantee_is_told_what_she_can_see(
    channel: Channel, app_client: Client, settings: Settings
) -> None:
    """Authorised before she ever verified: the success message lists the children and what to do."""
    holder = ("陈建国", demo_id_number("320602", date(1990, 7, 1), 171))
    children = [
        ("陈小满", demo_id_number("320602", date(2023, 5, 20), 131)),
        ("陈小禾", demo_id_number("320602", date(2024, 6, 1), 142)),
        ("陈小川", demo_id_number("320602", date(2022, 9, 9), 153)),
    ]
    holder_id = await verified(app_client, "wechat", "o-holder", *holder, app_id="wx-holder")
    vault = app_client.app[SERVICES].vault
    me = Grantee(id_number=ID_NUMBER, name=NAME, relationship="mother", phone="13812345678")
    for number, (name, id_number) in enumerate(children):
        file = await registry_file(
            app_client, ref=f"G-{number}", name=name, id_number=id_number, birth=date(2023, 1, 1), guardians=[holder[1]]
        )
        async with app_client.app[SESSIONS]() as session, session.begin():
            identity = await session.get(Identity, holder_id)
            assert identity is not None
            certificate = Certificate(vaccinee_id=file, holder_identity_id=holder_id, kind="child", claimed_via="t")
            session.add(certificate)
            await session.flush()
            grant, refusal = await add_grant(session, vault, identity, certificate, me, settings, "wechat", utcnow())
            assert grant is not None, refusal
            if name == "陈小川":  # revoked: no longer hers to see
                assert await revoke_grant(session, identity, certificate, grant, "wechat", utcnow())

    user = f"grantee-{channel.platform}"
    link = await _link(channel, user)
    before = len(channel.inbox(user))
    await _face(app_client, channel, user, link, "pass")
    await drain_outbox(app_client)
    pushed = channel.inbox(user)[before:]
    assert len(pushed) == 1
    told = pushed[0]
    assert "实名认证成功！您已认证为 林*雨" in told
    assert "家人已授权您查看陈*满、陈*禾的电子预防接种证" in told and "陈*川" not in told
    assert "「接种记录」" in told and "「亮码接种」" in told
    for secret in (NAME, ID_NUMBER, holder[0], holder[1], *[part for child in children for part in child]):
        assert secret not in told
    # What she was told is what she sees.
    listing = "\n".join(await channel.do(user, ("click", "CERT_RECORDS")))
    assert "陈*满（已授权）" in listing and "陈*禾（已授权）" in listing and "陈*川" not in listing
