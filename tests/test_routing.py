"""Routing: combinable filters, feature routers, global commands that leave any flow, and timeouts.

The router's rules are checked on their own (a small flow, an injected clock, no database), then through
the real journeys on both platforms: a menu word typed inside a flow leaves it with a note and starts the
journey it names, unless the step asks for that word; off-topic text in a name or ID-number step is
refused with what is expected and how to leave.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any, cast

import pytest
from sqlalchemy import select, update

from bot.chat.conversation import (
    Context,
    Filter,
    Flow,
    Route,
    Router,
    Services,
    Snapshot,
    State,
    StatesGroup,
    any_text,
    half_width,
    kind,
    list_number,
    menu,
    normalise,
    text_in,
)
from bot.chat.menu import LABELS, MenuKey
from bot.core.catalogue import MESSAGES, Catalogue
from bot.core.update import Platform, Text, Update, UpdateKind
from bot.dev.demo import CHILD, GRANDMA, PARENT, DemoPerson, demo_id_number
from bot.web.appkeys import SESSIONS
from handlers import build_router
from handlers.common import COMMANDS, id_number_problem, name_problem
from models import Certificate, ConversationState, Identity
from tests.channels import Channel
from tests.helpers import Client
from tests.world import registry_file, verified

T0 = datetime(2026, 5, 1, 2, 0, tzinfo=UTC)


def _update(text: str = "", kind_: UpdateKind = UpdateKind.TEXT, key: str = "") -> Update:
    return Update(Platform.WECHAT, "wx-app", "o-user", kind_, T0, message_id="1", text=text, key=key)


def _tap(key: str) -> Update:
    return _update(kind_=UpdateKind.MENU_CLICK, key=key)


# --- filters --------------------------------------------------------------------------------------


def test_filters_combine_with_and_or_and_not() -> None:
    yes, no = _update("好的"), _update("不要")
    says_yes = text_in("好的", "好")
    assert says_yes(yes) and not says_yes(no)
    assert (says_yes | text_in("不要"))(no)
    assert not (says_yes & text_in("不要"))(yes)
    assert (~says_yes)(no) and not (~says_yes)(yes)
    assert (any_text & ~says_yes)(no) and not (any_text & ~says_yes)(yes)
    # A plain predicate combines on either side and comes back as a Filter.
    short = lambda update: len(update.text) <= 2  # noqa: E731 - a predicate as handlers write them
    assert isinstance(any_text & short, Filter) and isinstance(short & any_text, Filter)
    assert (short & any_text)(no) and not (short & ~any_text)(no)
    assert (short | says_yes)(_update("很长的一句话")) is False
    assert not kind(UpdateKind.IMAGE)(yes) and kind(UpdateKind.TEXT, UpdateKind.IMAGE)(yes)


def test_a_filter_knows_the_words_it_names() -> None:
    says_yes = text_in("好的")
    assert says_yes.names(_update(" 好的！")) and not any_text.names(_update("好的"))
    assert (says_yes | any_text).names(_update("好的")) and not (says_yes | any_text).names(_update("随便"))
    assert not (~says_yes).names(_update("随便")) and (~says_yes).words == frozenset()
    grant = menu(MenuKey.GRANT)
    assert grant(_tap(MenuKey.GRANT)) and grant(_update("证照授权")) and not grant(_tap(MenuKey.RECORDS))
    assert grant.names(_update("证照授权")) and not grant.names(_tap(MenuKey.GRANT))


def test_one_normaliser_for_full_width_text() -> None:
    assert half_width("１３８ ０００") == "138 000" and half_width("ＦＡＱ") == "FAQ"
    assert normalise(" 撤销　１ ") == "撤销1" and normalise("ＦＡＱ") == "faq"
    assert [list_number(text) for text in ("2", "２", "第２个", "2.", "二", "12345")] == [2, 2, 2, 2, None, None]


def test_every_menu_word_and_leaving_and_help_are_commands() -> None:
    for label in LABELS.values():
        assert COMMANDS(_update(label)), label
    for word in ("取消", "退出", "结束", "返回", "帮助", " 取消。"):
        assert COMMANDS(_update(word)), word
    for word in ("上一步", "确认授权", "林晓雨", "2"):
        assert not COMMANDS(_update(word)), word


def test_name_and_id_number_checks_refuse_what_is_off_topic() -> None:
    for name in ("林晓雨", "欧阳娜娜", "阿依古丽·买买提", "Anna Lee"):
        assert name_problem(name, "bad") is None, name
    for text in (
        "今天天气怎么样",
        "申领接种证",
        "我想查孩子的记录",
        "你们电话多少？",
        "请问在吗",
        "你好",
        "好的",
        "谢谢！",
    ):
        assert name_problem(text, "bad") == "name_off_topic", text
    assert name_problem("周1", "bad") == "bad" and name_problem("周", "bad") == "bad"
    assert name_problem("林林林林林林林林", "bad") == "name_off_topic"  # a sentence, not a name
    for text in ("知道了", "不知道", "嗯嗯", "hello", "OK。", "Thank you"):  # a chat reply, not a name
        assert name_problem(text, "bad") == "name_off_topic", text
    assert id_number_problem("今天天气怎么样") == "id_off_topic"
    assert id_number_problem("我不知道") == "id_off_topic"
    assert id_number_problem("１２３") is None and id_number_problem("12345") is None


# --- the router on its own: a small flow, an injected clock ------------------------------------------


class Steps(StatesGroup):
    first = State()
    second = State()


def _services() -> Services:
    catalogue = Catalogue(MESSAGES, {"phone": "400-000-0000"})
    return Services(settings=cast(Any, None), vault=cast(Any, None), catalogue=catalogue)


def _ctx(update: Update, state: State | None = None, *, now: datetime = T0, expired: State | None = None) -> Context:
    snapshot = Snapshot(state=state.name if state else None, data={}, expires_at=now + timedelta(minutes=1))
    return Context(
        update,
        cast(Any, None),
        cast(Any, None),
        snapshot,
        _services(),
        now,
        expired_state=expired.name if expired else None,
    )


def _texts(ctx: Context) -> list[str]:
    return [reply.content for reply in ctx.replies if isinstance(reply, Text)]


def _router(on_timeout: bool = False) -> tuple[Router, list[str]]:
    """A root router with one small flow in a feature router, and a loose route for the records word."""
    seen: list[str] = []

    def handler(label: str, then: State | None = None) -> Any:
        async def run(ctx: Context) -> None:
            seen.append(label)
            ctx.reply(Text(label))
            if then is not None:
                ctx.goto(then)
            elif label != "back":
                ctx.finish()

        return run

    async def timed_out(ctx: Context) -> None:
        ctx.reply(Text("flow timed out"))

    async def default(ctx: Context) -> None:
        ctx.reply(Text("default"))

    async def unsupported(ctx: Context) -> None:
        ctx.reply(Text("unsupported"))  # answers, and leaves the step as it was

    flow = Flow(
        name="sample",
        title="示例",
        entry_points=[Route(text_in("开始"), handler("start", Steps.first))],
        states={
            Steps.first: [
                Route(text_in("证照授权"), handler("asked for it", Steps.second)),
                Route(any_text, handler("free")),
            ],
            Steps.second: [Route(any_text, handler("second"))],
        },
        fallbacks=[
            Route(text_in("上一步"), handler("back", Steps.first)),
            Route(kind(UpdateKind.IMAGE), handler("image")),
        ],
        timeout=timedelta(minutes=15),
        unsaved=frozenset({Steps.second}),
        on_timeout=timed_out if on_timeout else None,
    )
    feature = Router("sample")
    feature.include(flow)
    records = Router("records")
    records.add([Route(menu(MenuKey.RECORDS), handler("records")), Route(kind(UpdateKind.UNKNOWN), unsupported)])
    root = Router("root", default=default, commands=COMMANDS)
    root.include_router(feature)
    root.include_router(records)
    return root, seen


async def test_a_fallback_keeps_the_flows_own_timeout() -> None:
    router, seen = _router()
    ctx = _ctx(_update("上一步"), Steps.second, now=T0)
    await router.dispatch(ctx)
    assert seen == ["back"]
    assert ctx.snapshot(default_timeout=timedelta(minutes=30)).expires_at == T0 + timedelta(minutes=15)
    later = T0 + timedelta(hours=2)
    ctx = _ctx(_update("随便写点"), Steps.first, now=later)
    await router.dispatch(ctx)
    assert seen == ["back", "free"] and ctx.snapshot(timedelta(minutes=30)) == Snapshot()
    ctx = _ctx(_update("开始"), None, now=later)
    await router.dispatch(ctx)
    assert ctx.snapshot(timedelta(minutes=30)).expires_at == later + timedelta(minutes=15)
    # A loose route answering mid-flow (a voice message, say) leaves the step waiting as long as its flow says.
    ctx = _ctx(_update(kind_=UpdateKind.UNKNOWN), Steps.second, now=later)
    await router.dispatch(ctx)
    assert _texts(ctx) == ["unsupported"] and ctx.state == Steps.second.name
    assert ctx.snapshot(timedelta(minutes=30)).expires_at == later + timedelta(minutes=15)


async def test_a_global_command_leaves_the_flow_with_a_note_and_starts_what_it_names() -> None:
    router, seen = _router()
    ctx = _ctx(_update("接种记录"), Steps.second)
    await router.dispatch(ctx)
    assert seen == ["records"] and ctx.state is None
    assert _texts(ctx) == ["已退出示例，刚才填写的信息没有保存。\nrecords"]
    ctx = _ctx(_tap(MenuKey.RECORDS), Steps.first)  # a tap leaves it too, and says so
    await router.dispatch(ctx)
    assert _texts(ctx) == ["已退出示例。\nrecords"]
    # A command nothing handles still leaves, and the note comes first.
    ctx = _ctx(_update("退出"), Steps.first)
    await router.dispatch(ctx)
    assert _texts(ctx) == ["已退出示例。\ndefault"] and ctx.state is None


async def test_a_step_that_names_the_word_still_gets_it() -> None:
    router, seen = _router()
    ctx = _ctx(_update("证照授权"), Steps.first)
    await router.dispatch(ctx)
    assert seen == ["asked for it"] and ctx.state == Steps.second.name and _texts(ctx) == ["asked for it"]
    ctx = _ctx(_update("林晓雨"), Steps.second)  # not a command: the free-text step takes it
    await router.dispatch(ctx)
    assert seen[-1] == "second"


async def test_an_expired_step_gets_the_flows_timeout_handler_or_the_default() -> None:
    for on_timeout, expected in ((True, "flow timed out"), (False, MESSAGES["session_expired"])):
        router, seen = _router(on_timeout)
        ctx = _ctx(_update("林晓雨"), None, expired=Steps.second)
        await router.dispatch(ctx)
        assert _texts(ctx) == [expected] and seen == []
        ctx = _ctx(_update("接种记录"), None, expired=Steps.second)  # a command after expiry just runs
        await router.dispatch(ctx)
        assert _texts(ctx) == ["records"]


async def _nothing(ctx: Context) -> None:
    """A handler that does nothing."""


def test_routers_include_each_other_once_and_in_order() -> None:
    root = build_router()
    names = [flow.name for flow in root.flows()]
    assert names == [
        "verify",
        "claim",
        "grant",
        "records",
        "show_code",
        "booking",
        "my_bookings",
        "add_child",
        "accounts",
        "faq",
    ]
    feature = Router("x")
    root.include_router(feature)
    with pytest.raises(ValueError, match="already included"):
        root.include_router(feature)
    # A router changed after it was included is seen by the routers including it.
    assert root.flow_of(Steps.first.name) is None
    sample = Flow(name="late", entry_points=[], states={Steps.first: [Route(any_text, _nothing)]})
    feature.include(sample)
    assert root.flow_of(Steps.first.name) is sample and root.flows()[-1] is sample


# --- the real journeys, on both platforms -------------------------------------------------------------

SIBLING = DemoPerson("T-SIB", "林小禾", demo_id_number("320602", date(2024, 6, 1), 142), "F", date(2024, 6, 1))


async def _parent(client: Client, channel: Channel, user: str, *, claimable: bool = False) -> None:
    """A verified parent holding her child's and her own certificates (and, maybe, a sibling to claim)."""
    child = await registry_file(
        client, ref="R-C", name=CHILD.name, id_number=CHILD.id_number, birth=CHILD.birth, guardians=[PARENT.id_number]
    )
    own = await registry_file(
        client, ref="R-P", name=PARENT.name, id_number=PARENT.id_number, birth=PARENT.birth, stage="adult"
    )
    if claimable:
        await registry_file(
            client,
            ref="R-S",
            name=SIBLING.name,
            id_number=SIBLING.id_number,
            birth=SIBLING.birth,
            guardians=[PARENT.id_number],
        )
    await channel.do(user, ("follow", ""))
    identity = await verified(client, channel.platform, user, PARENT.name, PARENT.id_number, channel.app_id)
    async with client.app[SESSIONS]() as session, session.begin():
        for file, kind_ in ((child, "child"), (own, "adult")):
            session.add(Certificate(vaccinee_id=file, holder_identity_id=identity, kind=kind_, claimed_via="t"))


