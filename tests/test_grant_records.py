"""Family authorisation (证照授权) and records (接种记录) over the real webhooks, on WeChat and on Alipay.

Data is put straight into the database (registry files, certificates, verified identities); everything a
person does goes through the platforms' own protocols, and everything they read is checked for masks.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import date, timedelta

from sqlalchemy import select

from bot.certificates.rules import Grantee, add_grant
from bot.core.chinatime import china_today
from bot.core.config import Settings
from bot.dev.demo import CHILD, GRANDMA, PARENT, DemoPerson, demo_id_number
from bot.dev.fakes.alipay import AlipayClientSim
from bot.dev.fakes.alipay_gateway import FakeAlipayGateway
from bot.dev.fakes.wechat import FakeWeChatAPI, WeChatClientSim
from bot.identity.accounts import bind_verified
from bot.web.appkeys import SERVICES, SESSIONS
from handlers.records import MAX_MESSAGE_CHARS, pack
from models import (
    AuditEntry,
    Certificate,
    Clinic,
    ConversationState,
    Dose,
    DoseDetail,
    FileProfile,
    Grant,
    Guardian,
    Identity,
    OutboxMessage,
    PlatformAccount,
    Stage,
    Vaccinee,
    utcnow,
)
from tests.channels import Alipay, Channel, WeChat
from tests.helpers import Client, drain_outbox, outbox_rows, post

CLINIC_NAME = "南通市崇川区和平桥街道社区卫生服务中心预防接种门诊"
GRANDPA = DemoPerson("T-GP", "林国栋", demo_id_number("320602", date(1961, 4, 3), 315), "M", date(1961, 4, 3))
GRANDMA_PHONE = "13812345678"
SECRETS = [
    PARENT.id_number,
    PARENT.name,
    GRANDMA.id_number,
    GRANDMA.name,
    GRANDPA.id_number,
    GRANDPA.name,
    CHILD.id_number,
    CHILD.name,
    GRANDMA_PHONE,
]
CHILD_DOSES = [
    ("HepB", 1, date(2023, 5, 20)),
    ("BCG", 1, date(2023, 5, 21)),
    ("HepB", 2, date(2023, 6, 20)),
    ("DTaP", 1, date(2023, 8, 21)),
    ("HepB", 3, date(2023, 11, 20)),
    ("XYZ-9", 1, date(2024, 1, 22)),
]


@dataclasses.dataclass
class World:
    """What the tests set up: the child's file and certificate, and the parent's own file."""

    clinic_id: int
    child_file: int
    parent_file: int
    child_certificate: int = 0


# --- setting up ---------------------------------------------------------------------------------------


async def _file(client: Client, person: DemoPerson, clinic_id: int, guardian: DemoPerson | None) -> int:
    vault = client.app[SERVICES].vault
    async with client.app[SESSIONS]() as session, session.begin():
        file = Vaccinee(
            registry_ref=person.ref,
            id_number_hash=vault.digest("id_number", person.id_number),
            id_number_enc=vault.seal("id_number", person.id_number),
            name_enc=vault.seal("name", person.name),
            birth_date_enc=vault.seal("birth_date", person.birth.isoformat()),
            effective_from=date(2020, 1, 1),
        )
        stage = Stage.CHILD_CLINIC if guardian is not None else Stage.ADULT
        file.set_profile(vault, FileProfile(person.sex, person.id_number[:6], clinic_id, stage))
        session.add(file)
        await session.flush()
        if guardian is not None:
            session.add(
                Guardian(
                    vaccinee_id=file.id,
                    id_number_hash=vault.digest("id_number", guardian.id_number),
                    id_number_enc=vault.seal("id_number", guardian.id_number),
                    relationship="mother",
                )
            )
        return file.id


async def _doses(client: Client, file_id: int, clinic_id: int | None, doses: list[tuple[str, int, date]]) -> None:
    vault = client.app[SERVICES].vault
    async with client.app[SESSIONS]() as session, session.begin():
        for code, number, given in doses:
            session.add(Dose.sealed(vault, file_id, DoseDetail(code, number, given, clinic_id), effective_from=given))


async def _world(client: Client) -> World:
    async with client.app[SESSIONS]() as session, session.begin():
        clinic = Clinic(code="NT-CC-01", name=CLINIC_NAME, region_code="320602")
        session.add(clinic)
        await session.flush()
        clinic_id = clinic.id
    child = await _file(client, CHILD, clinic_id, PARENT)
    await _doses(client, child, clinic_id, CHILD_DOSES)
    # A dose recorded at the clinic today becomes visible tomorrow (the nightly registry import).
    async with client.app[SESSIONS]() as session, session.begin():
        today = DoseDetail("MMR", 1, china_today(), clinic_id)
        session.add(
            Dose.sealed(client.app[SERVICES].vault, child, today, effective_from=china_today() + timedelta(days=1))
        )
    parent = await _file(client, PARENT, clinic_id, None)
    await _doses(client, parent, clinic_id, [("HPV9", 1, date(2024, 4, 8))])
    return World(clinic_id, child, parent)


async def _certificate(client: Client, file_id: int, holder: DemoPerson, kind: str) -> int:
    vault = client.app[SERVICES].vault
    async with client.app[SESSIONS]() as session, session.begin():
        identity = (
            await session.scalars(
                select(Identity).where(Identity.id_number_hash == vault.digest("id_number", holder.id_number))
            )
        ).one()
        certificate = Certificate(
            vaccinee_id=file_id, holder_identity_id=identity.id, kind=kind, claimed_at=utcnow(), claimed_via="wechat"
        )
        session.add(certificate)
        await session.flush()
        return certificate.id


async def _verify(client: Client, platform: str, user_id: str, person: DemoPerson) -> None:
    """Bind an account (created by its follow) to a verified identity, as a passed verification would."""
    async with client.app[SESSIONS]() as session, session.begin():
        account = (
            await session.scalars(
                select(PlatformAccount).where(PlatformAccount.platform == platform, PlatformAccount.user_id == user_id)
            )
        ).one()
        await bind_verified(
            session,
            client.app[SERVICES].vault,
            account,
            id_number=person.id_number,
            name=person.name,
            method="face",
            now=utcnow(),
        )


async def _grant_directly(client: Client, settings: Settings, certificate_id: int, grantee: Grantee) -> str:
    """A grant made outside the chat (another tap that won a race); returns the refusal key or ""."""
    async with client.app[SESSIONS]() as session, session.begin():
        certificate = await session.get(Certificate, certificate_id)
        assert certificate is not None
        holder = await session.get(Identity, certificate.holder_identity_id)
        assert holder is not None
        _, refusal = await add_grant(
            session, client.app[SERVICES].vault, holder, certificate, grantee, settings, "wechat", utcnow()
        )
        return refusal


def _someone(n: int) -> Grantee:
    person = demo_id_number("320602", date(1970, 1, 1) + timedelta(days=n), 400 + n)
    return Grantee(
        id_number=person,
        name=f"测试家人{'甲乙丙丁戊己庚辛壬癸子丑'[n]}",
        relationship="guardian",
        phone=f"1390000{n:04d}",
    )


async def _grants(client: Client, certificate_id: int) -> list[Grant]:
    async with client.app[SESSIONS]() as session:
        return list((await session.scalars(select(Grant).where(Grant.certificate_id == certificate_id))).all())


async def _audit(client: Client) -> list[AuditEntry]:
    async with client.app[SESSIONS]() as session:
        return list((await session.scalars(select(AuditEntry).order_by(AuditEntry.id))).all())


async def _refusals(client: Client) -> list[tuple[str, int | None, str]]:
    """The authorisation steps refused, oldest first: (reason, certificate, step)."""
    return [
        (e.reason, e.certificate_id, e.detail.get("step", ""))
        for e in await _audit(client)
        if e.action == "grant_refused"
    ]


async def _assert_nothing_leaks(client: Client, transcript: list[str]) -> None:
    """No full name, ID number or phone in anything read, queued or audited."""
    rows = await outbox_rows(client)
    payloads = [json.dumps(row.payload, ensure_ascii=False) for row in rows]
    audit = [
        f"{e.actor_ref} {e.action} {e.reason} {json.dumps(e.detail, ensure_ascii=False)}" for e in await _audit(client)
    ]
    for text in transcript + payloads + audit:
        for secret in SECRETS:
            assert secret not in text, (secret, text)


def _one(answers: list[str]) -> str:
    assert len(answers) == 1, answers
    return answers[0]


def _platform(channel: Channel) -> str:
    return channel.platform


class Talk:
    """One person on one channel, keeping everything they read."""

    def __init__(self, channel: Channel, user: str, transcript: list[str]) -> None:
        self.channel, self.user, self.transcript = channel, user, transcript

    async def __call__(self, action: str, argument: str = "") -> list[str]:
        answers = await self.channel.do(self.user, (action, argument))
        self.transcript.extend(answers)
        return answers

    async def say(self, text: str) -> str:
        return _one(await self("text", text))

    async def tap(self, key: str) -> str:
        return _one(await self("click", key))


# --- not verified, nothing to show ---------------------------------------------------------------------


async def test_unverified_people_are_told_to_verify_first(channel: Channel) -> None:
    me = Talk(channel, "u-unverified", [])
    await me("follow")
    for answer in (await me.tap("CERT_GRANT"), await me.say("证照授权")):
        assert "实名认证" in answer and "回复「实名认证」" in answer and "建设中" not in answer
    for answer in (await me.tap("CERT_RECORDS"), await me.say("接种记录"), await me.say("结果查询")):
        assert "查看接种记录需要先完成实名认证" in answer and "回复「实名认证」" in answer


async def test_verified_without_certificates_learns_what_to_do(channel: Channel, app_client: Client) -> None:
    me = Talk(channel, "u-nothing", [])
    await me("follow")
    await _verify(app_client, _platform(channel), "u-nothing", GRANDMA)
    answer = await me.tap("CERT_GRANT")
    assert "只有孩子电子预防接种证的申领人" in answer and "成人本人的接种证不能授权" in answer
    assert "申领接种证" in answer and "已授权您查看" not in answer
    answer = await me.tap("CERT_RECORDS")
    assert "还没有可以查看的电子预防接种证" in answer and "申领接种证" in answer and "证照授权" in answer


async def test_an_adult_certificate_cannot_be_authorised(
    app_client: Client, settings: Settings, channel: Channel
) -> None:
    world = await _world(app_client)
    me = Talk(channel, "u-adult", [])
    await me("follow")
    await _verify(app_client, _platform(channel), "u-adult", PARENT)
    adult = await _certificate(app_client, world.parent_file, PARENT, "adult")
    answer = await me.tap("CERT_GRANT")
    assert "成人本人的接种证不能授权给他人" in answer and "已授权您查看" not in answer
    assert await _grant_directly(app_client, settings, adult, _someone(0)) == "grant_adult_refused"
    assert await _grants(app_client, adult) == []
    assert await _refusals(app_client) == [("adult_certificate", adult, "start")]


# --- adding, step by step ------------------------------------------------------------------------------


async def test_the_whole_add_flow_with_every_mistake_and_a_way_back(
    app_client: Client, settings: Settings, channel: Channel
) -> None:
    world = await _world(app_client)
    transcript: list[str] = []
    parent = Talk(channel, "u-parent", transcript)
    await parent("follow")
    await _verify(app_client, _platform(channel), "u-parent", PARENT)
    world.child_certificate = await _certificate(app_client, world.child_file, PARENT, "child")

    overview = await parent.tap("CERT_GRANT")
    assert "林*满（3206**********" in overview and CHILD.id_number[-4:] in overview
    assert "已授权 0/10 人" in overview and "还没有授权家人" in overview
    assert "「添加」" in overview and "「撤销」" in overview and "「退出」" in overview

    asked = await parent.say("添加")
    assert "家人的姓名" in asked and "「取消」" in asked
    assert "姓名格式好像不对" in await parent.say("周1")
    assert "姓名格式好像不对" in await parent.say("周")
    assert "姓名格式好像不对" in await parent.say("周" * 21)
    assert "18位身份证号" in await parent.say(GRANDMA.name)
    assert "应为18位" in await parent.say("12345")
    assert "前17位应为数字" in await parent.say("32060219630802A26X")
    bad_check = GRANDMA.id_number[:17] + ("0" if GRANDMA.id_number[17] != "0" else "1")
    assert "校验码" in await parent.say(bad_check)
    assert "出生日期不正确" in await parent.say("320602" + "19631302" + "2261")
    assert "不能授权给您自己" in await parent.say(PARENT.id_number)
    assert "孩子本人的身份证号" in await parent.say(CHILD.id_number.lower())
    assert "家人的姓名" in await parent.say("上一步")
    back = await parent.say("上一步")
    assert "已授权 0/10 人" in back

    await parent.say("添加")
    assert "18位身份证号" in await parent.say(GRANDMA.name)
    # What was typed so far is sealed in the conversation state, never stored in plain text.
    async with app_client.app[SESSIONS]() as session:
        state = (await session.scalars(select(ConversationState).where(ConversationState.user_id == "u-parent"))).one()
        assert state.state == "GrantSteps:id_number"
        assert GRANDMA.name not in json.dumps(state.data, ensure_ascii=False)
    question = await parent.say(f" {GRANDMA.id_number[:6]} {GRANDMA.id_number[6:]} ")
    assert "1. 父亲" in question and "6. 外祖母" in question and "7. 其他监护人" in question
    assert "1～7" in await parent.say("9")
    assert "1～7" in await parent.say("邻居")
    assert "18位身份证号" in await parent.say("上一步")
    assert "1. 父亲" in await parent.say(GRANDMA.id_number)
    assert "手机号" in await parent.say("奶奶")
    assert "手机号格式不对" in await parent.say("12345")
    assert "手机号格式不对" in await parent.say("1381234567")
    summary = await parent.say("138 1234 5678")
    for fragment in (
        "孩子：林*满",
        "家人：周*兰（祖母）",
        "身份证号：3206**********",
        "手机号：138****5678",
        "「确认授权」",
    ):
        assert fragment in summary, summary
    assert "手机号" in await parent.say("上一步")
    summary = await parent.say("+86 138-1234-5678")
    assert "手机号：138****5678" in summary
    assert "「确认授权」" in await parent.say("好的")

    done = await parent.say("确认授权")
    assert "已授权周*兰（祖母）查看林*满" in done and "1/10" in done
    assert "还没有在本服务完成实名认证" in done and "关注" in done
    assert "已经授权好了" in await parent.say("确认授权")  # a second confirmation does not add twice
    grants = await _grants(app_client, world.child_certificate)
    assert len(grants) == 1
    vault = app_client.app[SERVICES].vault
    assert vault.open("id_number", grants[0].grantee_id_number_enc) == GRANDMA.id_number
    assert vault.open("name", grants[0].grantee_name_enc) == GRANDMA.name
    assert vault.open("phone", grants[0].grantee_phone_enc) == GRANDMA_PHONE
    assert grants[0].relationship == "grandmother"

    overview = await parent.tap("CERT_GRANT")
    assert "已授权 1/10 人" in overview and "1. 周*兰 · 祖母 · 138****5678" in overview
    # Adding the same person again is refused at the first step.
    await parent.say("添加")
    await parent.say(GRANDMA.name)
    assert "不需要重复授权" in await parent.say(GRANDMA.id_number)
    assert "已退出证照授权，刚才填写的信息没有保存" in await parent.say("取消")
    assert "没太明白" in await parent.say("确认授权")  # outside the flow nothing is confirmed

    grant_rows = [e for e in await _audit(app_client) if e.action == "grant"]
    assert len(grant_rows) == 1 and grant_rows[0].certificate_id == world.child_certificate
    assert await _refusals(app_client) == [
        (reason, world.child_certificate, "id_number") for reason in ("self", "is_child", "duplicate")
    ]
    refused = [e for e in await _audit(app_client) if e.action == "grant_refused"]
    assert {(e.actor_kind, e.platform) for e in refused} == {("identity", _platform(channel))}
    assert grant_rows[0].reason == "grandmother" and grant_rows[0].platform == _platform(channel)
    assert len(await _grants(app_client, world.child_certificate)) == 1
    await _assert_nothing_leaks(app_client, transcript)


async def test_ten_grantees_at_most_and_duplicates_even_in_a_race(
    app_client: Client, settings: Settings, channel: Channel
) -> None:
    world = await _world(app_client)
    parent = Talk(channel, "u-full", [])
    await parent("follow")
    await _verify(app_client, _platform(channel), "u-full", PARENT)
    certificate = await _certificate(app_client, world.child_file, PARENT, "child")
    for n in range(8):
        assert await _grant_directly(app_client, settings, certificate, _someone(n)) == ""

    async def to_confirmation(grantee: Grantee) -> None:
        await parent.tap("CERT_GRANT")
        await parent.say("添加")
        await parent.say(grantee.name)
        await parent.say(grantee.id_number)
        await parent.say("7")
        assert "「确认授权」" in await parent.say(grantee.phone)

    # Someone else authorised the same person while this holder was typing: refused, not doubled.
    await to_confirmation(_someone(8))
    assert await _grant_directly(app_client, settings, certificate, _someone(8)) == ""
    refused = await parent.say("确认授权")
    assert "不需要重复授权" in refused and "已授权 9/10 人" in refused
    # The tenth place went to someone else meanwhile: refused at confirmation.
    await to_confirmation(_someone(10))
    assert await _grant_directly(app_client, settings, certificate, _someone(9)) == ""
    refused = await parent.say("确认授权")
    assert "最多授权10位家人" in refused and "已授权 10/10 人" in refused and "已达到10人的上限" in refused
    assert len([g for g in await _grants(app_client, certificate) if g.revoked_at is None]) == 10
    # Full: adding is refused before anything is asked.
    assert "最多授权10位家人" in await parent.say("添加")
    assert await _refusals(app_client) == [
        ("duplicate", certificate, "confirm"),
        ("full", certificate, "confirm"),
        ("full", certificate, "add"),
    ]
    assert await _grant_directly(app_client, settings, certificate, _someone(11)) == "grant_full"
    assert await _grant_directly(app_client, settings, certificate, _someone(3)) == "grant_duplicate"
    assert (
        await _grant_directly(
            app_client, settings, certificate, Grantee(PARENT.id_number, PARENT.name, "mother", "13900000000")
        )
        == "grant_self"
    )
    # After one revocation there is room again.
    assert "确认撤销" in await parent.say("撤销 3")
    assert "目前已授权 9/10 人" in await parent.say("确认撤销")
    assert "家人的姓名" in await parent.say("添加")


async def test_choosing_between_several_children(app_client: Client, channel: Channel) -> None:
    world = await _world(app_client)
    sibling = DemoPerson("T-C2", "林小禾", demo_id_number("320602", date(2024, 6, 1), 142), "F", date(2024, 6, 1))
    second = await _file(app_client, sibling, world.clinic_id, PARENT)
    parent = Talk(channel, "u-two", [])
    await parent("follow")
    await _verify(app_client, _platform(channel), "u-two", PARENT)
    await _certificate(app_client, world.child_file, PARENT, "child")
    await _certificate(app_client, second, PARENT, "child")
    await _certificate(app_client, world.parent_file, PARENT, "adult")
    listing = await parent.tap("CERT_GRANT")
    assert "1. 林*满" in listing and "2. 林*禾" in listing and "林*雨" not in listing
    assert "序号" in await parent.say("3")
    overview = await parent.say("2")
    assert "林*禾" in overview and "已授权 0/10 人" in overview
    assert "2. 林*禾" in await parent.say("上一步")
    assert "林*满" in await parent.say("第1个")
    assert "已退出证照授权" in await parent.say("退出")
    assert await _refusals(app_client) == []  # choosing and managing what one holds refuses nothing


async def test_a_certificate_that_changed_hands_mid_flow_is_refused_and_audited(
    app_client: Client, channel: Channel
) -> None:
    world = await _world(app_client)
    sibling = DemoPerson("T-C3", "林小禾", demo_id_number("320602", date(2024, 6, 1), 143), "F", date(2024, 6, 1))
    second = await _file(app_client, sibling, world.clinic_id, PARENT)
    parent, someone = Talk(channel, "u-moved", []), Talk(channel, "u-new-holder", [])
    for person in (parent, someone):
        await person("follow")
    await _verify(app_client, _platform(channel), "u-moved", PARENT)
    await _verify(app_client, _platform(channel), "u-new-holder", GRANDMA)
    first = await _certificate(app_client, world.child_file, PARENT, "child")
    other = await _certificate(app_client, second, PARENT, "child")
    vault = app_client.app[SERVICES].vault

    async def passes_to_someone_else(certificate_id: int) -> None:
        async with app_client.app[SESSIONS]() as session, session.begin():
            digest = vault.digest("id_number", GRANDMA.id_number)
            newcomer = (await session.scalars(select(Identity.id).where(Identity.id_number_hash == digest))).one()
            certificate = await session.get(Certificate, certificate_id)
            assert certificate is not None
            certificate.holder_identity_id = newcomer

    assert "2. 林*禾" in await parent.tap("CERT_GRANT")
    await passes_to_someone_else(other)
    assert "不能管理授权" in await parent.say("2")  # the list was open when it passed to someone else
    assert "已授权 0/10 人" in await parent.tap("CERT_GRANT")  # the one still held goes straight to its list
    await passes_to_someone_else(first)
    assert "不能管理授权" in await parent.say("添加")  # while its list was open
    assert await _refusals(app_client) == [
        ("not_holder", other, "choose"),
        ("not_holder", first, "GrantSteps:managing"),
    ]


# --- the grantee, on another platform ------------------------------------------------------------------


async def test_grantee_is_told_on_each_platform_reads_records_and_loses_them_on_revocation(
    app_client: Client,
    wechat: WeChatClientSim,
    fake: FakeWeChatAPI,
    alipay: AlipayClientSim,
    fake_alipay: tuple[FakeAlipayGateway, str],
) -> None:
    world = await _world(app_client)
    grandma_file = await _file(app_client, GRANDMA, world.clinic_id, None)
    await _doses(app_client, grandma_file, world.clinic_id, [("Flu", 1, date(2025, 10, 8))])
    on_wechat, on_alipay = WeChat(app_client, wechat, fake), Alipay(app_client, alipay, fake_alipay[0])
    transcript: list[str] = []
    parent = Talk(on_wechat, "o-parent", transcript)
    grandma = Talk(on_alipay, "2088000000000501", transcript)
    grandma_wechat = Talk(on_wechat, "o-grandma", transcript)
    for person in (parent, grandma, grandma_wechat):
        await person("follow")
    await _verify(app_client, "wechat", "o-parent", PARENT)
    await _verify(app_client, "alipay", "2088000000000501", GRANDMA)
    await _verify(app_client, "wechat", "o-grandma", GRANDMA)
    certificate = await _certificate(app_client, world.child_file, PARENT, "child")
    grandma_adult = await _certificate(app_client, grandma_file, GRANDMA, "adult")
    assert "林*满" not in await grandma.tap("CERT_RECORDS")  # her own only, for now

    await parent.tap("CERT_GRANT")
    await parent.say("添加")
    await parent.say(GRANDMA.name)
    await parent.say(GRANDMA.id_number)
    await parent.say("4")
    await parent.say(GRANDMA_PHONE)
    before_alipay = len(fake_alipay[0].texts_to("2088000000000501"))
    before_wechat = len(fake.texts_to("o-grandma"))
    done = await parent.say("确认授权")
    assert "已授权周*兰（祖母）查看林*满" in done and "我们已发消息告诉TA" in done
    told = fake_alipay[0].texts_to("2088000000000501")[before_alipay:]
    assert len(told) == 1 and "林*雨已授权您查看林*满的电子预防接种证" in told[0] and "「接种记录」" in told[0]
    assert fake.texts_to("o-grandma")[before_wechat:] == told  # the same words on her other platform
    transcript.extend(told * 2)
    rows = await outbox_rows(app_client, recipient="2088000000000501")
    assert rows[-1].status == "sent" and rows[-1].platform == "alipay"

    listing = await grandma.tap("CERT_RECORDS")
    assert "1. 周*兰（本人）" in listing and "2. 林*满（已授权）" in listing
    records = "\n".join(await grandma("text", "2"))
    assert "林*满的接种记录" in records and "【乙肝疫苗】" in records
    assert "第1剂　2023年5月20日" in records

    # A grantee reads, but cannot authorise anyone.
    refusal = await grandma.tap("CERT_GRANT")
    assert "只有孩子电子预防接种证的申领人" in refusal and "家人已授权您查看林*满的接种证" in refusal
    assert "「接种记录」" in refusal
    refusal = await grandma.say("添加")
    assert "家人的姓名" not in refusal
    # What she may see but not authorise, each with why.
    assert sorted(await _refusals(app_client)) == sorted(
        [("not_holder", certificate, "start"), ("adult_certificate", grandma_adult, "start")]
    )

    assert "1. 周*兰 · 祖母 · 138****5678" in await parent.tap("CERT_GRANT")
    assert "没有第2位" in await parent.say("撤销2")
    ask = await parent.say("撤销１")
    assert "确定撤销周*兰（祖母）查看林*满接种证的授权吗" in ask
    assert "已授权 1/10 人" in await parent.say("上一步")
    assert "确认撤销" in await parent.say("撤销第1位")
    # WeChat delivers the same message again (a retry): it takes effect once.
    xml = wechat.text("o-parent", "确认撤销", msg_id=99_000_001)
    _, body = await post(app_client, wechat.sign(xml))
    reply = wechat.open_reply(body)
    assert reply is not None and "已撤销周*兰（祖母）的授权" in reply["Content"] and "0/10" in reply["Content"]
    transcript.append(reply["Content"])
    _, again = await post(app_client, wechat.sign(xml))
    assert wechat.open_reply(again) is None
    assert "已经撤销了" in await parent.say("确认撤销")  # a second confirmation typed again
    await drain_outbox(app_client)
    told = fake_alipay[0].texts_to("2088000000000501")
    assert "林*雨已撤销您查看林*满电子预防接种证的授权" in told[-1]
    assert "已撤销您查看" in fake.texts_to("o-grandma")[-1]
    transcript.extend([told[-1], fake.texts_to("o-grandma")[-1]])

    grants = await _grants(app_client, certificate)
    assert len(grants) == 1 and grants[0].revoked_at is not None
    records = await grandma("click", "CERT_RECORDS")  # only her own now, shown directly
    assert records[0].startswith("周*兰的接种记录") and "林*满" not in "\n".join(records)

    audit = await _audit(app_client)
    assert [e.action for e in audit if e.action in ("grant", "revoke")] == ["grant", "revoke"]
    views = [e for e in audit if e.action == "records_view" and e.certificate_id == certificate]
    assert [(e.reason, e.platform) for e in views] == [("grantee", "alipay")]
    assert all(e.actor_ref.startswith("identity:") for e in audit if e.action in ("grant", "revoke", "records_view"))
    await _assert_nothing_leaks(app_client, transcript)
    async with app_client.app[SESSIONS]() as session:
        dead = (await session.scalars(select(OutboxMessage).where(OutboxMessage.status == "dead"))).all()
        assert list(dead) == []


# --- records ------------------------------------------------------------------------------------------


async def test_records_show_doses_by_vaccine_masked_and_audited(app_client: Client, channel: Channel) -> None:
    world = await _world(app_client)
    transcript: list[str] = []
    parent = Talk(channel, "u-records", transcript)
    await parent("follow")
    await _verify(app_client, _platform(channel), "u-records", PARENT)
    child = await _certificate(app_client, world.child_file, PARENT, "child")
    adult = await _certificate(app_client, world.parent_file, PARENT, "adult")

    listing = await parent.tap("CERT_RECORDS")
    assert "1. 林*满（子女）" in listing and "2. 林*雨（本人）" in listing
    assert "序号" in await parent.say("5")
    records = _one(await parent("text", "1"))
    lines = records.split("\n")
    assert lines[0] == "林*满的接种记录"
    assert lines[1] == f"身份证号：3206**********{CHILD.id_number[-4:]}"
    assert lines[2] == "出生年月：2023年5月"
    hep_b = records.index("【乙肝疫苗】")
    assert records[hep_b:].split("\n")[1:4] == [
        f"第1剂　2023年5月20日　{CLINIC_NAME}",
        f"第2剂　2023年6月20日　{CLINIC_NAME}",
        f"第3剂　2023年11月20日　{CLINIC_NAME}",
    ]
    assert records.index("【乙肝疫苗】") < records.index("【卡介苗】") < records.index("【百白破疫苗】")
    assert "【XYZ-9】" in records  # an unknown code is shown as it is
    assert "【麻腮风疫苗】" not in records  # recorded today, visible tomorrow
    # The forecast counts what is visible: DTaP 2 was due at 4 months and is late since the first birthday.
    assert "【下一针】" in records and "· 百白破疫苗 第2剂：已逾期（应在2024年5月20日前完成）" in records
    assert "· 麻腮风疫苗 第1剂：已逾期" in records and "狂犬疫苗" in records
    assert len(records) <= MAX_MESSAGE_CHARS

    own = await parent.say("查记录")
    assert "2. 林*雨（本人）" in own
    own = _one(await parent("text", "2"))
    assert "【九价HPV疫苗】" in own and "第1剂　2024年4月8日" in own and "出生年月：1992年3月" in own
    assert "【下一针】" not in own  # the childhood schedule is not forecast for an adult
    views = [e for e in await _audit(app_client) if e.action == "records_view"]
    assert [(e.certificate_id, e.reason, e.platform) for e in views] == [
        (child, "holder", _platform(channel)),
        (adult, "holder", _platform(channel)),
    ]
    await _assert_nothing_leaks(app_client, transcript)


async def test_long_records_are_split_into_messages_that_fit(app_client: Client, channel: Channel) -> None:
    world = await _world(app_client)
    many = [
        (code, n, date(2023, 6, 1) + timedelta(days=7 * n))
        for code in ("PCV13", "Hib", "EV71", "RV")
        for n in range(2, 12)
    ]
    await _doses(app_client, world.child_file, world.clinic_id, many)
    parent = Talk(channel, "u-long", [])
    await parent("follow")
    await _verify(app_client, _platform(channel), "u-long", PARENT)
    await _certificate(app_client, world.child_file, PARENT, "child")
    messages = await parent("click", "CERT_RECORDS")
    assert len(messages) >= 2
    assert all(len(message) <= MAX_MESSAGE_CHARS for message in messages)
    assert messages[0].startswith("林*满的接种记录\n") and messages[1].startswith("林*满的接种记录（续）")
    joined = "\n".join(messages)
    for name in ("13价肺炎球菌结合疫苗", "b型流感嗜血杆菌结合疫苗", "肠道病毒71型灭活疫苗", "轮状病毒疫苗"):
        assert joined.count(f"【{name}】") == 1
    assert joined.count("第11剂") == 4 and "狂犬疫苗" in messages[-1]


def test_pack_keeps_blocks_whole_and_messages_short() -> None:
    blocks = ["head", "a" * 900, "b" * 900, "c\n" * 1200, "foot"]
    messages = pack(blocks, 1000, "(more)")
    assert all(len(message) <= 1000 for message in messages)
    assert messages[0] == "head\n\n" + "a" * 900
    assert messages[1] == "(more)\n\n" + "b" * 900
    assert all(message.startswith("(more)") for message in messages[1:])
    assert "".join(messages).count("c") == 1200 and messages[-1].endswith("foot")


async def test_demo_children_show_what_is_late_due_or_complete(app_client: Client, channel: Channel) -> None:
    from bot.dev.demo import WX_CHILD, WX_PARENT, WX_TODDLER, seed_demo
    from tests.world import verified

    assert await seed_demo(app_client.app[SESSIONS], app_client.app[SERVICES].vault)
    user = "o-demo-chen" if channel.platform == "wechat" else "2088000000000901"
    identity = await verified(app_client, channel.platform, user, WX_PARENT.name, WX_PARENT.id_number, channel.app_id)
    vault = app_client.app[SERVICES].vault
    async with app_client.app[SESSIONS]() as session, session.begin():
        for person in (WX_CHILD, WX_TODDLER):
            file = (
                await session.scalars(
                    select(Vaccinee).where(Vaccinee.id_number_hash == vault.digest("id_number", person.id_number))
                )
            ).one()
            session.add(Certificate(vaccinee_id=file.id, holder_identity_id=identity, kind="child", claimed_via="t"))
    listing = "\n".join(await channel.do(user, ("click", "CERT_RECORDS")))
    complete = await channel.say(user, next(line[0] for line in listing.splitlines() if "陈*远" in line))
    assert "【下一针】" in complete and "目前没有需要接种的" in complete and "已逾期" not in complete
    listing = "\n".join(await channel.do(user, ("click", "CERT_RECORDS")))
    toddler = await channel.say(user, next(line[0] for line in listing.splitlines() if "陈*语" in line))
    # Born 2025-05-10: the 18-month doses are due from 2026-11-10 and late from the second birthday.
    for vaccine in ("百白破疫苗 第4剂", "麻腮风疫苗 第2剂", "甲肝减毒活疫苗 第1剂"):
        assert f"· {vaccine}：" in toddler, vaccine
    assert WX_TODDLER.name not in toddler and WX_TODDLER.id_number not in toddler