async def test_typed_menu_words_leave_each_flow_and_start_the_named_journey(
    app_client: Client, channel: Channel
) -> None:
    user = f"r-menu-{channel.platform}"
    await _parent(app_client, channel, user, claimable=True)

    assert "家人的姓名" in await channel.say(user, "证照授权") + await channel.say(user, "添加")
    answer = await channel.say(user, "接种记录")
    assert (
        answer.startswith("已退出证照授权，刚才填写的信息没有保存。\n") and "请回复序号，选择要查看的接种证" in answer
    )

    answer = await channel.say(user, "亮码接种")  # from the records list to the code list
    assert answer.startswith("已退出接种记录。\n") and "请回复序号，选择要出示哪本接种证的接种码" in answer

    answer = await channel.say(user, "申领接种证")
    assert answer.startswith("已退出亮码接种。\n") and "您可以申领的电子预防接种证" in answer and "林*禾" in answer

    answer = await channel.say(user, "常见问题")
    assert answer.startswith("已退出申领接种证。\n") and "常见问题，回复数字查看" in answer

    answer = await channel.say(user, "实名认证")
    assert answer.startswith("已退出常见问题。\n") and "您已完成实名认证" in answer

    await channel.say(user, "证照授权")
    answer = await channel.say(user, "预约接种")
    assert answer.startswith("已退出证照授权。\n") and "请回复序号，选择为谁预约" in answer

    await channel.say(user, "接种记录")
    answer = await channel.say(user, "联系客服")
    assert answer.startswith("已退出接种记录。\n") and "客服电话" in answer
    assert "没太明白" in await channel.say(user, "1")  # the list was really left


async def test_menu_words_leave_the_verification_steps(app_client: Client, channel: Channel) -> None:
    user = f"r-verify-{channel.platform}"
    assert "请输入您的姓名" in await channel.say(user, "实名认证")
    answer = await channel.say(user, "申领接种证")  # not taken as a name
    assert answer.startswith("已退出实名认证。\n") and "需要先完成实名认证" in answer
    await channel.say(user, "实名认证")
    await channel.say(user, PARENT.name)
    answer = await channel.say(user, "接种记录")
    assert (
        answer.startswith("已退出实名认证，刚才填写的信息没有保存。\n") and "查看接种记录需要先完成实名认证" in answer
    )


async def test_a_step_that_asks_for_the_word_still_gets_it(app_client: Client, channel: Channel) -> None:
    user = f"r-asked-{channel.platform}"
    await _parent(app_client, channel, user)
    await channel.say(user, "接种记录")
    again = await channel.say(user, "接种记录")  # the list's own word: the list again, nothing left
    assert "已退出" not in again and "请回复序号，选择要查看的接种证" in again
    await channel.say(user, "证照授权")
    again = await channel.say(user, "证照授权")
    assert "已退出" not in again and "已授权 0/10 人" in again
    assert "家人的姓名" in await channel.say(user, "添加")
    restarted = await channel.say(user, "证照授权")  # not asked for here: the draft is dropped, and said so
    assert restarted.startswith("刚才填写的信息没有保存，我们重新开始证照授权。\n") and "已授权 0/10 人" in restarted


async def test_off_topic_text_in_name_and_id_number_steps(app_client: Client, channel: Channel) -> None:
    user = f"r-topic-{channel.platform}"
    await _parent(app_client, channel, user)
    await channel.say(user, "证照授权")
    await channel.say(user, "添加")
    for text in ("你们电话多少？", "我想查孩子的记录", "今天天气怎么样"):
        answer = await channel.say(user, text)
        assert "看起来不像姓名" in answer and "「取消」" in answer and "菜单" in answer, text
    assert "18位身份证号" in await channel.say(user, "周桂兰")
    answer = await channel.say(user, "今天天气怎么样")
    assert "这里需要填写18位身份证号" in answer and "「取消」" in answer and "位数不对" not in answer
    assert "位数不对" in await channel.say(user, "3206")  # digits: the ID number's own checks
    assert "孩子的什么人" in await channel.say(user, GRANDMA.id_number)
    answer = await channel.say(user, "今天天气怎么样")
    assert "1～7" in answer and "「取消」" in answer
    assert "手机号" in await channel.say(user, "奶奶")
    answer = await channel.say(user, "我不知道她的手机号")
    assert "请输入11位手机号码" in answer and "「取消」" in answer

    other = f"r-topic2-{channel.platform}"
    await channel.say(other, "实名认证")
    assert "看起来不像姓名" in await channel.say(other, "今天天气怎么样")
    await channel.say(other, PARENT.name)
    answer = await channel.say(other, "今天天气怎么样")
    assert "这里需要填写18位身份证号" in answer and "位数不对" not in answer


@pytest.mark.parametrize("word", ["取消", "退出", "帮助"])
async def test_leaving_and_help_work_from_every_flow(app_client: Client, channel: Channel, word: str) -> None:
    user = f"r-leave-{word}-{channel.platform}"
    await _parent(app_client, channel, user, claimable=True)
    starts = [
        ("实名认证", "请输入您的姓名", "实名认证"),  # another account of hers is not verified yet: see below
        ("申领接种证", "您可以申领", "申领接种证"),
        ("证照授权", "已授权 0/10 人", "证照授权"),
        ("常见问题", "回复数字查看", "常见问题"),
        ("接种记录", "请回复序号", "接种记录"),
        ("亮码接种", "请回复序号", "亮码接种"),
    ]
    fresh = f"{user}-new"
    for start, shown, title in starts:
        who = fresh if start == "实名认证" else user
        assert shown in await channel.say(who, start), start
        answer = await channel.say(who, word)
        assert answer.startswith(f"已退出{title}。\n"), (start, answer)
        if word == "帮助":
            assert "我可以帮您办理这些事" in answer
        else:
            assert "需要时随时点菜单" in answer
        assert "没太明白" in await channel.say(who, "2"), start  # nothing of the flow is left
    if word != "帮助":
        assert "好的，已退出" in await channel.say(user, word)  # outside any flow: nothing to leave


async def test_every_grant_step_keeps_its_timeout_and_says_when_it_ran_out(
    app_client: Client, channel: Channel
) -> None:
    user = f"r-timeout-{channel.platform}"
    await _parent(app_client, channel, user)
    await channel.say(user, "证照授权")
    await channel.say(user, "添加")
    await channel.say(user, "周桂兰")
    assert "家人的姓名" in await channel.say(user, "上一步")  # a fallback

    async with app_client.app[SESSIONS]() as session:
        row = (await session.scalars(select(ConversationState).where(ConversationState.user_id == user))).one()
    assert row.state == "GrantSteps:name"
    assert row.expires_at is not None and row.expires_at - row.updated_at == timedelta(minutes=15)

    async with app_client.app[SESSIONS]() as session, session.begin():
        await session.execute(
            update(ConversationState)
            .where(ConversationState.user_id == user)
            .values(expires_at=row.updated_at - timedelta(seconds=1))
        )
    answer = await channel.say(user, "周桂兰")
    assert "证照授权等待时间过长" in answer and "刚才填写的信息没有保存" in answer
    assert "没太明白" in await channel.say(user, "周桂兰")  # the flow is over


async def test_the_grant_asks_the_name_before_the_id_number(app_client: Client, channel: Channel) -> None:
    user = f"r-order-{channel.platform}"
    await _parent(app_client, channel, user)
    await channel.say(user, "证照授权")
    assert "请输入要授权的家人的姓名" in await channel.say(user, "添加")
    assert "请输入这位家人的18位身份证号" in await channel.say(user, "周桂兰")
    async with app_client.app[SESSIONS]() as session:
        identities = (await session.scalars(select(Identity))).all()
    assert len(identities) == 1  # nothing is bound or created by typing a grantee's details
